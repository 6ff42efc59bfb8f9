"""Browser tests of the admin UI (/admin), headless Chromium via Selenium.

Every test starts its own `reciprocity serve` on a fresh database (conftest's
`server` factory); the data-bearing flows run on every engine (sqlite, and
postgres when RECIPROCITY_TEST_POSTGRES_URL is set). Demo data comes from
`reciprocity demo --customers 20` run against the server's database.

bcrypt cost 4 (RECIPROCITY_BCRYPT_COST) keeps logins fast; nothing here depends
on the cost. See admin_helpers.py for the login rate limit budget per test.
"""

from __future__ import annotations

import json
import re
import time

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from tests.browser.admin_helpers import (
    DEMO_WORKSPACE,
    FIRST_WORKSPACE,
    NEW_PASSWORD,
    adopt_session,
    alerts,
    api,
    api_total,
    browser_login,
    button,
    by_id,
    card_counts,
    change_password_in_browser,
    click_and_wait,
    create_api_key,
    current_workspace,
    db_rows,
    db_scalar,
    exists,
    html_lang,
    link,
    login_requests,
    nav_texts,
    open_page,
    owner_session,
    path_of,
    save_screenshot,
    seed_demo,
    session_from_browser,
    statuses,
    switch_workspace,
    table_rows,
    text_of,
    wait_until,
    workspace_id,
)

FAST = {"RECIPROCITY_BCRYPT_COST": "4"}
STATUSES = ["placed", "paid", "shipped", "delivered", "partially_returned", "returned", "cancelled"]
JOB_STATES = ["queued", "running", "succeeded", "dead"]


@pytest.fixture
def start(server):
    """start(engine, demo=..., env=...) -> (server, demo summary or None).
    With demo=True the demo shop is seeded right after the first start (before any login)."""

    def make(engine="sqlite", *, demo=False, env=None):
        srv = server(engine, env={**FAST, **(env or {})}, start=False)
        # conftest passes a relative RECIPROCITY_BIN unchanged to Popen(cwd=workdir),
        # where it does not resolve; make it absolute (harness issue, not the product's).
        srv.binary = srv.binary.resolve()
        srv.start()
        srv.wait_for_credentials()
        summary = seed_demo(srv) if demo else None
        return srv, summary

    return make


def log_in_owner(browser, srv, workspace=None):
    """Owner's first login + password change via requests, session handed to the browser;
    optionally switches to `workspace`. Returns the requests session (same admin session)."""
    s = owner_session(srv)
    adopt_session(browser, srv, s)
    if workspace:
        switch_workspace(browser, srv, workspace)
    return s


def demo_ws(srv) -> int:
    return workspace_id(srv, "demo")


# =========================================================================== login


def test_first_login_forces_password_change(start, browser, engine):
    srv, _ = start(engine)
    login_url, email, otp = srv.wait_for_credentials()
    assert login_url == srv.url("/admin/login")
    assert email == "owner@example.com"

    browser_login(browser, srv, email, otp)
    assert path_of(browser) == "/admin/password"
    assert "Bitte legen Sie jetzt ein eigenes Passwort fest." in statuses(browser)
    # Every other admin page sends the owner back here until the password is changed.
    for other in ("/admin", "/admin/contacts", "/admin/api-keys"):
        open_page(browser, srv, other)
        assert path_of(browser) == "/admin/password", other
    session_before = session_from_browser(browser)

    # Mismatched confirmation: stays on the form with an error, password unchanged.
    change_password_in_browser(browser, otp, NEW_PASSWORD, confirm=NEW_PASSWORD + "x")
    assert path_of(browser) == "/admin/password"
    assert "Die Passwörter stimmen nicht überein." in alerts(browser)
    # Wrong current password.
    change_password_in_browser(browser, "not-the-one-time-pw", NEW_PASSWORD)
    assert "Das aktuelle Passwort ist falsch." in alerts(browser)
    # The browser enforces the minimum length before the form is sent.
    assert by_id(browser, "new").get_attribute("minlength") == "12"

    change_password_in_browser(browser, otp, NEW_PASSWORD)
    assert path_of(browser).startswith("/admin/login"), browser.current_url
    # The change ended every session: the old cookie no longer opens the admin.
    r = session_before.get(srv.url("/admin"), allow_redirects=False, timeout=10)
    assert r.status_code == 303 and r.headers["Location"].startswith("/admin/login"), (r.status_code, r.headers)
    open_page(browser, srv, "/admin")
    assert path_of(browser).startswith("/admin/login")

    # The one-time password is gone, the new one works and no change is forced any more.
    browser_login(browser, srv, email, otp)
    assert path_of(browser).startswith("/admin/login")
    assert "E-Mail oder Passwort ist falsch." in alerts(browser)
    browser_login(browser, srv, email, NEW_PASSWORD)
    assert path_of(browser) == "/admin"
    assert browser.find_element(By.TAG_NAME, "h1").text == "Überblick"
    assert current_workspace(browser) == FIRST_WORKSPACE


