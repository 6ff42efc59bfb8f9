"""Fixtures for the end-to-end review tests (tests/reviews).

Each test starts its own server on a fresh database. The mail goes either to the
throw-away Postfix (`smtp=True`; environment as in tests/mail: RECIPROCITY_TEST_SMTP_URL,
RECIPROCITY_TEST_SMTP_CA_FILE, RECIPROCITY_TEST_MAILDIR; missing variables fail the
test unless RECIPROCITY_TEST_SKIP_MAIL=1) or stays in the development outbox
(`smtp=False`), where the rendered mail is kept in `outbox.message` and its review
links are read from there.

What the fixtures give:
    make_shop     factory: make_shop(engine="sqlite", smtp=False, **review_settings) -> Shop
                  (reviewtools.Shop: server, API key with write scope, owner session),
                  with quiet hours switched off in the admin's mail settings and the review
                  settings PUT through the API: delay_seconds=1 and a disclosure text unless
                  given otherwise
"""

from __future__ import annotations

from typing import Callable

import pytest

from tests.browser.admin_helpers import owner_session
from tests.mail.mailtools import smtp_target
from tests.reviews.reviewtools import DISCLOSURE, Shop, create_api_key, quiet_hours_off

FAST = {"RECIPROCITY_BCRYPT_COST": "4"}
# Development outbox: never hand mail to an SMTP server, whatever the caller's environment says.
NO_SMTP = {"RECIPROCITY_SMTP_URL": None, "RECIPROCITY_SMTP_CA_FILE": None}


@pytest.fixture
def make_shop(server) -> Callable[..., Shop]:
    def make(engine: str = "sqlite", *, smtp: bool = False, **review_settings) -> Shop:
        env: dict = dict(FAST)
        if smtp:
            t = smtp_target()  # fails (or skips) the test when the throw-away Postfix is missing
            env.update({"RECIPROCITY_SMTP_URL": t.url, "RECIPROCITY_SMTP_CA_FILE": str(t.ca_file)})
        else:
            env.update(NO_SMTP)
        srv = server(engine, env=env, start=False)
        # A relative RECIPROCITY_BIN does not resolve from the server's working directory.
        srv.binary = srv.binary.resolve()
        srv.start()
        srv.wait_for_credentials()
        admin = owner_session(srv)
        quiet_hours_off(srv, admin)
        shop = Shop(srv=srv, key=create_api_key(srv), admin=admin)
        shop.put_review_settings(**{"delay_seconds": 1, "disclosure_text": DISCLOSURE, **review_settings})
        return shop

    return make
