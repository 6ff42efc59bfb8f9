"""Helpers for the end-to-end review tests (tests/reviews): a started shop with an
API key and an owner session, orders, review settings, the review links in a mail,
HTML forms, and polling.

No pytest fixtures here (see conftest.py); plain functions and one small class.
"""

from __future__ import annotations

import email
import email.policy
import re
import subprocess
import time
from dataclasses import dataclass, field
from decimal import Decimal
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urljoin

import requests

from tests.browser.admin_helpers import cli, db_rows, wait_until
from tests.conftest import REPO_ROOT, ReciprocityServer

SLUG = "shop"  # the first-run workspace
# Google's Product Review Feed 2.2 schema, vendored so that a fresh clone validates offline.
FEED_XSD = REPO_ROOT / "Tests" / "ReciprocityCoreTests" / "Fixtures" / "google-product-reviews-2.2.xsd"

CONSENT_TEXT = "Ja, bitten Sie mich nach der Lieferung per E-Mail um eine Bewertung."
DISCLOSURE = (
    "Bewertungen stammen von Kundinnen und Kunden, die das Produkt bei uns gekauft haben; "
    "wir prüfen das anhand der Bestellung. Negative Bewertungen veröffentlichen wir ebenso."
)
_API_KEY = re.compile(r"^(rcp_\S+)", re.M)


def review_subject(external_id: str) -> str:
    """The subject of a review request in German, Sie form (the default)."""
    return f"Wie gefällt Ihnen Ihre Bestellung {external_id}?"


# --------------------------------------------------------------------------- polling




# --------------------------------------------------------------------------- the shop


@dataclass(frozen=True)
class Item:
    sku: str
    name: str
    unit_price: str = "12.90"
    category: Optional[str] = None


@dataclass(frozen=True)
class Customer:
    email: str
    first_name: str = "Erika"
    last_name: str = "Muster"

    @property
    def display_name(self) -> str:
        """The default name shown with a review: "Vorname N."."""
        return f"{self.first_name} {self.last_name[0]}."


@dataclass
class Shop:
    """A started server with the first-run workspace "shop", an API key with write
    scope, and a requests session of the owner (logged in, password changed)."""

    srv: ReciprocityServer
    key: str
    admin: requests.Session
    settings: dict = field(default_factory=dict)

    # ---- API

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 15)
        headers = dict(kwargs.pop("headers", {}) or {})
        headers["Authorization"] = f"Bearer {self.key}"
        return requests.request(method, self.srv.url(path), headers=headers, **kwargs)

    def put_review_settings(self, **fields) -> dict:
        r = self.api("PUT", "/api/v1/reviews/settings", json=fields)
        assert r.status_code == 200, f"PUT /api/v1/reviews/settings {fields} -> {r.status_code}\n{r.text[:2000]}"
        self.settings = r.json()
        return self.settings

    def put_order(self, external_id: str, customer: Customer, items: list[Item], *, status: str = "delivered",
                  consent: bool = True) -> dict:
        """PUT /api/v1/orders/{external_id}; returns the order as answered (with contact_id)."""
        r = self.api("PUT", f"/api/v1/orders/{external_id}",
                     json=order_payload(customer, items, status=status, consent=consent))
        assert r.status_code in (200, 201), f"PUT order {external_id} -> {r.status_code}\n{r.text[:2000]}"
        return r.json()["order"]

    # ---- database

    def rows(self, sql: str) -> list[tuple]:
        return db_rows(self.srv, sql)

    def review_mails(self, recipient: str) -> list[tuple]:
        """(id, state, subject, message_id) of the outbox rows of kind review_request to `recipient`."""
        return self.rows(
            "SELECT id, state, subject, message_id FROM outbox "
            f"WHERE kind = 'review_request' AND recipient = '{sql_text(recipient)}' ORDER BY id"
        )

    def review_requests(self, external_id: str) -> list[tuple]:
        """(state, skip_reason) of the review_requests rows of one order."""
        return self.rows(
            "SELECT rr.state, rr.skip_reason FROM review_requests rr JOIN orders o ON o.id = rr.order_id "
            f"WHERE o.external_id = '{sql_text(external_id)}' ORDER BY rr.id"
        )

    def wait_for_sent_review_mail(self, recipient: str, timeout: float = 60.0) -> tuple:
        """Waits until the one review request to `recipient` is in the outbox as sent; returns its row."""

        def sent():
            rows = self.review_mails(recipient)
            return rows if any(r[1] == "sent" for r in rows) else None

        rows = wait_until(sent, timeout, f"a sent review_request to {recipient} in the outbox",
                          describe=lambda: f"outbox rows: {self.review_mails(recipient)}\n{self.srv.output_tail(30)}")
        assert len(rows) == 1, f"expected one review request mail to {recipient}, got {rows}"
        return rows[0]

    def stored_message(self, outbox_id: int) -> EmailMessage:
        """The rendered mail as stored in the outbox (unsigned), parsed."""
        rows = self.rows(f"SELECT message FROM outbox WHERE id = {int(outbox_id)}")
        assert rows and rows[0][0], f"outbox row {outbox_id} has no stored message"
        raw = rows[0][0]
        return email.message_from_bytes(raw.encode("utf-8"), policy=email.policy.default)  # type: ignore[return-value]

    def review_links_of(self, recipient: str, items: list[Item]) -> dict[str, str]:
        """Waits for the review request to `recipient` and returns {sku: review link} from its text part."""
        outbox_id = self.wait_for_sent_review_mail(recipient)[0]
        return review_links(text_part(self.stored_message(outbox_id)), self.srv.base_url, items)


