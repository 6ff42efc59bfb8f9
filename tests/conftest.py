"""Shared pytest fixtures for reciprocity's Python tests.

tests/browser  Selenium tests (headless Chromium)
tests/system   process-level tests: start, crash, restart, signals, ...

Run everything with `bash scripts/test` (it builds the binary, starts a
throw-away PostgreSQL and sets the environment). By hand, after `swift build`:

    python3 -m pytest tests/ -q
    RECIPROCITY_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:PORT/postgres python3 -m pytest tests/

Environment read here:
    RECIPROCITY_BIN                 the server binary (default .build/debug/reciprocity)
    RECIPROCITY_TEST_POSTGRES_URL   admin URL of a PostgreSQL server; enables the "postgres" engine
    RECIPROCITY_TEST_SKIP_BROWSER=1 skip everything under tests/browser and the `browser` fixture
    RECIPROCITY_TEST_LOG_DIR        where screenshots of failed browser tests go (default .build/test-logs)

What the fixtures give:
    reciprocity_bin   Path of the binary (fails the test if it is missing)
    free_port()       a free TCP port on 127.0.0.1 (plain function)
    ENGINES           ["sqlite"] or ["sqlite", "postgres"]
    engine            parametrized fixture over ENGINES
    database          factory: database(engine) -> Database with .url (fresh, dropped at teardown)
    server            factory: server(engine="sqlite", env=..., args=..., start=True) -> ReciprocityServer
    running_server    a started server for the parametrized `engine`
    browser           selenium WebDriver, headless Chromium, 1280x900, de-DE

Test modules can import helpers: `from tests.conftest import ReciprocityServer, free_port`.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import uuid
import warnings
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parent.parent
POSTGRES_ADMIN_URL: Optional[str] = os.environ.get("RECIPROCITY_TEST_POSTGRES_URL") or None
ENGINES: list[str] = ["sqlite"] + (["postgres"] if POSTGRES_ADMIN_URL else [])
SKIP_BROWSER = os.environ.get("RECIPROCITY_TEST_SKIP_BROWSER") == "1"
LOG_DIR = Path(os.environ.get("RECIPROCITY_TEST_LOG_DIR") or REPO_ROOT / ".build" / "test-logs")

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

# How long a debug build may take from spawn to a 200 on /healthz.
DEFAULT_START_TIMEOUT = 90.0
# SIGTERM, then SIGKILL after this long.
DEFAULT_STOP_TIMEOUT = 10.0

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_binary() -> Path:
    env = os.environ.get("RECIPROCITY_BIN")
    if env:
        return Path(env).resolve()  # servers run in their own working directory
    return REPO_ROOT / ".build" / "debug" / "reciprocity"


def _psql(admin_url: str, sql: str) -> None:
    proc = subprocess.run(
        ["psql", admin_url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"psql failed ({proc.returncode}) running {sql!r}: {proc.stderr.strip()}")


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


class Database:
    """A fresh database for one server: a SQLite file or a PostgreSQL database."""

    def __init__(self, engine: str, url: str, name: Optional[str] = None, path: Optional[Path] = None):
        self.engine = engine
        self.url = url
        self.name = name  # postgres database name
        self.path = path  # sqlite file
        self._dropped = False

    @classmethod
    def create(cls, engine: str, directory: Path) -> "Database":
        if engine == "sqlite":
            path = Path(directory).resolve() / "db.sqlite"
            return cls("sqlite", f"sqlite://{path}", path=path)
        if engine == "postgres":
            if not POSTGRES_ADMIN_URL:
                pytest.skip("RECIPROCITY_TEST_POSTGRES_URL is not set")
            name = f"rcp_py_{uuid.uuid4().hex[:16]}"
            _psql(POSTGRES_ADMIN_URL, f'CREATE DATABASE "{name}"')
            return cls("postgres", _with_database(POSTGRES_ADMIN_URL, name), name=name)
        raise ValueError(f"unknown engine {engine!r} (known: sqlite, postgres)")

    def drop(self) -> None:
        if self._dropped:
            return
        self._dropped = True
        if self.engine == "postgres" and self.name and POSTGRES_ADMIN_URL:
            _psql(POSTGRES_ADMIN_URL, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def __repr__(self) -> str:
        return f"Database({self.engine}, {self.url})"


class ServerError(RuntimeError):
    pass


class ReciprocityServer:
    """`reciprocity serve` as a subprocess on 127.0.0.1 and a free port.

    Output goes to files in `workdir` (NAME.stdout.log / NAME.stderr.log,
    NAME.2.stdout.log ... after a restart). The first-run credentials the
    server prints on stdout are exposed as `login_url`, `admin_email` and
    `admin_password` (None until printed; read lazily from the stdout files,
    first value wins, so they survive restarts).
    """

    _CREDENTIALS = {
        "login_url": re.compile(r"^\s*Login:\s*(\S+)\s*$", re.M),
        "admin_email": re.compile(r"^\s*E-mail:\s*(\S+)\s*$", re.M),
        "admin_password": re.compile(r"^\s*One-time password:\s*(\S.*?)\s*$", re.M),
    }

    def __init__(
        self,
        binary: Path | str,
        workdir: Path | str,
        database_url: str,
        *,
        engine: str = "sqlite",
        port: Optional[int] = None,
        env: Optional[Mapping[str, Optional[str]]] = None,
        args: Iterable[str] = (),
        name: str = "server",
        log_level: str = "info",
    ):
        self.binary = Path(binary)
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir(exist_ok=True)
        self.database_url = database_url
        self.engine = engine
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.base_url = f"http://{self.host}:{self.port}"
        self.name = name
        self.log_level = log_level
        self.extra_env: dict[str, Optional[str]] = dict(env or {})
        self.args = list(args)
        self.process: Optional[subprocess.Popen] = None
        self.runs = 0
        self.stdout_paths: list[Path] = []
        self.stderr_paths: list[Path] = []
        self.returncode: Optional[int] = None
        self.stop_timed_out = False
        self._credentials: dict[str, str] = {}

    # ---- environment

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "RECIPROCITY_DATABASE_URL": self.database_url,
                "RECIPROCITY_HOST": self.host,
                "RECIPROCITY_PORT": str(self.port),
                "RECIPROCITY_BASE_URL": self.base_url,
                "RECIPROCITY_DATA_DIR": str(self.data_dir),
                "RECIPROCITY_LOG_LEVEL": self.log_level,
            }
        )
        for key, value in self.extra_env.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    # ---- lifecycle

    @property
    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> Optional[int]:
        return self.process.pid if self.process else None

    @property
    def stdout_path(self) -> Optional[Path]:
        return self.stdout_paths[-1] if self.stdout_paths else None

    @property
    def stderr_path(self) -> Optional[Path]:
        return self.stderr_paths[-1] if self.stderr_paths else None

    def start(self, timeout: float = DEFAULT_START_TIMEOUT, wait: bool = True) -> "ReciprocityServer":
        if self.is_running:
            raise ServerError("server already running")
        if not self.binary.is_file():
            raise ServerError(f"no server binary at {self.binary} (run `swift build` first)")
        self.runs += 1
        suffix = "" if self.runs == 1 else f".{self.runs}"
        out_path = self.workdir / f"{self.name}{suffix}.stdout.log"
        err_path = self.workdir / f"{self.name}{suffix}.stderr.log"
        self.stdout_paths.append(out_path)
        self.stderr_paths.append(err_path)
        self.returncode = None
        self.stop_timed_out = False
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            self.process = subprocess.Popen(
                [str(self.binary), "serve", *self.args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=self.environment(),
                cwd=self.workdir,
                start_new_session=True,
            )
        if wait:
            self.wait_until_healthy(timeout)
        return self

    def wait_until_healthy(self, timeout: float = DEFAULT_START_TIMEOUT) -> None:
        """Poll GET /healthz until it answers 200; fail fast if the process exits."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            if self.process is None:
                raise ServerError("server not started")
            rc = self.process.poll()
            if rc is not None:
                self.returncode = rc
                raise ServerError(
                    f"reciprocity serve exited with {rc} before /healthz answered\n{self.output_tail()}"
                )
            try:
                r = requests.get(self.url("/healthz"), timeout=2)
                if r.status_code == 200:
                    return
                last = f"HTTP {r.status_code}"
            except requests.RequestException as e:
                last = type(e).__name__
            if time.monotonic() > deadline:
                raise ServerError(
                    f"/healthz not 200 within {timeout:.0f} s (last: {last})\n{self.output_tail()}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> Optional[int]:
        """SIGTERM, then SIGKILL after `timeout` seconds. Returns the exit code
        (negative signal number when killed by a signal)."""
        if self.process is None:
            return self.returncode
        if self.process.poll() is None:
            try:
                self.process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.stop_timed_out = True
                warnings.warn(f"{self.name}: no exit within {timeout:.0f} s of SIGTERM, sending SIGKILL")
                self._kill_group(signal.SIGKILL)
                self.process.wait(30)
        self.returncode = self.process.returncode
        return self.returncode

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 30.0) -> Optional[int]:
        """Send `sig` (default SIGKILL: a crash) and wait for the process to end."""
        if self.process is None:
            return self.returncode
        if self.process.poll() is None:
            try:
                self.process.send_signal(sig)
            except ProcessLookupError:
                pass
            self.process.wait(timeout)
        self.returncode = self.process.returncode
        return self.returncode

    def restart(self, timeout: float = DEFAULT_START_TIMEOUT) -> "ReciprocityServer":
        self.stop()
        return self.start(timeout=timeout)

    def _kill_group(self, sig: int) -> None:
        assert self.process is not None
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                self.process.send_signal(sig)
            except ProcessLookupError:
                pass

    # ---- output

    def url(self, path: str = "/") -> str:
        if path.startswith(("http://", "https://")):
            return path
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def get(self, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 10)
        return requests.get(self.url(path), **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 10)
        return requests.post(self.url(path), **kwargs)

    @staticmethod
    def _read(path: Optional[Path]) -> str:
        if path is None:
            return ""
        try:
            return _ANSI.sub("", path.read_text(encoding="utf-8", errors="replace"))
        except FileNotFoundError:
            return ""

    def stdout(self, run: int = -1) -> str:
        return self._read(self.stdout_paths[run]) if self.stdout_paths else ""

    def stderr(self, run: int = -1) -> str:
        return self._read(self.stderr_paths[run]) if self.stderr_paths else ""

    def output(self) -> str:
        """stdout and stderr of every run so far."""
        parts = []
        for i, (o, e) in enumerate(zip(self.stdout_paths, self.stderr_paths), 1):
            parts.append(f"--- run {i} stdout ({o})\n{self._read(o)}--- run {i} stderr ({e})\n{self._read(e)}")
        return "\n".join(parts)

    def output_tail(self, lines: int = 80) -> str:
        out = []
        for label, path in (("stdout", self.stdout_path), ("stderr", self.stderr_path)):
            text = self._read(path).splitlines()
            out.append(f"--- {self.name} {label} (last {min(lines, len(text))} of {len(text)} lines, {path})")
            out.extend(text[-lines:])
        return "\n".join(out)

    def wait_for_output(self, pattern: str | re.Pattern, timeout: float = 10.0, stream: str = "both") -> re.Match:
        """Poll the current run's output until `pattern` (re.M) matches."""
        rx = re.compile(pattern, re.M) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            text = ""
            if stream in ("stdout", "both"):
                text += self.stdout()
            if stream in ("stderr", "both"):
                text += self.stderr()
            m = rx.search(text)
            if m:
                return m
            if time.monotonic() > deadline:
                raise ServerError(f"{rx.pattern!r} not in output within {timeout} s\n{self.output_tail()}")
            if self.process is not None and self.process.poll() is not None:
                # One last read after exit, then give up.
                text = self.stdout() + self.stderr()
                m = rx.search(text)
                if m:
                    return m
                raise ServerError(f"process exited before {rx.pattern!r} appeared\n{self.output_tail()}")
            time.sleep(0.05)

    # ---- first-run credentials

    def _credential(self, key: str) -> Optional[str]:
        if key not in self._credentials:
            for path in self.stdout_paths:
                m = self._CREDENTIALS[key].search(self._read(path))
                if m:
                    self._credentials[key] = m.group(1)
                    break
        return self._credentials.get(key)

    @property
    def login_url(self) -> Optional[str]:
        return self._credential("login_url")

    @property
    def admin_email(self) -> Optional[str]:
        return self._credential("admin_email")

    @property
    def admin_password(self) -> Optional[str]:
        return self._credential("admin_password")

    def wait_for_credentials(self, timeout: float = 10.0) -> tuple[str, str, str]:
        """(login_url, admin_email, admin_password), waiting until all were printed."""
        deadline = time.monotonic() + timeout
        while True:
            values = (self.login_url, self.admin_email, self.admin_password)
            if all(values):
                return values  # type: ignore[return-value]
            if time.monotonic() > deadline:
                raise ServerError(
                    f"first-run credentials not all printed on stdout within {timeout} s "
                    f"(got {values!r})\n{self.output_tail()}"
                )
            time.sleep(0.05)

    def __repr__(self) -> str:
        return f"ReciprocityServer({self.engine}, {self.base_url}, pid={self.pid})"


