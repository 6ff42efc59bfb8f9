"""Lead magnets end to end (issue 5, contract /tmp/leads/SPEC.md): a visitor signs up on the hosted
landing page, confirms through the link in the double opt-in mail, gets the gift, and the consent
proof says exactly what happened.

- Chromium, mail through the real Postfix, both engines: landing page -> DOI mail (DKIM-signed) ->
  confirmation -> byte-identical file download -> delivery mail -> proof.
- An expired gift link offers a fresh one, which arrives by mail.
- The proof keeps the consent text version the contact agreed to, after the text is edited.
- Erasure removes the personal data from the proof but keeps the counts.
- A voucher pool hands out each code once under 50 concurrent confirmations (both engines).
- Unconfirmed signups expire and are deleted; the count stays.

Apart from the browser test, the mail stays in the development outbox and visitors are requests
sessions (leadtools.visitor) posting the forms as a browser without JS does.
"""

from __future__ import annotations

import json
import os
import threading
import time
import warnings
from email.utils import parseaddr
from urllib.parse import urljoin, urlsplit

import pytest
import requests
from selenium.webdriver.common.by import By

from tests.browser.admin_helpers import by_id, cli, click_and_wait, exists, path_of, text_of, wait_until
from tests.leads.leadtools import (
    wait_out_min_fill,
    CONSENT_TEXT,
    CONSENT_TEXT_V2,
    FILE_NAME,
    VISITOR_AGENT,
    assert_pending,
    attributes_of,
    confirm,
    element_attribute,
    form_around,
    magnet_payload,
    message_text,
    open_landing,
    fill,
    sha256,
    signup,
    single_link,
    visitor,
)
from tests.mail.mailtools import SKIP_MAIL, dkim_verify, parse_dkim_record, smtp_target, wait_for_message
from tests.reviews.reviewtools import SLUG, element_text, parse_form, submit_form, tampered, text_part


def one_signup(proof: dict) -> dict:
    signups = proof.get("signups")
    assert isinstance(signups, list) and len(signups) == 1, f"expected one signup in the proof: {proof}"
    return signups[0]


# =========================================================================== the whole way, in Chromium


