"""Shared helpers for the benchmarks: where the shared data is, and what machine ran them;
for the benches of the app, their own PostgreSQL database, a Django server to time over
HTTP, the pieces of their worlds (a scientist, a project with labels), and the median / p95
of timed requests; for the suspects benches, how well a score finds the label errors.

Imports only the standard library (and torch, psycopg, Django lazily, in the functions
that use them), so that GPU boxes with nothing but torch can run the scripts that use it.
"""
from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence
from urllib.parse import urlparse, urlunparse

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"


def shared_data() -> Path:
    """``RETAG_SHARED_DATA``, default ``<repo>/../shared/data``."""
    return Path(os.environ.get("RETAG_SHARED_DATA") or REPO.parent / "shared" / "data")


MOBILENET_WEIGHTS = "weights/mobilenet_v2_imagenet_features_torchvision_keys.pth"  # under shared_data()


def clothing_arguments(ap, *, work: str, out: str) -> None:
    """The arguments of a bench on the clothing photos with the shared ImageNet MobileNetV2
    weights: ``--data``, ``--weights``, ``--work`` (the folder ``work`` in the temporary
    folder, outside the repository) and ``--out`` (its result file, default ``out``)."""
    import tempfile

    ap.add_argument("--data", type=Path, default=shared_data() / "clothing")
    ap.add_argument("--weights", type=Path, default=shared_data() / MOBILENET_WEIGHTS)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / work)
    ap.add_argument("--out", default=out)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def machine_info(device: str | None = None) -> dict:
    """CPU model, cores, memory, Python/torch versions and the device a bench ran on."""
    info = {"cpu": _cpu_model(), "cores": os.cpu_count(), "memory_gb": _memory_gb(),
            "python": platform.python_version(), "platform": platform.platform()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if str(device).startswith("cuda") and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["cuda"] = torch.version.cuda
    except ImportError:
        info["torch"] = None
    info["device"] = device or "cpu"
    return info


def print_table(rows: list[tuple[str, object]], title: str = "") -> None:
    if title:
        print(title)
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        v = f"{v:,.3f}" if isinstance(v, float) else v
        print(f"  {k:<{width}}  {v}")


def write_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}", file=sys.stderr)
    return path


# --- a bench's own database ---------------------------------------------------------

LOCAL_SERVER = "postgres://postgres@127.0.0.1:5432/postgres"  # the loopback server, as the test services run it


def server_url() -> str:
    """DATABASE_URL from the environment, else from var/test.env (written by scripts/test_services.py)."""
    url = os.environ.get("DATABASE_URL", "")
    env = REPO / "var" / "test.env"
    if not url and env.exists():
        for line in env.read_text().splitlines():
            if line.startswith("DATABASE_URL="):
                url = line.split("=", 1)[1].strip("'\"")
    if not url.startswith("postgres"):
        sys.exit("this bench needs PostgreSQL: set DATABASE_URL or run scripts/test_services.py")
    return url


def database_url(server: str, name: str) -> str:
    """The URL of database ``name`` on the PostgreSQL server of the URL ``server``."""
    return urlunparse(urlparse(server)._replace(path=f"/{name}"))


def _admin(server: str, *statements: str) -> None:
    import psycopg

    with psycopg.connect(database_url(server, "postgres"), autocommit=True) as conn:
        for sql in statements:
            conn.execute(sql)


def recreate_database(server: str, name: str) -> str:
    """Drop and create database ``name``, so every run starts empty; its URL."""
    _admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
    return database_url(server, name)


def ensure_database(server: str, name: str) -> str:
    """Create database ``name`` unless it exists (a kept one is reused); its URL."""
    import psycopg

    with psycopg.connect(database_url(server, "postgres"), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    return database_url(server, name)


def drop_database(server: str, name: str) -> None:
    _admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def setup_django(db_url: str, migrate: bool = False, **env: str) -> None:
    """Point Django at ``db_url`` (and set ``env``) before its settings are read, set it
    up, and with ``migrate`` bring the database's schema up to date."""
    os.environ.update(env, DATABASE_URL=db_url)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labeling.settings")
    import django

    django.setup()
    if migrate:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)


