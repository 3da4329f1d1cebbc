"""Load: annotators working the suspects queue and retagging from the API, scientists
reading dashboards, all at once against gunicorn + PostgreSQL; then the books are
checked: every accepted retag has exactly one LabelEvent, and none is lost.

    python bench/load.py                                  # 50 annotators, 10 scientists, 5 minutes
    python bench/load.py --duration 60 --annotators 10    # shorter

What it does:
1. creates the PostgreSQL database ``retag_bench_load`` (``--db``, on the server of
   DATABASE_URL or var/test.env), migrates it and builds, with the app's services:
   a project with N images (``--images``) and their labels (version 1), a finished
   training run with a prediction for every image and its class metrics
   (services.run_results.load_run_results, as the worker loads them), and a suspects run
   whose open suspects are the images the run got wrong (services.suspects.store_results);
   the users, each with a password;
2. starts gunicorn (gunicorn.conf.py: gthread workers) on a free loopback port;
3. runs locust headless in a subprocess (this file is also its locustfile), with a hard
   time bound. Users arrive over the first ~30 s; every one logs in once through the
   login page (CSRF token, then the session cookie and X-CSRFToken on each write; a
   login that timed out is tried again). Annotators lease the next suspect
   (``POST /api/suspect-runs/{id}/next/``) and resolve it (accept the suggestion, pick
   another label, or keep it: ``POST /api/suspects/{id}/resolve/`` with the version
   they saw), and retag images of a small shared pool directly
   (``GET /api/images/{id}/`` for the version, ``POST /api/images/{id}/retag/``), so
   that they collide: a 409 is the right answer then, and counts as a success. Scientists
   read the run's dashboard, confusion matrix and false-negative grid, as pages and from
   the API, and the suspects run's page. Each user counts the retags the server accepted
   (an event in the answer, or a suspect ``retagged``), per image;
4. compares those counts with the database, image by image: the annotator LabelEvents
   (at least one per accepted retag, and at most one more per retag whose answer never
   came: a client timeout does not undo a commit), and each annotation's version (one
   step per event);
5. prints a table and writes bench/results/load.json (``--out``): requests, errors
   (anything but the expected answers), server errors (5xx), p50/p95/p99 in ms, accepted
   retags against the events in the history, and the machine, with its load average
   before and after (the machine may be shared: that is the contention the figures
   were measured under).

The test twin is tests/test_load.py (a few users, ~20 s).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
if str(REPO / "bench") not in sys.path:
    sys.path.insert(0, str(REPO / "bench"))

from bench.common import (RESULTS, drop_database, free_port, label_as_trained, machine_info, print_table,  # noqa: E402
                          project_with_labels, recreate_database, server_url, setup_django)

PASSWORD = "load-bench-pw"
SLUG = "load"
RETAG_POOL = 300  # images that annotators also retag directly: small, so that they collide


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=300, help="seconds of load")
    p.add_argument("--annotators", type=int, default=50)
    p.add_argument("--scientists", type=int, default=10)
    p.add_argument("--images", type=int, default=30_000, help="images (and predictions) in the project")
    p.add_argument("--db", default="retag_bench_load", help="PostgreSQL database to create and use")
    p.add_argument("--workers", type=int, default=3, help="gunicorn workers")
    p.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    p.add_argument("--baseline", type=float, default=30,
                   help="seconds of one annotator and one scientist alone first (0: none)")
    p.add_argument("--keep", action="store_true", help="keep the database afterwards")
    p.add_argument("--out", default=str(RESULTS / "load.json"))
    return p.parse_args(argv)


# --- the world --------------------------------------------------------------------------

def build(*, n_images: int, annotators: int, scientists: int, pool: int = RETAG_POOL) -> dict:
    """The project, its finished run with predictions, the suspects run with open suspects
    and the users, in the database Django is set up on; what the load users need to know."""
    import numpy as np
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.utils import timezone

    from api_list_bench import LABELS
    from labeling.models import Image, SuspectRun, TrainingRun
    from labeling.services import suspects
    from labeling.services.roles import ANNOTATOR, SCIENTIST, set_role
    from labeling.services.run_results import load_run_results
    from load_predictions_bench import make_images, synthesise

    project, task, label_ids = project_with_labels("Load", SLUG, LABELS)
    make_images(project, n_images)

    User = get_user_model()
    password = make_password(PASSWORD)  # hashed once: the same hash serves every user
    names = {"annotator": [f"load-annotator-{i:03d}" for i in range(annotators)],
             "scientist": [f"load-scientist-{i:03d}" for i in range(scientists)]}
    User.objects.bulk_create([User(username=u, password=password) for group in names.values() for u in group])
    for role, group in ((ANNOTATOR, names["annotator"]), (SCIENTIST, names["scientist"])):
        for user in User.objects.filter(username__in=group):
            set_role(user, role)
    scientist = User.objects.get(username=names["scientist"][0]) if scientists else None

    now = timezone.now()
    run = TrainingRun.objects.create(project=project, task=task, label_ids=label_ids, label_names=list(LABELS),
                                     created_by=scientist, state="running", snapshot_at=now, started_at=now,
                                     config={"arch": "resnet18", "epochs": 1}, device="cpu: load bench",
                                     n_train=n_images - n_images // 5, n_test=n_images // 5)
    arrays, metrics = synthesise(n_images, list(LABELS), seed=0)
    load_run_results(run, predictions=arrays, metrics=metrics, run_json={})
    TrainingRun.objects.filter(pk=run.pk).update(state="done", finished_at=timezone.now())
    run.refresh_from_db()
    # Every image's current label is the one the run trained on (version 1).
    label_as_trained(run, analyze=("labeling_prediction", "labeling_annotation", "labeling_image"))

    # Suspects: the images the run got wrong, the worst first, the prediction suggested.
    image_ids = np.asarray(Image.objects.filter(project=project).order_by("key").values_list("id", flat=True))
    given, pred, prob = arrays["label"], arrays["pred"], arrays["prob"]
    p_given = prob[np.arange(len(given)), given]
    flagged = pred != given
    scores = {"flagged": flagged, "score": 1 - p_given, "suggested": pred, "self_confidence": p_given,
              "reasons": np.where(flagged, 1, 0)}
    sr = SuspectRun.objects.create(project=project, task=task, run=run, config=dict(suspects.DEFAULTS),
                                   created_by=scientist, state=SuspectRun.State.SCORING, started_at=now)
    counts = suspects.store_results(sr, image_ids=image_ids, given=given, scores=scores)
    SuspectRun.objects.filter(pk=sr.pk).update(state=SuspectRun.State.DONE, finished_at=timezone.now())

    rng = random.Random(0)
    pool = sorted(rng.sample(image_ids.tolist(), min(pool, len(image_ids))))
    fn_label = label_ids[3]
    return {"project": SLUG, "task": task.id, "labels": label_ids, "run": run.id, "suspect_run": sr.pk,
            "pool": pool, "fn_label": fn_label, "password": PASSWORD, "suspects": counts["suspects"],
            "images": n_images, **names}


# --- the server ---------------------------------------------------------------------------

def start_gunicorn(db_url: str, *, workers: int, threads: int, log_path: Path,
                   env: dict | None = None, timeout: float = 90) -> tuple[subprocess.Popen, str]:
    """gunicorn (gunicorn.conf.py) on a free loopback port against ``db_url``, in its own
    session; waits until it answers the login page. (process, base URL)."""
    port = free_port()
    full_env = dict(os.environ, DATABASE_URL=db_url, DEBUG="0", DB_CONN_MAX_AGE="600", LOG_LEVEL="WARNING",
                    WEB_ACCESS_LOG="", **(env or {}))
    full_env.pop("WEB_BIND", None)
    log = open(log_path, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(REPO / "gunicorn.conf.py"),
                             "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--threads", str(threads)],
                            cwd=REPO, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode}:\n{Path(log_path).read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(b"GET /accounts/login/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                if s.recv(16).startswith(b"HTTP/1"):
                    return proc, base
        except OSError:
            pass
        time.sleep(0.3)
    stop(proc)
    raise RuntimeError(f"gunicorn did not answer in {timeout:.0f} s:\n{Path(log_path).read_text()[-3000:]}")


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Stop a process started in its own session (gunicorn and its workers, locust)."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# --- the load -----------------------------------------------------------------------------

def run_locust(base: str, world: dict, *, annotators: int, scientists: int, duration: float,
               workdir: Path) -> dict:
    """Run this file as a locustfile, headless, for ``duration`` seconds (killed at
    duration + 120 s whatever happens); what its users counted."""
    config, result = workdir / "load-config.json", workdir / "load-result.json"
    config.write_text(json.dumps(world))
    result.unlink(missing_ok=True)
    users = annotators + scientists
    env = dict(os.environ, RETAG_LOAD_CONFIG=str(config), RETAG_LOAD_RESULT=str(result),
               RETAG_LOAD_ANNOTATORS=str(annotators), RETAG_LOAD_SCIENTISTS=str(scientists))
    cmd = [sys.executable, "-m", "locust", "-f", str(Path(__file__).resolve()), "--headless", "--host", base,
           "--users", str(users), "--spawn-rate", str(max(1, users // 30)), "--run-time", f"{int(duration)}s",
           "--stop-timeout", "10", "--only-summary", "--loglevel", "WARNING"]
    log_path = workdir / "locust.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            proc.wait(duration + 120)
        except subprocess.TimeoutExpired:
            stop(proc)
            raise RuntimeError(f"locust ran past its bound:\n{log_path.read_text()[-3000:]}") from None
    if not result.exists():
        raise RuntimeError(f"locust wrote no result (exit {proc.returncode}):\n{log_path.read_text()[-3000:]}")
    out = json.loads(result.read_text())
    out["locust_log_tail"] = log_path.read_text(errors="replace")[-2000:]
    return out


def check_history(world: dict, accepted: dict, unanswered: dict | None = None) -> dict:
    """The database's side of the books, image by image: the annotator events, against the
    retags the clients saw accepted. A retag whose answer never came (a client timeout)
    may or may not have been committed: it may account for one event more, never fewer.
    Also the annotations whose version did not move once per event."""
    from django.db.models import Count

    from labeling.models import Annotation, EventSource, LabelEvent

    events = dict(LabelEvent.objects.filter(task_id=world["task"], source=EventSource.ANNOTATOR)
                  .values_list("image_id").annotate(n=Count("id")).values_list("image_id", "n"))
    client = {int(k): v for k, v in accepted.items()}
    maybe = {int(k): v for k, v in (unanswered or {}).items()}
    images = set(client) | set(events) | set(maybe)
    versions = dict(Annotation.objects.filter(task_id=world["task"], image_id__in=list(images))
                    .values_list("image_id", "version"))
    return {
        "retags_in_history": sum(events.values()),
        # accepted, and not in the history: lost
        "retags_lost": sum(max(0, client.get(i, 0) - events.get(i, 0)) for i in images),
        # images where the history and the clients' counts disagree beyond the unanswered retags
        "images_mismatched": sorted(i for i in images
                                    if not client.get(i, 0) <= events.get(i, 0) <= client.get(i, 0) + maybe.get(i, 0)
                                    )[:20],
        "versions_mismatched": sorted(i for i in images if versions.get(i, 1) - 1 != events.get(i, 0))[:20],
    }


def measure(base: str, world: dict, *, annotators: int, scientists: int, duration: float, workdir: Path,
            baseline_s: float = 0) -> dict:
    """Run the load and check the books; the figures of load.json (without ``machine``).

    With ``baseline_s``, first one annotator and one scientist alone for that long, on the
    same server and data: the latencies of the app unloaded, which the loaded ones are
    divided by (``ratio_*``), so that the figures say what the load costs on this machine
    whatever its speed. Their retags are in the books too."""
    baseline = None
    if baseline_s > 0:
        baseline = run_locust(base, world, annotators=1, scientists=1, duration=baseline_s, workdir=workdir)
    t0 = time.time()
    counted = run_locust(base, world, annotators=annotators, scientists=scientists, duration=duration,
                         workdir=workdir)
    wall = time.time() - t0
    accepted = Counter({int(k): v for k, v in counted["accepted"].items()})
    unanswered = Counter({int(k): v for k, v in counted["unanswered"].items()})
    if baseline is not None:
        accepted.update({int(k): v for k, v in baseline["accepted"].items()})
        unanswered.update({int(k): v for k, v in baseline["unanswered"].items()})
    books = check_history(world, accepted, unanswered)
    out = {
        "duration_s": round(counted["duration_s"], 1), "wall_s": round(wall, 1),
        "annotators": annotators, "scientists": scientists, "images": world["images"],
        "suspects": world["suspects"],
        "requests": counted["requests"], "errors": counted["errors"], "server_errors": counted["server_errors"],
        "requests_per_s": round(counted["requests"] / max(counted["duration_s"], 1e-9), 1),
        "p50_ms": counted["p50_ms"], "p95_ms": counted["p95_ms"], "p99_ms": counted["p99_ms"],
        # The same without the logins (one each, at the start: a password hash is slow on purpose).
        "work_requests": counted["work_requests"], "work_p50_ms": counted["work_p50_ms"],
        "work_p95_ms": counted["work_p95_ms"], "work_p99_ms": counted["work_p99_ms"],
        "retags_accepted": sum(accepted.values()), "retags_in_history": books["retags_in_history"],
        "retags_unanswered": sum(unanswered.values()), "retags_lost": books["retags_lost"],
        "conflicts_409": counted["conflicts"], "queue_empty_204": counted["queue_empty"],
        "images_mismatched": books["images_mismatched"], "versions_mismatched": books["versions_mismatched"],
        "by_endpoint": counted["by_endpoint"], "error_samples": counted["error_samples"],
    }
    if baseline is not None:
        out["baseline"] = {k: baseline[k] for k in ("duration_s", "requests", "errors", "server_errors",
                                                    "work_requests", "work_p50_ms", "work_p95_ms", "work_p99_ms")}
        out["baseline"]["retags_accepted"] = sum(baseline["accepted"].values())
        out["errors"] += baseline["errors"]
        out["server_errors"] += baseline["server_errors"]
        out["error_samples"] += baseline["error_samples"]
        for q in ("p50", "p95", "p99"):
            b, x = baseline[f"work_{q}_ms"], counted[f"work_{q}_ms"]
            out[f"ratio_work_{q}"] = round(x / b, 2) if b and x is not None else None
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    load_before = [round(x, 2) for x in os.getloadavg()]
    server = server_url()
    db_url = recreate_database(server, args.db)
    proc = None
    try:
        setup_django(db_url, migrate=True)
        from django.db import connections

        t0 = time.perf_counter()
        world = build(n_images=args.images, annotators=args.annotators, scientists=args.scientists)
        build_s = time.perf_counter() - t0
        print(f"[load] {args.images:,} images, {world['suspects']:,} open suspects, "
              f"{args.annotators} annotators, {args.scientists} scientists, built in {build_s:.1f} s", flush=True)
        connections.close_all()
        with tempfile.TemporaryDirectory(prefix="retag-load-") as tmp:
            workdir = Path(tmp)
            busy0, ours0, t_load = cpu_busy_s(), children_cpu_s(), time.time()
            proc, base = start_gunicorn(db_url, workers=args.workers, threads=args.threads,
                                        log_path=workdir / "gunicorn.log")
            figures = measure(base, world, annotators=args.annotators, scientists=args.scientists,
                              duration=args.duration, workdir=workdir, baseline_s=args.baseline)
            stop(proc)
            busy, ours, wall = cpu_busy_s() - busy0, children_cpu_s() - ours0, time.time() - t_load
            gunicorn_tail = (workdir / "gunicorn.log").read_text(errors="replace")[-2000:]
        load_after = [round(x, 2) for x in os.getloadavg()]
    finally:
        if proc is not None:
            stop(proc)
        from django.db import connections

        connections.close_all()
        if not args.keep:
            drop_database(server, args.db)

    figures["gunicorn"] = {"workers": args.workers, "threads": args.threads, "worker_class": "gthread"}
    figures["build_s"] = round(build_s, 1)
    figures["machine"] = {**machine_info("cpu"), "loadavg_before": load_before, "loadavg_after": load_after,
                          "contention": "the machine's cores are shared with other users' processes; "
                                        "loadavg_before/after (1, 5, 15 min) say how busy it was, cpu_s "
                                        "where its CPU time went while the server ran",
                          "cpu_s": {"capacity": round(wall * (os.cpu_count() or 1), 1), "busy": round(busy, 1),
                                    "gunicorn_and_locust": round(ours, 1),
                                    "postgresql_and_other_users": round(busy - ours, 1)}}
    if figures["server_errors"]:
        figures["gunicorn_log_tail"] = gunicorn_tail
    print_table([(k, figures.get(k)) for k in ("duration_s", "requests", "requests_per_s", "errors", "server_errors",
                                           "p50_ms", "p95_ms", "p99_ms", "work_p50_ms", "work_p95_ms",
                                           "work_p99_ms", "ratio_work_p50", "ratio_work_p95",
                                           "retags_accepted", "retags_in_history",
                                           "retags_unanswered", "retags_lost", "conflicts_409", "queue_empty_204")],
                f"\nload: {args.annotators} annotators + {args.scientists} scientists, gunicorn "
                f"{args.workers}x{args.threads} threads, PostgreSQL; load average {load_before} -> {load_after}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=1) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    ok = (figures["server_errors"] == 0 and figures["retags_lost"] == 0 and not figures["images_mismatched"]
          and not figures["versions_mismatched"])
    print(f"books balance: every accepted retag has one event ({figures['retags_unanswered']} retags unanswered "
          "by the client's timeout, each at most one event)" if ok else "BOOKS DO NOT BALANCE or 5xx seen")
    return 0 if ok else 1


def cpu_busy_s() -> float:
    """CPU-seconds the whole machine has been busy since boot (all cores, /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    """CPU-seconds of this process's finished children: gunicorn (with the workers it
    reaped) and locust, once they were waited for."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def percentiles(times_ms: list[float]) -> dict:
    """p50/p95/p99 in ms (nearest rank), rounded to 1 ms; None without times."""
    times = sorted(times_ms)
    if not times:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    return {f"p{q}_ms": round(times[min(len(times) - 1, int(round(q / 100 * (len(times) - 1))))])
            for q in (50, 95, 99)}


# --- the locustfile: locust imports this file with RETAG_LOAD_CONFIG set -------------------

if os.environ.get("RETAG_LOAD_CONFIG") and __name__ != "__main__":
    import itertools

    from locust import HttpUser, between, events, task
    from locust.exception import RescheduleTask

    WORLD = json.loads(Path(os.environ["RETAG_LOAD_CONFIG"]).read_text())
    ACCEPTED: Counter = Counter()   # image id -> retags the server accepted
    UNANSWERED: Counter = Counter()  # image id -> retags whose answer never came (timeout, 5xx)
    TALLY: Counter = Counter()      # conflicts, empty queue, server errors
    ERRORS: list[str] = []
    STARTED: list[float] = []
    _names = {"annotator": itertools.count(), "scientist": itertools.count()}
    TIMEOUT = 60  # a request slower than this is a failure, not a hang

    WORK_MS: list[float] = []       # response times of everything but the login

    @events.request.add_listener
    def _count_server_errors(request_type, name, response_time=None, response=None, exception=None, **kwargs):
        if not name.startswith("/accounts/login/") and response_time is not None:
            WORK_MS.append(response_time)
        status = getattr(response, "status_code", 0) or 0
        if status >= 500:
            TALLY["server_errors"] += 1
            if len(ERRORS) < 20:
                ERRORS.append(f"{request_type} {name}: {status} {getattr(response, 'text', '')[:300]}")
        elif exception is not None and len(ERRORS) < 20:
            ERRORS.append(f"{request_type} {name}: {type(exception).__name__}: {str(exception)[:300]}")

    @events.test_start.add_listener
    def _started(environment, **kwargs):
        STARTED.append(time.time())

    @events.quitting.add_listener
    def _write_result(environment, **kwargs):
        total = environment.runner.stats.total
        by_endpoint = {f"{e.method} {e.name}": {"requests": e.num_requests, "failures": e.num_failures,
                                                "p50_ms": e.get_response_time_percentile(0.5),
                                                "p95_ms": e.get_response_time_percentile(0.95)}
                       for e in environment.runner.stats.entries.values()}
        Path(os.environ["RETAG_LOAD_RESULT"]).write_text(json.dumps({
            "duration_s": time.time() - (STARTED[0] if STARTED else time.time()),
            "requests": total.num_requests, "errors": total.num_failures,
            "server_errors": TALLY["server_errors"],
            "p50_ms": total.get_response_time_percentile(0.5), "p95_ms": total.get_response_time_percentile(0.95),
            "p99_ms": total.get_response_time_percentile(0.99),
            **{f"work_{k}": v for k, v in percentiles(WORK_MS).items()}, "work_requests": len(WORK_MS),
            "accepted": {str(k): v for k, v in ACCEPTED.items()},
            "unanswered": {str(k): v for k, v in UNANSWERED.items()},
            "conflicts": TALLY["conflicts"], "queue_empty": TALLY["queue_empty"],
            "by_endpoint": by_endpoint, "error_samples": ERRORS,
        }))

    class Person(HttpUser):
        """Logs in once through the login page, then sends the session cookie and, on
        writes, the CSRF token, as the browser does."""

        abstract = True
        role = ""

        logged_in = False

        def on_start(self):
            self.username = WORLD[self.role][next(_names[self.role]) % len(WORLD[self.role])]
            self.login()

        def login(self) -> bool:
            """Through the login page; a login that failed (timed out) is tried again by the
            next task, as a person would."""
            self.client.get("/accounts/login/", name="/accounts/login/", timeout=TIMEOUT)
            r = self.client.post("/accounts/login/", name="/accounts/login/ (POST)", allow_redirects=False,
                                 data={"username": self.username, "password": WORLD["password"],
                                       "csrfmiddlewaretoken": self.client.cookies.get("csrftoken", "")},
                                 headers={"Referer": self.host + "/accounts/login/"}, timeout=TIMEOUT)
            self.logged_in = r.status_code == 302 and "sessionid" in self.client.cookies
            return self.logged_in

        def ensure_login(self):
            if not self.logged_in and not self.login():
                raise RescheduleTask()

        def write(self, path: str, body: dict, name: str, expected=(200,)):
            """POST JSON with the CSRF token; the response, marked failed unless expected."""
            self.ensure_login()
            with self.client.post(path, json=body, name=name, catch_response=True, timeout=TIMEOUT,
                                  headers={"X-CSRFToken": self.client.cookies.get("csrftoken", ""),
                                           "Referer": self.host + "/"}) as r:
                if r.status_code in expected:
                    r.success()
                else:
                    r.failure(f"HTTP {r.status_code}: {r.text[:200]}")
                return r

        def read(self, path: str, name: str, **params):
            self.ensure_login()
            with self.client.get(path, params=params, name=name, catch_response=True, timeout=TIMEOUT,
                                 allow_redirects=False) as r:
                if r.status_code != 200:
                    r.failure(f"HTTP {r.status_code}: {r.text[:200]}")
                return r

    class Annotator(Person):
        role = "annotator"
        weight = int(os.environ.get("RETAG_LOAD_ANNOTATORS", "50"))
        wait_time = between(0.5, 1.5)  # a person deciding, keyboard first

        @task(4)
        def work_queue(self):
            sr = WORLD["suspect_run"]
            r = self.write(f"/api/suspect-runs/{sr}/next/", {}, "/api/suspect-runs/[id]/next/", expected=(200, 204))
            if r.status_code == 204:
                TALLY["queue_empty"] += 1
                return self.retag_directly()
            if r.status_code != 200:
                return
            s = r.json()
            roll = random.random()
            if roll < 0.7:
                body = {"action": "accept"}
            elif roll < 0.9:
                body = {"action": "label", "label": random.choice([x for x in WORLD["labels"]
                                                                   if x != s["given_label"]])}
            else:
                body = {"action": "keep"}
            r = self.write(f"/api/suspects/{s['id']}/resolve/", {**body, "expected_version": s["version"]},
                           "/api/suspects/[id]/resolve/", expected=(200, 409))
            if r.status_code == 200 and r.json().get("status") == "retagged":
                ACCEPTED[s["image"]] += 1
            elif r.status_code == 409:
                TALLY["conflicts"] += 1
            elif r.status_code != 200:
                UNANSWERED[s["image"]] += 1

        @task(2)
        def retag_directly(self):
            image = random.choice(WORLD["pool"])
            r = self.read(f"/api/images/{image}/", "/api/images/[id]/")
            if r.status_code != 200:
                return
            seen = next((a for a in r.json()["annotations"] if a["task"] == WORLD["task"]), None)
            label = random.choice(WORLD["labels"])
            r = self.write(f"/api/images/{image}/retag/",
                           {"task": WORLD["task"], "label": label, "expected_version": seen["version"] if seen else 0},
                           "/api/images/[id]/retag/", expected=(200, 409))
            if r.status_code == 200 and r.json().get("event"):
                ACCEPTED[image] += 1
            elif r.status_code == 409:
                TALLY["conflicts"] += 1
            elif r.status_code != 200:
                UNANSWERED[image] += 1

        @task(1)
        def queue_status(self):
            self.read(f"/api/suspect-runs/{WORLD['suspect_run']}/", "/api/suspect-runs/[id]/")

    class Scientist(Person):
        role = "scientist"
        weight = int(os.environ.get("RETAG_LOAD_SCIENTISTS", "10"))
        wait_time = between(1, 3)  # reading

        def on_start(self):
            super().on_start()
            self.dashboard()  # a scientist opens the run first: every page is then hit in a short run too

        @task(3)
        def dashboard(self):
            self.read(f"/runs/{WORLD['run']}/", "/runs/[id]/")

        @task(2)
        def confusion(self):
            self.read(f"/runs/{WORLD['run']}/confusion/", "/runs/[id]/confusion/")

        @task(2)
        def false_negatives(self):
            self.read(f"/runs/{WORLD['run']}/images/", "/runs/[id]/images/?kind=fn",
                      kind="fn", label=random.choice(WORLD["labels"]), split="train")

        @task(2)
        def api_dashboard(self):
            self.read(f"/api/runs/{WORLD['run']}/dashboard/", "/api/runs/[id]/dashboard/")

        @task(1)
        def api_false_negatives(self):
            self.read(f"/api/runs/{WORLD['run']}/false-negatives/", "/api/runs/[id]/false-negatives/",
                      label=WORLD["fn_label"], split="train")

        @task(1)
        def suspects_page(self):
            self.read(f"/suspects/{WORLD['suspect_run']}/", "/suspects/[id]/")


if __name__ == "__main__":
    sys.exit(main())
