"""Reviews end to end: a delivered order leads to one review request mail (through
Postfix into the Maildir), the customer reviews a product in headless Chromium
through the link in the mail, and the review shows as a verified purchase in the
product widget (HTML with schema.org JSON-LD, and JSON) and in the Google product
review feed, which validates against the vendored 2.2 schema.

Then, with the mail left in the development outbox (its review links read from
`outbox.message`): the public form refuses invalid input, can be edited and
deleted through the same link; tampered links are 404 and expired ones 410;
the owner can reply to and hide a review; and no page, feed or JSON lets a review's
text run as markup.

Every server gets quiet hours switched off (admin form) and the review settings
`delay_seconds=1` plus a disclosure text (API) before the first order is PUT;
see conftest.py.
"""

from __future__ import annotations

import html
import json
import re
import xml.etree.ElementTree as ET
from email.utils import parseaddr
from urllib.parse import urlsplit

import extruct
import pytest
import requests
from selenium.webdriver.common.by import By

from tests.browser.admin_helpers import by_id, cli, click_and_wait, exists, open_page, text_of
from tests.mail.mailtools import SKIP_MAIL, dkim_verify, parse_dkim_record, smtp_target, wait_for_message
from tests.reviews.reviewtools import (
    DISCLOSURE,
    SLUG,
    Customer,
    Item,
    element_text,
    parse_form,
    review_links,
    review_subject,
    submit_form,
    tampered,
    text_part,
    token_of,
    xmllint_schema,
)

COFFEE = Item("KAF-ETH-250", "Äthiopien Yirgacheffe – Röstung hell", "12.90", "kaffee")
ESPRESSO = Item("KAF-BRA-500", "Brasilien Santos Espresso", "16.50", "kaffee")
SUMMARY_ONE_FOUR = "4,0 von 5 aus 1 Bewertung der letzten 12 Monate"
SUMMARY_ONE_FOUR_EN = "4.0 out of 5 from 1 review in the last 12 months"

REVIEW_JSON_FIELDS = {"id", "rating", "title", "body", "author", "verified", "source", "incentive", "created_at", "reply"}

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
# What must never reach a page, feed or JSON-LD block unescaped.
UNESCAPED = ("<script>alert(1)", "<img src=x")
LD_JSON = re.compile(r"(?is)<script[^>]*application/ld\+json[^>]*>(.*?)</script>")


def widget(sku: str, suffix: str = "") -> str:
    return f"/widgets/{SLUG}/products/{sku}{suffix}"


def feed_path() -> str:
    return f"/feeds/{SLUG}/google-product-reviews.xml"


def widget_json(shop, sku: str) -> dict:
    r = shop.srv.get(widget(sku, "/json"))
    assert r.status_code == 200, (r.status_code, r.text[:1000])
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    return r.json()


def json_ld_nodes(page: str, url: str) -> list[dict]:
    """Every JSON-LD object of the page (top level and inside @graph), as extruct reads them."""
    nodes = []
    for top in extruct.extract(page, base_url=url, syntaxes=["json-ld"])["json-ld"]:
        nodes.append(top)
        nodes.extend(top.get("@graph", []) if isinstance(top, dict) else [])
    return nodes


def as_list(value) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def feed_reviews(xml: bytes) -> list[ET.Element]:
    root = ET.fromstring(xml)
    assert root.tag == "feed", root.tag
    return root.findall("./reviews/review")


def submit_review(session: requests.Session, link: str, *, rating: str, title: str, body: str,
                  display_name: str | None = None) -> requests.Response:
    """Fills the public form of `link` like a browser without JS and posts it."""
    page = session.get(link, timeout=15)
    assert page.status_code == 200, (link, page.status_code, page.text[:1000])
    form = parse_form(page.text, "review-form")
    form.set("rating", rating)
    form.set("title", title)
    form.set("body", body)
    if display_name is not None:
        form.set("display_name", display_name)
    return submit_form(session, link, form)