# --- a server to time over HTTP ------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(db_url: str, kind: str) -> tuple[subprocess.Popen, str]:
    """Start the app on a free loopback port against ``db_url``, in its own process, and
    wait (up to 60 s) until it takes connections; (process, base URL). ``nodelay``:
    serve() below, Django's threaded WSGI server (the one ``runserver`` uses) with
    TCP_NODELAY. ``runserver``: ``manage.py runserver --noreload``. ``gunicorn``: the
    production server with the repo's gunicorn.conf.py, one worker process (``WEB_WORKERS``
    in the environment overrides)."""
    port = free_port()
    env = dict(os.environ, DATABASE_URL=db_url, DEBUG="0", DB_CONN_MAX_AGE="600", LOG_LEVEL="ERROR")
    if kind == "gunicorn":
        env.setdefault("WEB_WORKERS", "1")
        env.update(WEB_BIND=f"127.0.0.1:{port}", WEB_ACCESS_LOG="", WEB_LOG_LEVEL="warning")
    cmd = {"nodelay": [sys.executable, "-c", "import sys; from bench.common import serve; serve(int(sys.argv[1]))",
                       str(port)],
           "runserver": [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
           "gunicorn": [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"]}[kind]
    proc = subprocess.Popen(cmd,
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"http://127.0.0.1:{port}"
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not start in 60 s")


def serve(port: int) -> None:
    """Serve the app on 127.0.0.1:port until killed.

    ``runserver`` itself leaves Nagle's algorithm on: its headers and body go out in two
    writes, and the client's delayed ACK holds the second for ~40 ms, on every request.
    Production servers (gunicorn, uwsgi) set TCP_NODELAY; so does this one, so that the
    figures are the app's, not a TCP timer's.
    """
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labeling.settings")
    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
    from django.core.wsgi import get_wsgi_application

    class Handler(WSGIRequestHandler):
        def setup(self):
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, *args):
            pass

    app = get_wsgi_application()
    httpd = ThreadedWSGIServer(("127.0.0.1", port), Handler)
    httpd.set_app(app)
    httpd.serve_forever()


def session_cookie(user) -> str:
    """A logged-in session for the user, as the login page would make: the value of the
    ``sessionid`` cookie."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    s = SessionStore()
    s[SESSION_KEY] = str(user.pk)
    s[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    s[HASH_SESSION_KEY] = user.get_session_auth_hash()
    s.create()
    return s.session_key


def tear_down(server: subprocess.Popen | None, db: str, *, keep: bool = False) -> None:
    """After an app bench: stop its server (if it started), close Django's connections, and
    drop its database on :data:`LOCAL_SERVER` unless ``keep``."""
    if server is not None:
        server.terminate()
        server.wait(20)
    from django.db import connections

    connections.close_all()
    if not keep:
        drop_database(LOCAL_SERVER, db)


def load_average() -> list[float]:
    """The load average (1, 5, 15 min), rounded: a bench records it before and after, since
    other engineers' work shares the machine."""
    return [round(x, 2) for x in os.getloadavg()]


class AppBench:
    """One run of an app bench (:func:`app_bench`): its database URL, the load average
    when it began, and :meth:`serve`."""

    def __init__(self, db_url: str, load_before: list[float]):
        self.db_url = db_url
        self.load_before = load_before
        self.server: subprocess.Popen | None = None

    def serve(self, kind: str, user):
        """Once the bench's world is in the database: the app in a server process (``kind``,
        :func:`start_server`) and a ``requests`` session logged in as ``user`` with a
        session cookie: (base URL, session). Closes this process's connection first, so
        the server's requests do not wait on it."""
        import requests
        from django.db import connection

        key = session_cookie(user)
        connection.close()
        self.server, base = start_server(self.db_url, kind)
        http = requests.Session()
        http.cookies.set("sessionid", key, domain="127.0.0.1")
        return base, http


@contextmanager
def app_bench(db: str, *, keep: bool = False):
    """An app bench timed over HTTP, from its set-up to its tear-down: its database ``db`` on
    :data:`LOCAL_SERVER` (made if missing), Django set up on it and migrated; yields the
    :class:`AppBench`. On the way out (also after an error) its server stops and the
    database is dropped unless ``keep`` (:func:`tear_down`)."""
    load_before = load_average()
    bench = AppBench(ensure_database(LOCAL_SERVER, db), load_before)
    try:
        setup_django(bench.db_url, migrate=True)
        yield bench
    finally:
        tear_down(bench.server, db, keep=keep)


# --- a bench's world ------------------------------------------------------------------

def bench_scientist(username: str):
    """The bench's user (made with the password ``bench-pw`` the first time), a scientist."""
    from django.contrib.auth import get_user_model

    from labeling.services.roles import set_role

    user = get_user_model().objects.filter(username=username).first() or \
        get_user_model().objects.create_user(username, password="bench-pw")
    set_role(user, "scientist")
    return user


def project_with_labels(name: str, slug: str, labels) -> tuple[object, object, list[int]]:
    """A new project with one task, ``category``, whose labels are ``labels``: (project, task,
    the labels' ids in that order)."""
    from labeling.models import Project
    from labeling.services.labels import ensure_labels, get_or_create_task

    project = Project.objects.create(name=name, slug=slug)
    task = get_or_create_task(project, "category")
    by_name = ensure_labels(task, labels)
    return project, task, [by_name[n].id for n in labels]


def fresh_project(name: str, slug: str, labels, n: int, tables: Sequence[str]) -> tuple[object, object, list[int]]:
    """Empty the bench's ``tables`` (TRUNCATE, identities restarted, CASCADE) and make its
    world anew: :func:`project_with_labels` and N images
    (``load_predictions_bench.make_images``: ``file:///bench/img/<i>.png``, ids in a row)."""
    from django.db import connection

    from load_predictions_bench import make_images  # bench/ is on the path of every bench

    with connection.cursor() as c:
        c.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
    project, task, label_ids = project_with_labels(name, slug, labels)
    make_images(project, n)
    return project, task, label_ids


def label_as_trained(run, analyze: Sequence[str] = ()) -> None:
    """Every image's current label becomes the one ``run`` trained on (version 1), from its
    predictions; then ``ANALYZE`` the ``analyze`` tables."""
    from django.db import connection

    with connection.cursor() as c:
        c.execute("INSERT INTO labeling_annotation (image_id, task_id, label_id, version, verified, updated_at) "
                  "SELECT image_id, %s, given_label_id, 1, false, now() FROM labeling_prediction WHERE run_id = %s",
                  [run.task_id, run.id])
        for table in analyze:
            c.execute(f"ANALYZE {table}")


# --- scoring mislabel detection -------------------------------------------------------

def auroc(score, positive) -> float:
    """The area under the ROC curve of ``score`` for the ``positive`` rows (NaN with one class)."""
    from scipy.stats import rankdata

    r = rankdata(score)
    npos, nneg = positive.sum(), (~positive).sum()
    if not npos or not nneg:
        return float("nan")
    return float((r[positive].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def detection(flagged, score, errors) -> dict:
    """How well ``flagged`` (bool) and ``score`` find the label ``errors`` (bool): precision,
    recall, F1 of the flags; precision at k (k = the number of errors) and AUROC of the score."""
    import numpy as np

    tp = int((flagged & errors).sum())
    p = tp / max(1, flagged.sum())
    r = tp / max(1, errors.sum())
    k = int(errors.sum())
    top = np.argsort(-score, kind="stable")[:k]
    return {"precision": p, "recall": r, "f1": 2 * p * r / max(1e-12, p + r),
            "precision_at_k": float(errors[top].mean()) if k else float("nan"),
            "auroc": auroc(score, errors), "flagged": int(flagged.sum())}


# --- timing requests -----------------------------------------------------------------

def time_requests(send, repeats: int, warmup: int = 3, check=None) -> tuple[list[float], object]:
    """Call ``send()`` ``warmup + repeats`` times, timing each call; ``check(answer)``, if
    given, runs after each (untimed). The times in ms of the last ``repeats``, and the last answer."""
    times, answer = [], None
    for k in range(warmup + repeats):
        t0 = time.perf_counter()
        answer = send()
        dt = (time.perf_counter() - t0) * 1000
        if check is not None:
            check(answer)
        if k >= warmup:
            times.append(dt)
    return times, answer


def figure_fields(cases: dict) -> dict:
    """A result file's headline fields: ``<case>_median_ms`` and ``<case>_p95_ms`` of each of
    ``cases`` ({case: figures with median_ms and p95_ms}), in that order."""
    return {f"{name}_{k}": figures[k] for name, figures in cases.items() for k in ("median_ms", "p95_ms")}


def median_p95(times_ms: list[float]) -> dict:
    """``median_ms`` and ``p95_ms`` (the sorted time 95% of the way up, not interpolated), in
    ms rounded to 0.1."""
    times = sorted(times_ms)
    return {"median_ms": round(statistics.median(times), 1),
            "p95_ms": round(times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))], 1)}


# --- synthetic embeddings -------------------------------------------------------------

def clustered_unit_vectors(n: int, d: int, seed: int, *, topics: int = 100, styles: int = 50,
                           spread: float = 1.0) -> tuple:
    """``n`` float16 unit vectors in two levels of clusters (``topics`` directions, ``styles``
    sub-clusters around each), with noise that makes neighbourhoods cross cluster borders, so
    that an approximate search can miss; and each vector's topic (a stand-in label)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    top = rng.standard_normal((topics, d)).astype(np.float32)
    top /= np.linalg.norm(top, axis=1, keepdims=True)
    topic_of = rng.integers(0, topics, topics * styles)
    sub = top[topic_of] + 0.7 * rng.standard_normal((topics * styles, d)).astype(np.float32) / np.sqrt(d)
    sub /= np.linalg.norm(sub, axis=1, keepdims=True)
    which = rng.integers(0, len(sub), n)
    out = np.empty((n, d), dtype=np.float16)
    for s in range(0, n, 65536):
        x = sub[which[s:s + 65536]] + spread * rng.standard_normal((len(which[s:s + 65536]), d)).astype(
            np.float32) / np.sqrt(d)
        out[s:s + 65536] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out, topic_of[which]
