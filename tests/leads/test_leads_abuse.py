"""Lead magnet signups under abuse and mistakes (issue 5, contract /tmp/leads/SPEC.md):

- a bot that fills the honeypot gets the normal answer, but nothing is saved or sent;
- a form posted faster than min_fill_seconds after it was loaded is refused (422, nothing saved) and
  works when posted again after a moment;
- invalid and disposable addresses are refused (422), nothing saved;
- the embedded form needs an Origin listed in allowed_origins;
- each IP gets a limited number of posts (429 after that);
- double and concurrent submits of one address leave one contact, one pending consent, one signup and
  one confirmation mail;
- the answer never reveals whether an address is known.

Everything through HTTP (requests) with the mail left in the development outbox. "Nothing saved" is
checked after a genuine signup on the same server has gone through (its mail is in the outbox), so
that a late write would have happened by then.
"""

from __future__ import annotations

import difflib
import threading

import pytest

from tests.leads.leadtools import (
    wait_out_min_fill,
    assert_pending,
    confirm,
    fill,
    first_form,
    masked,
    open_landing,
    post_form,
    signup,
    visitor,
)
from tests.reviews.reviewtools import Customer, Item, element_text, parse_form, submit_form


def assert_nothing_saved(shop, address: str) -> None:
    assert shop.contacts_with(address) == 0, f"a contact was saved for {address}"
    assert shop.outbox(address) == [], f"mail to {address}: {shop.outbox(address)}"


def control_signup(shop, magnet, address: str = "kontrolle@kunde.example") -> None:
    """A genuine signup on the same server: pending page, and its confirmation mail is written."""
    assert_pending(signup(magnet, address))
    shop.wait_for_mails(address, "doi_confirmation")


# =========================================================================== bots


def test_honeypot_is_answered_like_a_signup_but_saves_nothing(make_lead_shop, engine):
    """A filled honeypot (`website`) gets the same 200 #lead-pending page, but no contact, no signup
    and no mail."""
    shop = make_lead_shop(engine)
    magnet = shop.create_magnet("ratgeber")
    bot = "bot@kunde.example"
    r = signup(magnet, bot, "Bot", website="https://spam.example")
    assert_pending(r)
    control_signup(shop, magnet)
    assert_nothing_saved(shop, bot)
    assert shop.count("SELECT COUNT(*) FROM lead_signups") == 1, "the honeypot post left a lead_signups row"


def test_too_fast_submit_is_refused_then_accepted(make_lead_shop):
    """A post sooner than min_fill_seconds after the form token was issued gets 422 #lead-retry with the
    form again and saves nothing; the form posted again after a moment is accepted."""
    shop = make_lead_shop()
    magnet = shop.create_magnet("ratgeber", min_fill_seconds=2)
    address = "schnell@kunde.example"
    s = visitor()
    _, form = open_landing(s, magnet)
    r = post_form(s, magnet, fill(form, address))
    assert r.status_code == 422, (r.status_code, r.text[:2000])
    assert element_text(r.text, "lead-retry") is not None, f"no #lead-retry on the 422 page\n{r.text[:2000]}"
    retry = parse_form(r.text, "lead-form")
    assert retry.get("email") == address, f"the retry form lost the address: {retry.fields}"
    control_signup(shop, magnet)
    assert_nothing_saved(shop, address)

    wait_out_min_fill(magnet)  # the person reads the hint and clicks again
    assert_pending(post_form(s, magnet, retry))
    shop.wait_for_mails(address, "doi_confirmation")


@pytest.mark.parametrize("address", ["user@mailinator.com", "kein-at-zeichen.example"])
def test_disposable_or_invalid_address_is_refused(make_lead_shop, address):
    """A disposable domain (shipped blocklist) or an invalid address gets 422 #lead-errors; nothing saved."""
    shop = make_lead_shop()
    magnet = shop.create_magnet("ratgeber")
    r = signup(magnet, address)
    assert r.status_code == 422, (r.status_code, r.text[:2000])
    errors = element_text(r.text, "lead-errors")
    assert errors, f"no #lead-errors listing the error\n{r.text[:2000]}"
    assert 'id="lead-pending"' not in r.text
    control_signup(shop, magnet)
    assert_nothing_saved(shop, address)
    assert shop.count("SELECT COUNT(*) FROM lead_signups") == 1


def test_embedded_form_needs_an_allowed_origin(make_lead_shop, engine):
    """The embed snippet is a plain form posting to the absolute landing URL; a post from a foreign
    Origin is 403 and saves nothing, one from an allowed Origin is a signup. The token endpoint
    allows CORS only for allowed origins."""
    shop = make_lead_shop(engine)
    allowed, foreign = "http://shop.bohnenglueck.example", "http://evil.example"
    magnet = shop.create_magnet("ratgeber", allowed_origins=[allowed])
    form = first_form(magnet["embed_html"])
    assert form.action == magnet["landing_url"], (form.action, magnet["landing_url"])
    assert form.method == "post" and form.get("form_token"), form.fields
    wait_out_min_fill(magnet)

    s = visitor()
    refused = "fremd@kunde.example"
    r = submit_form(s, magnet["landing_url"], fill(form, refused), headers={"Origin": foreign})
    assert r.status_code == 403, (r.status_code, r.text[:1500])
    accepted = "eingebettet@kunde.example"
    r = submit_form(s, magnet["landing_url"], fill(form, accepted), headers={"Origin": allowed})
    assert_pending(r)
    shop.wait_for_mails(accepted, "doi_confirmation")
    assert_nothing_saved(shop, refused)

    token_url = magnet["landing_url"] + "/token"
    ok = s.get(token_url, headers={"Origin": allowed}, timeout=15)
    assert ok.status_code == 200 and ok.json().get("form_token"), (ok.status_code, ok.text[:500])
    assert ok.headers.get("Access-Control-Allow-Origin") == allowed, ok.headers
    other = s.get(token_url, headers={"Origin": foreign}, timeout=15)
    assert other.headers.get("Access-Control-Allow-Origin") not in (foreign, "*"), other.headers