@pytest.mark.browser
@pytest.mark.skipif(SKIP_MAIL, reason="RECIPROCITY_TEST_SKIP_MAIL=1")
def test_doi_flow_in_chromium(make_lead_shop, chromium, download_dir, engine):
    """Double opt-in in a real browser: the signup leaves the consent pending and sends a DKIM-signed
    confirmation mail through Postfix; opening its link confirms nothing until the button is pressed;
    confirming delivers the gift page, whose file downloads byte-identical, plus a delivery mail; the
    proof holds the text as shown, signup and confirmation IP and user agent, and the mail as sent."""
    shop = make_lead_shop(engine, smtp=True)
    srv = shop.srv
    dkim = cli(srv, "dkim", "generate", "--workspace", SLUG, "--domain", "example.com", "--selector", "lm1",
               "--algorithm", "ed25519-sha256")
    assert dkim.returncode == 0, dkim.stderr
    record = parse_dkim_record(dkim.stdout)

    magnet = shop.create_magnet("kaffee-ratgeber", min_fill_seconds=1)
    data = os.urandom(200 * 1024)
    uploaded = shop.upload_file(magnet["id"], FILE_NAME, data)
    assert (uploaded["file_name"], uploaded["file_size"], uploaded["file_sha256"]) == (FILE_NAME, len(data),
                                                                                       sha256(data)), uploaded

    # 1. The landing page, filled in like a person: the consent text is shown with its version.
    address = "erika.lead@kunde.example"
    chromium.get(magnet["landing_url"])
    assert exists(chromium, By.ID, "lead-form"), chromium.page_source[:2000]
    assert CONSENT_TEXT in text_of(chromium, "consent-text"), text_of(chromium, "consent-text")  # after a lead-in
    assert by_id(chromium, "consent-text").get_attribute("data-version") == "1"
    agent = chromium.execute_script("return navigator.userAgent")
    assert "Chrome" in agent, agent
    chromium.find_element(By.NAME, "email").send_keys(address)
    chromium.find_element(By.NAME, "first_name").send_keys("Erika")
    wait_out_min_fill(magnet, margin=0.5)  # a person takes longer than min_fill_seconds
    click_and_wait(chromium, by_id(chromium, "lead-submit"))
    assert exists(chromium, By.ID, "lead-pending"), chromium.page_source[:2000]

    # 2. The confirmation mail arrives through Postfix, signed.
    [(doi_id, _, _, subject, message_id)] = shop.wait_for_mails(address, "doi_confirmation", sent=True)
    got = wait_for_message(smtp_target(), f"<{message_id.strip('<>')}>")
    assert parseaddr(str(got.message["To"]))[1] == address, got.message["To"]
    assert str(got.message["Subject"]) == subject
    ok, diag = dkim_verify(got.raw, record)
    assert ok, diag
    doi_link = single_link(text_part(got.message), srv.base_url, "doi")

    # 3. Opening the link shows a button and confirms nothing (mail scanners open links) ...
    contact = shop.contact_id(address)
    chromium.get(doi_link)
    assert exists(chromium, By.ID, "doi-form") and exists(chromium, By.ID, "doi-confirm"), chromium.page_source[:2000]
    assert one_signup(shop.proof(contact))["state"] == "pending", "GET on the DOI link confirmed the signup"
    # ... pressing it confirms and lands on the gift page.
    click_and_wait(chromium, by_id(chromium, "doi-confirm"))
    assert path_of(chromium).startswith("/gift/"), chromium.current_url
    assert exists(chromium, By.ID, "gift") and exists(chromium, By.ID, "gift-download"), chromium.page_source[:2000]

    # 4. The file downloads byte-identical, under its name.
    by_id(chromium, "gift-download").click()

    def downloaded():
        # Chromium writes to "x.crdownload" or a hidden ".org.chromium.Chromium.*" file, then renames it: only a
        # visible, finished name counts, or the full-size temporary file wins the race with the rename.
        done = [p for p in download_dir.iterdir() if not p.name.endswith(".crdownload") and not p.name.startswith(".")]
        return done if done and all(p.stat().st_size == len(data) for p in done) else None

    files = wait_until(downloaded, 30, "the download in Chromium's download folder",
                       describe=lambda: f"{[(p.name, p.stat().st_size) for p in download_dir.iterdir()]}")
    assert [p.name for p in files] == [FILE_NAME], [p.name for p in files]
    assert sha256(files[0].read_bytes()) == sha256(data), "the downloaded file differs from the upload"

    # 5. The delivery mail arrives too, with a working gift link.
    [(_, _, _, _, gift_mid)] = shop.wait_for_mails(address, "gift_delivery", sent=True)
    gift_mail = wait_for_message(smtp_target(), f"<{gift_mid.strip('<>')}>")
    assert parseaddr(str(gift_mail.message["To"]))[1] == address
    ok, diag = dkim_verify(gift_mail.raw, record)
    assert ok, diag
    gift_link = single_link(text_part(gift_mail.message), srv.base_url, "gift")
    page = requests.get(gift_link, timeout=15)
    assert page.status_code == 200 and 'id="gift-download"' in page.text, (page.status_code, page.text[:1500])
    assert len(shop.outbox(address, "doi_confirmation")) == 1, shop.outbox(address)

    # 6. The proof.
    proof = shop.proof(contact)
    s = one_signup(proof)
    assert s["magnet"] == magnet["slug"], s
    assert s["state"] == "confirmed", s
    assert s["purpose"], s
    assert (s["text"]["version"], s["text"]["body"]) == (1, CONSENT_TEXT), s["text"]
    assert urlsplit(s["page_url"] or "").path == urlsplit(magnet["landing_url"]).path, s["page_url"]
    assert s["signup"]["at"] and s["signup"]["ip"] == "127.0.0.1", s["signup"]
    assert s["signup"]["user_agent"] == agent, s["signup"]
    assert s["confirmation"] and s["confirmation"]["at"], s
    assert s["confirmation"]["ip"] == "127.0.0.1" and s["confirmation"]["user_agent"] == agent, s["confirmation"]
    mail = s["confirmation_mail"]
    assert mail["outbox_id"] == doi_id and mail["subject"] == subject, mail
    assert mail["message_id"].strip("<>") == message_id.strip("<>"), mail
    assert mail["sent_at"], mail
    assert doi_link in message_text(mail["message"]), f"the proof's mail lacks the DOI link\n{mail['message']}"
    assert proof["contact"]["email"] == address, proof["contact"]
    assert any(c.get("state") == "granted" for c in proof["consents"]), proof["consents"]

    stats = shop.stats(magnet["id"])
    assert (stats["signups"], stats["confirmations"]) == (1, 1), stats
    assert stats["downloads"] >= 1 and stats["views"] >= 1, stats