# --------------------------------------------------------------------------- pytest hooks


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: Selenium test (skipped with RECIPROCITY_TEST_SKIP_BROWSER=1)")
    config.addinivalue_line("markers", "postgres: needs RECIPROCITY_TEST_POSTGRES_URL")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


def pytest_collection_modifyitems(config, items):
    browser_dir = Path(__file__).resolve().parent / "browser"
    for item in items:
        if browser_dir in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.browser)
        if SKIP_BROWSER and item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.skip(reason="RECIPROCITY_TEST_SKIP_BROWSER=1"))


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


def _test_failed(request) -> bool:
    node = request.node
    return any(getattr(getattr(node, f"rep_{w}", None), "failed", False) for w in ("setup", "call"))


def _safe_name(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")[:180]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def reciprocity_bin() -> Path:
    path = default_binary()
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"reciprocity binary not found at {path}: run `swift build` (or set RECIPROCITY_BIN)")
    return path


@pytest.fixture(params=ENGINES)
def engine(request) -> str:
    """Parametrizes a test over the storage engines: sqlite, and postgres when
    RECIPROCITY_TEST_POSTGRES_URL is set."""
    return request.param


@pytest.fixture
def database(tmp_path_factory) -> Callable[[str], Database]:
    """Factory: database("sqlite"|"postgres") -> a fresh Database, dropped at teardown."""
    made: list[Database] = []

    def make(engine: str = "sqlite") -> Database:
        db = Database.create(engine, tmp_path_factory.mktemp(f"db-{engine}"))
        made.append(db)
        return db

    yield make
    for db in made:
        try:
            db.drop()
        except Exception as e:  # a leftover test database must not fail the test
            warnings.warn(f"could not drop {db}: {e}")