def assert_thanked(r: requests.Response) -> None:
    assert r.status_code == 200, (r.status_code, r.url, r.text[:2000])
    assert element_text(r.text, "review-thanks") is not None, f"no #review-thanks after posting\n{r.text[:2000]}"


# =========================================================================== the whole way, through Postfix


@pytest.mark.skipif(SKIP_MAIL, reason="RECIPROCITY_TEST_SKIP_MAIL=1")
def test_delivered_order_to_verified_review_in_widget_and_feed(make_shop, browser, engine, tmp_path):
    shop = make_shop(engine, smtp=True)
    srv = shop.srv
    dkim = cli(srv, "dkim", "generate", "--workspace", SLUG, "--domain", "example.com", "--selector", "rev1",
               "--algorithm", "ed25519-sha256")
    assert dkim.returncode == 0, dkim.stderr
    record = parse_dkim_record(dkim.stdout)

    customer = Customer("erika.muster@kunde.example")
    items = [COFFEE, ESPRESSO]
    external_id = "B-10042"
    order = shop.put_order(external_id, customer, items)
    assert order["status"] == "delivered", order

    # One mail for the order, sent: in the outbox and, through Postfix, in the Maildir.
    _, _, subject, message_id = shop.wait_for_sent_review_mail(customer.email)
    assert subject == review_subject(external_id), subject
    got = wait_for_message(smtp_target(), f"<{message_id.strip('<>')}>")
    msg = got.message
    assert str(msg["Subject"]) == review_subject(external_id), msg["Subject"]
    assert parseaddr(str(msg["To"]))[1] == customer.email, msg["To"]
    ok, diag = dkim_verify(got.raw, record)
    assert ok, diag
    links = review_links(text_part(msg), srv.base_url, items)

    # The customer reviews the coffee in the browser: 4 stars (by the label), a title and a text.
    title = "Fruchtig und klar"
    body = "Schöne Säure, duftet nach Beeren. Als Filterkaffee für mich der beste seit Langem."
    open_page(browser, srv, links[COFFEE.sku])
    assert COFFEE.name in browser.find_element(By.TAG_NAME, "body").text, "the form does not name the product"
    form = by_id(browser, "review-form")
    assert form.get_attribute("method").lower() == "post"
    assert form.get_attribute("enctype") == "multipart/form-data"
    assert by_id(browser, "display_name").get_attribute("value") == customer.display_name
    assert browser.find_elements(By.CSS_SELECTOR, "#review-form input[type=file][name=photos][multiple]")
    for n in range(1, 6):
        assert browser.find_elements(By.CSS_SELECTOR, f"label[for='rating-{n}']"), f"no label for rating-{n}"
    browser.find_element(By.CSS_SELECTOR, "label[for='rating-4']").click()
    assert by_id(browser, "rating-4").is_selected()
    by_id(browser, "title").send_keys(title)
    by_id(browser, "body").send_keys(body)
    click_and_wait(browser, by_id(browser, "submit-review"))
    assert exists(browser, By.ID, "review-thanks"), browser.page_source[:2000]
    assert by_id(browser, "review-thanks").get_attribute("role") == "status"

    # The same link opens the review again, prefilled for editing.
    open_page(browser, srv, links[COFFEE.sku])
    assert by_id(browser, "rating-4").is_selected()
    assert by_id(browser, "title").get_attribute("value") == title
    assert by_id(browser, "body").get_attribute("value") == body

    # The product widget shows it as a verified purchase, with the summary and the disclosure.
    open_page(browser, srv, widget(COFFEE.sku))
    assert text_of(browser, "review-summary") == SUMMARY_ONE_FOUR
    assert DISCLOSURE in text_of(browser, "review-disclosure"), text_of(browser, "review-disclosure")
    articles = browser.find_elements(By.CSS_SELECTOR, "article.review")
    assert len(articles) == 1, f"{len(articles)} reviews shown"
    review = articles[0]
    assert review.get_attribute("data-rating") == "4"
    assert review.find_element(By.CSS_SELECTOR, ".review-title").text.strip() == title
    assert review.find_element(By.CSS_SELECTOR, ".review-body").text.strip() == body
    assert customer.display_name in review.find_element(By.CSS_SELECTOR, ".review-author").text
    badges = review.find_elements(By.CSS_SELECTOR, ".badge-verified")
    assert [b.text.strip() for b in badges] == ["Verifizierter Kauf"], [b.text for b in badges]
    for other in (".badge-unverified", ".badge-imported", ".badge-incentive"):
        assert not review.find_elements(By.CSS_SELECTOR, other), f"{other} on a verified review without incentive"
    open_page(browser, srv, widget(ESPRESSO.sku))
    assert not browser.find_elements(By.CSS_SELECTOR, "article.review"), "the coffee's review shows for the espresso"

    # schema.org Product in JSON-LD, as a crawler reads it.
    url = srv.url(widget(COFFEE.sku))
    page = requests.get(url, timeout=15)
    assert page.status_code == 200 and page.headers.get("Content-Type", "").startswith("text/html"), page.headers
    products = [n for n in json_ld_nodes(page.text, url) if n.get("@type") == "Product"]
    assert len(products) == 1, json_ld_nodes(page.text, url)
    product = products[0]
    assert product["name"] == COFFEE.name and product["sku"] == COFFEE.sku, product
    rating = product["aggregateRating"]
    assert float(rating["ratingValue"]) == 4.0 and int(rating["reviewCount"]) == 1, rating
    assert float(rating["bestRating"]) == 5 and float(rating["worstRating"]) == 1, rating
    reviews = as_list(product["review"])
    assert len(reviews) == 1, reviews
    assert float(reviews[0]["reviewRating"]["ratingValue"]) == 4.0, reviews[0]
    assert reviews[0]["author"]["@type"] == "Person" and reviews[0]["author"]["name"] == customer.display_name
    assert reviews[0]["reviewBody"] == body, reviews[0]
    assert re.match(r"\d{4}-\d{2}-\d{2}", reviews[0]["datePublished"]), reviews[0]

    # Cached with an ETag; a revalidation answers 304 without a body.
    etag = page.headers.get("ETag")
    assert etag, f"widget answered without ETag: {page.headers}"
    again = requests.get(url, headers={"If-None-Match": etag}, timeout=15)
    assert again.status_code == 304 and again.content == b"", (again.status_code, again.text[:200])

    # English.
    english = requests.get(url + "?lang=en", timeout=15)
    assert english.status_code == 200
    assert element_text(english.text, "review-summary") == SUMMARY_ONE_FOUR_EN

    # The JSON widget, for the product and for the whole shop.
    data = widget_json(shop, COFFEE.sku)
    assert data["sku"] == COFFEE.sku and data["product_name"] == COFFEE.name, data
    assert data["disclosure"] == DISCLOSURE
    summary = data["summary"]
    assert (summary["count"], float(summary["average"]), summary["distribution"]) == (1, 4.0, [0, 0, 0, 1, 0]), summary
    assert summary["period_months"] == 12 and summary["text"] == SUMMARY_ONE_FOUR, summary
    [r] = data["reviews"]
    assert (r["rating"], r["title"], r["body"], r["author"]) == (4, title, body, customer.display_name), r
    assert r["verified"] is True and r["source"] == "verified", r
    assert not r.get("incentive") and not r.get("reply"), r
    shop_data = requests.get(srv.url(f"/widgets/{SLUG}/shop/json"), timeout=15).json()
    assert shop_data["summary"]["count"] == 1 and [x["id"] for x in shop_data["reviews"]] == [r["id"]], shop_data
    shop_page = requests.get(srv.url(f"/widgets/{SLUG}/shop"), timeout=15)
    assert shop_page.status_code == 200 and element_text(shop_page.text, "review-summary") == SUMMARY_ONE_FOUR

    # The Google feed: valid against the 2.2 schema, the review as collected after fulfilment of the order.
    feed = requests.get(srv.url(feed_path()), timeout=15)
    assert feed.status_code == 200, (feed.status_code, feed.text[:500])
    assert "xml" in feed.headers.get("Content-Type", ""), feed.headers
    lint = xmllint_schema(feed.content, tmp_path)
    assert lint.returncode == 0, f"xmllint: {lint.stderr}\n{feed.text[:3000]}"
    [entry] = feed_reviews(feed.content)
    assert entry.findtext("collection_method") == "post_fulfillment"
    assert entry.findtext("transaction_id") == external_id
    assert entry.findtext("ratings/overall") == "4"
    assert entry.findtext("content") == body and entry.findtext("title") == title
    assert entry.findtext("reviewer/name") == customer.display_name
    assert entry.findtext("products/product/product_ids/skus/sku") == COFFEE.sku
    assert entry.findtext("products/product/product_name") == COFFEE.name

    # Last, so that everything above is checked first: the JSON review has every field of the contract
    # (null when empty, not left out).
    missing = REVIEW_JSON_FIELDS - r.keys()
    assert not missing, f"widget JSON review lacks {sorted(missing)}: {r}"


