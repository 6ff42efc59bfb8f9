"""What issuing a reward writes, and undoing it (issue 6, contract /tmp/refs/SPEC.md).

- Store credit: a booking when issued; a return after issue claws the reward back with a reversal row of the
  negative amount, and the referral becomes void.
- Cash: the advocate enters an IBAN on the personal page; the SEPA credit transfer file (pain.001.001.09)
  validates against the vendored XSD, pays exactly that reward, and is written once.
"""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from urllib.parse import parse_qs, urljoin, urlsplit

import requests

from tests.conftest import REPO_ROOT
from tests.referrals.reftools import (
    KAFFEE,
    PAYER_IBAN,
    Customer,
    RefShop,
    element_text,
    order_body,
    personal_page,
)
from tests.browser.admin_helpers import wait_until
from tests.reviews.reviewtools import parse_form, submit_form

PAIN_XSD = REPO_ROOT / "Tests" / "ReciprocityCoreTests" / "Fixtures" / "pain.001.001.09.xsd"
PAIN_NS = {"p": "urn:iso:std:iso:20022:tech:xsd:pain.001.001.09"}
ANNA = Customer("anna.berger@kunde.example", "Anna", "Berger")
BERT = Customer("bert.freund@andere.example", "Bert", "Freund")
ANNA_IBAN = "DE02120300000000202051"


def referred_and_delivered(shop: RefShop, code: str, external_id: str = "F-1") -> tuple[dict, dict]:
    """The friend's order with the code, placed then delivered; returns (referral, order body)."""
    body = order_body(BERT, [KAFFEE], status="placed", referral_code=code)
    shop.order(external_id, body)
    referral = shop.wait_for_referral(external_id)
    assert referral["status"] == "accepted", referral
    body = dict(body, status="delivered")
    shop.order(external_id, body)
    return referral, body


def credit_rows(shop: RefShop, reward_id: int) -> list[tuple]:
    return shop.rows(f"SELECT kind, delta_minor, currency FROM referral_credit WHERE reward_id = {int(reward_id)} "
                     "ORDER BY id")


# =========================================================================== clawback


def test_return_after_issue_claws_back_the_credit(make_ref_shop):
    """Credit of 15 € is booked when the reward is issued; the order returned afterwards claws it back: the
    reward is clawed_back, the referral void, and the ledger has a reversal of -15 € (the balance is 0)."""
    shop = make_ref_shop(advocate_reward={"type": "credit", "value_minor": 1500})
    shop.delivered_customer("10001", ANNA)
    advocate = shop.join_api(ANNA.email)
    referral, body = referred_and_delivered(shop, advocate["code"])

    issued = shop.wait_for_reward_state(referral["id"], "issued")
    assert (issued["type"], issued["value_minor"], issued.get("voucher_code")) == ("credit", 1500, None), issued
    assert credit_rows(shop, issued["id"]) == [("booking", 1500, "EUR")], credit_rows(shop, issued["id"])
    shop.wait_for_mails(ANNA.email, "referral_reward")
    # The shop's checkout reads the balance through the API, by the customer's address in any case.
    credit = shop.ok("GET", "/api/v1/referrals/credit", params={"email": ANNA.email.upper()}).json()
    assert (credit["balance_minor"], credit["balance"], credit["currency"]) == (1500, "15.00", "EUR"), credit
    assert credit["contact_id"] == issued["contact_id"], credit
    shop.ok("GET", "/api/v1/referrals/credit", 404, params={"email": "niemand@example.org"})
    shop.ok("GET", "/api/v1/referrals/credit", 422, params={"email": "keine-adresse"})
    shop.ok("GET", "/api/v1/referrals/credit", 422)

    returned = shop.order("F-1", dict(body, status="returned"))
    assert returned["order"]["status"] == "returned", returned
    clawed = shop.wait_for_reward_state(referral["id"], "clawed_back")
    assert clawed["id"] == issued["id"], clawed
    assert shop.wait_for_referral("F-1", ok=lambda r: r["status"] == "void", what="to be void")
    assert credit_rows(shop, issued["id"]) == [("booking", 1500, "EUR"), ("reversal", -1500, "EUR")], (
        credit_rows(shop, issued["id"]))
    contact = issued["contact_id"]
    assert shop.count(f"SELECT COALESCE(SUM(delta_minor), 0) FROM referral_credit WHERE contact_id = {contact}") == 0
    assert shop.ok("GET", "/api/v1/referrals/credit", params={"email": ANNA.email}).json()["balance_minor"] == 0

    # The same return again changes nothing.
    shop.order("F-1", dict(body, status="returned"))
    assert [r["state"] for r in shop.rewards()] == ["clawed_back"], shop.rewards()
    assert len(credit_rows(shop, issued["id"])) == 2
    assert len(shop.outbox(ANNA.email, "referral_reward")) == 1


