"""Helpers for the lead magnet tests (tests/leads): a started shop (tests/reviews' Shop) with
lead magnet calls, visitors signing up through the landing page like a browser without JS,
the DOI and gift links in the mails, and the rows behind them.

No pytest fixtures here (see conftest.py); plain functions and one class. The HTTP contract
these helpers drive is /tmp/leads/SPEC.md (issue 5).
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import re
import time
from dataclasses import dataclass
from email.message import EmailMessage
from html.parser import HTMLParser
from typing import Optional
from urllib.parse import urljoin, urlsplit

import requests

from tests.browser.admin_helpers import wait_until
from tests.reviews.reviewtools import Form, Shop, element_text, parse_form, sql_text, submit_form, text_part

CONSENT_TEXT = (
    "Ja, ich möchte den Newsletter der Kaffeerösterei Bohnenglück mit Röst-Tipps und Angeboten per E-Mail "
    "erhalten. Abmeldung jederzeit über den Link in jeder E-Mail."
)
CONSENT_TEXT_V2 = (
    "Ja, ich möchte den Newsletter der Kaffeerösterei Bohnenglück (Röst-Tipps, Rezepte, Angebote) höchstens "
    "zweimal im Monat per E-Mail erhalten. Abmeldung jederzeit."
)
# The user agent of every requests-based visitor: distinctive, so that a proof (or its absence
# after erasure) can be checked for it.
VISITOR_AGENT = "LeadTestVisitor/1.0 (pytest; Reciprocity issue 5)"
FILE_NAME = "Kaffee-Ratgeber-für-Einsteiger.pdf"

_TOKEN_CHARS = r"[A-Za-z0-9_\-.~%]+"


def magnet_payload(slug: str, **overrides) -> dict:
    """A complete magnet request (SPEC.md), a file gift in German unless overridden."""
    payload = {
        "slug": slug,
        "name": "Kaffee-Ratgeber",
        "locale": "de",
        "headline": "Der Kaffee-Ratgeber für Einsteiger",
        "body": "Zwölf Seiten über Bohnen, Mahlgrad und Brühtemperatur. Garantiert kein Spam.",
        "image_url": None,
        "gift_kind": "file",
        "gift_title": "Kaffee-Ratgeber (PDF)",
        "consent_text": CONSENT_TEXT,
        "ask_name": True,
        "fields": [],
        "allowed_origins": [],
        "unit_cost_minor": 150,
        "fixed_cost_minor": 0,
        "currency": "EUR",
        "download_link_seconds": 604800,
        "pending_seconds": 2592000,
        "resend_window_seconds": 600,
        "min_fill_seconds": 1,
        "voucher_low_water": 20,
        "follow_ups": [],
        "active": True,
    }
    payload.update(overrides)
    return payload


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- the shop


@dataclass
class LeadShop(Shop):
    """tests/reviews' Shop (server, write API key, owner session) with the lead magnet API."""

    def ok(self, method: str, path: str, status: int | tuple = 200, **kwargs) -> requests.Response:
        r = self.api(method, path, **kwargs)
        want = status if isinstance(status, tuple) else (status,)
        assert r.status_code in want, f"{method} {path} -> {r.status_code} (expected {want})\n{r.text[:2000]}"
        return r

    # ---- magnets

    def create_magnet(self, slug: str, **fields) -> dict:
        """POST /api/v1/lead-magnets with magnet_payload(slug, **fields); returns the magnet JSON."""
        magnet = self.ok("POST", "/api/v1/lead-magnets", 201, json=magnet_payload(slug, **fields)).json()
        assert magnet["slug"] == slug and magnet.get("id"), magnet
        assert magnet.get("landing_url", "").startswith(self.srv.base_url + "/lm/"), magnet.get("landing_url")
        return magnet

    def put_magnet(self, magnet_id: int, payload: dict) -> dict:
        return self.ok("PUT", f"/api/v1/lead-magnets/{magnet_id}", json=payload).json()

    def magnet(self, magnet_id: int) -> dict:
        return self.ok("GET", f"/api/v1/lead-magnets/{magnet_id}").json()

    def upload_file(self, magnet_id: int, filename: str, data: bytes, content_type: str = "application/pdf") -> dict:
        return self.ok("PUT", f"/api/v1/lead-magnets/{magnet_id}/file", params={"filename": filename}, data=data,
                       headers={"Content-Type": content_type}, timeout=60).json()

    def add_vouchers(self, magnet_id: int, **body) -> dict:
        return self.ok("POST", f"/api/v1/lead-magnets/{magnet_id}/vouchers", json=body).json()

    def stats(self, magnet_id: int) -> dict:
        return self.ok("GET", f"/api/v1/lead-magnets/{magnet_id}/stats").json()

    # ---- contacts

    def contact_id(self, address: str) -> int:
        """The id of the contact with this address, through GET /api/v1/contacts?q= (the existing
        contacts API; its search parameter is `q`)."""
        items = self.ok("GET", "/api/v1/contacts", params={"q": address}).json()["items"]
        ids = [c["id"] for c in items if c["email"].lower() == address.lower()]
        assert len(ids) == 1, f"expected one contact {address}, got {items}"
        return ids[0]

    def proof(self, contact_id: int) -> dict:
        return self.ok("GET", f"/api/v1/contacts/{contact_id}/consent-proof").json()

    # ---- database

    def count(self, sql: str) -> int:
        return int(self.rows(sql)[0][0])

    def contacts_with(self, address: str) -> int:
        return self.count(f"SELECT COUNT(*) FROM contacts WHERE email_normalized = '{sql_text(address.lower())}'")

    def outbox(self, recipient: str, kind: Optional[str] = None) -> list[tuple]:
        """(id, kind, state, subject, message_id) of the outbox rows to `recipient`."""
        where = f"recipient = '{sql_text(recipient)}'" + (f" AND kind = '{sql_text(kind)}'" if kind else "")
        return self.rows(f"SELECT id, kind, state, subject, message_id FROM outbox WHERE {where} ORDER BY id")

    def stored_message(self, outbox_id: int) -> EmailMessage:
        """The mail as rendered into the outbox, parsed. Read as hex: psql's unaligned output would
        split a multi-line text across rows."""
        expr = "hex(message)" if self.srv.engine == "sqlite" else "encode(convert_to(message, 'UTF8'), 'hex')"
        rows = self.rows(f"SELECT {expr} FROM outbox WHERE id = {int(outbox_id)}")
        assert rows and rows[0][0], f"outbox row {outbox_id} has no stored message"
        raw = bytes.fromhex(str(rows[0][0]))
        return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]

    def wait_for_mails(self, recipient: str, kind: str, n: int = 1, *, sent: bool = False,
                       timeout: float = 30.0) -> list[tuple]:
        """Waits until at least `n` outbox rows of `kind` to `recipient` exist (and, with sent=True,
        are sent); returns all of them."""

        def ready():
            rows = self.outbox(recipient, kind)
            good = [r for r in rows if r[2] == "sent"] if sent else rows
            return rows if len(good) >= n else None

        return wait_until(ready, timeout, f"{n} {'sent ' if sent else ''}{kind} mail(s) to {recipient}",
                          describe=lambda: f"outbox to {recipient}: {self.outbox(recipient)}\n"
                                           f"{self.srv.output_tail(30)}")

    def link_in_mail(self, recipient: str, kind: str, route: str, index: int = 0) -> str:
        """The one {base}/{route}/{token} link in the text part of the index-th `kind` mail to `recipient`."""
        rows = self.wait_for_mails(recipient, kind, index + 1)
        return single_link(text_part(self.stored_message(rows[index][0])), self.srv.base_url, route)

    def doi_link(self, recipient: str) -> str:
        return self.link_in_mail(recipient, "doi_confirmation", "doi")