def test_per_ip_limit_answers_429(make_lead_shop):
    """Posts from one IP are limited (default bucket): within 60 posts one answers 429, and that post
    saves nothing."""
    shop = make_lead_shop(burst=None)
    magnet = shop.create_magnet("ratgeber")
    forms = []
    for i in range(60):  # one page load (one token) per post, as 60 visitors behind one IP would
        s = visitor()
        _, form = open_landing(s, magnet)
        forms.append((s, fill(form, f"flut{i:02d}@kunde.example")))
    wait_out_min_fill(magnet)
    statuses = []
    for s, form in forms:
        r = post_form(s, magnet, form)
        statuses.append(r.status_code)
        if r.status_code == 429:
            break
    assert statuses[-1] == 429, f"no 429 within 60 posts: {statuses}"
    assert statuses[0] == 200 and set(statuses[:-1]) == {200}, f"before the 429: {statuses}"
    limited = forms[len(statuses) - 1][1].get("email")
    shop.wait_for_mails(forms[0][1].get("email"), "doi_confirmation")
    assert_nothing_saved(shop, limited)


# =========================================================================== double submits


def test_double_submits_leave_one_signup(make_lead_shop, engine):
    """A double click (one form posted twice at once) and five concurrent submits of another address
    each leave one contact, one pending consent, one lead_signups row and one confirmation mail (the
    resend window suppresses the rest); every post is answered with the pending page."""
    shop = make_lead_shop(engine)
    magnet = shop.create_magnet("ratgeber")
    double, five = "doppelklick@kunde.example", "fuenfmal@kunde.example"

    s = visitor()
    _, form = open_landing(s, magnet)
    fill(form, double)
    wait_out_min_fill(magnet)
    answers = [post_form(s, magnet, form), post_form(s, magnet, form)]

    loaded = []
    for _ in range(5):
        v = visitor()
        _, f = open_landing(v, magnet)
        loaded.append((v, fill(f, five)))
    wait_out_min_fill(magnet)
    barrier = threading.Barrier(5)
    concurrent: list = [None] * 5

    def post(i: int) -> None:
        v, f = loaded[i]
        barrier.wait(30)
        try:
            concurrent[i] = post_form(v, magnet, f, timeout=60)
        except Exception as e:  # reported below
            concurrent[i] = e

    threads = [threading.Thread(target=post, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    for r in answers + concurrent:
        assert not isinstance(r, Exception) and r is not None, r
        assert_pending(r)

    for address in (double, five):
        shop.wait_for_mails(address, "doi_confirmation")
        assert shop.contacts_with(address) == 1, f"{address}: {shop.contacts_with(address)} contacts"
        cid = shop.contact_id(address)
        states = shop.rows(f"SELECT state FROM consents WHERE contact_id = {int(cid)}")
        assert [st for (st,) in states] == ["pending"], f"{address}: consents {states}"
        doi = shop.outbox(address, "doi_confirmation")
        assert len(doi) == 1, f"{address}: {len(doi)} confirmation mails: {doi}"
    assert shop.count("SELECT COUNT(*) FROM lead_signups") == 2, shop.rows("SELECT * FROM lead_signups")


# =========================================================================== no enumeration


def test_known_address_gets_the_same_answer(make_lead_shop):
    """The answer to a signup is the same page for an unknown address, a pending one, a confirmed one
    and a customer known from an order: same #lead-pending text, and the same body once form tokens
    and the address itself are masked."""
    shop = make_lead_shop()
    magnet = shop.create_magnet("ratgeber")
    confirmed, pending, customer = "bestaetigt@kunde.example", "wartend@kunde.example", "kundin@kunde.example"
    s = visitor()
    assert_pending(signup(magnet, confirmed, "Erika", session=s))
    confirm(s, shop.doi_link(confirmed))
    assert_pending(signup(magnet, pending, "Erika"))
    shop.put_order("L-1", Customer(customer, "Erika"), [Item("KAF-1", "Hausmischung")])
    assert shop.contacts_with(customer) == 1

    unknown = "ganz.neu@kunde.example"
    answers = {a: signup(magnet, a, "Erika") for a in (unknown, pending, confirmed, customer)}
    texts = {a: assert_pending(r) for a, r in answers.items()}
    assert len(set(texts.values())) == 1, f"#lead-pending differs: {texts}"
    reference = masked(answers[unknown].text, unknown)
    for a, r in answers.items():
        body = masked(r.text, a)
        if body != reference:
            diff = "\n".join(difflib.unified_diff(reference.splitlines(), body.splitlines(), "unknown", a, lineterm=""))
            raise AssertionError(f"the answer for {a} differs from the one for an unknown address:\n{diff[:3000]}")

    # The same with Accept: application/json (the embed script's way).
    as_json = {a: signup(magnet, a, "Erika", headers={"Accept": "application/json"})
               for a in ("noch.neuer@kunde.example", pending, confirmed, customer)}
    for a, r in as_json.items():
        assert (r.status_code, r.json()) == (200, {"status": "pending"}), (a, r.status_code, r.text[:500])
