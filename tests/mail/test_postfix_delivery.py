"""End to end: `reciprocity mail send-test` renders a mail, signs it with DKIM
and delivers it over STARTTLS to a real Postfix, which puts it into a Maildir.
The delivered copy is then checked as a receiver would: DKIM (dkimpy, with the
zone line the CLI printed and no DNS), headers, MIME, encoding, line format,
SpamAssassin, TLS and the VERP Return-Path.

    bash scripts/test                                   # starts Postfix, runs everything
    python3 -m pytest tests/mail -q                     # by hand, after postfix_throwaway_start
    RECIPROCITY_TEST_SKIP_MAIL=1 python3 -m pytest ...  # skip (otherwise no Postfix = failure)

Each mail is sent once per session (MailLab memoizes) and looked at by several
tests. A mail is found in the Maildir by its Message-ID (the one `send-test`
printed).
"""

from __future__ import annotations

import email.utils
import html
import re
from datetime import datetime, timezone

import pytest

from tests.mail.mailtools import (
    SKIP_MAIL,
    SPAM_THRESHOLD,
    Delivered,
    DkimRecord,
    dkim_signatures,
    dkim_verify,
    received_tls,
    rsa_key_bits,
    signed_header_names,
    spamassassin,
    top_received,
)

pytestmark = pytest.mark.skipif(SKIP_MAIL, reason="RECIPROCITY_TEST_SKIP_MAIL=1")

# ---- the sample data (see `reciprocity workspace create` / `mail send-test` calls)
SHOP_NAME = "Kaffeerösterei Bohnenglück"
SENDER_EMAIL = "news@example.test"
SENDER_NAME = "Bohnenglück Team"
DKIM_DOMAIN = "example.test"
RECIPIENT_NAME = "Jürgen Weiß-Hähnel"
PRODUCT = "Äthiopien Yirgacheffe – Röstung hell"  # the sample product of review_request

# Texts each kind must carry in both its text/plain and its text/html part
# (HTML after unescaping entities). They prove that ä/ö/ü/ß/– survive.
EXPECTED_IN_BODY = {
    "doi_confirmation": ["Bohnenglück", "Jürgen"],
    "review_request": ["Bohnenglück", "Jürgen", PRODUCT],
}
# Exact decoded subjects, pinned once the templates are final: (kind, locale) -> subject.
# Until a pair is listed, its subject is only checked for clean decoding.
EXPECTED_SUBJECTS: dict[tuple[str, str], str] = {}

MARKETING = {"review_request"}
REQUIRED_SIGNED = ["from", "to", "subject", "date", "message-id"]
MARKETING_SIGNED = ["list-unsubscribe", "list-unsubscribe-post"]

# workspace per algorithm: the newest key of a workspace signs
ALGORITHMS = {
    "rsa-sha256": {"workspace": "t1", "selector": "rsa1", "k": "rsa"},
    "ed25519-sha256": {"workspace": "t2", "selector": "ed1", "k": "ed25519"},
}
CASES = [
    ("rsa-sha256", "doi_confirmation", "de"),
    ("rsa-sha256", "review_request", "de"),
    ("rsa-sha256", "review_request", "en"),
    ("ed25519-sha256", "doi_confirmation", "de"),
    ("ed25519-sha256", "review_request", "de"),
    ("ed25519-sha256", "doi_confirmation", "en"),
]
CASE_IDS = [f"{a.split('-')[0]}-{k}-{l}" for a, k, l in CASES]

_MOJIBAKE = re.compile("Ã[\u0080-\u00bf]|Â[\u0080-\u00bf]|â€|\ufffd")


# --------------------------------------------------------------------------- helpers


def key_for(lab, algorithm: str) -> DkimRecord:
    a = ALGORITHMS[algorithm]
    lab.workspace(a["workspace"], SHOP_NAME, SENDER_EMAIL, SENDER_NAME)
    return lab.dkim_key(a["workspace"], DKIM_DOMAIN, a["selector"], algorithm)


def recipient(algorithm: str, kind: str, locale: str) -> str:
    return f"juergen.{kind.replace('_', '-')}.{locale}.{algorithm.split('-')[0]}@kunde.example"


def mail_for(lab, algorithm: str, kind: str, locale: str) -> tuple[str, Delivered, DkimRecord]:
    record = key_for(lab, algorithm)

    def send():
        return lab.send_and_receive(
            ALGORITHMS[algorithm]["workspace"], kind, recipient(algorithm, kind, locale), locale, RECIPIENT_NAME
        )

    mid, delivered = lab.once(("mail", algorithm, kind, locale), send)
    return mid, delivered, record


def body_parts(msg):
    """(text/plain part, text/html part) of a multipart/alternative message."""
    assert msg.get_content_type() == "multipart/alternative", (
        f"top-level type is {msg.get_content_type()}, expected multipart/alternative"
    )
    parts = list(msg.iter_parts())
    assert len(parts) >= 2, f"multipart/alternative with {len(parts)} part(s)"
    plain = parts[0]
    assert plain.get_content_type() == "text/plain", f"first alternative is {plain.get_content_type()}"
    last = parts[-1]
    if last.get_content_type() == "multipart/related":
        last = next(p for p in last.walk() if p.get_content_type() == "text/html")
    assert last.get_content_type() == "text/html", f"last alternative is {last.get_content_type()}"
    return plain, last