# --------------------------------------------------------------------------- mail


def links(text: str, base_url: str, route: str) -> list[str]:
    """The distinct links {base_url}/{route}/{token} in `text`, in order."""
    found = re.findall(re.escape(base_url) + "/" + route + "/" + _TOKEN_CHARS, text)
    return list(dict.fromkeys(link.rstrip(".") for link in found))


def single_link(text: str, base_url: str, route: str) -> str:
    found = links(text, base_url, route)
    assert len(found) == 1, f"expected one {base_url}/{route}/<token> link, found {found}\n{text}"
    return found[0]


def message_text(raw: str) -> str:
    """The decoded text part of a raw RFC 5322 message given as a string (e.g. a proof's
    confirmation_mail.message)."""
    msg = email.message_from_bytes(raw.encode("utf-8"), policy=email.policy.default)
    return text_part(msg)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- visitors


def visitor() -> requests.Session:
    s = requests.Session()
    s.headers["User-Agent"] = VISITOR_AGENT
    return s


def open_landing(session: requests.Session, magnet: dict, **kwargs) -> tuple[requests.Response, Form]:
    """GET the hosted landing page; returns it and its #lead-form."""
    kwargs.setdefault("timeout", 15)
    page = session.get(magnet["landing_url"], **kwargs)
    assert page.status_code == 200, (magnet["landing_url"], page.status_code, page.text[:1500])
    form = parse_form(page.text, "lead-form")
    assert form.method == "post", form.method
    assert form.get("form_token"), f"no form_token in #lead-form: {form.fields}"
    assert form.get("website") == "", "the honeypot `website` must start empty"
    return page, form


def fill(form: Form, address: str, first_name: Optional[str] = "Erika", **fields: str) -> Form:
    form.set("email", address)
    if first_name is not None:
        form.set("first_name", first_name)
    for name, value in fields.items():
        form.set(name, value)
    return form