def test_wrong_password_and_login_rate_limit(start, browser):
    srv, _ = start()
    _, email, otp = srv.wait_for_credentials()

    # 1: wrong password in the browser -> error in role=alert, still on the login page.
    browser_login(browser, srv, email, "wrong-password-1")
    assert path_of(browser).startswith("/admin/login")
    assert "E-Mail oder Passwort ist falsch." in alerts(browser)
    assert not browser.get_cookie("rcp_session")

    # 2-5: wrong passwords answer 401 with the same message.
    for i in range(2, 6):
        _, r = login_requests(srv, email, f"wrong-password-{i}")
        assert r.status_code == 401, (i, r.status_code)
        assert "E-Mail oder Passwort ist falsch." in r.text

    # 6: over the limit -> 429 "Zu viele Versuche", even with the right password.
    _, r = login_requests(srv, email, otp)
    assert r.status_code == 429, r.status_code
    assert "Zu viele Versuche" in r.text
    assert "rcp_session" not in r.cookies
    browser_login(browser, srv, email, otp)
    assert path_of(browser).startswith("/admin/login")
    assert any("Zu viele Versuche" in a for a in alerts(browser)), alerts(browser)
    assert not browser.get_cookie("rcp_session")


def test_login_rate_limit_per_account(start):
    """5 attempts per minute per account, whatever address they come from."""
    srv, _ = start()
    _, email, otp = srv.wait_for_credentials()
    for i in range(5):
        _, r = login_requests(srv, email, "wrong-password", headers={"X-Forwarded-For": f"198.51.100.{i + 1}"})
        assert r.status_code == 401, (i, r.status_code)
    _, r = login_requests(srv, email, otp, headers={"X-Forwarded-For": "198.51.100.99"})
    assert r.status_code == 429, r.status_code
    assert "Zu viele Versuche" in r.text


def test_login_rate_limit_per_ip_cannot_be_bypassed_with_spoofed_forwarded_for(start):
    """One client that has used up its 5 attempts must be refused for the next account
    too (per-IP limit). The server has no trusted-proxy setting, so an X-Forwarded-For
    header the client made up must not give it a fresh bucket per request - otherwise
    the per-IP limit is void and passwords can be sprayed over many accounts."""
    srv, _ = start()
    _, email, _ = srv.wait_for_credentials()
    codes = []
    for i in range(5):
        _, r = login_requests(srv, email, "wrong-password", headers={"X-Forwarded-For": f"203.0.113.{i + 1}"})
        codes.append(r.status_code)
    # Another account, same client, again with a made-up X-Forwarded-For.
    _, r = login_requests(srv, "someone-else@example.com", "wrong-password", headers={"X-Forwarded-For": "203.0.113.77"})
    codes.append(r.status_code)
    assert codes[:5] == [401] * 5, codes
    assert codes[5] == 429, f"6th attempt from the same client was not limited: {codes}"


# =========================================================================== language, a11y, rendering


def test_language_switch(start, browser):
    srv, _ = start()
    log_in_owner(browser, srv)
    open_page(browser, srv, "/admin/contacts")
    assert html_lang(browser) == "de"
    nav = nav_texts(browser)
    for label in ("Kontakte", "Bestellungen", "Jobs", "Benutzer", "API-Schlüssel", "Arbeitsbereiche"):
        assert label in nav, (label, nav)

    click_and_wait(browser, link(browser, "English"))
    assert html_lang(browser) == "en"
    assert path_of(browser) == "/admin/contacts", "the switch should return to the page it came from"
    nav = nav_texts(browser)
    for label in ("Contacts", "Orders", "Users", "API keys", "Workspaces"):
        assert label in nav, (label, nav)
    assert browser.find_element(By.TAG_NAME, "h1").text == "Contacts"
    # The choice sticks (cookie) on other pages.
    open_page(browser, srv, "/admin/orders")
    assert html_lang(browser) == "en"
    assert browser.find_element(By.TAG_NAME, "h1").text == "Orders"

    click_and_wait(browser, link(browser, "Deutsch"))
    assert html_lang(browser) == "de"
    assert browser.find_element(By.TAG_NAME, "h1").text == "Bestellungen"
    assert "Kontakte" in nav_texts(browser)

    # The login page switches as well (logged out).
    browser.delete_all_cookies()
    open_page(browser, srv, "/admin/login")
    click_and_wait(browser, link(browser, "English"))
    assert html_lang(browser) == "en"
    assert by_id(browser, "login-submit").text == "Log in"

    # Screen-reader text follows the language too: the main navigation's label.
    open_page(browser, srv, "/admin/login")
    labels = [n.get_attribute("aria-label") for n in browser.find_elements(By.CSS_SELECTOR, "nav[aria-label]")]
    assert "Hauptnavigation" not in labels, f"English page has a German nav label: {labels}"


def test_accessibility_basics(start, browser):
    srv, _ = start(demo=True)
    unlabelled_js = """
        return [...document.querySelectorAll('input, select, textarea')]
          .filter(el => el.type !== 'hidden')
          .filter(el => {
            if ((el.getAttribute('aria-label') || '').trim()) return false;
            if (el.getAttribute('aria-labelledby')) return false;
            return !(el.labels && [...el.labels].some(l => l.textContent.trim()));
          })
          .map(el => el.outerHTML);
    """

    def check(path):
        open_page(browser, srv, path)
        assert html_lang(browser) in ("de", "en"), path
        skip = browser.find_elements(By.CSS_SELECTOR, "a[href='#main']")
        assert skip, f"{path}: no skip link"
        assert (skip[0].get_attribute("textContent") or "").strip() == "Zum Inhalt springen", path
        assert exists(browser, By.ID, "main"), f"{path}: skip link target #main missing"
        assert browser.find_elements(By.TAG_NAME, "h1"), f"{path}: no h1"
        unlabelled = browser.execute_script(unlabelled_js)
        assert not unlabelled, f"{path}: inputs without a label: {unlabelled}"

    check("/admin/login")
    log_in_owner(browser, srv, workspace=DEMO_WORKSPACE)
    contact_id = db_rows(srv, f"SELECT MIN(id) FROM contacts WHERE workspace_id = {demo_ws(srv)}")[0][0]
    order_id = db_rows(srv, f"SELECT MIN(external_id) FROM orders WHERE workspace_id = {demo_ws(srv)}")[0][0]
    for path in (
        "/admin",
        "/admin/contacts",
        f"/admin/contacts/{contact_id}",
        "/admin/orders",
        f"/admin/orders/{order_id}",
        "/admin/jobs",
        "/admin/users",
        "/admin/api-keys",
        "/admin/workspaces",
        "/admin/password",
    ):
        check(path)

    # The skip link is the first thing the keyboard reaches and it is visible then.
    open_page(browser, srv, "/admin")
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    active = browser.switch_to.active_element
    assert active.get_attribute("href").endswith("#main")
    assert active.is_displayed() and active.location["x"] >= 0


