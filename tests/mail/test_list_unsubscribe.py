"""RFC 8058 one-click unsubscribe, end to end: a marketing mail delivered by
Postfix carries List-Unsubscribe (an http(s) URL on the server and a mailto:)
and List-Unsubscribe-Post, both DKIM-signed. GET on the URL shows a
confirmation page and changes nothing; POST (`List-Unsubscribe=One-Click`, or
an empty body) answers 200 and suppresses the address, after which
`mail send-test` refuses marketing mails to it.

The server and the CLI share one SQLite database and data dir (the `server`
fixture's), so the CLI's tokens are the server's.
"""

from __future__ import annotations

import re

import pytest

from tests.mail.mailtools import (
    SKIP_MAIL,
    dkim_signatures,
    dkim_verify,
    list_unsubscribe_uris,
    signed_header_names,
    smtp_target,
    wait_for_message,
)

pytestmark = pytest.mark.skipif(SKIP_MAIL, reason="RECIPROCITY_TEST_SKIP_MAIL=1")

SLUG = "t3"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def start(server, make_lab):
    t = smtp_target()  # fails the test when the throw-away Postfix is missing
    srv = server(env={"RECIPROCITY_SMTP_URL": t.url, "RECIPROCITY_SMTP_CA_FILE": str(t.ca_file)})
    lab = make_lab(srv.environment(), srv.workdir)
    lab.workspace(SLUG)
    record = lab.dkim_key(SLUG, "example.test", "s1", "rsa-sha256")
    return srv, lab, record


def marketing_mail(srv, lab, record, to: str):
    mid, got = lab.send_and_receive(SLUG, "review_request", to, "de", "Jürgen Weiß-Hähnel")
    msg = got.message
    ok, diag = dkim_verify(got.raw, record)
    assert ok, diag
    signed = signed_header_names(dkim_signatures(msg)[0])
    assert "list-unsubscribe" in signed and "list-unsubscribe-post" in signed, signed

    values = msg.get_all("List-Unsubscribe") or []
    assert len(values) == 1, f"{len(values)} List-Unsubscribe headers"
    uris = list_unsubscribe_uris(str(values[0]))
    assert len(uris) == 2, f"List-Unsubscribe {values[0]!r}: expected <http(s) URL>, <mailto:...>"
    url, mailto = uris
    assert url.startswith(srv.base_url + "/u/"), f"first URI {url!r} is not {srv.base_url}/u/<token>"
    assert re.fullmatch(r"/u/[A-Za-z0-9_\-.~%]+", url[len(srv.base_url):]), url
    assert mailto.startswith("mailto:") and "@" in mailto, mailto
    post = msg.get_all("List-Unsubscribe-Post") or []
    assert [str(v).strip() for v in post] == ["List-Unsubscribe=One-Click"], post
    return url


def assert_suppressed(lab, to: str):
    r = lab.run("mail", "send-test", "--workspace", SLUG, "--kind", "review_request", "--to", to, "--locale", "de")
    assert r.returncode == 1, f"marketing mail to an unsubscribed address was not refused\n{r.describe()}"
    assert "suppressed" in r.stderr, r.describe()
    assert not re.search(r"^sent <", r.stdout, re.M), r.describe()


def test_get_confirms_and_one_click_post_unsubscribes(server, make_lab):
    srv, lab, record = start(server, make_lab)
    to = "einmal.klick@kunde.example"
    url = marketing_mail(srv, lab, record, to)

    # GET: a confirmation page with a form; nothing changes.
    r = srv.get(url, allow_redirects=False)
    assert r.status_code == 200, (r.status_code, r.text[:500])
    assert r.headers.get("Content-Type", "").startswith("text/html"), r.headers
    assert re.search(r"(?is)<form\b[^>]*\bmethod\s*=\s*[\"']?post", r.text), r.text[:2000]
    url_again = marketing_mail(srv, lab, record, to)  # still mailable after the GET
    assert url_again.startswith(srv.base_url + "/u/")

    # One-click POST (RFC 8058: form-encoded List-Unsubscribe=One-Click, no cookies, no redirect).
    r = srv.post(url, data="List-Unsubscribe=One-Click", headers=FORM, allow_redirects=False)
    assert r.status_code == 200, (r.status_code, r.text[:500])
    assert_suppressed(lab, to)
    # A mail client may retry: the same POST again is still 200.
    r = srv.post(url, data="List-Unsubscribe=One-Click", headers=FORM, allow_redirects=False)
    assert r.status_code == 200, (r.status_code, r.text[:500])

    # Transactional mail (the double opt-in confirmation) is not blocked by the suppression.
    mid = lab.send_test(SLUG, "doi_confirmation", to, "de")
    wait_for_message(smtp_target(), mid)


def test_post_with_empty_body_unsubscribes(server, make_lab):
    srv, lab, record = start(server, make_lab)
    to = "leerer.koerper@kunde.example"
    url = marketing_mail(srv, lab, record, to)
    r = srv.post(url, data=b"", headers=FORM, allow_redirects=False)
    assert r.status_code == 200, (r.status_code, r.text[:500])
    assert_suppressed(lab, to)