def test_checkout_spends_credit_once_per_order_and_gives_it_back(make_ref_shop):
    """The shop's checkout spends 6 € of Anna's 15 € credit on order K-1 through the API: a retry of the same call
    answers the first redemption, another amount for K-1 or more than the balance is a 409 problem, a cancelled
    K-1 gives the credit back once, and the ledger holds one debit and one credit for it."""
    shop = make_ref_shop(advocate_reward={"type": "credit", "value_minor": 1500})
    shop.delivered_customer("10001", ANNA)
    advocate = shop.join_api(ANNA.email)
    referral, _ = referred_and_delivered(shop, advocate["code"])
    issued = shop.wait_for_reward_state(referral["id"], "issued")
    path = "/api/v1/referrals/credit/redemptions"

    spend = {"email": ANNA.email, "order_id": "K-1", "amount": "6.00"}
    first = shop.ok("POST", path, 201, json=spend).json()
    assert (first["order_id"], first["amount"], first["amount_minor"], first["currency"]) == ("K-1", "6.00", 600,
                                                                                               "EUR"), first
    assert (first["balance"], first["contact_id"], first.get("released_at")) == ("9.00", issued["contact_id"],
                                                                                 None), first
    again = shop.ok("POST", path, 200, json=dict(spend, email=ANNA.email.upper())).json()
    assert again == first, (again, first)

    for body, status, code in [
        (dict(spend, amount="5.00"), 409, "credit_redemption_differs"),
        (dict(spend, order_id="K-2", amount="9.01"), 409, "insufficient_credit"),
        (dict(spend, order_id="K-2", amount="abc"), 422, "amount_invalid"),
        (dict(spend, order_id="K-2", amount="-1.00"), 422, "amount_negative"),
        (dict(spend, order_id="K-2", amount="0"), 422, "amount_invalid"),
        (dict(spend, order_id="K-2", currency="USD"), 422, "currency_mismatch"),
        (dict(spend, order_id="K/2"), 422, "external_id_invalid"),
        ({"email": ANNA.email, "amount": "1.00"}, 422, "order_id_missing"),
        (dict(spend, order_id="K-2", email="niemand@example.org"), 404, "not_found"),
    ]:
        r = shop.ok("POST", path, status, json=body)
        assert r.headers["Content-Type"].startswith("application/problem+json"), r.headers
        assert r.json()["code"] == code, (body, r.json())
    assert shop.ok("GET", "/api/v1/referrals/credit", params={"email": ANNA.email}).json()["balance"] == "9.00"
    assert shop.ok("GET", f"{path}/K-1").json() == first
    shop.ok("GET", f"{path}/K-2", 404)

    released = shop.ok("DELETE", f"{path}/K-1").json()
    assert (released["balance"], released["amount"]) == ("15.00", "6.00") and released["released_at"], released
    assert shop.ok("DELETE", f"{path}/K-1").json() == released
    shop.ok("DELETE", f"{path}/K-2", 404)
    rows = shop.rows("SELECT kind, delta_minor, order_ref FROM referral_credit WHERE order_ref IS NOT NULL ORDER BY id")
    assert rows == [("redemption", -600, "K-1"), ("release", 600, "K-1")], rows
    # An order that gave its credit back spends none again, not even by repeating its first call.
    assert shop.ok("POST", path, 409, json=spend).json()["code"] == "credit_redemption_released"