# =========================================================================== the form without JS


def test_form_refuses_invalid_input_then_edits_and_deletes(make_shop):
    shop = make_shop()
    customer = Customer("jonas.becker@kunde.example", "Jonas", "Becker")
    shop.put_order("B-20001", customer, [COFFEE])
    link = shop.review_links_of(customer.email, [COFFEE])[COFFEE.sku]
    s = requests.Session()

    # No rating: 422 with the errors listed; nothing is published.
    page = s.get(link, timeout=15)
    form = parse_form(page.text, "review-form")
    assert {"rating", "title", "body", "display_name", "photos", "website"} <= form.names(), form.names()
    assert form.get("display_name") == customer.display_name
    assert form.get("website") == "", "the honeypot must start empty"
    form.set("title", "Ohne Sterne")
    form.set("body", "Ich habe vergessen, Sterne zu vergeben, sonst ganz gut.")
    r = submit_form(s, link, form)
    assert r.status_code == 422, (r.status_code, r.text[:2000])
    assert re.search(r'<ul[^>]*\bid="errors"[^>]*>\s*<li', r.text), (
        "the 422 page lists no errors in <ul id=\"errors\"><li>…\n" + r.text[r.text.find("<main"):][:2500])
    assert widget_json(shop, COFFEE.sku)["reviews"] == []

    # A valid review; the link then shows it prefilled.
    body = "Kräftig, schokoladig, wenig Säure. Genau so mag ich meinen Morgenkaffee."
    assert_thanked(submit_review(s, link, rating="3", title="Solide", body=body))
    form = parse_form(s.get(link, timeout=15).text, "review-form")
    assert (form.get("rating"), form.get("title"), form.get("body")) == ("3", "Solide", body)
    [first] = widget_json(shop, COFFEE.sku)["reviews"]
    assert first["rating"] == 3

    # Editing through the same link changes that review; it does not add one.
    assert_thanked(submit_review(s, link, rating="2", title="Doch zu bitter", body=body))
    [edited] = widget_json(shop, COFFEE.sku)["reviews"]
    assert (edited["id"], edited["rating"], edited["title"]) == (first["id"], 2, "Doch zu bitter"), edited

    # Deleting it.
    page = s.get(link, timeout=15)
    delete = parse_form(page.text, "delete-review")
    assert urlsplit(delete.action).path == urlsplit(link).path + "/delete", delete.action
    r = submit_form(s, link, delete)
    assert r.status_code == 200, (r.status_code, r.text[:1000])
    data = widget_json(shop, COFFEE.sku)
    assert data["reviews"] == [] and data["summary"]["count"] == 0, data


