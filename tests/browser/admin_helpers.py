"""Helpers for the admin UI browser tests (tests/browser/test_admin.py).

Two ways into the admin UI:
  * through the browser (`browser_login`, `change_password_in_browser`), for the tests
    that are about logging in;
  * through `requests` (`owner_session`), for everything else: it does the owner's
    first login and forced password change without a browser, and `adopt_session`
    hands the session cookie to Selenium. The browser and the requests session then
    share one admin session (and so one CSRF token).

Every login attempt takes a token from the login rate limiter before the
password is checked (5, then 1 a minute, per client and per account, in memory
per server); a successful login gives it back, so only failed logins count. All
requests from these tests come from 127.0.0.1 without X-Forwarded-For, i.e. the
same client, so a test may fail at most 5 logins on one server.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional

import requests
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.conftest import LOG_DIR, ReciprocityServer

# A password the owner picks at first login (>= 12 characters, with non-ASCII).
NEW_PASSWORD = "Röstkaffee-ist-gut-2026"
DEMO_WORKSPACE = "Kaffeerösterei Bohnenglück"
FIRST_WORKSPACE = "Mein Shop"
SCREENSHOT_DIR = LOG_DIR / "browser"


# --------------------------------------------------------------------------- requests side


def _hidden(html: str, name: str) -> str:
    m = re.search(r'<input type="hidden" name="%s" value="([^"]*)"' % re.escape(name), html)
    assert m, f"no hidden input {name!r} in page"
    return m.group(1)


def login_requests(
    srv: ReciprocityServer,
    email: str,
    password: str,
    session: Optional[requests.Session] = None,
    headers: Optional[dict] = None,
) -> tuple[requests.Session, requests.Response]:
    """Logs in like the login form does (GET the form for its CSRF cookie, POST it).
    Returns the session and the POST's response (not followed)."""
    s = session or requests.Session()
    page = s.get(srv.url("/admin/login"), timeout=10)
    assert page.status_code == 200, page.status_code
    r = s.post(
        srv.url("/admin/login"),
        data={"_csrf": _hidden(page.text, "_csrf"), "email": email, "password": password, "next": ""},
        headers=headers or {},
        allow_redirects=False,
        timeout=30,
    )
    return s, r


def owner_session(srv: ReciprocityServer, new_password: str = NEW_PASSWORD) -> requests.Session:
    """First login of the owner with the one-time password, the forced password change,
    and the login with the new password. Uses 2 login attempts of the rate limit."""
    _, email, otp = srv.wait_for_credentials()
    s, r = login_requests(srv, email, otp)
    assert r.status_code == 303 and r.headers["Location"] == "/admin/password", (r.status_code, r.headers)
    page = s.get(srv.url("/admin/password"), timeout=10)
    r = s.post(
        srv.url("/admin/password"),
        data={"_csrf": _hidden(page.text, "_csrf"), "current": otp, "new": new_password, "confirm": new_password},
        allow_redirects=False,
        timeout=30,
    )
    assert r.status_code == 303 and r.headers["Location"].startswith("/admin/login"), (r.status_code, r.headers)
    s = requests.Session()
    s, r = login_requests(srv, email, new_password, session=s)
    assert r.status_code == 303 and r.headers["Location"] == "/admin", (r.status_code, r.headers)
    return s


def session_from_browser(driver: WebDriver) -> requests.Session:
    """A requests session carrying the browser's cookies (the admin session among them)."""
    s = requests.Session()
    for c in driver.get_cookies():
        s.cookies.set(c["name"], c["value"])
    return s


def api(srv: ReciprocityServer, method: str, path: str, key: str, **kwargs) -> requests.Response:
    kwargs.setdefault("timeout", 15)
    headers = dict(kwargs.pop("headers", {}) or {})
    headers["Authorization"] = f"Bearer {key}"
    return requests.request(method, srv.url(path), headers=headers, **kwargs)


def api_total(srv: ReciprocityServer, key: str, path: str) -> int:
    sep = "&" if "?" in path else "?"
    r = api(srv, "GET", f"{path}{sep}limit=1", key)
    assert r.status_code == 200, (r.status_code, r.text)
    return int(r.json()["total"])


# --------------------------------------------------------------------------- server side


@dataclass
class DemoSummary:
    customers: int
    orders: int


