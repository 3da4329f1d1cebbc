"""Shared fixtures: users in each role, real services (Celery worker, moto S3), chromium.

Services are checked by scripts/test_services.py before pytest starts (``make test``);
it lists what is missing in RETAG_MISSING_SERVICES. In CI nothing may be missing (that
script fails first); on a developer's machine the tests that need a missing service
skip with the reason.
"""
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("RETAG_SHARED_DATA", ROOT.parent / "shared" / "data"))
PASSWORD = "retag-test-pw"
# Playwright's sync API runs an event loop in the test thread; the ORM calls the tests
# make beside it are still plain synchronous calls.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def require_service(name: str) -> None:
    """Skip (developer machine) or fail (CI) when a service is missing."""
    missing = set(filter(None, os.environ.get("RETAG_MISSING_SERVICES", "").split(",")))
    if name in missing:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI and is missing")
        pytest.skip(f"{name} is not available on this machine (see scripts/test_services.py)")


def require_shared(path: Path) -> Path:
    """A file of ../shared/data: CI always has it (a missing one fails there); a developer
    without it skips, loudly."""
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"shared data missing in CI: {path} (set RETAG_SHARED_DATA)")
        pytest.skip(f"shared data not found at {path} (set RETAG_SHARED_DATA)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- users ----------------------------------------------------------------------

@pytest.fixture
def make_user(db):
    from django.contrib.auth import get_user_model

    from labeling.services.roles import set_role

    def make(role: str | None, username: str | None = None):
        user = get_user_model().objects.create_user(username or f"{role or 'nobody'}-{uuid.uuid4().hex[:6]}",
                                                    password=PASSWORD)
        if role:
            set_role(user, role)
        return user

    return make


@pytest.fixture
def annotator(make_user):
    return make_user("annotator")


@pytest.fixture
def scientist(make_user):
    return make_user("scientist")


@pytest.fixture
def admin_user(make_user):
    return make_user("admin")


@pytest.fixture
def api_client_for():
    """``api_client_for(user)``: a DRF client logged in as that user (None: anonymous)."""
    from rest_framework.test import APIClient

    def make(user=None):
        client = APIClient()
        if user is not None:
            client.force_authenticate(user)
        return client

    return make


# --- storage ----------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _isolated_storage(tmp_path, settings):
    """Every test writes thumbnails, manifests and models under its own folder."""
    settings.STORAGE_URI = (tmp_path / "storage").as_uri()


# --- imports (tests/test_imports.py, tests/test_security_imports.py) ----------------

@pytest.fixture
def data(tmp_path, settings):
    """An allowed import root with nothing in it yet."""
    root = tmp_path / "data"
    root.mkdir()
    settings.IMPORT_ROOTS = [str(root)]
    return root


@pytest.fixture
def project(db):
    """A project to import into; a quarter of the keys without a split folder go to test."""
    from labeling.services.projects import create_project

    return create_project(name="Clothes", test_ratio=0.25)


@pytest.fixture(scope="session")
def moto_server():
    """S3 served by moto in server mode on a loopback port; yields the endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(moto_server, monkeypatch, settings):
    """A fresh bucket on the moto server, with the environment pointed at it.

    Yields ``(client, bucket)``.
    """
    import boto3

    from mlcore import storage

    for k, v in {"S3_ENDPOINT_URL": moto_server, "AWS_ACCESS_KEY_ID": "testing",
                 "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    settings.S3_ENDPOINT_URL = moto_server
    storage._local.__dict__.clear()
    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    bucket = f"retag-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    yield client, bucket
    storage._local.__dict__.clear()


# --- a real Celery worker ------------------------------------------------------------

def _db_env() -> dict:
    from django.db import connection

    sd = connection.settings_dict
    if sd["ENGINE"].endswith("sqlite3"):
        return {"DATABASE_URL": f"sqlite:///{sd['NAME']}"}
    from urllib.parse import quote

    auth = quote(sd["USER"] or "postgres") + (f":{quote(sd['PASSWORD'])}" if sd.get("PASSWORD") else "")
    return {"DATABASE_URL": f"postgres://{auth}@{sd['HOST'] or '127.0.0.1'}:{sd['PORT'] or 5432}/{sd['NAME']}"}


@pytest.fixture
def celery_worker_factory(transactional_db, tmp_path, settings):
    """Start real ``celery worker`` processes against the test database.

    ``start(broker="redis"|"amqp", queues="default,gpu")`` returns the Popen; the
    worker and the test share the broker URL and the storage folder. Workers are
    stopped at the end of the test. ``command`` replaces the worker's command line (e.g.
    ``make run``'s or the README's production one), which logs to ``log_path``.
    """
    from labeling.celery import app

    procs = []

    def start(broker: str = "redis", queues: str = "default,gpu", extra_env: dict | None = None,
              command: list | None = None, log_path: Path | None = None):
        require_service(broker if broker != "amqp" else "rabbitmq")
        url = os.environ["TEST_REDIS_URL"] if broker == "redis" else os.environ["TEST_AMQP_URL"]
        app.conf.broker_url = url
        _drop_connection_pools(app)
        app.conf.task_always_eager = False
        with app.connection_for_write() as conn:  # no stale messages from an earlier test
            for q in queues.split(","):
                try:
                    conn.default_channel.queue_purge(q)
                except Exception:  # noqa: BLE001 - the queue may not exist yet
                    pass
        env = dict(os.environ, **_db_env(), CELERY_BROKER_URL=url, STORAGE_URI=settings.STORAGE_URI,
                   RETAG_VAR_DIR=str(tmp_path / "worker-var"), **(extra_env or {}))
        log = open(tmp_path / f"worker-{len(procs)}.log", "w")
        proc = subprocess.Popen(
            command or [sys.executable, "-m", "celery", "-A", "labeling", "worker", "-Q", queues, "-c", "1",
                        "--pool", "prefork", "-l", "INFO", "-n", f"test{len(procs)}-{uuid.uuid4().hex[:6]}@%h"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        proc.log_path = str(log_path or log.name)
        procs.append(proc)
        _wait_ready(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    app.conf.broker_url = settings.CELERY_BROKER_URL
    _drop_connection_pools(app)


def _drop_connection_pools(app) -> None:
    """The app caches its broker connection pool: drop it so that ``.delay`` uses the new URL
    (else a test on RabbitMQ after one on Redis publishes to Redis). kombu also keeps the
    pools in a global registry; a closed one left there fails the next ``.delay`` with
    "Acquire on closed pool"."""
    from kombu import pools

    if app._pool is not None:
        app._pool.force_close_all()
        app._pool = None
    app.amqp._producer_pool = None
    pools.reset()


def _wait_ready(proc, timeout: float = 60) -> None:
    log = Path(proc.log_path)
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if " ready." in text:
            return
        if proc.poll() is not None:
            raise RuntimeError(f"celery worker exited with {proc.returncode}:\n{text[-3000:]}")
        time.sleep(0.3)
    raise RuntimeError(f"celery worker not ready after {timeout}s:\n{log.read_text()[-3000:] if log.exists() else ''}")


def wait_for(predicate, timeout: float = 60, interval: float = 0.3, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; return it."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# --- browser -------------------------------------------------------------------------

DEMO_LIMIT = 300  # the demo manifest's first rows: 200 train and 100 test images, all ten classes


@pytest.fixture
def untrained_demo(settings, tmp_path):
    """The demo's Fashion-MNIST project with its first DEMO_LIMIT images, no run trained yet."""
    from django.core.management import call_command

    from labeling.models import Project

    settings.VAR_DIR = tmp_path / "var"
    call_command("load_demo", "--limit", str(DEMO_LIMIT), "--no-train", "--quiet")
    return Project.objects.get(name="Fashion-MNIST")


