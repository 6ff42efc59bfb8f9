"""Fixtures for the end-to-end mail tests (tests/mail).

The product sends through a real Postfix (scripts/lib/postfix-throwaway.sh,
started by `bash scripts/test`) that delivers every message into one Maildir.

Environment:
    RECIPROCITY_TEST_SMTP_URL      smtp://127.0.0.1:PORT?tls=starttls (the throw-away Postfix)
    RECIPROCITY_TEST_SMTP_CA_FILE  PEM of the throw-away CA that signed Postfix's certificate
    RECIPROCITY_TEST_MAILDIR       the Maildir (holding new/ cur/ tmp/) every message lands in
    RECIPROCITY_TEST_SKIP_MAIL=1   skip the mail tests; without it, missing variables FAIL them

What the fixtures give:
    mail_lab      session-wide MailLab: CLI calls on one SQLite database of its own (no server),
                  with sends memoized so that many tests can look at the same delivered mails
    make_lab      factory: make_lab(env, cwd) -> MailLab, e.g. sharing a `server`'s database
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional

import pytest

from tests.mail.mailtools import DkimRecord, Delivered, parse_dkim_record, smtp_target, wait_for_message

SENT = re.compile(r"^sent (<[^<>\s]+@[^<>\s]+>)\s*$", re.M)


@dataclass
class CliResult:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        return (
            f"`reciprocity {' '.join(self.args)}` exited {self.returncode}\n"
            f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"
        )


class MailLab:
    """Runs the `reciprocity` CLI against one database / data dir, with the
    throw-away Postfix as RECIPROCITY_SMTP_URL. Every step that later tests
    share (workspace, key, a sent mail) is memoized, failures included: a
    failed first attempt fails every test that needs it at once, with the
    first error, instead of each test repeating it (and its timeouts)."""

    def __init__(self, binary: Path, env: Mapping[str, str], cwd: Path):
        self.binary = Path(binary)
        self.base_env = dict(env)
        self.cwd = Path(cwd)
        self.cwd.mkdir(parents=True, exist_ok=True)
        self._memo: dict[tuple, object] = {}

    # ---- plumbing

    def env(self) -> dict[str, str]:
        t = smtp_target()
        env = dict(os.environ)
        env.update(self.base_env)
        env["RECIPROCITY_SMTP_URL"] = t.url
        env["RECIPROCITY_SMTP_CA_FILE"] = str(t.ca_file)
        return env

    def run(self, *args: str, timeout: float = 120.0) -> CliResult:
        proc = subprocess.run(
            [str(self.binary), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=self.env(),
            cwd=self.cwd,
            timeout=timeout,
        )
        return CliResult(tuple(args), proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str, timeout: float = 120.0) -> CliResult:
        r = self.run(*args, timeout=timeout)
        if r.returncode != 0:
            pytest.fail(r.describe(), pytrace=False)
        return r

    def once(self, key: tuple, fn: Callable[[], object]):
        if key in self._memo:
            value = self._memo[key]
            if isinstance(value, _Failed):
                pytest.fail(f"(failed before, in an earlier test) {value.message}", pytrace=False)
            return value
        try:
            value = fn()
        except BaseException as e:  # pytest.fail / skip are BaseExceptions
            if type(e).__name__ == "Skipped":
                raise
            self._memo[key] = _Failed(str(e) or type(e).__name__)
            raise
        self._memo[key] = value
        return value

    # ---- product steps

    def workspace(
        self,
        slug: str,
        name: str = "Kaffeerösterei Bohnenglück",
        sender_email: str = "news@example.test",
        sender_name: str = "Bohnenglück Team",
    ) -> None:
        self.once(
            ("workspace", slug),
            lambda: self.ok(
                "workspace", "create", "--slug", slug, "--name", name,
                "--sender-email", sender_email, "--sender-name", sender_name,
            ),
        )

    def dkim_key(self, slug: str, domain: str, selector: str, algorithm: str) -> DkimRecord:
        def make() -> DkimRecord:
            r = self.ok(
                "dkim", "generate", "--workspace", slug, "--domain", domain,
                "--selector", selector, "--algorithm", algorithm,
            )
            try:
                return parse_dkim_record(r.stdout)
            except AssertionError as e:
                pytest.fail(f"{e}\n{r.describe()}", pytrace=False)

        return self.once(("dkim", slug, selector, algorithm), make)  # type: ignore[return-value]

    def send_test(self, slug: str, kind: str, to: str, locale: str = "de", name: Optional[str] = None) -> str:
        """`mail send-test`; returns the printed Message-ID (with angle brackets)."""
        args = ["mail", "send-test", "--workspace", slug, "--kind", kind, "--to", to, "--locale", locale]
        if name is not None:
            args += ["--name", name]
        r = self.ok(*args)
        m = SENT.search(r.stdout)
        if not m:
            pytest.fail(f"no `sent <message-id>` line on stdout\n{r.describe()}", pytrace=False)
        return m.group(1)

    def send_and_receive(
        self, slug: str, kind: str, to: str, locale: str = "de", name: Optional[str] = None
    ) -> tuple[str, Delivered]:
        mid = self.send_test(slug, kind, to, locale, name)
        return mid, wait_for_message(smtp_target(), mid)


class _Failed:
    def __init__(self, message: str):
        self.message = message


@pytest.fixture(scope="session")
def mail_lab(reciprocity_bin, tmp_path_factory) -> MailLab:
    """CLI-only lab with its own SQLite database. Its base URL is a plain
    https host name like in production (no server answers there): the links in
    its mails are what SpamAssassin judges, and a numeric 127.0.0.1 URL would
    cost 1.2 points (NUMERIC_HTTP_ADDR) that a real installation never pays."""
    root = tmp_path_factory.mktemp("mail-lab").resolve()
    env = {
        "RECIPROCITY_DATABASE_URL": f"sqlite://{root / 'db.sqlite'}",
        "RECIPROCITY_DATA_DIR": str(root / "data"),
        "RECIPROCITY_BASE_URL": "https://marketing.bohnenglueck-kaffee.example",
        "RECIPROCITY_LOG_LEVEL": "warning",
    }
    return MailLab(reciprocity_bin, env, root)


@pytest.fixture
def make_lab(reciprocity_bin) -> Callable[..., MailLab]:
    def make(env: Mapping[str, str], cwd: Path) -> MailLab:
        return MailLab(reciprocity_bin, env, cwd)

    return make