def post_form(session: requests.Session, magnet: dict, form: Form, **kwargs) -> requests.Response:
    """POSTs the #lead-form as a browser without JS would (to its action, relative to the landing page)."""
    return submit_form(session, magnet["landing_url"], form, **kwargs)


def wait_out_min_fill(magnet: dict, margin: float = 0.3) -> None:
    """Lets the form's minimum fill time pass, as a person filling it in would. The server measures the time
    since the form token was issued, so there is no condition to poll: the wait is the rule under test."""
    time.sleep(magnet["min_fill_seconds"] + margin)


def signup(magnet: dict, address: str, first_name: Optional[str] = "Erika", *,
           session: Optional[requests.Session] = None, headers: Optional[dict] = None,
           **fields: str) -> requests.Response:
    """Loads the landing page, fills it in, waits a little longer than min_fill_seconds (the rule a
    human passes by reading), and posts it (with extra `headers`). Returns the POST's response."""
    s = session or visitor()
    _, form = open_landing(s, magnet)
    fill(form, address, first_name, **fields)
    wait_out_min_fill(magnet)
    return post_form(s, magnet, form, headers=headers or {})


def assert_pending(r: requests.Response) -> str:
    """A 200 page with #lead-pending; returns its text."""
    assert r.status_code == 200, (r.status_code, r.text[:2000])
    text = element_text(r.text, "lead-pending")
    assert text, f"no #lead-pending in the answer\n{r.text[:2000]}"
    return text


def confirm(session: requests.Session, doi_link: str) -> str:
    """Opens the DOI page, posts its #doi-form; returns the absolute /gift/ URL it redirects to (303)."""
    page = session.get(doi_link, timeout=15)
    assert page.status_code == 200, (doi_link, page.status_code, page.text[:1500])
    assert 'id="doi-confirm"' in page.text, f"no #doi-confirm button on the DOI page\n{page.text[:1500]}"
    r = submit_form(session, doi_link, parse_form(page.text, "doi-form"), allow_redirects=False)
    assert r.status_code == 303, (r.status_code, r.headers, r.text[:1500])
    gift = urljoin(doi_link, r.headers.get("Location", ""))
    assert urlsplit(gift).path.startswith("/gift/"), f"DOI confirmation redirects to {gift!r}, not /gift/<token>"
    return gift


# --------------------------------------------------------------------------- HTML


def form_around(html: str, element_id: str, form_id: str = "__enclosing") -> Form:
    """The form that contains the element with id `element_id`, for forms without an id of their own."""
    at = html.find(f'id="{element_id}"')
    assert at >= 0, f"no element #{element_id}\n{html[:2000]}"
    start = html.rfind("<form", 0, at)
    assert start >= 0 and html.rfind("</form", 0, at) < start, f"#{element_id} is not inside a <form>"
    return parse_form(html[:start] + f'<form id="{form_id}"' + html[start + len("<form"):], form_id)


def first_form(html: str, form_id: str = "__first") -> Form:
    """The first <form> of an HTML snippet (e.g. a magnet's embed_html)."""
    start = html.find("<form")
    assert start >= 0, f"no <form> in\n{html[:2000]}"
    return parse_form(html[:start] + f'<form id="{form_id}"' + html[start + len("<form"):], form_id)


def attributes_of(html: str, css_class: str) -> list[dict[str, str]]:
    """The attributes of every element whose class list has `css_class`, in document order."""

    class P(HTMLParser):
        def __init__(self):
            super().__init__(convert_charrefs=True)
            self.found: list[dict[str, str]] = []

        def handle_starttag(self, tag, attrs):
            a = {k: (v or "") for k, v in attrs}
            if css_class in a.get("class", "").split():
                self.found.append(a)

    p = P()
    p.feed(html)
    return p.found


def element_attribute(html: str, element_id: str, name: str) -> Optional[str]:
    m = re.search(r"<[a-zA-Z0-9]+\b[^>]*\bid=\"%s\"[^>]*>" % re.escape(element_id), html)
    if not m:
        return None
    a = re.search(r"\b%s=\"([^\"]*)\"" % re.escape(name), m.group(0))
    return a.group(1) if a else None


_MASKS = [
    (re.compile(r'(<input\b[^>]*\btype="hidden"[^>]*\bvalue=")[^"]*(")'), r"\1…\2"),
    (re.compile(r'(<input\b[^>]*\bvalue=")[^"]*("[^>]*\btype="hidden")'), r"\1…\2"),
    (re.compile(r'\bnonce="[^"]*"'), 'nonce="…"'),
    (re.compile(r'(<meta\b[^>]*\bname="csrf[^"]*"[^>]*\bcontent=")[^"]*(")'), r"\1…\2"),
]


def masked(html: str, *addresses: str) -> str:
    """The page with form tokens, nonces and CSRF-like values masked, and the given addresses
    replaced by a placeholder."""
    for rx, repl in _MASKS:
        html = rx.sub(repl, html)
    for a in addresses:
        html = html.replace(a, "ADDRESS")
    return html
