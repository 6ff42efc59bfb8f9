"""The mail-test harness itself, without the product: the throw-away Postfix
(STARTTLS with the throw-away CA, catch-all Maildir, strict CRLF), the DKIM
record parsing and DNS-free verification, and the SpamAssassin run.

If these fail, the product tests in this folder cannot be trusted either.
"""

from __future__ import annotations

import base64
import email.utils
import smtplib
import ssl
import subprocess
import uuid
from email.message import EmailMessage

import pytest

from tests.mail.mailtools import (
    SKIP_MAIL,
    dkim_signatures,
    dkim_verify,
    parse_dkim_record,
    received_tls,
    signed_header_names,
    smtp_target,
    spamassassin,
    top_received,
    wait_for_message,
)

pytestmark = pytest.mark.skipif(SKIP_MAIL, reason="RECIPROCITY_TEST_SKIP_MAIL=1")

FROM = "Bohnenglück Team <news@example.test>"


def german_mail(to: str, base_url: str = "https://marketing.bohnenglueck-kaffee.example") -> EmailMessage:
    m = EmailMessage()
    m["From"] = FROM
    m["To"] = f"Jürgen Weiß-Hähnel <{to}>"
    m["Subject"] = "Bitte bestätigen Sie Ihre Anmeldung bei der Kaffeerösterei Bohnenglück"
    m["Date"] = email.utils.formatdate(localtime=True)
    m["Message-ID"] = f"<{uuid.uuid4()}@example.test>"
    m["MIME-Version"] = "1.0"
    m.set_content(
        "Hallo Jürgen Weiß-Hähnel,\n\n"
        "vielen Dank für Ihr Interesse an den Neuigkeiten der Kaffeerösterei Bohnenglück.\n"
        "Bitte bestätigen Sie Ihre Anmeldung mit einem Klick auf diesen Link:\n\n"
        f"{base_url}/c/0123456789abcdef\n\n"
        "Wenn Sie sich nicht angemeldet haben, können Sie diese E-Mail einfach ignorieren.\n\n"
        "Viele Grüße\nIhr Team der Kaffeerösterei Bohnenglück\nMusterstraße 1, 12345 Musterstadt\n"
    )
    return m


def crlf_bytes(m: EmailMessage) -> bytes:
    return m.as_bytes(policy=m.policy.clone(linesep="\r\n"))


def rsa_keypair(tmp_path) -> tuple[bytes, str]:
    """(PEM private key, base64 DER SubjectPublicKeyInfo) made with openssl."""
    key = tmp_path / "rsa.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    der = subprocess.run(
        ["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"], check=True, capture_output=True
    ).stdout
    return key.read_bytes(), base64.b64encode(der).decode()


def zone_line(selector: str, domain: str, value: str) -> str:
    """The zone-file form `reciprocity dkim generate` prints: split into
    quoted strings of at most 255 characters."""
    chunks = [value[i : i + 255] for i in range(0, len(value), 255)]
    return f"{selector}._domainkey.{domain}. IN TXT " + " ".join(f'"{c}"' for c in chunks)


# --------------------------------------------------------------------------- Postfix


def test_postfix_delivers_over_starttls_into_maildir():
    t = smtp_target()
    m = german_mail("harness.tls@kunde.example")
    t.send(crlf_bytes(m), "bounce+harness@example.test", ["harness.tls@kunde.example"])
    got = wait_for_message(t, m["Message-ID"])
    msg = got.message
    tls = received_tls(top_received(msg))
    assert tls, f"Received header shows no TLS: {top_received(msg)}"
    assert msg["Return-Path"] == "<bounce+harness@example.test>"
    assert msg["Subject"] == "Bitte bestätigen Sie Ihre Anmeldung bei der Kaffeerösterei Bohnenglück"
    assert msg["From"].addresses[0].display_name == "Bohnenglück Team"
    # Postfix stores LF line endings: CRLF on the wire, no CR at all in the Maildir.
    assert b"\r" not in got.raw


def test_postfix_certificate_is_for_localhost_and_127_0_0_1():
    t = smtp_target()
    with smtplib.SMTP(t.host, t.port, timeout=30) as s:
        s.ehlo("client.reciprocity.test")
        assert s.has_extn("starttls") and s.has_extn("smtputf8") and s.has_extn("8bitmime")
        assert int(s.esmtp_features["size"]) >= 20 * 1024 * 1024
        s.starttls(context=t.ssl_context())  # verifies the chain (only our CA) and 127.0.0.1
        cert = s.sock.getpeercert()
    assert ("DNS", "localhost") in cert["subjectAltName"]
    assert ("IP Address", "127.0.0.1") in cert["subjectAltName"]
    # The system trust store does not know the throw-away CA.
    with smtplib.SMTP(t.host, t.port, timeout=30) as s:
        with pytest.raises(ssl.SSLCertVerificationError):
            s.starttls(context=ssl.create_default_context())