# =========================================================================== the gift link


def test_expired_gift_link_offers_a_fresh_one(make_lead_shop):
    """A gift link expires after download_link_seconds; the expired link answers 410 with a friendly
    page whose button sends a fresh delivery mail with a new, working link, even inside the resend
    window (600 s here): the last mail's link has expired too."""
    shop = make_lead_shop()
    magnet = shop.create_magnet("webinar", gift_kind="link", gift_title="Webinar: Espresso zu Hause",
                                gift_url="https://video.example/espresso", download_link_seconds=2)
    address = "frist@kunde.example"
    s = visitor()
    assert_pending(signup(magnet, address, session=s))
    gift = confirm(s, shop.doi_link(address))
    page = s.get(gift, timeout=15)
    assert page.status_code == 200 and 'id="gift-link"' in page.text, (page.status_code, page.text[:1500])

    first = shop.link_in_mail(address, "gift_delivery", "gift")
    ok = requests.get(first, timeout=15)
    assert ok.status_code == 200 and 'id="gift"' in ok.text, (ok.status_code, ok.text[:1500])

    t0 = time.monotonic()
    [expired] = wait_until(lambda: [r for r in [requests.get(first, timeout=15)] if r.status_code == 410], 15,
                           "the gift link to expire (410)")
    assert time.monotonic() - t0 < 10, "the link lived far longer than download_link_seconds=2"
    assert element_text(expired.text, "gift-expired") is not None, expired.text[:2000]
    assert 'id="gift-renew"' in expired.text, expired.text[:2000]
    renew = form_around(expired.text, "gift-renew")
    assert urlsplit(renew.action).path == urlsplit(first).path + "/renew", renew.action

    r = submit_form(visitor(), first, renew)
    assert r.status_code == 200 and element_text(r.text, "gift-renewed") is not None, (r.status_code, r.text[:2000])
    shop.wait_for_mails(address, "gift_delivery", 2)
    fresh = shop.link_in_mail(address, "gift_delivery", "gift", index=1)
    assert fresh != first, "the fresh mail carries the expired link"
    again = requests.get(fresh, timeout=15)
    assert again.status_code == 200 and 'id="gift-link"' in again.text, (again.status_code, again.text[:1500])
    assert len(shop.outbox(address, "gift_delivery")) == 2, shop.outbox(address)


# =========================================================================== proof


def test_proof_keeps_the_exact_text_version(make_lead_shop):
    """Editing a consent text creates a new version; a proof keeps the version its contact agreed to
    (API JSON and the admin's print page)."""
    shop = make_lead_shop()
    magnet = shop.create_magnet("ratgeber")
    a, b = "anna.alt@kunde.example", "bert.neu@kunde.example"

    page, _ = open_landing(visitor(), magnet)
    assert element_attribute(page.text, "consent-text", "data-version") == "1"
    s = visitor()
    assert_pending(signup(magnet, a, "Anna", session=s))
    confirm(s, shop.doi_link(a))

    edited = shop.put_magnet(magnet["id"], magnet_payload(magnet["slug"], consent_text=CONSENT_TEXT_V2))
    assert edited["consent_text"] == CONSENT_TEXT_V2, edited
    page, _ = open_landing(visitor(), magnet)
    assert element_attribute(page.text, "consent-text", "data-version") == "2"
    assert CONSENT_TEXT_V2 in element_text(page.text, "consent-text"), element_text(page.text, "consent-text")
    s = visitor()
    assert_pending(signup(magnet, b, "Bert", session=s))
    confirm(s, shop.doi_link(b))

    id_a, id_b = shop.contact_id(a), shop.contact_id(b)
    text_a = one_signup(shop.proof(id_a))["text"]
    text_b = one_signup(shop.proof(id_b))["text"]
    assert (text_a["version"], text_a["body"]) == (1, CONSENT_TEXT), text_a
    assert (text_b["version"], text_b["body"]) == (2, CONSENT_TEXT_V2), text_b
    assert text_a["id"] != text_b["id"], (text_a, text_b)

    for cid, version, body in ((id_a, "1", CONSENT_TEXT), (id_b, "2", CONSENT_TEXT_V2)):
        printed = shop.admin.get(shop.srv.url(f"/admin/contacts/{cid}/proof"), timeout=15)
        assert printed.status_code == 200 and 'id="proof"' in printed.text, (printed.status_code, printed.text[:1500])
        shown = [x.get("data-text-version") for x in attributes_of(printed.text, "proof-signup")]
        assert shown == [version], f"contact {cid}: .proof-signup data-text-version {shown}, expected [{version}]"
        assert body in element_text(printed.text, "proof"), f"the print page of {cid} does not show its text"
        as_json = shop.admin.get(shop.srv.url(f"/admin/contacts/{cid}/proof.json"), timeout=15)
        assert as_json.status_code == 200, as_json.status_code
        assert one_signup(as_json.json())["text"]["version"] == int(version)