def order_payload(customer: Customer, items: list[Item], *, status: str = "delivered", consent: bool = True) -> dict:
    total = sum(Decimal(i.unit_price) for i in items)
    payload: dict = {
        "customer": {"email": customer.email, "first_name": customer.first_name, "last_name": customer.last_name,
                     "locale": "de-DE"},
        "currency": "EUR",
        "items": [
            {"sku": i.sku, "name": i.name, "quantity": 1, "unit_price": i.unit_price,
             **({"category": i.category} if i.category else {})}
            for i in items
        ],
        "totals": {"total": f"{total:.2f}"},
        "status": status,
    }
    if consent:
        payload["consents"] = [{"purpose": "review_request", "text": CONSENT_TEXT}]
    return payload


def sql_text(value: str) -> str:
    return value.replace("'", "''")


def create_api_key(srv: ReciprocityServer, name: str = "reviews-tests") -> str:
    proc = cli(srv, "apikey", "create", "--workspace", SLUG, "--name", name, "--scope", "write")
    assert proc.returncode == 0, f"apikey create exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    m = _API_KEY.search(proc.stdout)
    assert m, f"no rcp_ key in the output of `apikey create`:\n{proc.stdout}"
    return m.group(1)


def quiet_hours_off(srv: ReciprocityServer, admin: requests.Session) -> None:
    """Sets quiet hours to start == end (off) through the admin's mail settings form, so that
    review mails are not held until 8:00 when the tests run at night."""
    page = admin.get(srv.url("/admin/mail"), timeout=10)
    assert page.status_code == 200, page.status_code
    form = parse_form(page.text, "mail-settings")
    form.set("quiet_start", "0")
    form.set("quiet_end", "0")
    r = admin.post(srv.url(form.action or "/admin/mail/settings"), data=form.data(), allow_redirects=False, timeout=10)
    assert r.status_code == 303 and "done=mail_settings" in r.headers.get("Location", ""), (
        r.status_code, r.headers, r.text[:1000])
    again = parse_form(admin.get(srv.url("/admin/mail"), timeout=10).text, "mail-settings")
    assert (again.get("quiet_start"), again.get("quiet_end")) == ("0", "0"), again.fields


