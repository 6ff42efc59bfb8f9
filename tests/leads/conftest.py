"""Fixtures for the lead magnet tests (tests/leads, issue 5; contract: /tmp/leads/SPEC.md).

Each test starts its own server on a fresh database, set up as tests/reviews does it (first-run
workspace "shop", owner session, API key with write scope, quiet hours off). The mail goes to the
throw-away Postfix (`smtp=True`, environment as in tests/mail) or stays in the development outbox
(`smtp=False`), where the rendered mail is read from `outbox.message`.

What the fixtures give:
    make_lead_shop    factory: make_lead_shop(engine="sqlite", smtp=False, burst=1000, env=None) -> LeadShop.
                      `burst` sets RECIPROCITY_PUBLIC_FORM_BURST (the per-IP bucket of the public forms;
                      every test request comes from 127.0.0.1); burst=None leaves the server's default.
    chromium          headless Chromium like tests/conftest.py's `browser`, but downloading into
                      `download_dir` without asking (Chrome preferences set through the Selenium options)
    download_dir      the (empty) folder Chromium downloads into
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Optional

import pytest

from tests.browser.admin_helpers import owner_session
from tests.conftest import CHROMEDRIVER, CHROMIUM, LOG_DIR, SKIP_BROWSER, _safe_name, _test_failed
from tests.leads.leadtools import LeadShop
from tests.mail.mailtools import smtp_target
from tests.reviews.conftest import FAST, NO_SMTP
from tests.reviews.reviewtools import create_api_key, quiet_hours_off


@pytest.fixture
def make_lead_shop(server) -> Callable[..., LeadShop]:
    def make(engine: str = "sqlite", *, smtp: bool = False, burst: Optional[int] = 1000,
             env: Optional[Mapping[str, Optional[str]]] = None) -> LeadShop:
        full: dict = dict(FAST)
        if smtp:
            t = smtp_target()  # fails (or skips) the test when the throw-away Postfix is missing
            full.update({"RECIPROCITY_SMTP_URL": t.url, "RECIPROCITY_SMTP_CA_FILE": str(t.ca_file)})
        else:
            full.update(NO_SMTP)
        full["RECIPROCITY_PUBLIC_FORM_BURST"] = None if burst is None else str(burst)
        full.update(env or {})
        srv = server(engine, env=full, start=False)
        srv.binary = srv.binary.resolve()  # a relative RECIPROCITY_BIN does not resolve from the server's cwd
        srv.start()
        srv.wait_for_credentials()
        admin = owner_session(srv)
        quiet_hours_off(srv, admin)
        return LeadShop(srv=srv, key=create_api_key(srv, "leads-tests"), admin=admin)

    return make


@pytest.fixture
def download_dir(tmp_path) -> Path:
    d = tmp_path / "downloads"
    d.mkdir()
    return d


@pytest.fixture
def chromium(request, download_dir):
    if SKIP_BROWSER:
        pytest.skip("RECIPROCITY_TEST_SKIP_BROWSER=1")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900",
                "--lang=de-DE", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {
        "intl.accept_languages": "de-DE,de",
        "download.default_directory": str(download_dir),
        "download.prompt_for_download": False,
        "download.directory_upgrade": True,
        "plugins.always_open_pdf_externally": True,  # a PDF downloads instead of opening in the viewer
    })
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(30)
        yield driver
        if _test_failed(request):
            out = LOG_DIR / "browser"
            out.mkdir(parents=True, exist_ok=True)
            base = out / _safe_name(request.node.nodeid)
            try:
                driver.save_screenshot(str(base) + ".png")
                Path(str(base) + ".html").write_text(driver.page_source, encoding="utf-8")
                print(f"\nbrowser: url {driver.current_url}; screenshot {base}.png")
            except Exception as e:  # the browser may be gone already
                print(f"\nbrowser: no screenshot ({e})")
    finally:
        driver.quit()