CLEO = Customer("cleo.nachbar@dritte.example", "Cleo", "Nachbar")


def two_held_rewards(shop: RefShop) -> tuple[dict, dict, list[dict]]:
    """Anna refers Bert (F-1) and Cleo (F-2); both orders are delivered and both rewards are held (a programme
    without automatic approval). Returns (first referral, second referral as first decided, the held rewards)."""
    shop.delivered_customer("10001", ANNA)
    advocate = shop.join_api(ANNA.email)
    first, _ = referred_and_delivered(shop, advocate["code"], "F-1")
    body = order_body(CLEO, [KAFFEE], status="placed", referral_code=advocate["code"])
    shop.order("F-2", body)
    second = shop.wait_for_referral("F-2")
    shop.order("F-2", dict(body, status="delivered"))
    return first, second, [shop.wait_for_reward_state(r["id"], "held") for r in (first, second)]


def test_rewards_approved_and_voided_by_hand(make_ref_shop):
    """Without automatic approval a reward stays held after the return window. Through the API a person approves
    one (it is issued and mailed at once) and voids the other; a second void, or voiding the issued one, is a 409
    that changes nothing. Both decisions are in the audit log."""
    shop = make_ref_shop(auto_approve=False)
    first, second, held = two_held_rewards(shop)
    assert second["status"] == "accepted", second
    early = shop.ok("POST", f"/api/v1/referrals/rewards/{held[0]['id']}/approve", 409).json()
    assert early["code"] == "return_window_open", early

    def window_passed():
        r = shop.ok("POST", f"/api/v1/referrals/rewards/{held[0]['id']}/approve", (200, 409))
        return r.json() if r.status_code == 200 else None

    approved = wait_until(window_passed, 20, "the return window to pass", interval=0.5)
    assert approved["state"] == "issued" and approved["voucher_code"], approved
    shop.wait_for_mails(ANNA.email, "referral_reward")
    assert shop.wait_for_reward_state(second["id"], "held")["id"] == held[1]["id"]

    voided = shop.ok("POST", f"/api/v1/referrals/rewards/{held[1]['id']}/void").json()
    assert voided["state"] == "void", voided
    again = shop.ok("POST", f"/api/v1/referrals/rewards/{held[1]['id']}/void", 409).json()
    assert again["code"] == "reward_not_voidable", again
    shop.ok("POST", f"/api/v1/referrals/rewards/{held[0]['id']}/void", 409)
    assert sorted(r["state"] for r in shop.rewards()) == ["issued", "void"], shop.rewards()
    assert len(shop.outbox(ANNA.email, "referral_reward")) == 1
    actions = [row[0] for row in shop.rows("SELECT action FROM audit_log WHERE action LIKE 'referrals.reward.%' "
                                           "ORDER BY id")]
    assert "referrals.reward.approve" in actions and "referrals.reward.void" in actions, actions


def test_voucher_state_for_the_checkout(make_ref_shop):
    """The reward voucher is valid for the shop's checkout once issued; a return after issue invalidates it, and
    the API says so. An unknown code is a 404."""
    shop = make_ref_shop()
    shop.delivered_customer("10001", ANNA)
    advocate = shop.join_api(ANNA.email)
    referral, body = referred_and_delivered(shop, advocate["code"])
    issued = shop.wait_for_reward_state(referral["id"], "issued")
    code = issued["voucher_code"]
    assert code and code.startswith("DANKE-"), issued
    state = shop.ok("GET", f"/api/v1/referrals/vouchers/{code}").json()
    assert state == {"code": code, "redeemed": False, "invalidated": False, "valid": True}, state

    shop.order("F-1", dict(body, status="returned"))
    shop.wait_for_reward_state(referral["id"], "clawed_back")
    state = shop.ok("GET", f"/api/v1/referrals/vouchers/{code}").json()
    assert (state["invalidated"], state["valid"]) == (True, False), state
    shop.ok("GET", "/api/v1/referrals/vouchers/DANKE-NICHT-DA", 404)