# =========================================================================== erasure


def test_erasure_removes_pii_but_keeps_the_counts(make_lead_shop):
    """Erasure (Art. 17) removes the address, name, IPs, user agents and the stored mail from the proof;
    the magnet's statistics still count the signup and the confirmation."""
    shop = make_lead_shop()
    magnet = shop.create_magnet("ratgeber")
    address, name = "zoraida.loesch@kunde.example", "Zoraida"
    s = visitor()
    assert_pending(signup(magnet, address, name, session=s))
    confirm(s, shop.doi_link(address))
    cid = shop.contact_id(address)
    before = shop.proof(cid)
    assert VISITOR_AGENT in json.dumps(before) and address in json.dumps(before), "the proof lacks the PII to erase"
    assert (shop.stats(magnet["id"])["signups"], shop.stats(magnet["id"])["confirmations"]) == (1, 1)

    shop.ok("POST", f"/api/v1/contacts/{cid}/erase", (200, 204))

    proof = shop.proof(cid)
    dumped = json.dumps(proof, ensure_ascii=False)
    for pii in (address, name, VISITOR_AGENT, address.split("@")[0]):
        assert pii not in dumped, f"{pii!r} is still in the proof after erasure:\n{dumped[:3000]}"
    s = one_signup(proof)
    for part in ("signup", "confirmation"):
        assert not (s[part] or {}).get("ip"), f"{part} ip kept: {s[part]}"
        assert not (s[part] or {}).get("user_agent"), f"{part} user agent kept: {s[part]}"
    stats = shop.stats(magnet["id"])
    assert (stats["signups"], stats["confirmations"]) == (1, 1), f"erasure changed the counts: {stats}"


# =========================================================================== vouchers