def test_pages_render_no_placeholder_text(start, browser):
    """Optional values that are absent must render as nothing, not as the text "nil", and
    a page without an error must not carry an (empty-content) role=alert box."""
    srv, _ = start(demo=True)
    problems = []

    def check(path, *, unexpected_ids=()):
        open_page(browser, srv, path)
        main = browser.find_element(By.ID, "main")
        nil_nodes = browser.execute_script(
            """return [...arguments[0].querySelectorAll('*')]
                 .filter(e => e.children.length === 0 && e.textContent.trim() === 'nil')
                 .map(e => e.outerHTML);""",
            main,
        )
        if nil_nodes:
            problems.append(f"{path}: shows 'nil': {nil_nodes}")
        if alerts(browser):
            problems.append(f"{path}: role=alert without an error: {alerts(browser)}")
        for i in unexpected_ids:
            if exists(browser, By.ID, i):
                problems.append(f"{path}: #{i} shown although nothing was created: {text_of(browser, i)!r}")

    check("/admin/login")
    _, email, otp = srv.wait_for_credentials()
    browser_login(browser, srv, email, otp)
    check("/admin/password")  # the forced change, before any attempt
    change_password_in_browser(browser, otp, NEW_PASSWORD)
    browser_login(browser, srv, email, NEW_PASSWORD)
    switch_workspace(browser, srv, DEMO_WORKSPACE)
    order_id = db_rows(srv, f"SELECT MIN(external_id) FROM orders WHERE workspace_id = {demo_ws(srv)}")[0][0]
    check("/admin")
    check("/admin/users", unexpected_ids=("one-time-password",))
    check("/admin/api-keys", unexpected_ids=("new-key",))
    check(f"/admin/orders/{order_id}")
    check("/admin/workspaces")
    # An order without shipping address: no empty "Lieferadresse" block.
    key = create_api_key(browser, srv, "placeholder-check", "write")
    r = api(srv, "PUT", "/api/v1/orders/NOADDR-1", key, json={
        "customer": {"email": "a@example.com", "first_name": "Anna"}, "currency": "EUR",
        "items": [{"sku": "S1", "name": "Tee", "quantity": 1, "unit_price": "9.90"}],
        "totals": {"total": "9.90"}, "status": "delivered"})
    assert r.status_code == 201, (r.status_code, r.text)
    check("/admin/orders/NOADDR-1")
    if "Lieferadresse" in browser.find_element(By.ID, "main").text:
        problems.append("/admin/orders/NOADDR-1: empty 'Lieferadresse' block for an order without address: "
                        + repr(browser.find_element(By.TAG_NAME, "address").get_attribute("outerHTML")))
    assert not problems, "\n".join(problems)


# =========================================================================== start page, workspaces


def test_start_page_counts_match_api_and_db(start, browser, engine):
    srv, demo = start(engine, demo=True)
    assert demo.customers == 20 and demo.orders >= 20
    log_in_owner(browser, srv, workspace=DEMO_WORKSPACE)
    # The demo's orders raise events whose jobs (review scheduling, mail) the worker runs in the background; the
    # page and the database are compared once nothing due is left, so both see the same job counts.
    ws = demo_ws(srv)
    wait_until(
        lambda: db_scalar(
            srv,
            f"SELECT COUNT(*) FROM jobs WHERE workspace_id = {ws} AND state IN ('queued', 'running') "
            f"AND run_at <= {int(time.time() * 1000)}",
        ) == 0,
        timeout=60, what="due jobs to finish")
    open_page(browser, srv, "/admin")
    shot = save_screenshot(browser, "start.png" if engine == "sqlite" else f"start-{engine}.png")
    assert shot.stat().st_size > 10_000

    ws = demo_ws(srv)
    contacts_shown = int(text_of(browser, "contact-count"))
    orders_shown = int(text_of(browser, "order-count"))
    by_status = card_counts(browser, "c-orders")
    consents = card_counts(browser, "c-consents")
    jobs = card_counts(browser, "c-jobs")

    assert contacts_shown == demo.customers
    assert orders_shown == demo.orders
    assert contacts_shown == db_scalar(srv, f"SELECT COUNT(*) FROM contacts WHERE workspace_id = {ws} AND erased_at IS NULL")
    assert orders_shown == db_scalar(srv, f"SELECT COUNT(*) FROM orders WHERE workspace_id = {ws}")

    key = create_api_key(browser, srv, "count-check", "read")
    assert api_total(srv, key, "/api/v1/orders") == orders_shown
    assert api_total(srv, key, "/api/v1/contacts") == contacts_shown
    assert sorted(by_status) == sorted(STATUSES), by_status
    for status in STATUSES:
        assert by_status[status] == api_total(srv, key, f"/api/v1/orders?status={status}"), status
    assert sum(by_status.values()) == orders_shown
    # The demo has orders in every status.
    assert all(n > 0 for n in by_status.values()), by_status
    # Returns are itemised: every returned order has units back, every partially returned one some but not all.
    back = db_rows(
        srv,
        "SELECT o.status, SUM(i.returned_quantity), SUM(i.quantity) FROM orders o JOIN order_items i ON i.order_id = o.id"
        f" WHERE o.workspace_id = {ws} AND o.status IN ('partially_returned', 'returned') GROUP BY o.id, o.status",
    )
    assert back, "no returned orders in the demo"
    for status, returned, bought in back:
        assert (returned == bought) if status == "returned" else (0 < returned < bought), (status, returned, bought)

    granted = dict(
        db_rows(
            srv,
            f"SELECT purpose, COUNT(*) FROM consents WHERE workspace_id = {ws} AND state = 'granted' GROUP BY purpose",
        )
    )
    labels = {"newsletter": "Newsletter", "review_request": "Bewertungsanfragen"}
    assert granted, "demo seeded no consents"
    for purpose, n in granted.items():
        assert consents.get(labels.get(purpose, purpose)) == n, (purpose, n, consents)

    assert sorted(jobs) == sorted(JOB_STATES), jobs
    db_jobs = dict(db_rows(srv, f"SELECT state, COUNT(*) FROM jobs WHERE workspace_id = {ws} GROUP BY state"))
    for state in JOB_STATES:
        assert jobs[state] == db_jobs.get(state, 0), state

    # The other workspace's start page counts its own (empty) data.
    switch_workspace(browser, srv, FIRST_WORKSPACE)
    open_page(browser, srv, "/admin")
    assert text_of(browser, "contact-count") == "0"
    assert text_of(browser, "order-count") == "0"