def seed_demo(srv: ReciprocityServer, customers: int = 20) -> DemoSummary:
    """`reciprocity demo --customers N` against the server's database and data directory."""
    proc = subprocess.run(
        [str(srv.binary), "demo", "--customers", str(customers)],
        env=srv.environment(),
        cwd=srv.workdir,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, f"demo exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    m = re.search(r"(\d+) customers, (\d+) orders", proc.stdout)
    assert m, f"unexpected demo output: {proc.stdout!r}"
    return DemoSummary(int(m.group(1)), int(m.group(2)))


def cli(srv: ReciprocityServer, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`reciprocity ARGS...` against the server's database and data directory (its environment).
    Returns the finished process (text stdout/stderr); the caller checks the exit code."""
    return subprocess.run(
        [str(srv.binary), *args],
        env=srv.environment(),
        cwd=srv.workdir,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def db_rows(srv: ReciprocityServer, sql: str) -> list[tuple]:
    """Runs a read-only query against the server's database (sqlite3 module or psql)."""
    if srv.database_url.startswith("sqlite://"):
        path = srv.database_url[len("sqlite://") :]
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            return [tuple(r) for r in con.execute(sql).fetchall()]
        finally:
            con.close()
    proc = subprocess.run(
        ["psql", srv.database_url, "-X", "-q", "-t", "-A", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", sql],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    rows = []
    for line in proc.stdout.splitlines():
        if line == "":
            continue
        rows.append(tuple(int(v) if re.fullmatch(r"-?\d+", v) else v for v in line.split("\t")))
    return rows


def db_scalar(srv: ReciprocityServer, sql: str) -> int:
    rows = db_rows(srv, sql)
    return int(rows[0][0])


def workspace_id(srv: ReciprocityServer, slug: str) -> int:
    return db_scalar(srv, f"SELECT id FROM workspaces WHERE slug = '{slug}'")


# --------------------------------------------------------------------------- browser side


def wait_loaded(driver: WebDriver, timeout: float = 20) -> None:
    WebDriverWait(driver, timeout).until(lambda d: d.execute_script("return document.readyState") == "complete")


def _is_stale(old: WebElement) -> bool:
    """True once `old` left the document. Mid-navigation Chromium may answer with a generic inspector error
    ("Node with given id does not belong to the document") instead of StaleElementReferenceException; that
    also means the old page is gone."""
    try:
        old.is_enabled()
        return False
    except StaleElementReferenceException:
        return True
    except WebDriverException as error:
        if "does not belong to the document" in str(error) or "No node with given id" in str(error):
            return True
        raise


def click_and_wait(driver: WebDriver, element: WebElement, timeout: float = 30) -> None:
    """Clicks something that loads a new page (a submit button, a link) and waits for it."""
    old = driver.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(driver, timeout).until(lambda _: _is_stale(old))
    wait_loaded(driver, timeout)


def open_page(driver: WebDriver, srv: ReciprocityServer, path: str) -> None:
    driver.get(srv.url(path))
    wait_loaded(driver)


def path_of(driver: WebDriver) -> str:
    """Path and query of the current URL."""
    return re.sub(r"^https?://[^/]+", "", driver.current_url)


def by_id(driver: WebDriver, element_id: str) -> WebElement:
    return driver.find_element(By.ID, element_id)


def text_of(driver: WebDriver, element_id: str) -> str:
    """The element's text content (also when it is not visible), whitespace collapsed."""
    raw = by_id(driver, element_id).get_attribute("textContent") or ""
    return " ".join(raw.split())


def exists(driver: WebDriver, by: str, what: str) -> bool:
    return len(driver.find_elements(by, what)) > 0


def alerts(driver: WebDriver) -> list[str]:
    return [" ".join((e.get_attribute("textContent") or "").split()) for e in driver.find_elements(By.CSS_SELECTOR, "[role=alert]")]

def statuses(driver: WebDriver) -> list[str]:
    return [" ".join((e.get_attribute("textContent") or "").split()) for e in driver.find_elements(By.CSS_SELECTOR, "[role=status]")]


def button(driver: WebDriver, label: str) -> WebElement:
    """A button by its exact (whitespace-normalized) text."""
    for b in driver.find_elements(By.TAG_NAME, "button"):
        if " ".join((b.get_attribute("textContent") or "").split()) == label:
            return b
    raise NoSuchElementException(
        f"no button {label!r}; buttons: {[' '.join((b.get_attribute('textContent') or '').split()) for b in driver.find_elements(By.TAG_NAME, 'button')]}"
    )


def link(driver: WebDriver, label: str) -> WebElement:
    return driver.find_element(By.LINK_TEXT, label)


def current_workspace(driver: WebDriver) -> str:
    """The workspace name shown in the header (the span after the brand)."""
    return driver.find_element(By.XPATH, "//header/span[not(@class='brand')]").text.strip()


def nav_texts(driver: WebDriver) -> list[str]:
    return [a.text.strip() for a in driver.find_elements(By.CSS_SELECTOR, "header nav a")]


def html_lang(driver: WebDriver) -> str:
    return driver.find_element(By.TAG_NAME, "html").get_attribute("lang") or ""


def browser_login(driver: WebDriver, srv: ReciprocityServer, email: str, password: str) -> None:
    open_page(driver, srv, "/admin/login")
    by_id(driver, "email").clear()
    by_id(driver, "email").send_keys(email)
    by_id(driver, "password").send_keys(password)
    click_and_wait(driver, by_id(driver, "login-submit"))


def change_password_in_browser(driver: WebDriver, current: str, new: str, confirm: Optional[str] = None) -> None:
    by_id(driver, "current").send_keys(current)
    by_id(driver, "new").send_keys(new)
    by_id(driver, "confirm").send_keys(confirm if confirm is not None else new)
    form = by_id(driver, "current").find_element(By.XPATH, "./ancestor::form")
    click_and_wait(driver, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))


def adopt_session(driver: WebDriver, srv: ReciprocityServer, session: requests.Session) -> None:
    """Gives the browser the admin session of `session` and opens the start page."""
    token = session.cookies.get("rcp_session")
    assert token, "requests session has no rcp_session cookie"
    open_page(driver, srv, "/healthz")
    driver.add_cookie({"name": "rcp_session", "value": token, "path": "/", "httpOnly": True, "sameSite": "Lax"})
    open_page(driver, srv, "/admin")
    assert path_of(driver) == "/admin", f"session not accepted: at {driver.current_url}"


def switch_workspace(driver: WebDriver, srv: ReciprocityServer, name: str) -> None:
    """Makes `name` the current workspace through the switcher (no-op when it is already)."""
    open_page(driver, srv, "/admin/workspaces")
    if current_workspace(driver) == name:
        return
    click_and_wait(driver, button(driver, f"Wechseln: {name}"))
    assert current_workspace(driver) == name


def create_api_key(driver: WebDriver, srv: ReciprocityServer, name: str, scope: str = "write") -> str:
    """Creates a key on /admin/api-keys and returns the plaintext shown once."""
    open_page(driver, srv, "/admin/api-keys")
    by_id(driver, "k-name").send_keys(name)
    Select(by_id(driver, "k-scope")).select_by_value(scope)
    form = by_id(driver, "k-name").find_element(By.XPATH, "./ancestor::form")
    click_and_wait(driver, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    key = text_of(driver, "new-key")
    assert key.startswith("rcp_"), f"new key looks wrong: {key!r}"
    return key


def card_counts(driver: WebDriver, heading_id: str) -> dict[str, int]:
    """{row label or status key: count} of a start page card (section aria-labelledby=heading_id).
    Rows that link to a filtered list are keyed by the filter value (status=paid -> "paid")."""
    out: dict[str, int] = {}
    section = driver.find_element(By.CSS_SELECTOR, f"section[aria-labelledby='{heading_id}']")
    for row in section.find_elements(By.CSS_SELECTOR, "tbody tr"):
        ths = row.find_elements(By.TAG_NAME, "th")
        tds = row.find_elements(By.TAG_NAME, "td")
        if not ths or not tds:
            continue
        links = ths[0].find_elements(By.TAG_NAME, "a")
        key = ths[0].text.strip()
        if links:
            m = re.search(r"[?&](?:status|state)=([a-z_]+)", links[0].get_attribute("href") or "")
            if m:
                key = m.group(1)
        out[key] = int(tds[0].text.strip())
    return out


def table_rows(driver: WebDriver, css: str) -> list[WebElement]:
    return driver.find_elements(By.CSS_SELECTOR, f"{css} tbody tr")


def save_screenshot(driver: WebDriver, name: str):
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / name
    driver.save_screenshot(str(path))
    return path


@contextmanager
def in_frame(driver: WebDriver, frame: WebElement) -> Iterator[None]:
    """Runs the block inside the iframe `frame` and switches back to the page afterwards."""
    driver.switch_to.frame(frame)
    try:
        wait_loaded(driver)
        yield
    finally:
        driver.switch_to.default_content()


def wait_until(predicate, timeout: float = 20.0, what: str = "condition", interval: float = 0.1,
               describe=lambda: ""):
    """Calls `predicate` until it returns something truthy, which is returned; fails after `timeout` s, with
    `describe()` (the state worth seeing) in the message."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = describe()
            raise AssertionError(f"timed out after {timeout} s waiting for {what}" + (f"\n{extra}" if extra else ""))
        time.sleep(interval)
