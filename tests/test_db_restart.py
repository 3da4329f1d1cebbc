"""PostgreSQL restarts while the app serves: the app recovers by itself.

The machine's shared PostgreSQL is never touched: the test starts a private cluster
(initdb + pg_ctl from /usr/lib/postgresql/*/bin, on a free loopback port, in a
temporary folder), migrates it, and serves the app with gunicorn (gunicorn.conf.py,
threaded workers holding persistent connections) against it. Then:

- the cluster stops: requests answer a clear 503 (JSON under /api/, a short page
  elsewhere), at once, never a 500 traceback or a hang;
- it starts again: every request succeeds, without restarting gunicorn;
- it restarts while the app is idle: the connection each thread held is dead, and the
  first request after finds it so; it is replaced before use (CONN_HEALTH_CHECKS), and
  every request succeeds;
- it restarts (``pg_ctl restart -m fast``) under a steady stream of requests: those in
  flight may answer 503, none 500, none hangs, and everything after succeeds.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.integration

USER, PASSWORD = "restart-scientist", "restart-test-pw"
TIMEOUT = 20  # a request slower than this is a hang


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL's server binaries (initdb, pg_ctl) are required in CI")
        pytest.skip("no /usr/lib/postgresql/*/bin/pg_ctl on this machine: cannot start a private cluster")
    return Path(found[-1]).parent


class Cluster:
    """A private PostgreSQL cluster in a temporary folder, owned by ``postgres`` when the
    test runs as root (initdb refuses root)."""

    def __init__(self):
        self.bin = _pg_bin()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="retag-pg-"))
        self.data, self.log = self.dir / "data", self.dir / "server.log"
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.dir, "postgres")
        self.run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")

    def run(self, tool: str, *args: str, timeout: float = 120) -> None:
        subprocess.run([*self.as_user, str(self.bin / tool), *args], check=True, timeout=timeout,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def ctl(self, action: str, *args: str) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.dir} -c fsync=off"
        self.run("pg_ctl", action, "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", options, *args)

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/retag"

    def destroy(self) -> None:
        try:
            self.run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w", timeout=60)
        except subprocess.CalledProcessError:
            pass  # not running
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def cluster():
    c = Cluster()
    try:
        c.ctl("start")
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{c.port}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE retag")
        # The schema and a user, as a deployment would have them (its own process: this
        # one's Django points at the test database).
        setup = ("import django; django.setup(); from django.core.management import call_command; "
                 "call_command('migrate', verbosity=0); "
                 "from django.contrib.auth import get_user_model; from labeling.services.roles import set_role; "
                 f"set_role(get_user_model().objects.create_user({USER!r}, password={PASSWORD!r}), 'scientist')")
        subprocess.run([sys.executable, "-c", setup], cwd=ROOT, check=True, timeout=300,
                       env=dict(os.environ, DATABASE_URL=c.url, DJANGO_SETTINGS_MODULE="labeling.settings"))
        yield c
    finally:
        c.destroy()


@pytest.fixture
def server(cluster, tmp_path):
    from bench.load import start_gunicorn, stop

    # One worker with four threads: each thread holds its own persistent connection.
    proc, base = start_gunicorn(cluster.url, workers=1, threads=4, log_path=tmp_path / "gunicorn.log",
                                env={"DB_CONNECT_TIMEOUT": "3"})
    yield proc, base
    stop(proc)


def login(base: str):
    import requests

    s = requests.Session()
    s.get(f"{base}/accounts/login/", timeout=TIMEOUT)
    r = s.post(f"{base}/accounts/login/", data={"username": USER, "password": PASSWORD,
                                                "csrfmiddlewaretoken": s.cookies["csrftoken"]},
               allow_redirects=False, timeout=TIMEOUT)
    assert r.status_code == 302 and "sessionid" in s.cookies, r.text[:500]
    return s


PATHS = ("/api/projects/", "/")  # the API (DRF) and a page (the session, the user, a template)


def hit(session, base: str, n: int) -> list[tuple[str, int, float, str]]:
    """``n`` GETs over the PATHS from 4 threads at once (so every gunicorn thread serves
    some): (path, status, seconds, body start) each."""
    def one(i):
        path = PATHS[i % len(PATHS)]
        t0 = time.monotonic()
        r = session.get(base + path, timeout=TIMEOUT, allow_redirects=False)
        return path, r.status_code, time.monotonic() - t0, r.text[:300]

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(n)))


def statuses(results) -> list[int]:
    return [status for _, status, _, _ in results]


def test_database_outage_answers_503_and_the_app_recovers_after_restarts(cluster, server):
    proc, base = server
    http = login(base)
    assert set(statuses(hit(http, base, 16))) == {200}

    # Down: a clear 503, quickly (a refused connection, no hang), never a 500.
    cluster.ctl("stop", "-m", "fast")
    down = hit(http, base, 8)
    assert set(statuses(down)) == {503}, down
    for path, _, seconds, body in down:
        assert seconds < 10, f"{path} took {seconds:.1f} s while the database was down"
        if path.startswith("/api/"):
            assert '"error": "database_unavailable"' in body or '"error":"database_unavailable"' in body, body
        else:
            assert "Try again shortly" in body and "Traceback" not in body, body
    r = http.get(base + "/api/projects/", timeout=TIMEOUT)
    assert r.status_code == 503 and r.headers.get("Retry-After"), r.headers

    # Up again: every request succeeds; the threads' old connections were replaced, not used.
    cluster.ctl("start")
    after = hit(http, base, 16)
    assert set(statuses(after)) == {200}, after

    # A restart while nobody asks anything: the first request of each thread finds its
    # connection dead. The health check replaces it before the request uses it.
    cluster.ctl("restart", "-m", "fast")
    after = hit(http, base, 16)
    assert set(statuses(after)) == {200}, after

    # A restart under a steady stream of requests: in-flight ones may get 503, nothing else.
    during, failures, stop = [], [], threading.Event()

    def stream():
        while not stop.is_set():
            try:
                during.extend(hit(http, base, 4))
            except Exception as e:  # noqa: BLE001 - a timeout (a hang) or a dropped connection
                failures.append(repr(e))
                return

    t = threading.Thread(target=stream)
    t.start()
    try:
        time.sleep(0.5)
        cluster.ctl("restart", "-m", "fast")
        time.sleep(0.5)
    finally:
        stop.set()
        t.join(TIMEOUT * 3)
    assert not t.is_alive(), "requests hung across the restart"
    assert failures == [], failures
    assert during and set(statuses(during)) <= {200, 503}, [r for r in during if r[1] not in (200, 503)]
    assert set(statuses(hit(http, base, 16))) == {200}
    assert proc.poll() is None, "gunicorn itself must keep running"
