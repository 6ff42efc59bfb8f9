"""Review rules seen from outside: when no review request goes out, and that
moderation does not look at the star rating.

No mail: without the `review_request` consent (the §7(3) mode is off by default),
when the order is returned before the request is due, and when the contact objected
before it is due. Each such request ends as `review_requests.state = 'skipped'` with
its `skip_reason`, and no review_request mail is put in the outbox for that recipient;
a control order on the same server, PUT last, is asked (so the pipeline works and the
others' due times have passed).

Moderation: the same title and text with 1 star and with 5 stars end up with the
same status: both held when the text has a link, both published when it is clean.

The mail stays in the development outbox (conftest.py: smtp=False).
"""

from __future__ import annotations

import html

import requests

from tests.reviews.reviewtools import Customer, Item, parse_form, submit_form, wait_until

# Long enough to change the order (or object) in between, short enough to wait for.
DELAY = 3

BEANS = [Item("KAF-COL-250", "Kolumbien Huila", "11.90", "kaffee"), Item("KAF-PER-250", "Peru Cajamarca", "12.50")]


def test_no_mail_without_consent_after_return_or_objection(make_shop):
    shop = make_shop(delay_seconds=DELAY)
    no_consent = Customer("ohne.einwilligung@kunde.example", "Olga", "Ohne")
    returned = Customer("retoure@kunde.example", "Rita", "Retour")
    objected = Customer("widerspruch@kunde.example", "Wim", "Widerspruch")
    control = Customer("kontrolle@kunde.example", "Karl", "Kontrolle")

    # (a) delivered, but no review_request consent
    shop.put_order("R-1", no_consent, BEANS, consent=False)
    # (b) delivered with consent, then returned before the request is due
    shop.put_order("R-2", returned, BEANS)
    assert shop.put_order("R-2", returned, BEANS, status="returned")["status"] == "returned"
    # (c) delivered with consent, then the contact objects before the request is due
    order = shop.put_order("R-3", objected, BEANS)
    r = shop.api("POST", f"/api/v1/contacts/{order['contact_id']}/objection")
    assert r.status_code == 204, (r.status_code, r.text[:500])
    # control: delivered with consent, nothing else; PUT last, so it is due last
    shop.put_order("R-4", control, BEANS)

    expected = {"R-1": "no_consent", "R-2": "order_returned", "R-3": "objected"}

    def all_skipped():
        states = {ext: shop.review_requests(ext) for ext in expected}
        done = all(rows and all(state == "skipped" for state, _ in rows) for rows in states.values())
        return states if done else None

    states = wait_until(all_skipped, DELAY + 30, "the three review requests to be skipped",
                        describe=lambda: f"review_requests: { {e: shop.review_requests(e) for e in expected} }")
    for ext, reason in expected.items():
        assert {skip for _, skip in states[ext]} == {reason}, f"order {ext}: {states[ext]}, expected {reason}"

    shop.wait_for_sent_review_mail(control.email, timeout=DELAY + 30)
    assert [state for state, _ in shop.review_requests("R-4")] == ["sent"], shop.review_requests("R-4")
    for customer in (no_consent, returned, objected):
        assert shop.review_mails(customer.email) == [], f"a review request went to {customer.email}"


def test_moderation_is_the_same_for_one_and_five_stars(make_shop):
    shop = make_shop()
    link_1 = Item("MOD-L1", "Mokka Aurora")
    link_5 = Item("MOD-L5", "Lungo Boreal")
    clean_1 = Item("MOD-C1", "Cortado Cirrus")
    clean_5 = Item("MOD-C5", "Ristretto Dorado")
    items = [link_1, link_5, clean_1, clean_5]
    customer = Customer("moderation@kunde.example", "Mona", "Moder")
    shop.put_order("M-1", customer, items)
    links = shop.review_links_of(customer.email, items)

    title = "Meine ehrliche Meinung"
    with_link = "Der Kaffee schmeckt mir, mehr dazu siehe www.example.com in meinem Blog."
    clean = "Der Kaffee schmeckt mir, kräftig im Geschmack und schnell geliefert."
    plan = {link_1: ("1", with_link), link_5: ("5", with_link), clean_1: ("1", clean), clean_5: ("5", clean)}
    for item, (rating, body) in plan.items():
        s = requests.Session()
        page = s.get(links[item.sku], timeout=15)
        assert page.status_code == 200, (item.sku, page.status_code)
        form = parse_form(page.text, "review-form")
        form.set("rating", rating)
        form.set("title", title)
        form.set("body", body)
        r = submit_form(s, links[item.sku], form)
        assert r.status_code == 200 and 'id="review-thanks"' in r.text, (item.sku, r.status_code, r.text[:1500])

    def public(item: Item) -> list[dict]:
        r = shop.srv.get(f"/widgets/shop/products/{item.sku}/json")
        assert r.status_code == 200, (item.sku, r.status_code, r.text[:500])
        return r.json()["reviews"]

    # A link holds the review for a person, whatever the stars.
    assert public(link_1) == [] and public(link_5) == [], "a review with a link was published"
    held = shop.admin.get(shop.srv.url("/admin/reviews?status=held"), timeout=15)
    assert held.status_code == 200, held.status_code
    held_text = html.unescape(held.text)
    for item in (link_1, link_5):
        assert item.name in held_text or item.sku in held_text, f"{item.sku} ({plan[item][0]} star) is not held"

    # A clean text is published, whatever the stars.
    assert [(r["rating"], r["body"]) for r in public(clean_1)] == [(1, clean)]
    assert [(r["rating"], r["body"]) for r in public(clean_5)] == [(5, clean)]