# =========================================================================== links


def test_tampered_link_is_404_and_expired_link_is_410(make_shop):
    shop = make_shop()
    fresh = Customer("frisch@kunde.example", "Frida", "Frisch")
    shop.put_order("B-30001", fresh, [COFFEE])
    link = shop.review_links_of(fresh.email, [COFFEE])[COFFEE.sku]
    token = token_of(link)
    ok = requests.get(link, timeout=15)
    assert ok.status_code == 200 and parse_form(ok.text, "review-form")

    for position in (0, len(token) // 2):
        bad = tampered(token, position)
        r = requests.get(shop.srv.url(f"/review/{bad}"), timeout=15)
        assert r.status_code == 404, f"tampered token ({position}: {bad}) -> {r.status_code}"
        r = requests.post(shop.srv.url(f"/review/{bad}"), files={"rating": (None, "5"), "title": (None, "X"),
                          "body": (None, "Ein gefälschter Link darf nichts speichern.")}, timeout=15)
        assert r.status_code == 404, f"POST with tampered token -> {r.status_code}"
    assert widget_json(shop, COFFEE.sku)["reviews"] == []

    # token_days 0: links made from now on expire at once.
    r = shop.api("PUT", "/api/v1/reviews/settings", json={"token_days": 0})
    assert r.status_code == 200, f"token_days 0 refused: {r.status_code} {r.text[:1000]}"
    assert r.json()["token_days"] == 0, r.json()
    late = Customer("spaet@kunde.example", "Paul", "Spät")
    shop.put_order("B-30002", late, [COFFEE])
    expired = shop.review_links_of(late.email, [COFFEE])[COFFEE.sku]
    r = requests.get(expired, timeout=15)
    assert r.status_code == 410, (r.status_code, r.text[:1000])
    assert r.headers.get("Content-Type", "").startswith("text/html"), r.headers
    assert element_text(r.text, "link-expired") is not None, r.text[:2000]
    assert 'id="review-form"' not in r.text
    r = requests.post(expired, files={"rating": (None, "5"), "title": (None, "Spät"),
                      "body": (None, "Ein abgelaufener Link darf nichts speichern.")}, timeout=15)
    assert r.status_code == 410, f"POST with an expired token -> {r.status_code}"
    assert widget_json(shop, COFFEE.sku)["reviews"] == []

    # The first link carries its own expiry and still works.
    assert requests.get(link, timeout=15).status_code == 200


# =========================================================================== owner: reply and hide


def test_owner_replies_and_hides(make_shop):
    shop = make_shop()
    customer = Customer("antwort@kunde.example", "Anna", "Wort")
    shop.put_order("B-40001", customer, [COFFEE])
    link = shop.review_links_of(customer.email, [COFFEE])[COFFEE.sku]
    title = "Leider zu hell geröstet"
    assert_thanked(submit_review(requests.Session(), link, rating="2", title=title,
                                 body="Für meinen Geschmack zu sauer, die Bohnen waren aber frisch."))
    [review] = widget_json(shop, COFFEE.sku)["reviews"]
    admin, srv = shop.admin, shop.srv

    listing = admin.get(srv.url("/admin/reviews?status=published&source=verified"), timeout=15)
    assert listing.status_code == 200 and title in html.unescape(listing.text), listing.text[:2000]
    detail_url = srv.url(f"/admin/reviews/{review['id']}")
    detail = admin.get(detail_url, timeout=15)
    assert detail.status_code == 200 and title in html.unescape(detail.text)

    reply_text = "Danke für die ehrliche Rückmeldung! Probieren Sie gern unsere dunklere Röstung."
    reply = parse_form(detail.text, "reply-form")
    reply.set("reply", reply_text)
    r = submit_form(admin, detail_url, reply)
    assert r.status_code == 200, (r.status_code, r.text[:1000])
    [shown] = widget_json(shop, COFFEE.sku)["reviews"]
    got = shown["reply"]
    assert got == reply_text or (isinstance(got, dict) and reply_text in got.values()), got
    assert reply_text in html.unescape(srv.get(widget(COFFEE.sku)).text)

    hide = parse_form(admin.get(detail_url, timeout=15).text, "hide-form")
    hide.set("reason", "Test: ausgeblendet")
    r = submit_form(admin, detail_url, hide)
    assert r.status_code == 200, (r.status_code, r.text[:1000])
    data = widget_json(shop, COFFEE.sku)
    assert data["reviews"] == [] and data["summary"]["count"] == 0, data
    hidden = admin.get(srv.url("/admin/reviews?status=hidden"), timeout=15)
    assert hidden.status_code == 200 and title in html.unescape(hidden.text)
    published = admin.get(srv.url("/admin/reviews?status=published"), timeout=15)
    assert published.status_code == 200 and title not in html.unescape(published.text)


# =========================================================================== escaping


def test_review_text_never_runs_as_markup(make_shop, tmp_path):
    shop = make_shop()
    customer = Customer("mallory@kunde.example", "Mallory", "Angreifer")
    items = [COFFEE, ESPRESSO]
    shop.put_order("B-50001", customer, items)
    links = shop.review_links_of(customer.email, items)
    title = f"Lecker {SCRIPT} {IMG}"
    body = f"Sehr guter Kaffee, kräftig und rund. {SCRIPT} Und noch: {IMG} Ende."
    names = {COFFEE.sku: SCRIPT, ESPRESSO.sku: IMG}
    for item in items:
        assert_thanked(submit_review(requests.Session(), links[item.sku], rating="5", title=title, body=body,
                                     display_name=names[item.sku]))

    def assert_escaped(what: str, text: str) -> None:
        """No payload as markup; JSON-LD blocks are looked at apart, to tell the two failures apart."""
        blocks = LD_JSON.findall(text)
        rest = LD_JSON.sub("", text)
        for bad in UNESCAPED:
            assert bad.lower() not in rest.lower(), f"{what} contains {bad!r} unescaped"
            for block in blocks:
                assert bad.lower() not in block.lower(), (
                    f"{what}: a JSON-LD block contains {bad!r}; '<' in JSON inside <script> must be \\u003c")

    # The JSON keeps the literal text (it is data, not markup); the reviews are published.
    ids = []
    for item in items:
        data = widget_json(shop, item.sku)
        [r] = data["reviews"]
        assert (r["title"], r["body"], r["author"]) == (title, body, names[item.sku]), r
        ids.append(r["id"])
        raw = shop.srv.get(widget(item.sku, "/json")).text
        assert json.loads(raw) == data

        url = shop.srv.url(widget(item.sku))
        page = requests.get(url, timeout=15).text
        assert_escaped(f"widget {item.sku}", page)
        assert title in html.unescape(page), "the title is not shown (escaped) in the widget"
        [product] = [n for n in json_ld_nodes(page, url) if n.get("@type") == "Product"]
        [ld] = as_list(product["review"])
        assert ld["reviewBody"] == body, f"JSON-LD must carry the literal text, got {ld['reviewBody']!r}"
        assert ld["author"]["name"] == names[item.sku], ld["author"]
    assert_escaped("shop widget", requests.get(shop.srv.url(f"/widgets/{SLUG}/shop"), timeout=15).text)

    feed = requests.get(shop.srv.url(feed_path()), timeout=15)
    assert feed.status_code == 200
    assert_escaped("feed", feed.text)
    lint = xmllint_schema(feed.content, tmp_path)
    assert lint.returncode == 0, f"xmllint: {lint.stderr}"
    entries = feed_reviews(feed.content)
    assert sorted(e.findtext("reviewer/name") for e in entries) == sorted(names.values())
    assert all(e.findtext("content") == body and e.findtext("title") == title for e in entries)

    for path in ["/admin/reviews", "/admin/reviews?status=published"] + [f"/admin/reviews/{i}" for i in ids]:
        page = shop.admin.get(shop.srv.url(path), timeout=15)
        assert page.status_code == 200, (path, page.status_code)
        assert_escaped(path, page.text)
        assert title in html.unescape(page.text), f"{path} does not show the review"