def test_workspace_switch(start, browser):
    # (on postgres, the start page test switches workspaces through the same UI)
    srv, _ = start()
    log_in_owner(browser, srv)
    assert current_workspace(browser) == FIRST_WORKSPACE
    demo = seed_demo(srv)  # while logged in: the demo makes this owner an owner there too

    open_page(browser, srv, "/admin")
    assert current_workspace(browser) == FIRST_WORKSPACE
    assert text_of(browser, "contact-count") == "0"

    open_page(browser, srv, "/admin/workspaces")
    rows = {r.find_elements(By.TAG_NAME, "td")[1].text: r.text for r in table_rows(browser, "main table")}
    assert set(rows) == {"shop", "demo"}, rows
    assert "aktuell" in rows["shop"] and "aktuell" not in rows["demo"]
    assert not [b for b in browser.find_elements(By.TAG_NAME, "button") if b.text == f"Wechseln: {FIRST_WORKSPACE}"]

    click_and_wait(browser, button(browser, f"Wechseln: {DEMO_WORKSPACE}"))
    assert path_of(browser) == "/admin"
    assert current_workspace(browser) == DEMO_WORKSPACE
    assert int(text_of(browser, "contact-count")) == demo.customers
    assert int(text_of(browser, "order-count")) == demo.orders
    open_page(browser, srv, "/admin/contacts")
    assert len(table_rows(browser, "main table")) == demo.customers

    open_page(browser, srv, "/admin/workspaces")
    click_and_wait(browser, button(browser, f"Wechseln: {FIRST_WORKSPACE}"))
    assert current_workspace(browser) == FIRST_WORKSPACE
    assert text_of(browser, "contact-count") == "0"
    open_page(browser, srv, "/admin/contacts")
    assert "Keine Kontakte gefunden." in browser.find_element(By.ID, "main").text

    # A workspace the user is not a member of cannot be switched to.
    s = session_from_browser(browser)
    csrf = browser.find_element(By.CSS_SELECTOR, "header form input[name=_csrf]").get_attribute("value")
    r = s.post(srv.url("/admin/workspaces/switch"), data={"_csrf": csrf, "workspace_id": "999999"}, allow_redirects=False)
    assert r.status_code == 404, r.status_code
    open_page(browser, srv, "/admin")
    assert current_workspace(browser) == FIRST_WORKSPACE


# =========================================================================== contacts


def _contact_with_granted_consent(srv, purpose="newsletter"):
    rows = db_rows(
        srv,
        f"""SELECT c.id, c.email, c.first_name, c.last_name FROM contacts c
            JOIN consents k ON k.contact_id = c.id AND k.workspace_id = c.workspace_id
            WHERE c.workspace_id = {demo_ws(srv)} AND k.purpose = '{purpose}' AND k.state = 'granted'
            ORDER BY c.id LIMIT 1""",
    )
    assert rows, f"demo has no contact with a granted {purpose} consent"
    return rows[0]