def screenshot(target, name: str, *, full_page: bool = True) -> None:
    """A screenshot ``<name>.png`` in RETAG_SCREENSHOT_DIR, when that is set: of the whole page
    (``full_page``), of the viewport, or of one element (``target`` a locator)."""
    folder = os.environ.get("RETAG_SCREENSHOT_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        path = str(Path(folder) / f"{name}.png")
        target.screenshot(path=path, **({"full_page": True} if full_page else {}))


@pytest.fixture(scope="session")
def browser():
    require_service("chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=os.environ.get("CHROMIUM") or "/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(15000)
    yield pg
    context.close()


@pytest.fixture
def login(page):
    """``login(user)``: sign in through the login page, as a new visitor.

    The page first leaves for about:blank and the cookies go: a request still in flight
    from the page before (a poll, a prefetch) would otherwise come back without a session
    and set a fresh CSRF cookie under the login form, which then answers 403.
    """

    def do(user):
        page.goto("about:blank")
        page.context.clear_cookies()
        page.goto("/accounts/login/")
        page.fill("input[name=username]", user.username)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit], input[type=submit]")
        page.wait_for_load_state("networkidle")
        return page

    return do


# --- running in parallel (pytest-xdist) ------------------------------------------------

# The broker (one Redis db, one RabbitMQ vhost) and its queues are shared state: tests that
# start Celery workers or publish to the test broker purge and consume the same queues, so
# they run one after another in one xdist worker; everything else spreads over the others
# (each has its own test database, storage folder, live server and browser).
BROKER_MARKS = ("celery_worker_factory", "TEST_REDIS_URL", "TEST_AMQP_URL")
_uses_broker: dict[str, bool] = {}


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = str(item.path)
        if path not in _uses_broker:
            text = Path(path).read_text(errors="replace")
            _uses_broker[path] = any(mark in text for mark in BROKER_MARKS) and path != __file__
        if _uses_broker[path] or "celery_worker_factory" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("broker"))