# --------------------------------------------------------------------------- mail


def text_part(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain",))
    assert part is not None, "the mail has no text/plain part"
    return part.get_content()


def review_links(text: str, base_url: str, items: list[Item]) -> dict[str, str]:
    """{sku: link} for the links {base_url}/review/{token} in a mail's text part: one per item,
    in the order the items' names appear in the text."""
    links = re.findall(re.escape(base_url) + r"/review/[A-Za-z0-9_\-.~%]+", text)
    distinct = list(dict.fromkeys(link.rstrip(".") for link in links))  # a sentence's full stop is no part of it
    assert len(distinct) == len(items), (
        f"expected {len(items)} distinct review links ({base_url}/review/<token>), found {distinct}\n{text}")
    for item in items:
        assert item.name in text, f"product {item.name!r} not named in the mail\n{text}"
    by_position = sorted(items, key=lambda i: text.index(i.name))
    return {item.sku: link for item, link in zip(by_position, distinct)}


def token_of(link: str) -> str:
    return link.rsplit("/review/", 1)[1]


def tampered(token: str, position: int) -> str:
    """The token with the character at `position` replaced by another base64url character
    (never the separator dot, and never the last character, whose low bits may be ignored)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    i = position
    while token[i] == "." or i == len(token) - 1:
        i = (i + 1) % (len(token) - 1)
    old = token[i]
    new = alphabet[(alphabet.find(old) + 17) % len(alphabet)] if old in alphabet else "A"
    assert new != old
    return token[:i] + new + token[i + 1:]


# --------------------------------------------------------------------------- HTML forms


class Form:
    """A form of a page: action, method and its successful controls (name, value)."""

    def __init__(self, form_id: str, action: str, method: str, enctype: str):
        self.id = form_id
        self.action = action
        self.method = method
        self.enctype = enctype
        self.fields: list[list[str]] = []  # [name, value], in document order
        self.radios: dict[str, list[tuple[str, bool]]] = {}  # name -> [(value, checked)]
        self.files: list[str] = []  # names of file inputs

    def get(self, name: str) -> Optional[str]:
        for n, v in self.fields:
            if n == name:
                return v
        checked = [v for v, c in self.radios.get(name, []) if c]
        return checked[0] if checked else None

    def set(self, name: str, value: str) -> None:
        if name in self.radios:
            values = [v for v, _ in self.radios[name]]
            assert value in values, f"radio {name!r} has no value {value!r} (has {values})"
            self.radios[name] = [(v, v == value) for v, _ in self.radios[name]]
            return
        for pair in self.fields:
            if pair[0] == name:
                pair[1] = value
                return
        self.fields.append([name, value])

    def data(self) -> list[tuple[str, str]]:
        out = [(n, v) for n, v in self.fields]
        for name, options in self.radios.items():
            out += [(name, v) for v, c in options if c]
        return out

    def names(self) -> set[str]:
        return {n for n, _ in self.fields} | set(self.radios) | set(self.files)


class _FormParser(HTMLParser):
    def __init__(self, form_id: str):
        super().__init__(convert_charrefs=True)
        self.form_id = form_id
        self.form: Optional[Form] = None
        self.inside = False
        self.done = False
        self._textarea: Optional[list] = None
        self._select: Optional[str] = None
        self._options: list[tuple[str, bool]] = []

    def handle_starttag(self, tag, attrs):
        a = {k: (v if v is not None else "") for k, v in attrs}
        if tag == "form" and not self.done and a.get("id") == self.form_id:
            self.form = Form(self.form_id, a.get("action", ""), a.get("method", "get").lower(),
                             a.get("enctype", "application/x-www-form-urlencoded").lower())
            self.inside = True
            return
        if not self.inside or self.form is None:
            return
        name = a.get("name")
        if tag == "input" and name:
            kind = a.get("type", "text").lower()
            if kind in ("submit", "button", "image", "reset"):
                return
            if kind == "file":
                self.form.files.append(name)
            elif kind == "radio":
                self.form.radios.setdefault(name, []).append((a.get("value", "on"), "checked" in a))
            elif kind == "checkbox":
                if "checked" in a:
                    self.form.fields.append([name, a.get("value", "on")])
            else:
                self.form.fields.append([name, a.get("value", "")])
        elif tag == "textarea" and name:
            self._textarea = [name, ""]
        elif tag == "select" and name:
            self._select, self._options = name, []
        elif tag == "option" and self._select is not None:
            self._options.append((a.get("value", ""), "selected" in a))

    def handle_data(self, data):
        if self._textarea is not None:
            self._textarea[1] += data

    def handle_endtag(self, tag):
        if not self.inside or self.form is None:
            return
        if tag == "textarea" and self._textarea is not None:
            value = self._textarea[1]
            self.form.fields.append([self._textarea[0], value[1:] if value.startswith("\n") else value])
            self._textarea = None
        elif tag == "select" and self._select is not None:
            chosen = [v for v, s in self._options if s] or [v for v, _ in self._options[:1]]
            if chosen:
                self.form.fields.append([self._select, chosen[0]])
            self._select = None
        elif tag == "form":
            self.inside = False
            self.done = True


def parse_form(html: str, form_id: str) -> Form:
    p = _FormParser(form_id)
    p.feed(html)
    p.close()
    assert p.form is not None, f"no <form id={form_id!r}> in the page:\n{html[:3000]}"
    return p.form


def submit_form(session: requests.Session, page_url: str, form: Form, **kwargs) -> requests.Response:
    """POSTs `form` (to its action, relative to the page) the way a browser without JS would:
    multipart/form-data (with an empty part per file input, as for "no file chosen") when the
    form says so, urlencoded otherwise."""
    assert form.method == "post", f"form {form.id} has method {form.method!r}"
    url = urljoin(page_url, form.action) if form.action else page_url
    kwargs.setdefault("timeout", 30)
    if form.enctype == "multipart/form-data":
        parts = [(n, (None, v)) for n, v in form.data()]
        parts += [(n, ("", b"", "application/octet-stream")) for n in form.files]
        return session.post(url, files=parts, **kwargs)
    return session.post(url, data=form.data(), **kwargs)


def element_text(html: str, element_id: str) -> Optional[str]:
    """The text content (tags stripped, entities decoded, whitespace collapsed) of the element
    with id `element_id`, or None when there is none."""

    class P(HTMLParser):
        def __init__(self):
            super().__init__(convert_charrefs=True)
            self.depth = 0
            self.tag = ""
            self.text: Optional[list[str]] = None

        def handle_starttag(self, tag, attrs):
            if self.depth:
                if tag == self.tag:
                    self.depth += 1
            elif dict(attrs).get("id") == element_id and self.text is None:
                self.tag, self.depth, self.text = tag, 1, []

        def handle_endtag(self, tag):
            if self.depth and tag == self.tag:
                self.depth -= 1

        def handle_data(self, data):
            if self.depth and self.text is not None:
                self.text.append(data)

    p = P()
    p.feed(html)
    return None if p.text is None else " ".join("".join(p.text).split())


# --------------------------------------------------------------------------- the feed


def xmllint_schema(xml: bytes, workdir: Path) -> subprocess.CompletedProcess:
    """`xmllint --noout --schema FEED_XSD` on `xml` (written to a file in `workdir`)."""
    assert FEED_XSD.is_file(), f"the vendored feed schema is missing: {FEED_XSD}"
    path = Path(workdir) / "google-product-reviews.xml"
    path.write_bytes(xml)
    return subprocess.run(["xmllint", "--noout", "--schema", str(FEED_XSD), str(path)],
                          capture_output=True, text=True, timeout=60)