def test_contact_search_consents_export_and_objection(start, browser, engine):
    srv, _ = start(engine, demo=True)
    log_in_owner(browser, srv, workspace=DEMO_WORKSPACE)
    cid, email, first, last = _contact_with_granted_consent(srv)

    # Search by (part of) the e-mail address through the search form.
    open_page(browser, srv, "/admin/contacts")
    by_id(browser, "q").send_keys(email.split("@")[0])
    click_and_wait(browser, by_id(browser, "q").find_element(By.XPATH, "./ancestor::form").find_element(By.TAG_NAME, "button"))
    assert "q=" in path_of(browser)
    assert by_id(browser, "q").get_attribute("value") == email.split("@")[0]
    hits = browser.find_elements(By.CSS_SELECTOR, "main table tbody a[href^='/admin/contacts/']")
    assert [a.get_attribute("href").rsplit("/", 1)[1] for a in hits] == [str(cid)], [a.text for a in hits]

    # Search by last name (with umlauts in the demo names): every hit carries it.
    open_page(browser, srv, "/admin/contacts?q=" + requests.utils.quote(last))
    rows = table_rows(browser, "main table")
    assert rows and all(last in r.text for r in rows), (last, [r.text for r in rows])
    assert any(f"/admin/contacts/{cid}" in (a.get_attribute("href") or "") for r in rows for a in r.find_elements(By.TAG_NAME, "a"))

    open_page(browser, srv, "/admin/contacts?q=nobody-is-called-this")
    assert "Keine Kontakte gefunden." in browser.find_element(By.ID, "main").text

    # The contact page.
    open_page(browser, srv, "/admin/contacts?q=" + requests.utils.quote(email))
    click_and_wait(browser, link(browser, email))
    assert path_of(browser) == f"/admin/contacts/{cid}"
    assert text_of(browser, "contact-email") == email
    assert text_of(browser, "contact-name") == f"{first} {last}"
    assert text_of(browser, "contact-suppressed") == "nein"
    consent_rows = [r.find_elements(By.TAG_NAME, "td") for r in table_rows(browser, "#consents")]
    by_purpose = {tds[0].text: tds[1].text for tds in consent_rows if len(tds) >= 2}
    assert by_purpose.get("Newsletter") == "erteilt", by_purpose
    order_links = browser.find_elements(By.CSS_SELECTOR, "main a[href^='/admin/orders/']")
    assert order_links, "contact page lists no orders"

    # The JSON export (Art. 15): a download, fetched with the browser's session.
    export = by_id(browser, "export-link")
    assert export.get_attribute("download") is not None
    href = export.get_attribute("href")
    assert href.endswith(f"/admin/contacts/{cid}/export")
    r = session_from_browser(browser).get(href, timeout=10)
    assert r.status_code == 200, r.status_code
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.headers.get("Content-Disposition", "").startswith("attachment"), r.headers
    data = r.json()
    for k in ("contact", "consents", "consent_history", "orders"):
        assert k in data, (k, sorted(data))
    assert data["contact"]["email"] == email
    assert data["contact"]["id"] == cid
    assert any(c["purpose"] == "newsletter" and c["state"] == "granted" for c in data["consents"]), data["consents"]
    assert any(e["purpose"] == "newsletter" and e["action"] == "grant" for e in data["consent_history"])
    assert sorted(o["external_id"] for o in data["orders"]) == sorted(a.text for a in order_links)
    assert data["suppressed"] is False
    # Without a session there is no export.
    r = requests.get(href, allow_redirects=False, timeout=10)
    assert r.status_code == 303 and "/admin/login" in r.headers["Location"]

    # Objection (Art. 21): every consent withdrawn, the address suppressed, the person kept.
    click_and_wait(browser, by_id(browser, "object-submit"))
    assert path_of(browser).startswith(f"/admin/contacts/{cid}")
    assert "Der Widerspruch wurde erfasst." in statuses(browser)
    assert text_of(browser, "contact-suppressed") == "ja"
    states = [r.find_elements(By.TAG_NAME, "td")[1].text for r in table_rows(browser, "#consents")]
    assert states and all(s == "widerrufen" for s in states), states
    assert text_of(browser, "contact-email") == email
    data = session_from_browser(browser).get(href, timeout=10).json()
    assert data["suppressed"] is True
    assert data["consents"] and all(c["state"] == "withdrawn" for c in data["consents"]), data["consents"]
    assert any(e["purpose"] == "newsletter" and e["action"] == "withdraw" for e in data["consent_history"])


