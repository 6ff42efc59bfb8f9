"""Browser tests of the mail pages: the admin's Postausgang (outbox viewer), the mail
settings and template editor (/admin/mail), and the public unsubscribe page behind
List-Unsubscribe. Headless Chromium via Selenium.

Mail stays in the development outbox: the servers run without RECIPROCITY_SMTP_URL
(explicitly removed from their environment). Mails come from `reciprocity mail
send-test` run with the server's environment (`cli`), so the CLI writes into the
server's database and signs its links with the server's keys and base URL.

bcrypt cost 4 (RECIPROCITY_BCRYPT_COST) keeps logins fast; each test logs in at most
twice (owner_session), well inside the login rate limit.
"""

from __future__ import annotations

import re
from email import message_from_string

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests.browser.admin_helpers import (
    adopt_session,
    button,
    by_id,
    cli,
    click_and_wait,
    db_rows,
    db_scalar,
    exists,
    in_frame,
    link,
    open_page,
    owner_session,
    path_of,
    session_from_browser,
    statuses,
    table_rows,
    text_of,
    workspace_id,
)

FAST = {"RECIPROCITY_BCRYPT_COST": "4"}
# Development outbox: never hand mail to an SMTP server, whatever the caller's environment says.
NO_SMTP = {"RECIPROCITY_SMTP_URL": None, "RECIPROCITY_SMTP_CA_FILE": None}
SLUG = "shop"  # the first-run workspace
SENT = re.compile(r"^sent <([^<>\s]+@[^<>\s]+)>\s*$", re.M)

REVIEW_SUBJECT_SIE = "Wie gefällt Ihnen Ihre Bestellung 10042?"
UNSUBSCRIBED = "Sie sind abgemeldet. Sie erhalten von uns keine Werbe-E-Mails mehr."


@pytest.fixture
def start(server):
    """start(engine) -> a started server in development-outbox mode, first-run credentials printed."""

    def make(engine="sqlite"):
        srv = server(engine, env={**FAST, **NO_SMTP}, start=False)
        # A relative RECIPROCITY_BIN does not resolve from the server's working directory.
        srv.binary = srv.binary.resolve()
        srv.start()
        srv.wait_for_credentials()
        return srv

    return make


def log_in_owner(browser, srv):
    """Owner's first login + password change via requests, session handed to the browser."""
    s = owner_session(srv)
    adopt_session(browser, srv, s)
    return s


# --------------------------------------------------------------------------- mail helpers


def send_test(srv, kind: str, to: str, *, name=None, locale="de"):
    """`mail send-test` with the server's environment -> the finished process."""
    args = ["mail", "send-test", "--workspace", SLUG, "--kind", kind, "--to", to, "--locale", locale]
    if name is not None:
        args += ["--name", name]
    return cli(srv, *args)


def describe(proc) -> str:
    return f"`{' '.join(proc.args[1:])}` exited {proc.returncode}\n--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}"


def send_ok(srv, kind: str, to: str, **kwargs) -> str:
    """Sends a test mail that must go out; returns its Message-ID (without angle brackets)."""
    proc = send_test(srv, kind, to, **kwargs)
    assert proc.returncode == 0, describe(proc)
    m = SENT.search(proc.stdout)
    assert m, f"no `sent <message-id>` line\n{describe(proc)}"
    return m.group(1)


def assert_suppressed(srv, to: str) -> None:
    proc = send_test(srv, "review_request", to)
    assert proc.returncode == 1, f"marketing mail to an unsubscribed address was not refused\n{describe(proc)}"
    assert "suppressed" in proc.stderr, describe(proc)
    assert not SENT.search(proc.stdout), describe(proc)


def outbox_id(srv, message_id: str) -> int:
    rows = db_rows(srv, f"SELECT id FROM outbox WHERE message_id = '{message_id}'")
    assert len(rows) == 1, f"{len(rows)} outbox rows for <{message_id}>"
    return int(rows[0][0])


