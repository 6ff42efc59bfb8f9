"""The referral programme end to end (issue 6, contract /tmp/refs/SPEC.md): a customer joins, shares, a friend
follows the link and orders, and after the return window the advocate gets exactly one reward.

- Chromium, both engines: join form -> personal page -> /r/{code} (no cookie) -> referred order -> delivery
  (10 identical PUTs at once) -> one referral, one reward, one reward mail, nothing to the friend.
- The QR code on the personal page decodes to exactly the share link (rsvg-convert + zbarimg).
- The WhatsApp and mail share links carry the edited text, percent-encoded as RFC 3986 says.
- /r/{code} with the landing page, with the cookie, and with a target URL that has a query of its own.

The friend is always a fresh requests session (no cookies); the mail stays in the development outbox.
"""

from __future__ import annotations

import html as htmllib
import shutil
import subprocess
import threading
import time
from datetime import datetime
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, unquote, urljoin, urlsplit

import pytest
import requests
from selenium.webdriver.common.by import By

from tests.browser.admin_helpers import by_id, click_and_wait, exists, path_of, text_of, wait_until
from tests.leads.leadtools import form_around
from tests.referrals.reftools import (
    CODE_RX,
    INCENTIVE,
    KAFFEE,
    MIN_FILL,
    MUEHLE,
    TARGET,
    WINDOW,
    Customer,
    RefShop,
    element_attribute,
    element_text,
    join_url,
    order_body,
    page_token,
    personal_page,
    welcome_links,
)

ANNA = Customer("anna.berger@kunde.example", "Anna", "Berger")
BERT = Customer("bert.freund@andere.example", "Bert", "Freund")