# =========================================================================== SEPA payout file


def test_cash_reward_pain001_export(make_ref_shop, tmp_path):
    """A 25 € cash reward: Anna enters her IBAN through #payout-form (a wrong one first: ?error=iban with
    #page-error); after issue the export is a pain.001.001.09 file valid against the XSD with one transfer of
    25.00 EUR to her IBAN from the shop's account; a second export is 409 no_open_payouts."""
    assert PAIN_XSD.is_file(), f"the vendored pain.001 schema is missing: {PAIN_XSD}"
    shop = make_ref_shop(advocate_reward={"type": "cash", "value_minor": 2500}, payer_name="Mein Shop GmbH",
                         payer_iban=PAYER_IBAN)
    shop.delivered_customer("10001", ANNA)
    advocate = shop.join_api(ANNA.email)
    page_url = advocate["page_url"]

    def post_payout(name: str, iban: str) -> dict:
        page = personal_page(page_url)
        form = parse_form(page, "payout-form")
        assert {"name", "iban"} <= form.names(), form.fields
        form.set("name", name)
        form.set("iban", iban)
        r = submit_form(requests.Session(), page_url, form, allow_redirects=False)
        assert r.status_code == 303, (r.status_code, r.headers, r.text[:1000])
        back = urljoin(page_url, r.headers["Location"])
        assert urlsplit(back).path == urlsplit(page_url).path, back
        return {"query": parse_qs(urlsplit(back).query), "page": personal_page(back)}

    wrong = post_payout("Anna Berger", "DE02120300000000202052")  # check digits do not match
    assert wrong["query"] == {"error": ["iban"]}, wrong["query"]
    assert element_text(wrong["page"], "page-error"), wrong["page"][:2000]
    assert shop.rows("SELECT payout_iban FROM advocates") == [(None,)], shop.rows("SELECT payout_iban FROM advocates")

    saved = post_payout("Anna Berger", ANNA_IBAN)
    assert saved["query"] == {"saved": ["1"]}, saved["query"]
    assert element_text(saved["page"], "page-error") is None, element_text(saved["page"], "page-error")

    referral, _ = referred_and_delivered(shop, advocate["code"])
    issued = shop.wait_for_reward_state(referral["id"], "issued")
    assert (issued["type"], issued["value_minor"]) == ("cash", 2500), issued
    assert shop.rows(f"SELECT amount_minor, state FROM referral_payouts WHERE reward_id = {issued['id']}") == [
        (2500, "open")]

    r = shop.api("POST", "/api/v1/referrals/payouts/export")
    assert r.status_code == 200, (r.status_code, r.text[:1000])
    assert r.headers["Content-Type"].split(";")[0].strip() == "application/xml", r.headers
    path = tmp_path / "pain.001.xml"
    path.write_bytes(r.content)
    lint = subprocess.run(["xmllint", "--noout", "--schema", str(PAIN_XSD), str(path)],
                          capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0, f"pain.001 does not validate:\n{lint.stderr}\n{r.text[:3000]}"

    root = ET.fromstring(r.content)
    assert root.tag == "{urn:iso:std:iso:20022:tech:xsd:pain.001.001.09}Document", root.tag
    assert root.findtext("p:CstmrCdtTrfInitn/p:GrpHdr/p:NbOfTxs", namespaces=PAIN_NS) == "1"
    assert root.findtext("p:CstmrCdtTrfInitn/p:GrpHdr/p:CtrlSum", namespaces=PAIN_NS) == "25.00"
    infos = root.findall("p:CstmrCdtTrfInitn/p:PmtInf", PAIN_NS)
    assert len(infos) == 1, len(infos)
    assert infos[0].findtext("p:DbtrAcct/p:Id/p:IBAN", namespaces=PAIN_NS) == PAYER_IBAN
    txs = infos[0].findall("p:CdtTrfTxInf", PAIN_NS)
    assert len(txs) == 1, len(txs)
    tx = txs[0]
    assert tx.findtext("p:CdtrAcct/p:Id/p:IBAN", namespaces=PAIN_NS) == ANNA_IBAN
    assert tx.findtext("p:Cdtr/p:Nm", namespaces=PAIN_NS) == "Anna Berger"
    amount = tx.find("p:Amt/p:InstdAmt", PAIN_NS)
    assert amount is not None and (amount.text, amount.get("Ccy")) == ("25.00", "EUR"), ET.tostring(tx)
    assert shop.rows(f"SELECT state FROM referral_payouts WHERE reward_id = {issued['id']}") == [("exported",)]

    again = shop.api("POST", "/api/v1/referrals/payouts/export")
    assert again.status_code == 409 and again.json().get("code") == "no_open_payouts", (again.status_code,
                                                                                         again.text[:500])


def test_leaderboard_is_pseudonymized_and_optional(make_ref_shop):
    """With the leaderboard on, an advocate's page ranks advocates by confirmed referrals under a pseudonym (initial
    and number): Anna sees herself marked, Cleo sees Anna without her name or address. Switched off, no page shows
    it."""
    shop = make_ref_shop(leaderboard=True)
    shop.delivered_customer("10001", ANNA)
    shop.delivered_customer("10002", CLEO)
    anna = shop.join_api(ANNA.email)
    cleo = shop.join_api(CLEO.email)
    referral, _ = referred_and_delivered(shop, anna["code"])
    shop.wait_for_reward_state(referral["id"], "issued")
    assert shop.wait_for_referral("F-1", ok=lambda r: r["status"] == "confirmed", what="to be confirmed")

    mine = element_text(personal_page(anna["page_url"]), "leaders")
    theirs = element_text(personal_page(cleo["page_url"]), "leaders")
    assert mine is not None and theirs is not None, "no #leaders on the personal pages"
    pseudonym = f"A. #{anna['id']}"
    assert f"{pseudonym}: 1" in mine and "(" in mine, mine
    assert f"{pseudonym}: 1" in theirs and "(" not in theirs, theirs
    for page_text in (mine, theirs):
        for secret in ("Anna", "Berger", ANNA.email, "Cleo"):
            assert secret not in page_text, (secret, page_text)

    shop.put_programme(leaderboard=False)
    assert element_text(personal_page(anna["page_url"]), "leaders") is None


def test_rewards_approved_and_voided_in_the_admin(make_ref_shop):
    """The reward queue on /admin/referrals: a held reward has an approve and a void button. Approving before the
    return window has passed is a readable 409 page that changes nothing; afterwards it issues the reward. Void
    makes the other one void, and its buttons are gone."""
    shop = make_ref_shop(auto_approve=False)
    first, second, held = two_held_rewards(shop)

    url = shop.srv.url("/admin/referrals")

    def press(reward_id: int, action: str) -> requests.Response:
        page = shop.admin.get(url, timeout=15).text
        target = f"/admin/referrals/rewards/{reward_id}"
        assert f'action="{target}"' in page, f"no form for reward {reward_id} on the admin page"
        csrf = page.split('name="_csrf" value="', 1)[1].split('"', 1)[0]
        return shop.admin.post(shop.srv.url(target), data={"_csrf": csrf, "action": action}, timeout=15,
                               allow_redirects=False)

    early = press(held[0]["id"], "approve")
    assert early.status_code == 409 and "text/html" in early.headers["Content-Type"], (early.status_code,
                                                                                       early.text[:500])
    assert shop.wait_for_reward_state(first["id"], "held")["id"] == held[0]["id"]

    def approved():
        r = press(held[0]["id"], "approve")
        return r if r.status_code in (302, 303) else None

    wait_until(approved, 20, "the return window to pass", interval=0.5)
    assert shop.wait_for_reward_state(first["id"], "issued")["voucher_code"]
    voided = press(held[1]["id"], "void")
    assert voided.status_code in (302, 303), (voided.status_code, voided.text[:500])
    assert sorted(r["state"] for r in shop.rewards()) == ["issued", "void"], shop.rewards()
    page = shop.admin.get(url, timeout=15).text
    assert f'action="/admin/referrals/rewards/{held[1]["id"]}"' not in page, "a void reward still has buttons"
