"""Helpers for the end-to-end mail tests: the throw-away Postfix target, its
Maildir, DKIM records and signatures, SpamAssassin and the Received header.

No pytest fixtures here (see conftest.py); everything is plain functions and
small classes so that the harness tests can use them without the product.
"""

from __future__ import annotations

import base64
import email
import email.policy
import glob
import logging
import os
import re
import smtplib
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesHeaderParser, BytesParser
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

import pytest

SKIP_MAIL = os.environ.get("RECIPROCITY_TEST_SKIP_MAIL") == "1"
DELIVERY_TIMEOUT = 20.0
SPAM_THRESHOLD = 1.0


# --------------------------------------------------------------------------- the SMTP target


@dataclass(frozen=True)
class SmtpTarget:
    """The throw-away Postfix of scripts/lib/postfix-throwaway.sh, from the environment."""

    url: str  # smtp://127.0.0.1:PORT?tls=starttls
    ca_file: Path
    maildir: Path  # the folder holding new/ cur/ tmp/
    host: str
    port: int

    @property
    def maillog(self) -> Optional[Path]:
        d = os.environ.get("POSTFIX_THROWAWAY_DIR")
        candidates = [Path(d) / "maillog"] if d else []
        # scripts/lib/postfix-throwaway.sh: DIR/mail/catchall/Maildir
        candidates.append(self.maildir.parent.parent.parent / "maillog")
        for c in candidates:
            if c.is_file():
                return c
        return None

    def maillog_tail(self, lines: int = 40) -> str:
        path = self.maillog
        if path is None:
            return "(no Postfix maillog found)"
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
        return f"--- Postfix maillog {path} (last {min(lines, len(text))} lines)\n" + "\n".join(text[-lines:])

    def ssl_context(self) -> ssl.SSLContext:
        """Trusts only the throw-away CA; checks the host name (127.0.0.1 is in the SAN)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cafile=str(self.ca_file))
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def send(self, raw: bytes, mail_from: str, rcpt_to: list[str]) -> None:
        """Sends raw bytes with smtplib over STARTTLS (smtplib turns bare LF into CRLF)."""
        with smtplib.SMTP(self.host, self.port, local_hostname="client.reciprocity.test", timeout=30) as s:
            s.starttls(context=self.ssl_context())
            s.ehlo("client.reciprocity.test")
            s.sendmail(mail_from, rcpt_to, raw)


_target_cache: dict[str, SmtpTarget] = {}


def smtp_target() -> SmtpTarget:
    """The Postfix target from RECIPROCITY_TEST_SMTP_URL, _CA_FILE and _MAILDIR.

    Missing variables fail the calling test, unless RECIPROCITY_TEST_SKIP_MAIL=1
    (then it is skipped). Call it from the test body so that a missing Postfix
    counts as a failed test, not as a skipped one.
    """
    if SKIP_MAIL:
        pytest.skip("RECIPROCITY_TEST_SKIP_MAIL=1")
    if "t" in _target_cache:
        return _target_cache["t"]
    names = ("RECIPROCITY_TEST_SMTP_URL", "RECIPROCITY_TEST_SMTP_CA_FILE", "RECIPROCITY_TEST_MAILDIR")
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not set: the mail tests need the throw-away Postfix "
            "(`bash scripts/test` starts it; by hand: `source scripts/lib/postfix-throwaway.sh; "
            "postfix_throwaway_start` as root). Set RECIPROCITY_TEST_SKIP_MAIL=1 to skip them.",
            pytrace=False,
        )
    url = os.environ["RECIPROCITY_TEST_SMTP_URL"]
    parts = urlsplit(url)
    if parts.scheme != "smtp" or not parts.hostname or not parts.port:
        pytest.fail(f"RECIPROCITY_TEST_SMTP_URL={url!r}: expected smtp://HOST:PORT?tls=starttls", pytrace=False)
    ca = Path(os.environ["RECIPROCITY_TEST_SMTP_CA_FILE"])
    maildir = Path(os.environ["RECIPROCITY_TEST_MAILDIR"])
    for p, what in ((ca, "CA file"), (maildir / "new", "Maildir new/")):
        if not p.exists():
            pytest.fail(f"{what} {p} does not exist (is the throw-away Postfix still running?)", pytrace=False)
    t = SmtpTarget(url=url, ca_file=ca, maildir=maildir, host=parts.hostname, port=parts.port)
    _target_cache["t"] = t
    return t


# --------------------------------------------------------------------------- the Maildir


@dataclass
class Delivered:
    path: Path
    raw: bytes  # as stored by Postfix: LF line endings, Return-Path/Delivered-To/Received prepended

    @property
    def message(self) -> EmailMessage:
        return BytesParser(policy=email.policy.default).parsebytes(self.raw)  # type: ignore[return-value]

    @property
    def header_block(self) -> bytes:
        return self.raw.split(b"\n\n", 1)[0]


_HEADER_PARSER = BytesHeaderParser(policy=email.policy.compat32)
_msgid_by_file: dict[str, str] = {}


def _message_id_of(path: str) -> str:
    if path not in _msgid_by_file:
        try:
            with open(path, "rb") as f:
                head = f.read(65536).split(b"\n\n", 1)[0] + b"\n\n"
        except FileNotFoundError:
            return ""
        value = _HEADER_PARSER.parsebytes(head).get("Message-ID", "") or ""
        _msgid_by_file[path] = re.sub(r"\s+", "", str(value))
    return _msgid_by_file[path]


def wait_for_message(target: SmtpTarget, message_id: str, timeout: float = DELIVERY_TIMEOUT) -> Delivered:
    """Polls Maildir new/ (and cur/) until a message whose top-level Message-ID
    header is `message_id` (with angle brackets) has arrived."""
    want = re.sub(r"\s+", "", message_id)
    deadline = time.monotonic() + timeout
    while True:
        for sub in ("new", "cur"):
            for path in glob.glob(str(target.maildir / sub / "*")):
                if _message_id_of(path) == want:
                    return Delivered(Path(path), Path(path).read_bytes())
        if time.monotonic() > deadline:
            pytest.fail(
                f"no message with Message-ID {message_id} in {target.maildir}/new within {timeout:.0f} s\n"
                + target.maillog_tail(),
                pytrace=False,
            )
        time.sleep(0.1)


# --------------------------------------------------------------------------- DKIM


@dataclass(frozen=True)
class DkimRecord:
    """A zone-file line `NAME. IN TXT "..." "..."` as printed by `reciprocity dkim generate`."""

    line: str
    name: str  # lower case, without the trailing dot
    strings: tuple[str, ...]  # the quoted character-strings, unescaped

    @property
    def value(self) -> str:
        return "".join(self.strings)

    @property
    def tags(self) -> dict[str, str]:
        return parse_tag_list(self.value)


_ZONE_LINE = re.compile(r"^\s*(\S+)\s+(?:\d+\s+)?(?:IN\s+)?(?:\d+\s+)?TXT\s+(.*?)\s*$", re.I)
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def _unescape_txt(s: str) -> str:
    return re.sub(r"\\(\d{3}|.)", lambda m: chr(int(m.group(1))) if m.group(1).isdigit() else m.group(1), s)


def parse_dkim_record(output: str) -> DkimRecord:
    """Finds the TXT line in `output` (the CLI's stdout) and parses it. Also
    accepts a value in parentheses spread over several lines (BIND style)."""
    text = output.strip()
    m = re.search(r"^\s*\S+\s+(?:\d+\s+)?(?:IN\s+)?(?:\d+\s+)?TXT\s", text, re.I | re.M)
    if not m:
        raise AssertionError(f"no `NAME IN TXT \"...\"` line in the output:\n{output}")
    rest = text[m.start():]
    name = rest.split(None, 1)[0]
    body = rest[len(name):]
    body = body[re.search(r"\bTXT\b", body, re.I).end():]  # type: ignore[union-attr]
    if body.lstrip().startswith("("):
        body = body[: body.index(")") + 1] if ")" in body else body
    else:
        body = body.splitlines()[0] if body.strip() else body
    strings = tuple(_unescape_txt(s) for s in _QUOTED.findall(body))
    if not strings:
        raise AssertionError(f"no quoted TXT value in the record line:\n{output}")
    return DkimRecord(line=text, name=name.rstrip(".").lower(), strings=strings)


def parse_tag_list(value: str) -> dict[str, str]:
    """RFC 6376 tag=value list; whitespace (FWS) inside values is removed."""
    tags: dict[str, str] = {}
    for part in value.split(";"):
        if not part.strip():
            continue
        if "=" not in part:
            raise AssertionError(f"not a tag=value pair: {part!r} in {value!r}")
        k, v = part.split("=", 1)
        tags[k.strip()] = re.sub(r"\s+", "", v)
    return tags


def make_dnsfunc(*records: DkimRecord, asked: Optional[list[str]] = None):
    """A dkimpy dnsfunc that answers only the given TXT records (no DNS)."""
    table = {r.name: r.value.encode("ascii") for r in records}

    def dnsfunc(name, timeout=5):
        key = (name.decode("ascii") if isinstance(name, (bytes, bytearray)) else str(name)).rstrip(".").lower()
        if asked is not None:
            asked.append(key)
        return table.get(key)

    return dnsfunc


class _ListHandler(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(self.format(record))


def dkim_verify(raw: bytes, *records: DkimRecord) -> tuple[bool, str]:
    """Verifies the first DKIM-Signature of `raw` against the given records.
    Returns (ok, diagnostics)."""
    import dkim  # dkimpy

    logger = logging.getLogger(f"dkim-verify-{id(raw)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = _ListHandler()
    logger.addHandler(handler)
    asked: list[str] = []
    try:
        d = dkim.DKIM(raw, logger=logger)
        try:
            ok = bool(d.verify(dnsfunc=make_dnsfunc(*records, asked=asked)))
            err = ""
        except dkim.DKIMException as e:
            ok, err = False, f"{type(e).__name__}: {e}"
    finally:
        logger.removeHandler(handler)
    diag = "\n".join(
        [f"dkimpy asked DNS for: {asked or 'nothing'}; records known: {[r.name for r in records]}"]
        + ([err] if err else [])
        + handler.lines[-20:]
    )
    return ok, diag


def dkim_signatures(msg: EmailMessage) -> list[dict[str, str]]:
    return [parse_tag_list(str(v)) for v in (msg.get_all("DKIM-Signature") or [])]


def signed_header_names(sig: dict[str, str]) -> list[str]:
    return [h.strip().lower() for h in sig.get("h", "").split(":") if h.strip()]


def rsa_key_bits(p_base64: str) -> int:
    from dkim.crypto import parse_public_key

    pk = parse_public_key(base64.b64decode(p_base64))
    return int(pk["modulus"]).bit_length()


# --------------------------------------------------------------------------- SpamAssassin


@dataclass
class SpamReport:
    score: float
    required: float
    tests: list[str]
    points: list[tuple[float, str, str]]  # (points, rule, description) from the report table
    output: str = field(repr=False)
    prefs: str = field(default="", repr=False)

    def table(self) -> str:
        if not self.points:
            return "  (no rule with points)"
        return "\n".join(f"  {p:5.1f} {r:<28} {d}" for p, r, d in self.points)


def _sa_rule_dirs() -> list[str]:
    # sa-update's rules replace the packaged ones when present (no network here: normally absent).
    updates = sorted(glob.glob("/var/lib/spamassassin/[0-9]*/updates_spamassassin_org"))
    return [updates[-1] if updates else "/usr/share/spamassassin", "/etc/spamassassin"]


_worst_case_prefs: dict[str, str] = {}


def worst_case_prefs() -> str:
    """User prefs for `spamassassin -p`:

    - `score ALL_TRUSTED 0`: the test relay 127.0.0.1 is always trusted by
      SpamAssassin, which gives every test mail -1.0 that a real receiver
      (getting the mail from the shop's server) would not give;
    - no Bayes (untrained, and it must not learn from test mails);
    - every rule scored with the highest of its four score sets. With -L
      (no network) SpamAssassin uses score set 0, where some content rules
      weigh 0 that weigh more at a real receiver with network and Bayes
      (score set 3): e.g. NUMERIC_HTTP_ADDR is 0 in set 0 but 1.24 in set 3.
    """
    if "p" in _worst_case_prefs:
        return _worst_case_prefs["p"]
    scores: dict[str, list[float]] = {}
    for d in _sa_rule_dirs():
        for f in sorted(glob.glob(os.path.join(d, "*.cf"))):
            with open(f, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    line = line.split("#", 1)[0].strip()
                    m = re.match(r"score\s+(\S+)\s+(.*)$", line)
                    if not m:
                        continue
                    try:
                        nums = [float(v) for v in m.group(2).split()]
                    except ValueError:
                        continue
                    if len(nums) in (1, 4):
                        scores[m.group(1)] = nums
    lines = ["# generated by tests/mail/mailtools.py", "use_bayes 0", "bayes_auto_learn 0", "score ALL_TRUSTED 0"]
    for rule, nums in sorted(scores.items()):
        if rule != "ALL_TRUSTED" and len(nums) == 4 and max(nums) != nums[0]:
            lines.append(f"score {rule} {max(nums)}")
    _worst_case_prefs["p"] = "\n".join(lines) + "\n"
    return _worst_case_prefs["p"]


_STATUS = re.compile(r"^X-Spam-Status:\s*(\w+),\s*score=(-?[\d.]+)\s+required=(-?[\d.]+)(.*?)(?=^\S)", re.M | re.S)
_POINTS = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s+([A-Z0-9_]+)\s+(.*)$")


def spamassassin(raw: bytes, worst_case: bool = True, timeout: float = 120.0) -> SpamReport:
    """`spamassassin -t -L` (local tests only, no network, no Bayes) on `raw`;
    see worst_case_prefs(). Its user state goes to a temporary $HOME; only the
    (empty) global state dir ~root/.spamassassin is created, as on any run as root."""
    exe = "/usr/bin/spamassassin"
    if not os.access(exe, os.X_OK):
        pytest.fail("spamassassin missing: apt-get install spamassassin (scripts/test does)", pytrace=False)
    with tempfile.TemporaryDirectory(prefix="sa-home-") as home:
        prefs_path = os.path.join(home, "user_prefs")
        prefs = worst_case_prefs() if worst_case else "use_bayes 0\nbayes_auto_learn 0\n"
        Path(prefs_path).write_text(prefs)
        env = dict(os.environ, HOME=home, LANG="C.UTF-8")
        proc = subprocess.run(
            [exe, "-t", "-L", "-x", "-p", prefs_path],
            input=raw,
            capture_output=True,
            env=env,
            timeout=timeout,
        )
    out = proc.stdout.decode("utf-8", errors="replace")
    m = _STATUS.search(out)
    if proc.returncode not in (0, 1) or not m:
        raise AssertionError(
            f"spamassassin exited {proc.returncode} without an X-Spam-Status header\n"
            f"--- stderr\n{proc.stderr.decode(errors='replace')[-3000:]}\n--- stdout\n{out[:3000]}"
        )
    rest = m.group(4)
    tm = re.search(r"tests=(.*?)(?:\s+autolearn=|\s+version=|$)", rest, re.S)
    tests = [t for t in re.split(r"[\s,]+", tm.group(1)) if t and t != "none"] if tm else []
    points: list[tuple[float, str, str]] = []
    i = out.find("Content analysis details:")
    if i >= 0:
        table = out[i:].split("\n---- ", 1)[-1].split("\n", 1)[-1]
        for line in table.splitlines():
            pm = _POINTS.match(line)
            if pm:
                points.append((float(pm.group(1)), pm.group(2), pm.group(3).strip()))
            elif line.strip() and not line.startswith((" ", "\t")):
                break
    return SpamReport(float(m.group(2)), float(m.group(3)), tests, points, out, prefs)


# --------------------------------------------------------------------------- Received / TLS


def top_received(msg: EmailMessage) -> str:
    """The Received header Postfix added (the first one), unfolded."""
    values = msg.get_all("Received") or []
    if not values:
        raise AssertionError("no Received header")
    return re.sub(r"\s+", " ", str(values[0]))


_TLS_WITH = re.compile(r"\bwith (ESMTPS|ESMTPSA|UTF8SMTPS|UTF8SMTPSA)\b")
_TLS_USING = re.compile(r"\(using (TLSv1\.[23]) with cipher (\S+)")


def received_tls(received: str) -> Optional[tuple[str, str, str]]:
    """(protocol, TLS version, cipher) when the Received header says TLS was used."""
    w = _TLS_WITH.search(received)
    u = _TLS_USING.search(received)
    if not (w and u):
        return None
    return w.group(1), u.group(1), u.group(2)


# --------------------------------------------------------------------------- List-Unsubscribe


def list_unsubscribe_uris(value: str) -> list[str]:
    return re.findall(r"<([^>]*)>", value)