def list_unsubscribe_url(browser, srv, message_id: str) -> str:
    """The http(s) URI of the List-Unsubscribe header, read from the mail's raw source in the admin."""
    r = session_from_browser(browser).get(srv.url(f"/admin/outbox/{outbox_id(srv, message_id)}/raw"), timeout=10)
    assert r.status_code == 200, r.status_code
    values = message_from_string(r.text).get_all("List-Unsubscribe") or []
    assert len(values) == 1, f"{len(values)} List-Unsubscribe headers"
    uris = re.findall(r"<([^<>]+)>", re.sub(r"\s+", " ", values[0]))
    assert len(uris) == 2 and uris[1].startswith("mailto:"), f"List-Unsubscribe {values[0]!r}"
    assert uris[0].startswith(srv.base_url + "/u/"), uris[0]
    return uris[0]


def suppression_count(srv) -> int:
    return db_scalar(srv, f"SELECT COUNT(*) FROM suppressions WHERE workspace_id = {workspace_id(srv, SLUG)}")


def outbox_rows(browser) -> list[dict]:
    """The rows of table#outbox as {id, kind, recipient, subject, state, url}."""
    out = []
    for row in table_rows(browser, "#outbox"):
        tds = row.find_elements(By.TAG_NAME, "td")
        if len(tds) < 6:
            continue  # "Keine E-Mails in diesem Zustand."
        a = tds[0].find_element(By.TAG_NAME, "a")
        out.append({
            "id": int(a.text), "kind": tds[1].text, "recipient": tds[2].text, "subject": tds[3].text,
            "state": tds[4].text.split("\n")[0], "url": a.get_attribute("href"),
        })
    return out


def headers_table(browser) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for row in table_rows(browser, "#mail-headers"):
        name = row.find_element(By.TAG_NAME, "th").text.strip()
        out.setdefault(name, []).append(row.find_element(By.TAG_NAME, "td").text.strip())
    return out


def template_link(browser, kind_label: str, variant_label: str):
    """The editor link of one template in table#templates (row by kind, link by variant)."""
    for row in table_rows(browser, "#templates"):
        tds = row.find_elements(By.TAG_NAME, "td")
        if tds and tds[0].text.strip() == kind_label:
            return tds[2].find_element(By.LINK_TEXT, variant_label)
    raise AssertionError(f"no template row {kind_label!r}")


def no_horizontal_overflow(browser) -> tuple[int, int]:
    return tuple(browser.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth];"))  # type: ignore[return-value]


# =========================================================================== outbox viewer