def test_contact_erasure(start, browser, engine):
    srv, _ = start(engine, demo=True)
    log_in_owner(browser, srv, workspace=DEMO_WORKSPACE)
    ws = demo_ws(srv)
    cid, email = db_rows(
        srv,
        f"""SELECT c.id, c.email FROM contacts c WHERE c.workspace_id = {ws}
            AND (SELECT COUNT(*) FROM orders o WHERE o.contact_id = c.id) >= 1 ORDER BY c.id DESC LIMIT 1""",
    )[0]
    open_page(browser, srv, "/admin")
    contacts_before = int(text_of(browser, "contact-count"))
    orders_before = int(text_of(browser, "order-count"))
    statuses_before = card_counts(browser, "c-orders")

    open_page(browser, srv, f"/admin/contacts/{cid}")
    orders_on_page = sorted(a.text for a in browser.find_elements(By.CSS_SELECTOR, "main a[href^='/admin/orders/']"))
    assert orders_on_page

    # Without the confirmation box the browser does not send the form.
    old_html = browser.find_element(By.TAG_NAME, "html")
    by_id(browser, "erase-submit").click()
    time.sleep(0.5)  # give a (wrong) submission time to start navigating
    assert browser.execute_script("return document.getElementById('erase-confirm').validity.valueMissing") is True
    assert browser.find_element(By.TAG_NAME, "html") == old_html and path_of(browser) == f"/admin/contacts/{cid}"
    # ... and the server insists on it as well.
    s = session_from_browser(browser)
    csrf = by_id(browser, "erase-submit").find_element(By.XPATH, "./ancestor::form").find_element(
        By.NAME, "_csrf").get_attribute("value")
    r = s.post(srv.url(f"/admin/contacts/{cid}/erase"), data={"_csrf": csrf}, allow_redirects=False, timeout=10)
    assert r.status_code in (400, 422), r.status_code
    assert db_scalar(srv, f"SELECT COUNT(*) FROM contacts WHERE id = {cid} AND erased_at IS NULL") == 1

    by_id(browser, "erase-confirm").click()
    click_and_wait(browser, by_id(browser, "erase-submit"))
    assert path_of(browser).startswith(f"/admin/contacts/{cid}")
    assert "Der Kontakt wurde gelöscht." in statuses(browser)
    assert text_of(browser, "contact-email") == f"erased-{cid}@erased.invalid (gelöscht)"
    assert text_of(browser, "contact-name") == ""
    assert email not in browser.page_source
    assert not exists(browser, By.ID, "erase-submit"), "erase form still offered for an erased contact"
    # Orders stay (counts and sums), without the person.
    assert sorted(a.text for a in browser.find_elements(By.CSS_SELECTOR, "main a[href^='/admin/orders/']")) == orders_on_page

    open_page(browser, srv, "/admin")
    assert int(text_of(browser, "contact-count")) == contacts_before - 1
    assert int(text_of(browser, "order-count")) == orders_before
    assert card_counts(browser, "c-orders") == statuses_before

    open_page(browser, srv, "/admin/contacts?q=" + requests.utils.quote(email))
    assert "Keine Kontakte gefunden." in browser.find_element(By.ID, "main").text

    data = s.get(srv.url(f"/admin/contacts/{cid}/export"), timeout=10).json()
    assert data["contact"]["email"] == f"erased-{cid}@erased.invalid"
    assert not data["contact"].get("first_name") and not data["contact"].get("last_name")
    assert email not in json.dumps(data)

    # The address stays blocked for marketing (the erasure put it on the suppression list).
    open_page(browser, srv, f"/admin/contacts/{cid}")
    assert text_of(browser, "contact-suppressed") == "ja", "erased contact shown as not suppressed"


# =========================================================================== orders, jobs


def test_orders_filter_and_order_page(start, browser, engine):
    srv, _ = start(engine, demo=True)
    log_in_owner(browser, srv, workspace=DEMO_WORKSPACE)
    ws = demo_ws(srv)
    open_page(browser, srv, "/admin/orders")
    Select(by_id(browser, "status")).select_by_value("paid")
    click_and_wait(browser, by_id(browser, "status").find_element(By.XPATH, "./ancestor::form").find_element(By.TAG_NAME, "button"))
    assert "status=paid" in path_of(browser)
    assert Select(by_id(browser, "status")).first_selected_option.get_attribute("value") == "paid"
    cells = browser.find_elements(By.CSS_SELECTOR, "#orders td[data-status]")
    expected = db_scalar(srv, f"SELECT COUNT(*) FROM orders WHERE workspace_id = {ws} AND status = 'paid'")
    assert expected > 0
    assert len(cells) == expected
    assert {c.get_attribute("data-status") for c in cells} == {"paid"}
    assert {c.text for c in cells} == {"bezahlt"}

    first = browser.find_element(By.CSS_SELECTOR, "#orders tbody a")
    external_id = first.text
    click_and_wait(browser, first)
    assert text_of(browser, "order-id") == external_id
    assert text_of(browser, "order-status") == "bezahlt"
    history = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "main ol li")]
    assert any(h.startswith("bezahlt") for h in history), history
    assert any(h.startswith("aufgegeben") for h in history), history


def test_jobs_page(start, browser):
    srv, _ = start(env={"RECIPROCITY_TEST_HOOKS": "1"})
    log_in_owner(browser, srv)
    key = create_api_key(browser, srv, "jobs", "write")
    r = api(srv, "POST", "/api/v1/_test/jobs", key, json={"count": 3, "sleep_ms": 0})
    assert r.status_code == 202, (r.status_code, r.text)
    wait_until(lambda: api(srv, "GET", "/api/v1/_test/jobs", key).json()["succeeded"] == 3, what="3 test jobs done")

    open_page(browser, srv, "/admin/jobs")
    tabs = browser.find_elements(By.CSS_SELECTOR, "main .tabs a")
    assert [re.sub(r" \(\d+\)$", "", t.text) for t in tabs] == ["wartend", "laufend", "erledigt", "fehlgeschlagen"]
    assert tabs[0].get_attribute("aria-current") == "page"
    assert "Keine Jobs in diesem Zustand." in by_id(browser, "jobs").text

    click_and_wait(browser, link(browser, "erledigt (3)"))
    assert "state=succeeded" in path_of(browser)
    current = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "main .tabs a[aria-current=page]")]
    assert current == ["erledigt (3)"]
    rows = table_rows(browser, "#jobs")
    assert len(rows) == 3
    for row in rows:
        tds = row.find_elements(By.TAG_NAME, "td")
        assert tds[1].text == "test.effect" and tds[2].text == "1/20", row.text

    open_page(browser, srv, "/admin")
    assert card_counts(browser, "c-jobs")["succeeded"] == 3


# =========================================================================== API keys, users