def test_voucher_pool_hands_out_each_code_once(make_lead_shop, engine):
    """50 concurrent confirmations against a pool of 60 codes: every confirmed signup gets its own
    code, no code goes out twice, 50 vouchers are assigned and 10 are left."""
    shop = make_lead_shop(engine)  # RECIPROCITY_PUBLIC_FORM_BURST=1000: 50 signups from one IP
    magnet = shop.create_magnet("gutschein", gift_kind="voucher", gift_title="5 € Gutschein", min_fill_seconds=1)
    added = shop.add_vouchers(magnet["id"], generate=60, prefix="GIFT")
    assert (added["added"], added["available"]) == (60, 60), added

    addresses = [f"kunde{i:02d}@gutschein.example" for i in range(50)]
    loaded = []
    for a in addresses:  # one page load (one token) per visitor
        s = visitor()
        _, form = open_landing(s, magnet)
        loaded.append((s, fill(form, a, "Gustav")))
    wait_out_min_fill(magnet)
    for s, form in loaded:
        assert_pending(submit_form(s, magnet["landing_url"], form))

    doi_links = [shop.doi_link(a) for a in addresses]
    assert len(set(doi_links)) == 50
    pages = []
    for link in doi_links:
        s = visitor()
        page = s.get(link, timeout=15)
        assert page.status_code == 200, (link, page.status_code)
        pages.append((s, link, parse_form(page.text, "doi-form")))

    barrier = threading.Barrier(len(pages))
    results: list = [None] * len(pages)

    def post(i: int) -> None:
        s, link, form = pages[i]
        barrier.wait(30)
        try:
            results[i] = submit_form(s, link, form, allow_redirects=False, timeout=60)
        except Exception as e:  # reported below, with the others
            results[i] = e

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(pages))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    bad = [(i, r if isinstance(r, Exception) else (r.status_code, r.text[:300])) for i, r in enumerate(results)
           if isinstance(r, Exception) or r is None or r.status_code != 303]
    assert not bad, f"{len(bad)} of 50 confirmations failed: {bad[:5]}"

    codes = []
    for (_, link, _), r in zip(pages, results):
        gift = requests.get(urljoin(link, r.headers["Location"]), timeout=15)
        assert gift.status_code == 200, (gift.status_code, gift.text[:500])
        code = element_text(gift.text, "gift-code")
        assert code, f"no #gift-code on {gift.url}\n{gift.text[:1500]}"
        codes.append(code)
    assert len(set(codes)) == 50, f"{50 - len(set(codes))} codes went out twice: {sorted(codes)}"
    assert all(c.startswith("GIFT") for c in codes), codes
    assert shop.count("SELECT COUNT(*) FROM lead_vouchers WHERE signup_id IS NOT NULL") == 50
    assert shop.count("SELECT COUNT(DISTINCT signup_id) FROM lead_vouchers WHERE signup_id IS NOT NULL") == 50
    assert shop.magnet(magnet["id"])["vouchers_available"] == 10

    # Confirming again is idempotent: the same code (the gift token carries its own expiry, so it may differ),
    # and no second voucher.
    s, link, form = pages[0]
    again = submit_form(s, link, form, allow_redirects=False)
    assert again.status_code == 303, (again.status_code, again.text[:500])
    gift = requests.get(urljoin(link, again.headers["Location"]), timeout=15)
    assert element_text(gift.text, "gift-code") == codes[0], (codes[0], gift.text[:1500])
    assert shop.count("SELECT COUNT(*) FROM lead_vouchers WHERE signup_id IS NOT NULL") == 50


# =========================================================================== expiry


def test_unconfirmed_signups_expire(make_lead_shop):
    """A signup not confirmed within pending_seconds is deleted with its (otherwise unknown) contact;
    its DOI link then answers 410, and the magnet's statistics still count the signup."""
    shop = make_lead_shop()
    magnet = shop.create_magnet("ratgeber", pending_seconds=2)
    address = "vergesslich@kunde.example"
    assert_pending(signup(magnet, address))
    signed_up = time.monotonic()
    link = shop.doi_link(address)
    assert shop.count("SELECT COUNT(*) FROM lead_signups") == 1
    assert shop.contacts_with(address) == 1

    gone = lambda: shop.count("SELECT COUNT(*) FROM lead_signups") == 0
    wait_until(lambda: time.monotonic() > signed_up + 2.2, 5, "pending_seconds to pass")
    # `reciprocity leads expire` runs the expiry at once; without that command the worker's minutely run must.
    run = cli(shop.srv, "leads", "expire", timeout=60)
    if run.returncode == 0:
        wait_until(gone, 5, "the unconfirmed signup to be deleted by `reciprocity leads expire`",
                   describe=lambda: f"`leads expire` said:\n{run.stdout}{run.stderr}")
    else:
        warnings.warn(f"`reciprocity leads expire` exited {run.returncode}; waiting for the job\n{run.stderr[-500:]}")
        wait_until(gone, 90, "the expiry job to delete the unconfirmed signup", interval=1,
                   describe=lambda: shop.srv.output_tail(20))
    assert shop.contacts_with(address) == 0, "the contact of the expired signup is still there"
    r = requests.get(link, timeout=15)
    assert r.status_code == 410 and element_text(r.text, "doi-expired") is not None, (r.status_code, r.text[:1500])
    token = link.rsplit("/doi/", 1)[1]
    for position in (0, len(token) // 2):  # a forged link is not "expired": it is unknown
        forged = requests.get(shop.srv.url(f"/doi/{tampered(token, position)}"), timeout=15)
        assert forged.status_code == 404, (position, forged.status_code)
    assert shop.stats(magnet["id"])["signups"] == 1, shop.stats(magnet["id"])