def test_outbox_shows_test_mail_with_html_text_and_headers(start, browser, engine):
    srv = start(engine)
    log_in_owner(browser, srv)
    to = "anna@example.com"
    mid = send_ok(srv, "review_request", to, name="Anna Müller")

    open_page(browser, srv, "/admin")
    click_and_wait(browser, link(browser, "Postausgang"))
    assert path_of(browser) == "/admin/outbox"
    rows = outbox_rows(browser)
    assert [(r["recipient"], r["subject"], r["state"]) for r in rows] == [(to, REVIEW_SUBJECT_SIE, "gesendet")], rows
    assert rows[0]["kind"] == "Bewertungsanfrage (Test)", rows

    row = table_rows(browser, "#outbox")[0]
    click_and_wait(browser, row.find_element(By.LINK_TEXT, REVIEW_SUBJECT_SIE))
    assert path_of(browser) == f"/admin/outbox/{rows[0]['id']}"
    assert text_of(browser, "mail-subject") == REVIEW_SUBJECT_SIE
    assert text_of(browser, "mail-state").startswith("gesendet"), text_of(browser, "mail-state")
    assert mid in browser.find_element(By.CSS_SELECTOR, "dl.card").text, "Message-ID of the CLI's mail not shown"

    # The HTML part: in a sandboxed iframe, loaded from the same origin.
    frame = by_id(browser, "mail-html")
    assert frame.get_attribute("sandbox") == "", "HTML mail is not shown in a sandboxed iframe"
    assert frame.get_attribute("src") == srv.url(f"/admin/outbox/{rows[0]['id']}/html")
    with in_frame(browser, frame):
        assert browser.execute_script("return location.href") == srv.url(f"/admin/outbox/{rows[0]['id']}/html")
        body = browser.find_element(By.TAG_NAME, "body").text
        assert "Guten Tag Anna Müller," in body, body
        assert "Äthiopien Yirgacheffe" in body, body
        unsubscribe = browser.find_elements(By.LINK_TEXT, "Abmelden")
        assert len(unsubscribe) == 1, body
        unsubscribe_href = unsubscribe[0].get_attribute("href")
        preferences = browser.find_elements(By.LINK_TEXT, "E-Mail-Einstellungen")
        assert len(preferences) == 1, body
        preferences_href = preferences[0].get_attribute("href")
    assert unsubscribe_href.startswith(srv.base_url + "/u/"), unsubscribe_href
    assert preferences_href.startswith(srv.base_url + "/p/"), preferences_href

    # The text part, decoded (quoted-printable, UTF-8).
    text = by_id(browser, "mail-text").text
    assert text.startswith("Guten Tag Anna Müller,"), text
    assert "Äthiopien Yirgacheffe – Röstung hell" in text, text
    assert f"Abmelden: {unsubscribe_href}" in text, text
    assert "=C3" not in text and "=\n" not in text, "text part shown undecoded"

    # The headers: one-click unsubscribe (RFC 8058) pointing at the same URL as the footer.
    headers = headers_table(browser)
    assert headers.get("List-Unsubscribe-Post") == ["List-Unsubscribe=One-Click"], headers
    assert len(headers.get("List-Unsubscribe", [])) == 1, headers
    assert headers["List-Unsubscribe"][0].startswith(f"<{unsubscribe_href}>, <mailto:"), headers["List-Unsubscribe"]
    assert headers.get("Message-ID") == [f"<{mid}>"], headers
    assert list_unsubscribe_url(browser, srv, mid) == unsubscribe_href
    assert by_id(browser, "raw-link").get_attribute("href") == srv.url(f"/admin/outbox/{rows[0]['id']}/raw")

    # The footer's preference link opens the preference centre.
    open_page(browser, srv, preferences_href)
    assert browser.find_element(By.TAG_NAME, "h1").text == "E-Mail-Einstellungen"
    keep = [e.get_attribute("name") for e in browser.find_elements(By.CSS_SELECTOR, "input[type=checkbox][name^=keep_]")]
    assert "keep_review_request" in keep, keep


# =========================================================================== template editor