def visible_text(html_source: str) -> str:
    text = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", html_source)
    text = re.sub(r"(?s)<[^>]+>", " ", text)
    return re.sub(r"\s+", " ", html.unescape(text))


# --------------------------------------------------------------------------- DKIM record


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_dkim_generate_prints_zone_line(mail_lab, algorithm):
    record = key_for(mail_lab, algorithm)
    a = ALGORITHMS[algorithm]
    assert record.name == f"{a['selector']}._domainkey.{DKIM_DOMAIN}", record.line
    assert re.search(r"\bIN\s+TXT\b", record.line), record.line
    assert all(len(s.encode()) <= 255 for s in record.strings), (
        f"a TXT character-string is longer than 255 octets: {[len(s) for s in record.strings]}"
    )
    assert record.value.startswith("v=DKIM1"), f"v=DKIM1 must come first: {record.value}"
    tags = record.tags
    assert tags.get("k") == a["k"], tags
    assert tags.get("p"), tags
    if a["k"] == "rsa":
        bits = rsa_key_bits(tags["p"])
        assert bits >= 2048, f"RSA key has {bits} bits"
    else:
        import base64

        assert len(base64.b64decode(tags["p"])) == 32, "ed25519 p= must be the 32-byte raw public key"


# --------------------------------------------------------------------------- per delivered mail


@pytest.mark.parametrize("algorithm,kind,locale", CASES, ids=CASE_IDS)
def test_dkim_signature_verifies(mail_lab, algorithm, kind, locale):
    _, got, record = mail_for(mail_lab, algorithm, kind, locale)
    sigs = dkim_signatures(got.message)
    assert sigs, "no DKIM-Signature header"
    ok, diag = dkim_verify(got.raw, record)
    headers = got.header_block.decode(errors="replace")
    assert ok, f"DKIM verification failed for the delivered mail\n{diag}\n--- headers\n{headers}"


@pytest.mark.parametrize("algorithm,kind,locale", CASES, ids=CASE_IDS)
def test_dkim_signature_tags(mail_lab, algorithm, kind, locale):
    _, got, record = mail_for(mail_lab, algorithm, kind, locale)
    msg = got.message
    tags = dkim_signatures(msg)[0]
    a = ALGORITHMS[algorithm]
    assert tags.get("v") == "1", tags
    assert tags.get("a") == algorithm, tags
    assert tags.get("c") == "relaxed/relaxed", tags
    assert tags.get("d", "").lower() == DKIM_DOMAIN, tags
    assert tags.get("s") == a["selector"], tags
    assert tags.get("bh") and tags.get("b"), tags
    signed = signed_header_names(tags)
    required = REQUIRED_SIGNED + (MARKETING_SIGNED if kind in MARKETING else [])
    missing = [h for h in required if h not in signed]
    assert not missing, f"h= lacks {missing}: h={tags.get('h')}"
    # List-Unsubscribe(-Post), where a mail carries them, must be signed (also on transactional mails).
    for h in MARKETING_SIGNED:
        if msg.get(h) is not None:
            assert h in signed, f"{h} is present but not in h={tags.get('h')}"
    if "i" in tags:
        assert tags["i"].lower().endswith("@" + DKIM_DOMAIN) or tags["i"].lower().endswith("." + DKIM_DOMAIN), tags
    if "x" in tags and "t" in tags:
        assert int(tags["x"]) > int(tags["t"]), tags


@pytest.mark.parametrize("algorithm,kind,locale", CASES, ids=CASE_IDS)
def test_headers_decode_with_umlauts(mail_lab, algorithm, kind, locale):
    mid, got, _ = mail_for(mail_lab, algorithm, kind, locale)
    msg = got.message
    for name in ("From", "To", "Subject", "Date", "Message-ID", "MIME-Version"):
        values = msg.get_all(name) or []
        assert len(values) == 1, f"{len(values)} {name} headers"
    assert re.sub(r"\s+", "", str(msg["Message-ID"])) == mid

    frm = msg["From"].addresses
    assert len(frm) == 1, msg["From"]
    assert frm[0].addr_spec == SENDER_EMAIL, msg["From"]
    assert frm[0].display_name == SENDER_NAME, f"From display name {frm[0].display_name!r}"

    to = msg["To"].addresses
    assert [a.addr_spec for a in to] == [recipient(algorithm, kind, locale)], msg["To"]
    if to[0].display_name:
        assert to[0].display_name == RECIPIENT_NAME, f"To display name {to[0].display_name!r}"

    subject = str(msg["Subject"])
    assert subject.strip(), "empty Subject"
    assert "=?" not in subject and not _MOJIBAKE.search(subject), f"Subject decodes badly: {subject!r}"
    if (kind, locale) in EXPECTED_SUBJECTS:
        assert subject == EXPECTED_SUBJECTS[(kind, locale)]

    date = email.utils.parsedate_to_datetime(str(msg["Date"]))
    assert date.tzinfo is not None, msg["Date"]
    delivered_at = datetime.fromtimestamp(got.path.stat().st_mtime, timezone.utc)
    off = abs((delivered_at - date).total_seconds())
    assert off < 300, f"Date {msg['Date']} is {off:.0f} s off the delivery time {delivered_at}"

    # Without SMTPUTF8 (Postfix's Received says "with UTF8SMTPS" when it was used),
    # headers must be 7-bit: non-ASCII text as RFC 2047 encoded-words.
    if "UTF8SMTP" not in top_received(msg):
        bad = [l for l in got.header_block.split(b"\n") if any(b > 127 for b in l)]
        assert not bad, f"8-bit header lines without SMTPUTF8: {bad[:3]}"


