"""Helpers for the referral programme tests (tests/referrals, issue 6; contract /tmp/refs/SPEC.md).

A RefShop is tests/leads' LeadShop (server, write API key, owner session, outbox and DB helpers) with the
referral API: the programme, orders carrying referral fields, referrals and rewards, and polling on them.
Customers join through the API (`join_api`), the public join form (`open_join`, posted by the test after
the minimum fill time) or in Chromium.

No pytest fixtures here (see conftest.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Callable, Optional
from urllib.parse import urljoin, urlsplit

import requests

from tests.browser.admin_helpers import wait_until
from tests.leads.leadtools import LeadShop, element_attribute, single_link
from tests.reviews.reviewtools import (SLUG, Customer, Form, Item, element_text, parse_form, submit_form,
                                      text_part)

TARGET = "https://shop.example/"
INCENTIVE = "10 € Rabatt auf die erste Bestellung"
WINDOW = 3  # return_window_seconds of every test: short, the rule is the same
MIN_FILL = 2.3  # the join form's minimum fill time is 2 s (FormGuard); a person takes a little longer
PAYER_IBAN = "DE89370400440532013000"
KAFFEE = Item("KAF-500", "Espresso Bohnen 500 g", "24.90")
MUEHLE = Item("MUE-1", "Handmühle", "49.00")

CODE_RX = re.compile(r"^[A-Z]{2,8}-[ABCDEFGHJKMNPQRSTUVWXYZ23456789]{4}$")
_PAGE_TOKEN = r"[A-Za-z0-9_\-.~%]+"


def programme(**overrides) -> dict:
    """An active programme: voucher of 10 € for the advocate, 3 s return window."""
    p: dict = {
        "active": True,
        "target_url": TARGET,
        "return_window_seconds": WINDOW,
        "advocate_reward": {"type": "voucher", "value_minor": 1000, "voucher_prefix": "DANKE"},
        "friend_reward": None,
        "friend_incentive": INCENTIVE,
        "new_customers_only": True,
        "auto_approve": True,
    }
    p.update(overrides)
    return p


def order_body(customer: Customer, items: list[Item], *, status: str = "placed", **extra) -> dict:
    """A PUT /api/v1/orders body (like tests/reviews' order_payload, without consents) plus referral fields
    (referral_code, coupon_code, referred_by, payment_fingerprint, client_ip, client_user_agent,
    shipping_address, ...)."""
    total = sum(Decimal(i.unit_price) for i in items)
    body: dict = {
        "customer": {"email": customer.email, "first_name": customer.first_name, "last_name": customer.last_name,
                     "locale": "de-DE"},
        "currency": "EUR",
        "items": [{"sku": i.sku, "name": i.name, "quantity": 1, "unit_price": i.unit_price,
                   **({"category": i.category} if i.category else {})} for i in items],
        "totals": {"total": f"{total:.2f}"},
        "status": status,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    return body


def address(street: str, name: str = "Anna Berger") -> dict:
    return {"name": name, "street": street, "postal_code": "10115", "city": "Berlin", "country": "DE"}


@dataclass
class RefShop(LeadShop):
    """LeadShop with the referral API."""

    # ---- programme

    def put_programme(self, **overrides) -> dict:
        body = programme(**overrides)
        got = self.ok("PUT", "/api/v1/referrals/programme", json=body).json()
        for key in ("active", "target_url", "return_window_seconds"):
            assert got[key] == body[key], f"programme {key}: sent {body[key]!r}, got {got[key]!r}\n{got}"
        return got

    # ---- orders

    def order(self, external_id: str, body: dict, status: int | tuple = (200, 201)) -> dict:
        r = self.ok("PUT", f"/api/v1/orders/{external_id}", status, json=body)
        return r.json()

    def delivered_customer(self, external_id: str, customer: Customer, items: Optional[list[Item]] = None,
                           **extra) -> dict:
        """A customer with a delivered order: who may join the programme."""
        return self.order(external_id, order_body(customer, items or [KAFFEE], status="delivered", **extra))

    # ---- advocates

    def join_api(self, email: str, status: int = 201) -> dict:
        return self.ok("POST", "/api/v1/referrals/advocates", status, json={
            "email": email, "consent_text": "Ja, ich mache beim Empfehlungsprogramm mit.", "ip": "203.0.113.9",
            "user_agent": "ShopBackend/1.0"}).json()

    def advocates_count(self) -> int:
        return self.count("SELECT COUNT(*) FROM advocates")

    # ---- referrals and rewards

    def referrals(self) -> list[dict]:
        return self.ok("GET", "/api/v1/referrals").json()["items"]

    def referral_of(self, external_id: str) -> Optional[dict]:
        found = [r for r in self.referrals() if r["order_external_id"] == external_id]
        assert len(found) <= 1, f"{len(found)} referrals for order {external_id}: {found}"
        return found[0] if found else None

    def wait_for_referral(self, external_id: str, timeout: float = 20.0,
                          ok: Callable[[dict], bool] = lambda r: True, what: str = "") -> dict:
        """Polls GET /api/v1/referrals until the referral of the order exists (and `ok` holds)."""
        def ready():
            r = self.referral_of(external_id)
            return r if r is not None and ok(r) else None

        return wait_until(ready, timeout, f"the referral of order {external_id} {what}".strip(), interval=0.2,
                          describe=lambda: f"referrals: {self.referrals()}\n{self.srv.output_tail(30)}")

    def rewards(self) -> list[dict]:
        return self.ok("GET", "/api/v1/referrals/rewards").json()["items"]

    def rewards_of(self, referral_id: int) -> list[dict]:
        return [r for r in self.rewards() if r.get("referral_id") == referral_id]

    def wait_for_reward_state(self, referral_id: int, state: str, timeout: float = 30.0) -> dict:
        """Waits until the (one) advocate reward of the referral is in `state`; returns it."""
        def ready():
            rs = [r for r in self.rewards_of(referral_id) if r["beneficiary"] == "advocate"]
            return rs[0] if len(rs) == 1 and rs[0]["state"] == state else None

        return wait_until(ready, timeout, f"the reward of referral {referral_id} to be {state}", interval=0.2,
                          describe=lambda: f"rewards: {self.rewards()}\nreferrals: {self.referrals()}\n"
                                           f"{self.srv.output_tail(30)}")

    def wait_for_release(self, reward_id: int, timeout: float = 30.0) -> None:
        """Waits until the worker has run the reward's release job (due at the end of its return window)."""
        sql = ("SELECT COUNT(*) FROM jobs WHERE kind = 'referrals.release' AND state = 'succeeded' "
               f"AND payload = '{{\"reward_id\":{int(reward_id)}}}'")
        wait_until(lambda: self.count(sql) >= 1, timeout, f"the release job of reward {reward_id}", interval=0.2,
                   describe=lambda: f"rewards: {self.rewards()}\n{self.srv.output_tail(30)}")

    def mail_text(self, outbox_id: int) -> str:
        return text_part(self.stored_message(outbox_id))


# --------------------------------------------------------------------------- the public pages


def join_url(shop: RefShop) -> str:
    return shop.srv.url(f"/join/{SLUG}")


def open_join(session: requests.Session, shop: RefShop):
    page = session.get(join_url(shop), timeout=15)
    assert page.status_code == 200, (page.status_code, page.text[:1500])
    form = parse_form(page.text, "join-form")
    assert form.method == "post", form.method
    assert form.get("form_token"), f"no form_token in #join-form: {form.fields}"
    assert form.get("website") == "", "the honeypot `website` must start empty"
    return page, form


def loaded_join(shop: RefShop, **fields: str) -> tuple[requests.Session, Form]:
    """A fresh visitor who loaded /join/shop and filled in `fields` (email, order_number, consent="yes", ...);
    post it with `post_join` (after MIN_FILL, or at once to be too fast)."""
    s = requests.Session()
    _, form = open_join(s, shop)
    for name, value in fields.items():
        form.set(name, value)
    return s, form


def post_join(shop: RefShop, session: requests.Session, form: Form) -> requests.Response:
    """POSTs the #join-form as a browser without JS would; the answer is not followed."""
    return submit_form(session, join_url(shop), form, allow_redirects=False)


def page_token(page_url: str) -> str:
    path = urlsplit(page_url).path
    assert re.fullmatch(r"/a/" + _PAGE_TOKEN, path), f"not a personal page link: {page_url!r}"
    return path[len("/a/"):]


def joined_page_url(shop: RefShop, r: requests.Response) -> str:
    """The absolute /a/{token} URL a successful join redirects to (303)."""
    assert r.status_code == 303, (r.status_code, r.headers, r.text[:1500])
    url = urljoin(shop.srv.base_url + "/", r.headers.get("Location", ""))
    page_token(url)
    return url


def personal_page(url: str, **params) -> str:
    r = requests.get(url, params=params or None, timeout=15)
    assert r.status_code == 200, (url, r.status_code, r.text[:1500])
    return r.text


def welcome_links(shop: RefShop, recipient: str) -> tuple[str, str]:
    """(page link, share link) from the one referral_welcome mail to `recipient`."""
    [row] = shop.wait_for_mails(recipient, "referral_welcome")
    text = shop.mail_text(row[0])
    return single_link(text, shop.srv.base_url, "a"), single_link(text, shop.srv.base_url, "r")


__all__ = [
    "CODE_RX", "Customer", "INCENTIVE", "Item", "KAFFEE", "MIN_FILL", "MUEHLE", "PAYER_IBAN", "RefShop", "TARGET",
    "WINDOW", "address", "element_attribute", "element_text", "join_url",
    "joined_page_url", "loaded_join", "open_join", "post_join", "order_body", "page_token", "personal_page", "programme", "welcome_links",
]