@pytest.fixture
def server(request, reciprocity_bin, tmp_path_factory, database):
    """Factory that starts `reciprocity serve`:

        srv = server()                         # sqlite, started, /healthz is 200
        srv = server("postgres")               # a fresh postgres database
        srv = server(engine, env={"RECIPROCITY_FOO": "1"}, args=["--flag"])
        srv = server(start=False); srv.start()
        srv = server(database_url=other.database_url)   # share a database

    Every server is stopped (SIGTERM, SIGKILL after 10 s) at teardown; when the
    test failed, the tail of each server's output is printed.
    """
    servers: list[ReciprocityServer] = []

    def make(
        engine: str = "sqlite",
        *,
        database_url: Optional[str] = None,
        env: Optional[Mapping[str, Optional[str]]] = None,
        args: Iterable[str] = (),
        start: bool = True,
        timeout: float = DEFAULT_START_TIMEOUT,
        port: Optional[int] = None,
        log_level: str = "info",
    ) -> ReciprocityServer:
        workdir = tmp_path_factory.mktemp(f"server-{engine}")
        if database_url is None:
            database_url = database(engine).url
        srv = ReciprocityServer(
            reciprocity_bin,
            workdir,
            database_url,
            engine=engine,
            port=port,
            env=env,
            args=args,
            name=f"server{len(servers) + 1}",
            log_level=log_level,
        )
        servers.append(srv)
        if start:
            srv.start(timeout=timeout)
        return srv

    yield make

    failed = _test_failed(request)
    for srv in servers:
        srv.stop()
    if failed:
        for srv in servers:
            print(f"\n{srv!r} exit code {srv.returncode}\n{srv.output_tail()}")


@pytest.fixture
def running_server(server, engine) -> ReciprocityServer:
    """A started server on the parametrized `engine`."""
    return server(engine)


@pytest.fixture
def browser(request):
    """Headless Chromium (Debian's chromium + chromedriver) driven by Selenium,
    1280x900, German UI (de-DE). A screenshot and the page source of a failed
    test go to $RECIPROCITY_TEST_LOG_DIR/browser/."""
    if SKIP_BROWSER:
        pytest.skip("RECIPROCITY_TEST_SKIP_BROWSER=1")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} missing: apt-get install chromium chromium-driver (scripts/test does)")

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        "--lang=de-DE",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
    ):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"intl.accept_languages": "de-DE,de"})

    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        driver.set_window_size(1280, 900)
        driver.set_page_load_timeout(30)
        driver.set_script_timeout(30)
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