def test_template_editor_refuses_unknown_variable_then_saves_and_is_used(start, browser, engine):
    srv = start(engine)
    log_in_owner(browser, srv)
    ws = workspace_id(srv, SLUG)

    def saved_templates():
        return db_rows(srv, f"SELECT kind, variant, subject FROM mail_templates WHERE workspace_id = {ws}")

    open_page(browser, srv, "/admin")
    click_and_wait(browser, link(browser, "E-Mail"))
    assert path_of(browser) == "/admin/mail"
    click_and_wait(browser, template_link(browser, "Bewertungsanfrage", "Deutsch (Du)"))
    editor = "/admin/mail/templates/review_request.de-du"
    assert path_of(browser) == editor
    original_subject = by_id(browser, "subject").get_attribute("value")
    original_text = by_id(browser, "text").get_attribute("value")
    assert original_subject == "Wie gefällt dir deine Bestellung {{order.number}}?", original_subject
    assert "{{salutation}}" in original_text, original_text

    # 1. An unknown variable is refused with an error naming it; nothing is stored.
    by_id(browser, "text").send_keys("\nDein Gutschein: {{coupon_code}}\n")
    assert "{{coupon_code}}" in by_id(browser, "text").get_attribute("value")
    click_and_wait(browser, button(browser, "Speichern"))
    assert exists(browser, By.ID, "template-error"), f"no error shown; statuses: {statuses(browser)}"
    assert "coupon_code" in text_of(browser, "template-error"), text_of(browser, "template-error")
    assert by_id(browser, "template-error").is_displayed()
    assert "Die Vorlage ist gespeichert." not in statuses(browser)
    assert "{{coupon_code}}" in by_id(browser, "text").get_attribute("value"), "the edit was lost with the error"
    # The same refusal answers 422.
    page = session_from_browser(browser).post(
        srv.url(editor),
        data={
            "_csrf": browser.find_element(By.CSS_SELECTOR, "#template-form input[name=_csrf]").get_attribute("value"),
            "subject": original_subject, "text": original_text + "\n{{coupon_code}}", "html": "<p>x</p>",
            "action": "save",
        },
        allow_redirects=False,
        timeout=10,
    )
    assert page.status_code == 422, page.status_code
    assert saved_templates() == []
    open_page(browser, srv, editor)
    assert by_id(browser, "text").get_attribute("value") == original_text
    assert by_id(browser, "subject").get_attribute("value") == original_subject
    assert not exists(browser, By.ID, "template-error")

    # 2. A new subject (with umlauts and a variable): the preview renders it, without saving.
    new_subject = "Grüße aus der Rösterei – wie schmeckt Bestellung {{order.number}}?"
    rendered = "Grüße aus der Rösterei – wie schmeckt Bestellung 10042?"
    by_id(browser, "subject").clear()
    by_id(browser, "subject").send_keys(new_subject)
    click_and_wait(browser, button(browser, "Vorschau"))
    assert path_of(browser) == editor
    assert not exists(browser, By.ID, "template-error"), text_of(browser, "template-error")
    assert by_id(browser, "subject").get_attribute("value") == new_subject
    preview_heading = browser.find_element(By.XPATH, "//iframe[@id='template-preview']/preceding::strong[1]").text
    assert preview_heading == rendered, preview_heading
    with in_frame(browser, by_id(browser, "template-preview")):
        assert browser.execute_script("return location.href") == "about:srcdoc"
        title = browser.execute_script("return document.title")  # the frame's (WebDriver's title is the page's)
        assert title == rendered, title
        body = browser.find_element(By.TAG_NAME, "body").text
        assert "Äthiopien Yirgacheffe" in body and "du hast deine Bestellung 10042" in body, body
    assert saved_templates() == [], "Vorschau saved the template"

    click_and_wait(browser, button(browser, "Speichern"))
    assert "Die Vorlage ist gespeichert." in statuses(browser), statuses(browser)
    assert saved_templates() == [("review_request", "de-du", new_subject)]
    open_page(browser, srv, editor)
    assert by_id(browser, "subject").get_attribute("value") == new_subject
    assert by_id(browser, "text").get_attribute("value") == original_text

    # 3. With "Sie" (the default) the Sie template is still used.
    to = "du.test@example.com"
    mid_sie = send_ok(srv, "review_request", to, name="Jürgen Weiß")
    # 4. Switch the address form to "du" in the settings form.
    open_page(browser, srv, "/admin/mail")
    form = by_id(browser, "mail-settings")
    assert Select(by_id(browser, "address_form")).first_selected_option.get_attribute("value") == "sie"
    Select(by_id(browser, "address_form")).select_by_value("du")
    click_and_wait(browser, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    assert "Die Versand-Regeln sind gespeichert." in statuses(browser), statuses(browser)
    open_page(browser, srv, "/admin/mail")
    assert Select(by_id(browser, "address_form")).first_selected_option.get_attribute("value") == "du"
    mid_du = send_ok(srv, "review_request", to, name="Jürgen Weiß", locale="de")

    # 5. The outbox shows both, the newer with the edited Du subject.
    click_and_wait(browser, link(browser, "Postausgang"))
    by_id_row = {r["id"]: r for r in outbox_rows(browser)}
    sie_id, du_id = outbox_id(srv, mid_sie), outbox_id(srv, mid_du)
    assert by_id_row[sie_id]["subject"] == REVIEW_SUBJECT_SIE, by_id_row
    assert by_id_row[du_id]["subject"] == rendered, by_id_row
    click_and_wait(browser, link(browser, rendered))
    assert path_of(browser) == f"/admin/outbox/{du_id}"
    assert text_of(browser, "mail-subject") == rendered
    text = by_id(browser, "mail-text").text
    assert text.startswith("Hallo Jürgen,"), text
    assert "du hast deine Bestellung 10042" in text, text


# =========================================================================== public unsubscribe page


def test_unsubscribe_page_get_changes_nothing_and_button_unsubscribes(start, browser, engine):
    srv = start(engine)
    log_in_owner(browser, srv)
    to = "abmelden@example.com"
    mid = send_ok(srv, "review_request", to, name="Jürgen Weiß-Hähnel")
    url = list_unsubscribe_url(browser, srv, mid)

    # GET (as a link scanner or the reader's click would): a confirmation page, nothing changes.
    browser.delete_all_cookies()  # the public page needs no admin session
    open_page(browser, srv, url)
    assert browser.find_element(By.TAG_NAME, "h1").text == "E-Mails abbestellen"
    confirm = button(browser, "Abmelden bestätigen")
    assert confirm.is_displayed()
    assert not statuses(browser), statuses(browser)
    assert suppression_count(srv) == 0
    send_ok(srv, "review_request", to)  # still mailable after the GET

    # The button (a plain form POST) unsubscribes.
    click_and_wait(browser, confirm)
    assert browser.find_element(By.TAG_NAME, "h1").text == "E-Mails abbestellen"
    assert UNSUBSCRIBED in statuses(browser), statuses(browser)
    assert not [b for b in browser.find_elements(By.TAG_NAME, "button") if b.text == "Abmelden bestätigen"]
    assert suppression_count(srv) == 1
    assert_suppressed(srv, to)
    # Transactional mail (double opt-in confirmation) still goes out.
    send_ok(srv, "doi_confirmation", to)

    # Opening the link again shows the state instead of offering the button again.
    open_page(browser, srv, url)
    assert UNSUBSCRIBED in statuses(browser), statuses(browser)
    assert suppression_count(srv) == 1


def test_unsubscribe_page_on_a_phone(start, browser):
    srv = start()
    log_in_owner(browser, srv)
    to = "handy@example.com"
    url = list_unsubscribe_url(browser, srv, send_ok(srv, "review_request", to))

    browser.delete_all_cookies()
    browser.set_window_size(390, 844)
    open_page(browser, srv, url)
    width, inner = no_horizontal_overflow(browser)
    assert inner <= 400, f"window is not phone-sized: innerWidth {inner}"
    assert width <= inner, f"unsubscribe page scrolls sideways on a phone: scrollWidth {width} > innerWidth {inner}"
    confirm = button(browser, "Abmelden bestätigen")
    assert confirm.is_displayed()
    rect = browser.execute_script(
        "const r = arguments[0].getBoundingClientRect(); return [r.left, r.right, r.width];", confirm)
    assert rect[0] >= 0 and rect[1] <= inner and rect[2] > 0, f"button outside the viewport: {rect}, innerWidth {inner}"
    assert browser.execute_script("return window.scrollX") == 0

    click_and_wait(browser, confirm)
    assert UNSUBSCRIBED in statuses(browser), statuses(browser)
    width, inner = no_horizontal_overflow(browser)
    assert width <= inner, f"confirmation scrolls sideways on a phone: scrollWidth {width} > innerWidth {inner}"
    assert_suppressed(srv, to)
