"""Fixtures for the referral programme tests (tests/referrals, issue 6; contract /tmp/refs/SPEC.md).

Each test starts its own server on a fresh database, set up as tests/leads does it (first-run workspace
"shop", owner session, API key with write scope, quiet hours off, mail kept in the development outbox).

What the fixtures give:
    make_ref_shop   factory: make_ref_shop(engine="sqlite", smtp=False, env=None, **programme) -> RefShop;
                    the programme is PUT through the API: reftools.programme(**programme) (active, target
                    https://shop.example/, 10 € voucher for the advocate, return window 3 s)
    chromium        headless Chromium (tests/leads/conftest.py's fixture)
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional

import pytest

# tests/leads' fixtures, made visible in this directory: the shop factory and headless Chromium.
from tests.leads.conftest import chromium, download_dir, make_lead_shop  # noqa: F401
from tests.referrals.reftools import RefShop


@pytest.fixture
def make_ref_shop(make_lead_shop) -> Callable[..., RefShop]:
    def make(engine: str = "sqlite", *, smtp: bool = False, env: Optional[Mapping[str, Optional[str]]] = None,
             **programme) -> RefShop:
        lead = make_lead_shop(engine, smtp=smtp, env=env)
        shop = RefShop(srv=lead.srv, key=lead.key, admin=lead.admin)
        shop.put_programme(**programme)
        return shop

    return make