@pytest.mark.parametrize("algorithm,kind,locale", CASES, ids=CASE_IDS)
def test_mime_alternative_with_umlauts(mail_lab, algorithm, kind, locale):
    _, got, _ = mail_for(mail_lab, algorithm, kind, locale)
    msg = got.message
    plain, html_part = body_parts(msg)
    for part in (plain, html_part):
        charset = (part.get_content_charset() or "").lower()
        assert charset in ("utf-8", "us-ascii"), f"{part.get_content_type()} charset {charset!r}"
        cte = (part.get("Content-Transfer-Encoding") or "7bit").lower()
        assert cte in ("7bit", "8bit", "quoted-printable", "base64"), cte
    text = plain.get_content()
    html_source = html_part.get_content()
    shown = visible_text(html_source)
    for label, value in (("text/plain", text), ("text/html", shown)):
        assert not _MOJIBAKE.search(value), f"{label} has mojibake: {_MOJIBAKE.search(value).group(0)!r}"
        for expected in EXPECTED_IN_BODY[kind]:
            assert expected in value, f"{expected!r} not in {label}:\n{value[:1500]}"
    assert re.search(r"(?i)<html\b", html_source), "text/html part has no <html> element"


@pytest.mark.parametrize("algorithm,kind,locale", CASES, ids=CASE_IDS)
def test_line_format(mail_lab, algorithm, kind, locale):
    """Postfix refuses lines that end in bare LF (see scripts/lib/postfix-throwaway.sh),
    so a delivered mail was sent with CRLF everywhere; Postfix stores it with LF.
    What is left to check in the stored copy: no stray CR and no line over 998 octets."""
    _, got, _ = mail_for(mail_lab, algorithm, kind, locale)
    assert b"\r" not in got.raw, "a stray CR (not part of a CRLF line end) in the message"
    long = [(i + 1, len(l)) for i, l in enumerate(got.raw.split(b"\n")) if len(l) > 998]
    assert not long, f"lines longer than 998 octets (line, length): {long[:5]}"


@pytest.mark.parametrize("algorithm,kind,locale", CASES, ids=CASE_IDS)
def test_delivered_over_starttls(mail_lab, algorithm, kind, locale):
    _, got, _ = mail_for(mail_lab, algorithm, kind, locale)
    received = top_received(got.message)
    tls = received_tls(received)
    assert tls, f"Postfix's Received header shows no TLS: {received}"


@pytest.mark.parametrize("algorithm,kind,locale", CASES, ids=CASE_IDS)
def test_spamassassin_score(mail_lab, algorithm, kind, locale):
    """spamassassin -t -L (local rules only) with worst-case rule weights and
    without the -1.0 the loopback relay gets for free (see mailtools.worst_case_prefs)."""
    _, got, _ = mail_for(mail_lab, algorithm, kind, locale)
    report = spamassassin(got.raw)
    print(f"SpamAssassin {report.score} ({kind}, {locale}): {', '.join(report.tests) or 'no rule'}")
    print(report.table())
    score = report.score
    assert score <= SPAM_THRESHOLD, (
        f"SpamAssassin score {score} > {SPAM_THRESHOLD} for {kind}/{locale}; rules that hit:\n"
        f"{report.table()}\n(all tests: {', '.join(report.tests)})"
    )


def test_return_path_is_verp(mail_lab):
    """Every message has its own bounce address (the envelope sender Postfix
    writes as Return-Path), which is not the From address."""
    paths = {}
    for algorithm, kind, locale in CASES:
        _, got, _ = mail_for(mail_lab, algorithm, kind, locale)
        rp = str(got.message["Return-Path"] or "").strip()
        assert re.fullmatch(r"<[^<>@\s]+@[^<>@\s]+>", rp), f"Return-Path {rp!r}"
        assert rp.strip("<>").lower() != SENDER_EMAIL, f"Return-Path is the From address: {rp}"
        paths[(algorithm, kind, locale)] = rp
    assert len(set(paths.values())) == len(paths), f"bounce addresses repeat: {paths}"