def test_api_key_create_use_revoke(start, browser, engine):
    srv, _ = start(engine)
    log_in_owner(browser, srv)
    key = create_api_key(browser, srv, "Shop-Sync", "write")
    assert re.fullmatch(r"rcp_[a-z0-9]+_[a-z0-9]+", key), key

    r = api(srv, "GET", "/api/v1/orders", key)
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.json()["total"] == 0
    r = api(srv, "PUT", "/api/v1/orders/K-1", key, json={
        "customer": {"email": "a@example.com", "first_name": "Anna"}, "currency": "EUR",
        "items": [{"sku": "S1", "name": "Tee", "quantity": 1, "unit_price": "9.90"}],
        "totals": {"total": "9.90"}, "status": "delivered"})
    assert r.status_code == 201, (r.status_code, r.text)
    assert api(srv, "GET", "/api/v1/orders", key).json()["total"] == 1

    # A read key reads but does not write.
    read_key = create_api_key(browser, srv, "Nur-Lesen", "read")
    assert api(srv, "GET", "/api/v1/orders", read_key).status_code == 200
    r = api(srv, "PUT", "/api/v1/orders/K-2", read_key, json={})
    assert r.status_code == 403 and r.json()["code"] == "scope_insufficient", (r.status_code, r.text)

    # The plaintext is shown once only.
    open_page(browser, srv, "/admin/api-keys")
    assert key not in browser.page_source and read_key not in browser.page_source
    row = next(r for r in table_rows(browser, "main table") if r.find_elements(By.TAG_NAME, "td")[0].text == "Shop-Sync")
    assert key.split("_")[1] in row.text  # the prefix identifies it
    assert "lesen und schreiben" in row.text
    assert "aktiv" in row.text, f"new key not shown as active: {row.text!r}"

    click_and_wait(browser, button(browser, "Widerrufen: Shop-Sync"))
    assert path_of(browser) == "/admin/api-keys"
    r = api(srv, "GET", "/api/v1/orders", key)
    assert r.status_code == 401
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert r.json()["code"] == "api_key_revoked"
    # The other key is untouched; the revoked one has no revoke button any more.
    assert api(srv, "GET", "/api/v1/orders", read_key).status_code == 200
    assert not [b for b in browser.find_elements(By.TAG_NAME, "button") if b.text == "Widerrufen: Shop-Sync"]
    assert button(browser, "Widerrufen: Nur-Lesen")


def test_user_creation_and_first_login_of_new_user(start, browser, engine):
    srv, _ = start(engine)
    log_in_owner(browser, srv)
    open_page(browser, srv, "/admin/users")
    by_id(browser, "u-email").send_keys("susi@example.com")
    by_id(browser, "u-name").send_keys("Susi Support")
    Select(by_id(browser, "u-role")).select_by_value("support")
    click_and_wait(browser, by_id(browser, "u-email").find_element(By.XPATH, "./ancestor::form").find_element(By.TAG_NAME, "button"))
    otp = text_of(browser, "one-time-password")
    assert len(otp) >= 12, otp
    members = {r.find_elements(By.TAG_NAME, "td")[1].text: r.text for r in table_rows(browser, "main table")}
    assert "susi@example.com" in members and "Support" in members["susi@example.com"], members
    open_page(browser, srv, "/admin/users")
    assert otp not in browser.page_source

    browser.delete_all_cookies()
    browser_login(browser, srv, "susi@example.com", otp)
    assert path_of(browser) == "/admin/password"
    change_password_in_browser(browser, otp, "Susis-eigenes-Passwort")
    assert path_of(browser).startswith("/admin/login")
    browser_login(browser, srv, "susi@example.com", "Susis-eigenes-Passwort")
    assert path_of(browser) == "/admin"
    assert current_workspace(browser) == FIRST_WORKSPACE
    nav = nav_texts(browser)
    assert "Kontakte" in nav and "Benutzer" not in nav and "API-Schlüssel" not in nav, nav
    # Support may not manage users or keys.
    s = session_from_browser(browser)
    for path in ("/admin/users", "/admin/api-keys"):
        r = s.get(srv.url(path), allow_redirects=False, timeout=10)
        assert r.status_code == 403, (path, r.status_code)
    open_page(browser, srv, "/admin/users")
    assert "Dafür fehlt Ihnen die Berechtigung." in browser.find_element(By.ID, "main").text


# =========================================================================== CSRF, XSS