def test_postfix_requires_starttls_before_mail_from():
    t = smtp_target()
    with smtplib.SMTP(t.host, t.port, timeout=30) as s:
        s.ehlo("client.reciprocity.test")
        code, text = s.mail("bounce@example.test")
    assert code == 530, (code, text)


def test_postfix_rejects_bare_lf():
    """A client that ends lines with bare <LF> is refused (smtpd_forbid_bare_newline
    = reject): a message that arrives was sent with CRLF line endings."""
    t = smtp_target()
    with smtplib.SMTP(t.host, t.port, timeout=30) as s:
        s.starttls(context=t.ssl_context())
        s.ehlo("client.reciprocity.test")
        assert s.mail("bounce@example.test")[0] == 250
        assert s.rcpt("bare.lf@kunde.example")[0] == 250
        s.putcmd("data")
        assert s.getreply()[0] == 354
        try:
            s.send(b"Subject: bare LF\r\nFrom: a@example.test\r\n\r\nline one\nline two\r\n.\r\n")
            code, text = s.getreply()
        except smtplib.SMTPServerDisconnected:
            code, text = 0, b"disconnected"
    assert code >= 500 or code == 0, f"bare LF accepted: {code} {text!r}"


# --------------------------------------------------------------------------- DKIM wiring


def test_parse_dkim_record_forms():
    r = parse_dkim_record('s1._domainkey.example.test. IN TXT "v=DKIM1; k=rsa; " "p=AB" "CD"\n')
    assert r.name == "s1._domainkey.example.test"
    assert r.value == "v=DKIM1; k=rsa; p=ABCD"
    assert r.tags == {"v": "DKIM1", "k": "rsa", "p": "ABCD"}
    r = parse_dkim_record('S1._DomainKey.Example.Test. 3600 IN TXT ( "v=DKIM1; k=ed25519; "\n  "p=xyz" )')
    assert r.name == "s1._domainkey.example.test" and r.tags["p"] == "xyz"


@pytest.mark.parametrize("algorithm", ["rsa-sha256", "ed25519-sha256"])
def test_dkim_verification_without_dns(tmp_path, algorithm):
    """Signs with dkimpy, sends through Postfix (which prepends Return-Path,
    Delivered-To and Received) and verifies the delivered copy with a dnsfunc
    that knows only the zone line."""
    import dkim

    t = smtp_target()
    if algorithm == "rsa-sha256":
        private, p = rsa_keypair(tmp_path)
        value = f"v=DKIM1; k=rsa; p={p}"
    else:
        import nacl.signing

        sk = nacl.signing.SigningKey.generate()
        private = base64.b64encode(bytes(sk))
        value = f"v=DKIM1; k=ed25519; p={base64.b64encode(bytes(sk.verify_key)).decode()}"
    record = parse_dkim_record(zone_line("harness", "example.test", value))
    assert record.value == value

    m = german_mail("harness.dkim@kunde.example")
    m["List-Unsubscribe"] = "<https://marketing.bohnenglueck-kaffee.example/u/tok>, <mailto:u+tok@example.test>"
    m["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    raw = crlf_bytes(m)
    heads = [b"from", b"to", b"subject", b"date", b"message-id", b"list-unsubscribe", b"list-unsubscribe-post"]
    sig = dkim.sign(
        raw, b"harness", b"example.test", private, include_headers=heads,
        canonicalize=(b"relaxed", b"relaxed"), signature_algorithm=algorithm.encode(),
    )
    t.send(sig + raw, "bounce+dkim@example.test", ["harness.dkim@kunde.example"])
    got = wait_for_message(t, m["Message-ID"])

    ok, diag = dkim_verify(got.raw, record)
    assert ok, diag
    tags = dkim_signatures(got.message)[0]
    assert tags["a"] == algorithm and tags["c"] == "relaxed/relaxed"
    assert set(signed_header_names(tags)) >= {h.decode() for h in heads}
    # The checks bite: a changed subject, or a record for another selector, fails.
    tampered = got.raw.replace(b"Subject: ", b"Subject: Re: ", 1)
    assert not dkim_verify(tampered, record)[0]
    other = parse_dkim_record(zone_line("other", "example.test", value))
    assert not dkim_verify(got.raw, other)[0]


# --------------------------------------------------------------------------- SpamAssassin


def test_spamassassin_runs_rules_offline():
    """GTUBE must be spam (the rules are loaded); the plain German mail must be
    clean; a numeric-IP link scores with the worst-case weights."""
    gtube = german_mail("harness.sa@kunde.example")
    gtube.set_content("XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\n")
    r = spamassassin(crlf_bytes(gtube))
    assert "GTUBE" in r.tests and r.score >= 5, r.table()

    clean = spamassassin(crlf_bytes(german_mail("harness.sa@kunde.example")))
    assert clean.score <= 1.0, clean.table()

    numeric = spamassassin(crlf_bytes(german_mail("harness.sa@kunde.example", "http://127.0.0.1:8080")))
    assert "NUMERIC_HTTP_ADDR" in numeric.tests and numeric.score > 1.0, numeric.table()