def when(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def href(page: str, element_id: str) -> str:
    """An element's href as the browser sees it (entities decoded)."""
    raw = element_attribute(page, element_id, "href")
    assert raw is not None, f"no #{element_id} with an href\n{page[:3000]}"
    return htmllib.unescape(raw)


def follow_share_link(share_link: str) -> requests.Response:
    """The friend: a fresh session without cookies opens the link; the redirect is not followed."""
    return requests.Session().get(share_link, allow_redirects=False, timeout=15)


def advocate_by_api(shop: RefShop, customer: Customer, order_id: str = "10001") -> dict:
    shop.delivered_customer(order_id, customer)
    a = shop.join_api(customer.email)
    assert CODE_RX.match(a["code"]), a
    assert a["share_url"] == shop.srv.url("/r/" + a["code"]), a
    page_token(a["page_url"])
    return a


# =========================================================================== share to reward, in Chromium


@pytest.mark.browser
@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_share_to_reward(make_ref_shop, chromium, engine):
    """Advocate Anna (a delivered order) joins through the public form in Chromium and lands on her page; her
    friend opens /r/{code} (302 to the shop with ref=CODE, no cookie) and orders with that ref; the delivered
    order arrives 10 times at once; after the return window there is one referral (confirmed), one reward
    (issued voucher), one reward mail to Anna with the code, no mail to the friend, and her page shows it."""
    shop = make_ref_shop(engine)
    srv = shop.srv
    shop.delivered_customer("10001", ANNA)

    # 1. Joining: the public form, filled in like a person (the form wants >= 2 s).
    chromium.get(join_url(shop))
    loaded = time.monotonic()
    assert exists(chromium, By.ID, "join-form"), chromium.page_source[:2000]
    form = by_id(chromium, "join-form")
    form.find_element(By.NAME, "email").send_keys(ANNA.email)
    form.find_element(By.NAME, "order_number").send_keys("10001")
    form.find_element(By.NAME, "consent").click()
    assert form.find_element(By.NAME, "website").get_attribute("value") == ""
    wait_until(lambda: time.monotonic() >= loaded + MIN_FILL, 5, "the form's minimum fill time")
    click_and_wait(chromium, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    assert path_of(chromium).startswith("/a/"), (
        f"joining ended at {chromium.current_url}\n{chromium.page_source[:2000]}")
    page_url = chromium.current_url
    token = page_token(page_url)

    # 2. The personal page: code, link, QR.
    code = text_of(chromium, "code")
    assert CODE_RX.match(code) and code.startswith("ANNA-"), code
    share_link = by_id(chromium, "share-link").get_attribute("value")
    assert share_link == srv.url(f"/r/{code}"), share_link
    assert urlsplit(by_id(chromium, "qr").get_attribute("src")).path == f"/a/{token}/qr.svg"
    assert text_of(chromium, "pending") == "0" and text_of(chromium, "confirmed") == "0"
    assert shop.advocates_count() == 1

    # The welcome mail: once, with both links.
    mail_page, mail_share = welcome_links(shop, ANNA.email)
    assert (mail_page, mail_share) == (page_url, share_link), (mail_page, mail_share)

    # 3. The friend follows the link: a redirect to the shop with the code, no cookie, not cached.
    r = follow_share_link(share_link)
    assert r.status_code == 302, (r.status_code, r.headers, r.text[:500])
    location = r.headers["Location"]
    parts = urlsplit(location)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "shop.example", "/"), location
    assert parse_qs(parts.query) == {"ref": [code]}, location
    assert "Set-Cookie" not in r.headers, r.headers
    assert r.headers.get("Cache-Control") == "no-store", r.headers
    lower = follow_share_link(srv.url(f"/r/{code.lower()}"))  # typed by hand
    assert (lower.status_code, lower.headers.get("Location")) == (302, location), (lower.status_code, lower.headers)
    ref = parse_qs(parts.query)["ref"][0]

    # 4. The friend's order carries the ref from the URL.
    body = order_body(BERT, [KAFFEE, MUEHLE], status="placed", referral_code=ref)
    shop.order("F-20001", body)
    referral = shop.wait_for_referral("F-20001")
    assert (referral["status"], referral["via"], referral["advocate_code"], referral["reasons"]) == (
        "accepted", "ref", code, []), referral
    [reward] = shop.rewards_of(referral["id"])
    assert (reward["beneficiary"], reward["type"], reward["value_minor"], reward["state"]) == (
        "advocate", "voucher", 1000, "pending"), reward

    # 5. Delivered: the same body 10 times at once (a shop's webhook retries), before the window passes.
    delivered = dict(body, status="delivered")
    barrier = threading.Barrier(10)
    answers: list = [None] * 10

    def put(i: int) -> None:
        barrier.wait(30)
        try:
            answers[i] = shop.api("PUT", "/api/v1/orders/F-20001", json=delivered, timeout=60)
        except Exception as e:  # reported below
            answers[i] = e

    threads = [threading.Thread(target=put, args=(i,)) for i in range(10)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    bad = [a if isinstance(a, Exception) else (a.status_code, a.text[:300]) for a in answers
           if isinstance(a, Exception) or a is None or a.status_code != 200]
    assert not bad, f"{len(bad)} of 10 identical PUTs failed: {bad[:3]}"
    statuses = {a.json()["order"]["status"] for a in answers}
    assert statuses == {"delivered"}, statuses
    delivered_at = {a.json()["order"]["status_times"]["delivered"] for a in answers}
    assert len(delivered_at) == 1, f"the order was delivered more than once: {delivered_at}"

    held = shop.wait_for_reward_state(referral["id"], "held", timeout=WINDOW)
    # The approval below must still fall inside the window; holding takes a fraction of a second.
    assert time.monotonic() - started < WINDOW - 1, "holding took too long to test the window"
    window = (when(held["held_until"]) - when(delivered_at.pop())).total_seconds()
    assert abs(window - WINDOW) < 0.01, f"held_until is {window} s after delivery, not {WINDOW}"
    early = shop.api("POST", f"/api/v1/referrals/rewards/{held['id']}/approve")
    assert early.status_code == 409 and early.json().get("code") == "return_window_open", (early.status_code,
                                                                                           early.text)
    assert len(shop.referrals()) == 1 and len(shop.rewards()) == 1, (shop.referrals(), shop.rewards())

    # 6. After the window: issued, once.
    issued = shop.wait_for_reward_state(referral["id"], "issued", timeout=WINDOW + 20)
    assert when(issued["issued_at"]) >= when(issued["held_until"]), issued
    voucher = issued["voucher_code"]
    assert voucher and voucher.startswith("DANKE-"), issued
    assert issued["value_minor"] == 1000 and issued["approved_by"] == "rules", issued
    assert shop.wait_for_referral("F-20001", ok=lambda x: x["status"] == "confirmed", what="to be confirmed")

    [(mail_id, *_)] = shop.wait_for_mails(ANNA.email, "referral_reward")
    assert voucher in shop.mail_text(mail_id), shop.mail_text(mail_id)

    # 7. Her page shows it.
    chromium.get(page_url)
    assert text_of(chromium, "confirmed") == "1" and text_of(chromium, "pending") == "0", (
        text_of(chromium, "progress"))
    rows = chromium.find_elements(By.CSS_SELECTOR, "table#rewards tbody tr")
    assert len(rows) == 1, chromium.page_source[:3000]
    assert rows[0].find_element(By.CSS_SELECTOR, ".voucher").text.strip() == voucher
    assert rows[0].find_element(By.CSS_SELECTOR, ".reward-state").text.strip() == "ausgegeben"

    # Exactly once, and never a word to the friend.
    assert len(shop.referrals()) == 1, shop.referrals()
    assert [(r["id"], r["state"]) for r in shop.rewards()] == [(issued["id"], "issued")], shop.rewards()
    assert len(shop.outbox(ANNA.email, "referral_reward")) == 1, shop.outbox(ANNA.email)
    assert len(shop.outbox(ANNA.email, "referral_welcome")) == 1, shop.outbox(ANNA.email)
    assert shop.outbox(BERT.email) == [], f"the friend got mail: {shop.outbox(BERT.email)}"
    assert shop.count("SELECT COUNT(*) FROM outbox WHERE LOWER(recipient) LIKE '%freund@andere.example%'") == 0


# =========================================================================== QR code


def test_qr_code_encodes_the_share_link(make_ref_shop, tmp_path):
    """/a/{token}/qr.svg, rasterised by librsvg and read by zbar, is exactly the share link; the printable
    card shows the same QR image and the code."""
    for tool in ("rsvg-convert", "zbarimg"):
        assert shutil.which(tool), f"{tool} missing: apt-get install librsvg2-bin zbar-tools (scripts/test does)"
    shop = make_ref_shop()
    a = advocate_by_api(shop, ANNA)
    token = page_token(a["page_url"])
    page = personal_page(a["page_url"])
    assert element_attribute(page, "qr", "src") == f"/a/{token}/qr.svg", element_attribute(page, "qr", "src")

    r = requests.get(shop.srv.url(f"/a/{token}/qr.svg"), timeout=15)
    assert r.status_code == 200, (r.status_code, r.text[:500])
    assert r.headers["Content-Type"].split(";")[0].strip() == "image/svg+xml", r.headers
    svg, png = tmp_path / "qr.svg", tmp_path / "qr.png"
    svg.write_bytes(r.content)
    conv = subprocess.run(["rsvg-convert", "-o", str(png), str(svg)], capture_output=True, text=True, timeout=60)
    assert conv.returncode == 0 and png.stat().st_size > 0, conv.stderr
    read = subprocess.run(["zbarimg", "--raw", "-q", str(png)], capture_output=True, text=True, timeout=60)
    assert read.returncode == 0, f"zbarimg found no code (exit {read.returncode}): {read.stderr}"
    assert read.stdout == a["share_url"] + "\n", f"QR decodes to {read.stdout!r}, expected {a['share_url']!r}"

    card = requests.get(shop.srv.url(f"/a/{token}/card"), timeout=15)
    assert card.status_code == 200, card.status_code
    assert urlsplit(href(page, "card-link")).path == f"/a/{token}/card"
    inside = card.text[card.text.find('id="card"'):]
    assert f'src="/a/{token}/qr.svg"' in inside.split("</div>")[0], inside[:1500]
    assert a["code"] in element_text(card.text, "card"), element_text(card.text, "card")


# =========================================================================== share links


def test_share_links_encode_the_text(make_ref_shop):
    """A custom text with umlauts, ampersand, plus and a line break, set through the page's text form: the
    WhatsApp link and the mailto link (no recipient) carry it percent-encoded as RFC 3986 says (space %20,
    UTF-8 bytes, & %26, + %2B; newline %0A, in a mail body %0D%0A), with the share link appended."""
    shop = make_ref_shop()
    a = advocate_by_api(shop, ANNA)
    link = a["share_url"]
    page = personal_page(a["page_url"])
    assert element_attribute(page, "share-link", "value") == link
    assert link in form_around(page, "share-text").get("text"), "the default text lacks the share link"

    text = "Grüße & Tipp: Kaffee für dich + mich!\nSchau mal"
    form = form_around(page, "share-text")
    assert form.method == "get", form.method
    url = urljoin(a["page_url"], form.action) if form.action else a["page_url"]
    assert urlsplit(url).path == urlsplit(a["page_url"]).path, url
    r = requests.get(url, params={"text": text}, timeout=15)  # as the form sends it: spaces as '+'
    assert r.status_code == 200, (r.status_code, r.text[:1500])
    page = r.text
    full = text + " " + link
    assert form_around(page, "share-text").get("text") == full, form_around(page, "share-text").get("text")

    unreserved = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~%")
    encoded_link = link.replace(":", "%3A").replace("/", "%2F")

    # WhatsApp.
    wa = href(page, "share-whatsapp")
    assert wa.startswith("https://wa.me/?text="), wa
    value = wa[len("https://wa.me/?text="):]
    assert value.startswith("Gr%C3%BC%C3%9Fe%20%26%20Tipp"), value
    assert "f%C3%BCr%20dich%20%2B%20mich" in value and "%0ASchau%20mal%20" in value, value
    assert value.endswith("%20" + encoded_link), value
    assert "%0D" not in value and "+" not in value and set(value) <= unreserved, value
    assert unquote(value) == full, unquote(value)

    # Mail: no recipient, subject and body.
    mail = href(page, "share-mail")
    assert mail.startswith("mailto:?"), f"the mailto link names a recipient: {mail}"
    params = dict(p.split("=", 1) for p in mail[len("mailto:?"):].split("&"))
    assert set(params) == {"subject", "body"}, params
    body = params["body"]
    assert body.startswith("Gr%C3%BC%C3%9Fe%20%26%20Tipp"), body
    assert "f%C3%BCr%20dich%20%2B%20mich" in body and "%0D%0ASchau%20mal%20" in body, body
    assert body.count("%0A") == body.count("%0D%0A") == 1, body
    assert "+" not in body and set(body) <= unreserved, body
    assert unquote(body) == full.replace("\n", "\r\n"), unquote(body)
    assert unquote(params["subject"]) and "+" not in params["subject"] and set(params["subject"]) <= unreserved

    # A text that has the link already does not get it twice.
    own = f"Hier entlang: {link} – viel Spaß"
    again = requests.get(url, params={"text": own}, timeout=15).text
    assert form_around(again, "share-text").get("text") == own
    assert unquote(href(again, "share-whatsapp")[len("https://wa.me/?text="):]) == own


# =========================================================================== landing page and cookie


def test_landing_page_and_cookie(make_ref_shop):
    """landing_page: /r/{code} shows the friend's incentive and a link on to the shop with ?ref=CODE.
    cookie: the 302 (or the landing page) sets rcp_ref=CODE. A target URL's own query is kept, an old ref replaced."""
    shop = make_ref_shop(landing_page=True)
    a = advocate_by_api(shop, ANNA)
    code = a["code"]

    r = follow_share_link(a["share_url"])
    assert r.status_code == 200, (r.status_code, r.headers)
    assert element_text(r.text, "incentive") == INCENTIVE, element_text(r.text, "incentive")
    assert href(r.text, "continue") == f"{TARGET}?ref={code}", href(r.text, "continue")
    assert "Set-Cookie" not in r.headers, r.headers

    # With the cookie on, the landing page sets it as the 302 would.
    shop.put_programme(landing_page=True, cookie=True)
    r = follow_share_link(a["share_url"])
    assert r.status_code == 200, (r.status_code, r.headers)
    cookie = SimpleCookie()
    cookie.load(r.headers.get("Set-Cookie", ""))
    assert "rcp_ref" in cookie and cookie["rcp_ref"].value == code, r.headers.get("Set-Cookie")

    shop.put_programme(landing_page=False, cookie=True)
    r = follow_share_link(a["share_url"])
    assert r.status_code == 302, (r.status_code, r.headers, r.text[:500])
    assert r.headers["Location"] == f"{TARGET}?ref={code}", r.headers["Location"]
    cookie = SimpleCookie()
    cookie.load(r.headers.get("Set-Cookie", ""))
    assert "rcp_ref" in cookie and cookie["rcp_ref"].value == code, r.headers.get("Set-Cookie")

    shop.put_programme(cookie=False, target_url="https://shop.example/start?utm_source=ref&ref=ALT-1234")
    r = follow_share_link(a["share_url"])
    assert r.status_code == 302 and "Set-Cookie" not in r.headers, (r.status_code, r.headers)
    parts = urlsplit(r.headers["Location"])
    assert (parts.netloc, parts.path) == ("shop.example", "/start"), r.headers["Location"]
    assert parse_qs(parts.query) == {"utm_source": ["ref"], "ref": [code]}, r.headers["Location"]