def test_csrf_wrong_token_is_rejected(start, browser):
    srv, _ = start(demo=True)
    log_in_owner(browser, srv, workspace=DEMO_WORKSPACE)
    ws = demo_ws(srv)
    cid = db_rows(
        srv,
        f"""SELECT c.id FROM contacts c JOIN consents k ON k.contact_id = c.id
            WHERE c.workspace_id = {ws} AND k.state = 'granted' ORDER BY c.id LIMIT 1""",
    )[0][0]
    open_page(browser, srv, f"/admin/contacts/{cid}")
    real = by_id(browser, "object-submit").find_element(By.XPATH, "./ancestor::form").find_element(
        By.NAME, "_csrf").get_attribute("value")
    assert real
    email_before = text_of(browser, "contact-email")
    s = session_from_browser(browser)
    shop_id = workspace_id(srv, "shop")

    def counts():
        return {
            "erased": db_scalar(srv, f"SELECT COUNT(*) FROM contacts WHERE erased_at IS NOT NULL"),
            "suppressions": db_scalar(srv, "SELECT COUNT(*) FROM suppressions"),
            "granted": db_scalar(srv, "SELECT COUNT(*) FROM consents WHERE state = 'granted'"),
            "keys": db_scalar(srv, "SELECT COUNT(*) FROM api_keys"),
            "users": db_scalar(srv, "SELECT COUNT(*) FROM users"),
            "memberships": db_scalar(srv, "SELECT COUNT(*) FROM memberships"),
            "sessions": db_scalar(srv, "SELECT COUNT(*) FROM sessions"),
            "password": db_rows(srv, "SELECT password_hash FROM users WHERE email = 'owner@example.com'")[0][0],
        }

    before = counts()
    forms = [
        (f"/admin/contacts/{cid}/erase", {"confirm": "yes"}),
        (f"/admin/contacts/{cid}/object", {}),
        ("/admin/api-keys", {"name": "evil", "scope": "write"}),
        ("/admin/users", {"email": "evil@example.com", "name": "Evil", "role": "owner"}),
        ("/admin/workspaces/switch", {"workspace_id": str(shop_id)}),
        ("/admin/password", {"current": NEW_PASSWORD, "new": "evil-password-123", "confirm": "evil-password-123"}),
        ("/admin/logout", {}),
    ]
    bad_tokens = {"wrong": "x" * len(real), "missing": None, "empty": "", "other-length": real + "x"}
    for path, fields in forms:
        for label, token in bad_tokens.items():
            data = dict(fields)
            if token is not None:
                data["_csrf"] = token
            r = s.post(srv.url(path), data=data, allow_redirects=False, timeout=10)
            assert r.status_code == 403, (path, label, r.status_code, r.headers.get("Location"))
    # Login form: its own CSRF cookie/token pair.
    r = requests.Session().post(
        srv.url("/admin/login"), data={"_csrf": "x" * 32, "email": "owner@example.com", "password": NEW_PASSWORD},
        allow_redirects=False, timeout=10)
    assert r.status_code == 403, r.status_code

    assert counts() == before, "a rejected form changed data"
    open_page(browser, srv, f"/admin/contacts/{cid}")
    assert path_of(browser) == f"/admin/contacts/{cid}", "session was ended by a forged logout"
    assert current_workspace(browser) == DEMO_WORKSPACE
    assert text_of(browser, "contact-email") == email_before
    assert text_of(browser, "contact-suppressed") == "nein"

    # Control: the same request with the page's token is accepted.
    r = s.post(srv.url(f"/admin/contacts/{cid}/object"), data={"_csrf": real}, allow_redirects=False, timeout=10)
    assert r.status_code == 303, r.status_code
    open_page(browser, srv, f"/admin/contacts/{cid}")
    assert text_of(browser, "contact-suppressed") == "ja"


def test_admin_error_pages_keep_security_headers(start):
    """SecurityHeadersMiddleware promises its headers on every response; the admin error
    pages (403 CSRF, 404) are HTML in the admin origin like any other page."""
    srv, _ = start()
    s = owner_session(srv)
    responses = {
        "403 csrf": s.post(srv.url("/admin/contacts/1/object"), data={"_csrf": "x"}, allow_redirects=False, timeout=10),
        "404 contact": s.get(srv.url("/admin/contacts/987654"), allow_redirects=False, timeout=10),
    }
    assert responses["403 csrf"].status_code == 403
    assert responses["404 contact"].status_code == 404
    missing = []
    for label, r in responses.items():
        for header, value in (("X-Frame-Options", "DENY"), ("X-Content-Type-Options", "nosniff")):
            if r.headers.get(header) != value:
                missing.append(f"{label}: {header}={r.headers.get(header)!r}")
        if "frame-ancestors 'none'" not in r.headers.get("Content-Security-Policy", ""):
            missing.append(f"{label}: Content-Security-Policy={r.headers.get('Content-Security-Policy')!r}")
    assert not missing, "\n".join(missing)


XSS_NAME = "<script>window.__xss=1</script>"
XSS_ITEM = '"><img src=x onerror=window.__xss=2>'


def test_xss_payloads_render_as_text(start, browser):
    srv, _ = start()
    log_in_owner(browser, srv)
    key = create_api_key(browser, srv, "xss", "write")
    body = {
        "customer": {"email": "xss@example.com", "first_name": XSS_NAME, "last_name": XSS_ITEM},
        "currency": "EUR",
        "items": [{"sku": "S1", "name": XSS_ITEM, "quantity": 1, "unit_price": "9.90"}],
        "totals": {"total": "9.90"},
        "status": "delivered",
    }
    r = api(srv, "PUT", "/api/v1/orders/XSS-1", key, json=body)
    assert r.status_code == 201, (r.status_code, r.text)
    cid = r.json()["order"]["contact_id"]

    def assert_inert():
        assert browser.execute_script("return typeof window.__xss") == "undefined", browser.current_url
        assert not browser.find_elements(By.CSS_SELECTOR, "main script, img[src='x']"), browser.current_url

    open_page(browser, srv, "/admin/orders/XSS-1")
    assert_inert()
    item_cells = [r.find_elements(By.TAG_NAME, "td") for r in table_rows(browser, "main table")]
    assert [tds[1].text for tds in item_cells] == [XSS_ITEM]
    assert f"{XSS_NAME} {XSS_ITEM}" in browser.find_element(By.ID, "main").text

    open_page(browser, srv, f"/admin/contacts/{cid}")
    assert_inert()
    assert text_of(browser, "contact-name") == f"{XSS_NAME} {XSS_ITEM}"

    open_page(browser, srv, "/admin/contacts?q=xss")
    assert_inert()
    assert f"{XSS_NAME} {XSS_ITEM}" in browser.find_element(By.ID, "main").text

    # The search box reflects the query as a value, not as markup.
    open_page(browser, srv, "/admin/contacts?q=" + requests.utils.quote(XSS_ITEM))
    assert_inert()
    assert by_id(browser, "q").get_attribute("value") == XSS_ITEM

    open_page(browser, srv, "/admin/orders")
    assert_inert()
    assert "XSS-1" in browser.find_element(By.ID, "orders").text
