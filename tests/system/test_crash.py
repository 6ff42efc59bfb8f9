"""Crash safety: kill -9 the server mid-work, restart it on the same database,
and check that nothing that was acknowledged is lost and no job ran its effect
twice.

    python3 -m pytest tests/system/test_crash.py -q            # sqlite (+ postgres when
                                                               # RECIPROCITY_TEST_POSTGRES_URL is set)
    python3 -m pytest tests/system/test_crash.py -q -k sqlite

Both tests run once per engine (the `engine` fixture) and are marked `slow`.
Every wait is a poll with a deadline; no sleep decides an outcome.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional

import pytest
import requests

from tests.conftest import ReciprocityServer

pytestmark = [pytest.mark.slow]

# ---- order load (test a)
LOAD_THREADS = 16
LOAD_SECONDS = 1.5  # kill after this long ...
LOAD_MAX_ACKED = 3000  # ... or once this many orders were acknowledged, whichever comes first
MIN_ACKED = 20  # don't kill before at least this many acknowledgements (a slow debug start)
MIN_ACKED_DEADLINE = 30.0  # ... but give up waiting for them after this long
REQUEST_TIMEOUT = 10.0

# ---- jobs (test b)
JOB_COUNT = 20
JOB_SLEEP_MS = 1500
JOB_LEASE_SECONDS = 2
JOB_RUNNING_DEADLINE = 20.0  # until the first job is seen running
JOB_DONE_DEADLINE = 60.0  # after the restart, until all jobs succeeded

_KEY = re.compile(r"^(rcp_\S+)", re.M)


def order_body(status: str = "placed") -> dict:
    return {
        "customer": {"email": "a@example.com", "first_name": "Anna", "last_name": "Muster", "locale": "de"},
        "currency": "EUR",
        "items": [{"sku": "SKU-1", "name": "Tee", "quantity": 2, "unit_price": "9.90"}],
        "totals": {"total": "19.80"},
        "status": status,
    }


# --------------------------------------------------------------------------- helpers


def run_cli(srv: ReciprocityServer, *args: str, timeout: float = 60.0) -> str:
    """Runs `reciprocity ARGS...` with the server's environment; returns stdout."""
    proc = subprocess.run(
        [str(srv.binary), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=srv.environment(),
        cwd=srv.workdir,
        timeout=timeout,
    )
    assert proc.returncode == 0, (
        f"`reciprocity {' '.join(args)}` exited {proc.returncode}\n"
        f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )
    return proc.stdout


def create_write_key(srv: ReciprocityServer, slug: str = "crash") -> str:
    """Workspace `slug` plus an API key with write scope, both via the CLI."""
    run_cli(srv, "workspace", "create", "--slug", slug, "--name", "Shop", "--sender-email", f"{slug}@example.com")
    out = run_cli(srv, "apikey", "create", "--workspace", slug, "--name", "crash", "--scope", "write")
    m = _KEY.search(out)
    assert m, f"no line starting with rcp_ in the output of `apikey create`:\n{out}"
    return m.group(1)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def poll(what: str, probe: Callable[[], Optional[object]], deadline_s: float, interval: float = 0.1,
         describe: Callable[[], str] = lambda: "") -> object:
    """Calls `probe` until it returns something truthy; fails after `deadline_s`."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {deadline_s:.0f} s waiting for {what}. {describe()}")
        time.sleep(interval)


def db_scalar(database_url: str, sql: str):
    """One value straight from the database (bypassing the server)."""
    if database_url.startswith("sqlite://"):
        path = database_url[len("sqlite://"):]
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            return con.execute(sql).fetchone()[0]
        finally:
            con.close()
    proc = subprocess.run(
        ["psql", database_url, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"psql failed running {sql!r}: {proc.stderr.strip()}"
    return int(proc.stdout.strip())


# --------------------------------------------------------------------------- (a) orders


@dataclass
class LoadResult:
    acked: list[str] = field(default_factory=list)  # 2xx before the kill
    statuses: dict[int, int] = field(default_factory=dict)  # every HTTP status seen
    bad: list[tuple[str, int, str]] = field(default_factory=list)  # (id, status, body) of non-2xx, a few
    errors_before_kill: list[str] = field(default_factory=list)  # transport errors while the server was up
    errors_after_kill: int = 0  # requests cut off by the kill (unacknowledged: fine)
    sent: int = 0


def _order_load(srv: ReciprocityServer, key: str, run: str, stop: threading.Event, killed: threading.Event,
                result: LoadResult, lock: threading.Lock) -> Callable[[int], None]:
    body = json.dumps(order_body()).encode()
    headers = {**auth(key), "Content-Type": "application/json"}

    def worker(t: int) -> None:
        n = 0
        with requests.Session() as s:
            while not stop.is_set():
                n += 1
                oid = f"crash-{run}-{t}-{n}"
                try:
                    r = s.put(srv.url(f"/api/v1/orders/{oid}"), data=body, headers=headers, timeout=REQUEST_TIMEOUT)
                except requests.RequestException as e:
                    with lock:
                        result.sent += 1
                        if killed.is_set():
                            result.errors_after_kill += 1
                        else:
                            result.errors_before_kill.append(f"{oid}: {type(e).__name__}: {e}")
                    if killed.is_set():
                        return
                    continue
                with lock:
                    result.sent += 1
                    result.statuses[r.status_code] = result.statuses.get(r.status_code, 0) + 1
                    if 200 <= r.status_code < 300:
                        # A 2xx is the server's promise that the order is committed.
                        result.acked.append(oid)
                    elif len(result.bad) < 10:
                        result.bad.append((oid, r.status_code, r.text[:300]))

    return worker


def test_kill_during_order_load_loses_no_acknowledged_order(server, engine):
    srv = server(engine, log_level="warning")
    key = create_write_key(srv)

    # Sanity: the contract the load relies on, before anything is timed.
    probe_id = f"crash-probe-{uuid.uuid4().hex[:8]}"
    r = requests.put(srv.url(f"/api/v1/orders/{probe_id}"), json=order_body(), headers=auth(key), timeout=30)
    assert r.status_code == 201, f"PUT order: expected 201, got {r.status_code}: {r.text[:500]}"
    assert r.json()["order"]["external_id"] == probe_id  # PUT answers {"outcome", "order"}

    run = uuid.uuid4().hex[:8]
    stop, killed, lock = threading.Event(), threading.Event(), threading.Lock()
    result = LoadResult()
    worker = _order_load(srv, key, run, stop, killed, result, lock)
    threads = [threading.Thread(target=worker, args=(t,), daemon=True, name=f"load-{t}") for t in range(LOAD_THREADS)]
    t0 = time.monotonic()
    for th in threads:
        th.start()

    def acked() -> int:
        with lock:
            return len(result.acked)

    def time_to_kill() -> bool:
        if not srv.is_running:
            return True  # died under load: reported right below
        n = acked()
        return n >= LOAD_MAX_ACKED or (n >= MIN_ACKED and time.monotonic() - t0 >= LOAD_SECONDS)

    try:
        poll(
            f">= {MIN_ACKED} acknowledged orders and {LOAD_SECONDS} s of load",
            time_to_kill,
            MIN_ACKED_DEADLINE,
            interval=0.01,
            describe=lambda: f"acked={acked()} statuses={result.statuses} bad={result.bad[:3]} "
            f"errors={result.errors_before_kill[:3]}",
        )
        assert srv.is_running, f"server died during the load\n{srv.output_tail()}"
        # The crash: SIGKILL while the 16 threads still have requests in flight.
        killed.set()
        rc = srv.kill(signal.SIGKILL)
    finally:
        stop.set()
        for th in threads:
            th.join(REQUEST_TIMEOUT + 5)
    load_seconds = time.monotonic() - t0
    assert rc == -signal.SIGKILL, f"server exit code {rc}, expected death by SIGKILL"
    assert not any(th.is_alive() for th in threads), "load threads did not stop after the kill"

    with lock:
        acked_ids = list(result.acked)
    print(
        f"\n[{engine}] load {load_seconds:.2f} s: sent {result.sent}, acknowledged {len(acked_ids)}, "
        f"statuses {result.statuses}, cut off by the kill {result.errors_after_kill}, "
        f"transport errors before the kill {len(result.errors_before_kill)}"
    )
    assert len(acked_ids) >= MIN_ACKED
    assert len(set(acked_ids)) == len(acked_ids)
    client_errors = {s: c for s, c in result.statuses.items() if 400 <= s < 500}
    assert not client_errors, f"4xx during the load (test or contract broken): {client_errors}; e.g. {result.bad[:3]}"
    assert not result.errors_before_kill, (
        f"{len(result.errors_before_kill)} requests failed while the server was still up: "
        f"{result.errors_before_kill[:5]}"
    )

    # ---- restart on the same database; every acknowledged order must be there.
    srv.start()
    acked_ids.append(probe_id)
    lost: list[str] = []
    wrong: list[str] = []
    local = threading.local()

    def check(oid: str) -> None:
        s = getattr(local, "session", None)
        if s is None:
            s = local.session = requests.Session()
        r = s.get(srv.url(f"/api/v1/orders/{oid}"), headers=auth(key), timeout=30)
        if r.status_code == 404:
            lost.append(oid)
        elif r.status_code != 200:
            wrong.append(f"{oid}: HTTP {r.status_code} {r.text[:200]}")
        else:
            data = r.json()
            if data.get("external_id") != oid or data.get("status") != "placed":
                wrong.append(f"{oid}: {json.dumps(data)[:300]}")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(check, acked_ids))

    assert not lost, f"{len(lost)} of {len(acked_ids)} acknowledged orders lost after kill -9: {lost[:10]}"
    assert not wrong, f"{len(wrong)} acknowledged orders read back wrong: {wrong[:5]}"

    r = requests.get(srv.url("/api/v1/orders?limit=1&offset=0"), headers=auth(key), timeout=30)
    assert r.status_code == 200, r.text[:500]
    total = r.json()["total"]
    # Unacknowledged orders may or may not have been committed; acknowledged ones must all count.
    assert len(acked_ids) <= total <= result.sent + 1, (len(acked_ids), total, result.sent)

    # The restarted server is consistent and writable: a repeated PUT is an
    # unchanged update (200), a new order is created (201).
    for oid in acked_ids[:10]:
        r = requests.put(srv.url(f"/api/v1/orders/{oid}"), json=order_body(), headers=auth(key), timeout=30)
        assert r.status_code == 200, f"re-PUT {oid} after restart: {r.status_code} {r.text[:300]}"
    fresh = f"crash-after-{run}"
    r = requests.put(srv.url(f"/api/v1/orders/{fresh}"), json=order_body(), headers=auth(key), timeout=30)
    assert r.status_code == 201, f"PUT new order after restart: {r.status_code} {r.text[:300]}"


# --------------------------------------------------------------------------- (b) jobs


def test_kill_during_jobs_runs_each_effect_exactly_once(server, engine):
    srv = server(
        engine,
        log_level="warning",
        env={"RECIPROCITY_TEST_HOOKS": "1", "RECIPROCITY_JOB_LEASE_SECONDS": str(JOB_LEASE_SECONDS)},
    )
    key = create_write_key(srv)
    session = requests.Session()
    last: dict = {}

    def stats() -> dict:
        r = session.get(srv.url("/api/v1/_test/jobs"), headers=auth(key), timeout=10)
        assert r.status_code == 200, f"GET /api/v1/_test/jobs: {r.status_code} {r.text[:300]}"
        last.clear()
        last.update(r.json())
        return dict(last)

    before = stats()
    assert before.get("succeeded", 0) == 0 and before.get("effects", 0) == 0, before

    r = session.post(
        srv.url("/api/v1/_test/jobs"),
        json={"count": JOB_COUNT, "sleep_ms": JOB_SLEEP_MS},
        headers=auth(key),
        timeout=30,
    )
    assert 200 <= r.status_code < 300, f"POST /api/v1/_test/jobs: {r.status_code} {r.text[:300]}"

    def some_running() -> Optional[dict]:
        s = stats()
        assert s.get("dead", 0) == 0, f"a job died before the crash: {s}"
        return s if s.get("running", 0) > 0 else None

    at_kill = poll("a test.effect job in state running", some_running, JOB_RUNNING_DEADLINE,
                   interval=0.05, describe=lambda: f"last stats {last}")
    assert srv.is_running
    rc = srv.kill(signal.SIGKILL)
    assert rc == -signal.SIGKILL, f"server exit code {rc}, expected death by SIGKILL"
    print(f"\n[{engine}] job stats at the kill: {at_kill}")
    # The crash must have interrupted work: at least one job was leased and unfinished.
    assert at_kill["succeeded"] < JOB_COUNT, f"all jobs finished before the kill, nothing was tested: {at_kill}"

    srv.start()
    t_restart = time.monotonic()

    def all_done() -> Optional[dict]:
        s = stats()
        assert s.get("dead", 0) == 0, f"a job went dead after the crash: {s}"
        assert s.get("duplicate_effects", 0) == 0, f"an effect ran twice: {s}"
        return s if s.get("succeeded", 0) >= JOB_COUNT else None

    done = poll(f"all {JOB_COUNT} jobs succeeded after the restart", all_done, JOB_DONE_DEADLINE,
                interval=0.2, describe=lambda: f"last stats {last}")
    print(f"[{engine}] all jobs done {time.monotonic() - t_restart:.1f} s after the restart: {done}")

    assert done["succeeded"] == JOB_COUNT, done
    assert done.get("queued", 0) == 0 and done.get("running", 0) == 0 and done.get("dead", 0) == 0, done
    assert done["effects"] == JOB_COUNT, done
    assert done["duplicate_effects"] == 0, done

    # The same, straight from the database rather than through the server's own report.
    url = srv.database_url
    assert db_scalar(url, "SELECT COUNT(*) FROM test_effects") == JOB_COUNT
    assert db_scalar(url, "SELECT COUNT(DISTINCT job_id) FROM test_effects") == JOB_COUNT
    assert db_scalar(url, "SELECT COUNT(*) FROM jobs WHERE kind = 'test.effect' AND state = 'succeeded'") == JOB_COUNT
    assert db_scalar(url, "SELECT COUNT(*) FROM jobs WHERE kind = 'test.effect' AND state <> 'succeeded'") == 0


def test_sigterm_after_load_shuts_down_cleanly(server, engine):
    """SIGTERM ends `serve` with exit code 0 once in-flight work is done, and every acknowledged order is in the
    database. (On SQLite, `serve` closed its runtime twice and the second close crashed the process: exit 139.)"""
    srv = server(engine, log_level="warning")
    key = create_write_key(srv)
    run = uuid.uuid4().hex[:8]
    ids = [f"term-{run}-{i}" for i in range(40)]

    def put(oid: str) -> int:
        r = requests.put(srv.url(f"/api/v1/orders/{oid}"), json=order_body(), headers=auth(key), timeout=30)
        return r.status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(put, ids))
    assert codes == [201] * len(ids)
    assert srv.stop() == 0, f"serve did not exit cleanly on SIGTERM:\n{srv.output_tail()}"
    stored = db_scalar(srv.database_url, f"SELECT COUNT(*) FROM orders WHERE external_id LIKE 'term-{run}-%'")
    assert int(stored) == len(ids)
