"""Is every page fast at a million images, the first request included? (issue #17)

    python bench/pages_bench.py                  # 1,000,000 images: builds retag_bench_pages, keeps it
    python bench/pages_bench.py --reuse          # time again on the database built before (no rebuild)
    python bench/pages_bench.py --n 20000        # a small quick run

What it does:
1. builds (``--reuse``: unless the database already holds N images) the PostgreSQL database
   ``retag_bench_pages`` (``--db``) by COPY and INSERT ... SELECT: one project of N images
   (1% corrupt, 0.2% missing, 20% test), one task of 10 labels with 10% of the images
   unlabelled, N label events (import events, and 10% annotator / Mechanical Turk retags), a
   finished training run with N predictions (loaded by services.run_results.load_run_results),
   a suspects run of it with 50,000 open suspects (N / 20 when smaller), clusters per class
   (a core and 20 outlier clusters, ~1 train image in 36 an outlier) over every labelled
   train image, and a similar-images index of N x 512 clustered unit vectors (mlcore.similar.SimilarIndex). The
   database's triggers keep the page counts during the build; the build checks they equal
   a recount;
2. starts the production server, gunicorn with the repo's gunicorn.conf.py and one worker
   process (bench/common.start_server("gunicorn")), logged in as a scientist (a session
   cookie), and times ``--repeats`` GET requests per case (after 3 untimed): the grid
   (first page, a deep page 90% of the way in, label + split, "no label", status corrupt),
   the image page (warm), home, problems, the suspects run page, its clusters, its queue,
   the suspects runs list and the training runs list, the API key search (a rare key part,
   and one that matches nothing) and the events API by source;
3. the image page's first request in a fresh web process (``--cold`` fresh processes, each
   first readied by one GET of the login page (/accounts/login/); the median), the worker's RSS after all the
   cases, and ``manage.py export_manifest``'s peak RSS (getrusage of that process) and rows;
4. prints the figures and the query plans (EXPLAIN ANALYZE) of the "no label" grid page, the
   key search and the events by source, and writes bench/results/pages_1m.json (``--out``).
   Goal: every p95 < 200 ms, cold image page < 1 s, web RSS < 300 MB.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench.common import (LOCAL_SERVER, clustered_unit_vectors, ensure_database, machine_info,  # noqa: E402
                          median_p95, session_cookie, setup_django, start_server, time_requests)

USERNAME = "bench-pages-scientist"
SLUG = "bench-pages"
TASK = "category"
DIM = 512
SUSPECTS = 50_000


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000, help="number of images")
    p.add_argument("--db", default="retag_bench_pages", help="PostgreSQL database to build and use (kept)")
    p.add_argument("--reuse", action="store_true", help="time the database built before, if it holds N images")
    p.add_argument("--repeats", type=int, default=30, help="timed requests per case")
    p.add_argument("--cold", type=int, default=3, help="fresh web processes for the cold image page")
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "retag-pages-bench"),
                   help="storage and var folder (the similar index lives there; kept with the database)")
    p.add_argument("--out", default=None, help="default bench/results/pages_1m.json (at 1M), else pages_<n>.json")
    return p.parse_args()


# --- building the project --------------------------------------------------------------

def status_of(i: int) -> str:
    return "corrupt" if i % 100 == 1 else "missing" if i % 500 == 3 else "ok"


def copy_images(project_id: int, n: int, chunk: int = 50_000) -> None:
    """N images by COPY, keys and URIs as load_predictions_bench.synthesise names them."""
    import io

    from django.db import connection

    now = "2026-01-01 00:00:00+00"
    reasons = {"ok": "", "corrupt": "cannot identify image file", "missing": "gone from file:///bench/"}
    with connection.cursor() as c:
        with c.cursor.copy("COPY labeling_image (project_id, key, uri, checksum, size_bytes, width, height, split, "
                           "status, status_reason, thumbnail_uri, source_uri, created_at, updated_at) "
                           "FROM STDIN") as copy:
            for start in range(0, n, chunk):
                buf = io.StringIO()
                for i in range(start, min(n, start + chunk)):
                    status = status_of(i)
                    buf.write(f"{project_id}\timg/{i:07d}.png\tfile:///bench/img/{i:07d}.png\t{i:064x}\t"
                              f"{20000 + i % 5000}\t256\t256\t{'test' if i % 5 == 0 else 'train'}\t{status}\t"
                              f"{reasons[status]}\t\tfile:///bench/\t{now}\t{now}\n")
                copy.write(buf.getvalue())


def build(n: int, work: Path, user) -> dict:
    """The whole project; seconds per step."""
    import numpy as np
    from django.db import connection
    from django.utils import timezone

    from api_list_bench import LABELS
    from labeling.models import Project, SuspectRun, TrainingRun
    from labeling.services.labels import ensure_labels, get_or_create_task
    from labeling.services.projects import project_storage_uri
    from labeling.services.run_results import load_run_results
    from load_predictions_bench import synthesise
    from mlcore import storage
    from mlcore.similar import SimilarIndex

    took, t0 = {}, time.perf_counter()

    def step(name):
        nonlocal t0
        took[name] = round(time.perf_counter() - t0, 1)
        print(f"[bench] {name}: {took[name]} s", flush=True)
        t0 = time.perf_counter()

    with connection.cursor() as c:
        c.execute("TRUNCATE labeling_project, labeling_labelevent, labeling_annotation, labeling_image "
                  "RESTART IDENTITY CASCADE")
    project = Project.objects.create(name="Bench pages", slug=SLUG)
    task = get_or_create_task(project, TASK)
    by_name = ensure_labels(task, LABELS)
    label_ids = [by_name[name].id for name in LABELS]
    copy_images(project.id, n)
    step("images_copy")

    arrays, metrics = synthesise(n, LABELS, seed=0)
    now = timezone.now()
    run = TrainingRun.objects.create(project=project, task=task, label_ids=label_ids, label_names=list(LABELS),
                                     created_by=user, state="running", snapshot_at=now, started_at=now,
                                     n_train=n * 4 // 5, n_test=n // 5, config={"arch": "resnet50", "epochs": 20},
                                     device="cuda: bench")
    load_run_results(run, predictions=arrays, metrics=metrics, run_json={})
    TrainingRun.objects.filter(pk=run.pk).update(state="done", finished_at=timezone.now())
    del arrays
    step("run_predictions")

    with connection.cursor() as c:
        # 10% unlabelled (image id % 10 == 0); the others carry the run's given label.
        c.execute("INSERT INTO labeling_annotation (image_id, task_id, label_id, version, verified, updated_at) "
                  "SELECT image_id, %s, given_label_id, 1, false, now() FROM labeling_prediction "
                  "WHERE run_id = %s AND image_id %% 10 <> 0", [task.id, run.id])
        step("annotations")
        # One import event per label, and a retag event (annotator or MTurk, same label) for 10% of the
        # images: N events in all.
        c.execute("INSERT INTO labeling_labelevent (image_id, task_id, from_label_id, to_label_id, by_id, source, "
                  "reference, created_at) SELECT image_id, task_id, NULL, label_id, %s, 'import', 'import:1', "
                  "now() - interval '30 days' FROM labeling_annotation WHERE task_id = %s", [user.id, task.id])
        c.execute("INSERT INTO labeling_labelevent (image_id, task_id, from_label_id, to_label_id, by_id, source, "
                  "reference, created_at) SELECT i.id, %s, NULL, NULL, %s, "
                  "CASE WHEN i.id %% 20 = 0 THEN 'mturk' ELSE 'annotator' END, '', "
                  "now() - (i.id %% 1000) * interval '1 minute' FROM labeling_image i "
                  "WHERE i.project_id = %s AND i.id %% 10 = 0", [task.id, user.id, project.id])
        step("label_events")

        sr = SuspectRun.objects.create(project=project, task=task, run=run, state="done", created_by=user,
                                       started_at=now, finished_at=timezone.now(), scored_at=timezone.now(),
                                       config={"k": 4}, progress={"phase": "done"})
        want = min(SUSPECTS, n // 20)
        c.execute("INSERT INTO labeling_suspect (suspect_run_id, image_id, task_id, score, suggested_label_id, "
                  "given_label_id, version, self_confidence, knn_agreement, reasons, reason_text, rank, status) "
                  "SELECT %s, a.image_id, a.task_id, 1 - x.k::float / %s, "
                  "(%s::bigint[])[1 + (a.image_id * 3) %% 10], a.label_id, a.version, 0.1, 0.2, 3, "
                  "'model and cluster disagree', x.k, 'open' "
                  "FROM (SELECT image_id, row_number() OVER (ORDER BY image_id) AS k FROM labeling_annotation "
                  "      WHERE task_id = %s AND image_id %% 18 = 5) x "
                  "JOIN labeling_annotation a ON a.image_id = x.image_id AND a.task_id = %s WHERE x.k <= %s",
                  [sr.id, want, label_ids, task.id, task.id, want])
        # Per class: a core cluster (number 0) and 20 small ones holding the outliers.
        c.execute("INSERT INTO labeling_cluster (suspect_run_id, label_id, number, size, is_core) "
                  "SELECT %s, lb, k, 0, k = 0 FROM unnest(%s::bigint[]) lb, generate_series(0, 20) k",
                  [sr.id, label_ids])
        c.execute("INSERT INTO labeling_clustermember (cluster_id, image_id, is_outlier) "
                  "SELECT cl.id, a.image_id, a.image_id %% 36 = 7 FROM labeling_annotation a "
                  "JOIN labeling_image i ON i.id = a.image_id AND i.split = 'train' "
                  "JOIN labeling_cluster cl ON cl.suspect_run_id = %s AND cl.label_id = a.label_id "
                  " AND cl.number = CASE WHEN a.image_id %% 36 = 7 THEN 1 + (a.image_id / 36) %% 20 ELSE 0 END "
                  "WHERE a.task_id = %s", [sr.id, task.id])
        c.execute("UPDATE labeling_cluster cl SET size = m.n FROM (SELECT cluster_id, count(*) AS n "
                  "FROM labeling_clustermember GROUP BY cluster_id) m WHERE m.cluster_id = cl.id")
        c.execute("SELECT count(*), count(*) FILTER (WHERE is_outlier) FROM labeling_clustermember")
        members, outliers = c.fetchone()
        step("suspects_clusters")

    ids = np.asarray(list(project.images.order_by("id").values_list("id", flat=True)), dtype=np.int64)
    # Clustered, as embeddings are (bench/common.clustered_unit_vectors, the similar bench's data):
    # i.i.d. Gaussian vectors have no neighbours to find, and the index then probes 128 of its
    # 1,000 lists to reach its recall, which no model's embeddings ask of it.
    emb, _ = clustered_unit_vectors(len(ids), DIM, 0)
    index_uri = storage.join(project_storage_uri(project, "suspects", str(sr.id)), "similar.npz")
    SimilarIndex(emb, ids).save(index_uri)
    del emb
    SuspectRun.objects.filter(pk=sr.pk).update(
        index_uri=index_uri, counts={"suspects": want, "clusters": 21 * len(label_ids), "outliers": outliers,
                                     "members": members})
    step("similar_index")
    with connection.cursor() as c:
        c.execute("ANALYZE")
    step("analyze")
    return took


def check_counts(project) -> bool:
    """The counts the triggers kept during the build equal a recount."""
    from labeling.services import counts

    t0 = time.perf_counter()
    right = counts.stored(project) == counts.counted(project)
    print(f"[bench] kept counts equal a recount: {right} (recount scan {time.perf_counter() - t0:.1f} s)", flush=True)
    return right


# --- measuring -------------------------------------------------------------------------

def rss_mb(pid: int) -> dict:
    """VmRSS (and its anonymous / file-backed parts, and the peak VmHWM) of a process, in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
            fields[key] = round(int(value.split()[0]) / 1024, 1)
    return fields


def worker_pid(master: int) -> int:
    """The pid of the gunicorn master's one worker."""
    for _ in range(100):
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.1)
    raise RuntimeError("gunicorn started no worker")


def start(db_url: str, key: str):
    """A fresh gunicorn and a logged-in session on it, readied by one GET of the login page."""
    import requests

    server, base = start_server(db_url, "gunicorn")
    http = requests.Session()
    http.cookies.set("sessionid", key, domain="127.0.0.1")
    deadline = time.time() + 60
    while True:
        try:
            if http.get(f"{base}/accounts/login/", timeout=30, allow_redirects=False).status_code in (200, 302):
                break
        except requests.ConnectionError:
            pass
        if time.time() > deadline:
            stop(server)
            raise RuntimeError("the server did not answer /accounts/login/ in 60 s")
        time.sleep(0.2)
    return server, base, http


def stop(server) -> None:
    server.terminate()
    server.wait(30)


def get(http, url: str, params=None):
    r = http.get(url, params=params, timeout=120, allow_redirects=False)
    if r.status_code != 200:
        raise RuntimeError(f"GET {r.url}: HTTP {r.status_code}\n{r.text[:500]}")
    return r


# Started by a small Python process of its own: Linux keeps a process's peak RSS across
# exec, so a child forked straight from this bench (GBs after the build) would report the
# bench's size, not the export's. The go-between is ~10 MB; it prints the export's peak (KB).
PEAK_OF_CHILD = ("import os, subprocess, sys; p = subprocess.Popen(sys.argv[1:]); "
                 "_, status, usage = os.wait4(p.pid, 0); "
                 "print(f'peak_kb={usage.ru_maxrss}', file=sys.stderr); sys.exit(os.waitstatus_to_exitcode(status))")


def export_memory() -> tuple[float, int]:
    """Peak RSS (MB) and rows of ``manage.py export_manifest``, in a process of its own."""
    proc = subprocess.run([sys.executable, "-c", PEAK_OF_CHILD, sys.executable, "manage.py", "export_manifest",
                           SLUG, TASK], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    text = proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"export_manifest failed:\n{text[-2000:]}")
    rows = int(re.search(r"(\d+) rows", text).group(1))
    peak_kb = int(re.search(r"peak_kb=(\d+)", text).group(1))
    return round(peak_kb / 1024, 1), rows


def plans(project, task, rare: str) -> dict:
    """EXPLAIN ANALYZE of the queries whose plans used to grow with the project."""
    from labeling.models import Image, LabelEvent
    from labeling.services import browse

    no_label = browse.GridFilter(project=project, task=task, unlabelled=True).images().order_by("id")
    return {
        "grid_no_label": no_label[:browse.PAGE_SIZE + 1].explain(analyze=True),
        "api_key_search_rare": Image.objects.filter(project=project, key__icontains=rare)
        .order_by("id")[:101].explain(analyze=True),
        "events_by_source": LabelEvent.objects.filter(source="mturk").order_by("-id")[:101].explain(analyze=True),
    }


def main() -> int:
    args = parse_args()
    out = Path(args.out or REPO / "bench" / "results" /
               ("pages_1m.json" if args.n == 1_000_000 else f"pages_{args.n}.json"))
    work = Path(args.work)
    (work / "var").mkdir(parents=True, exist_ok=True)
    db_url = ensure_database(LOCAL_SERVER, args.db)
    setup_django(db_url, migrate=True, STORAGE_URI=(work / "storage").as_uri(), RETAG_VAR_DIR=str(work / "var"),
                 LOG_LEVEL="WARNING")
    from django.contrib.auth import get_user_model
    from django.db import connection

    from labeling.models import Image, Project, SuspectRun
    from labeling.services.roles import set_role

    user = get_user_model().objects.filter(username=USERNAME).first() or \
        get_user_model().objects.create_user(USERNAME, password="bench-pw")
    set_role(user, "scientist")
    project = Project.objects.filter(slug=SLUG).first()
    sr = SuspectRun.objects.filter(project=project, state="done").exclude(index_uri="").first() if project else None
    if (args.reuse and sr is not None and Image.objects.filter(project=project).count() == args.n
            and Path(sr.index_uri.removeprefix("file://")).exists()):
        print(f"[bench] reusing the {args.n:,}-image project in {args.db}", flush=True)
    else:
        build(args.n, work, user)
        project = Project.objects.get(slug=SLUG)
        sr = SuspectRun.objects.get(project=project)
    counts_right = check_counts(project)
    task = project.tasks.get(name=TASK)
    label = task.labels.order_by("position")[3]
    ids = list(Image.objects.filter(project=project).order_by("id").values_list("id", flat=True)
               [int(args.n * 0.9):int(args.n * 0.9) + 1])
    deep_after = ids[0]
    image_id = Image.objects.filter(project=project, status="ok").order_by("id").values_list("id", flat=True)[
        args.n // 2]
    rare = f"{args.n * 3 // 7:07d}"  # one image's key holds it (img/<7 digits>.png)
    query_plans = plans(project, task, rare)
    key = session_cookie(user)
    connection.close()

    base_grid = f"/p/{SLUG}/"
    cases = {
        "grid_first": (base_grid, {}),
        "grid_deep": (base_grid, {"after": deep_after}),
        "grid_label_split": (base_grid, {"task": task.id, "label": label.id, "split": "train"}),
        "grid_no_label": (base_grid, {"task": task.id, "label": "none"}),
        "grid_status": (base_grid, {"status": "corrupt"}),
        "image_page": (f"/images/{image_id}/", {}),
        "home": ("/", {}),
        "problems": (f"/p/{SLUG}/problems/", {}),
        "suspects_run": (f"/suspects/{sr.id}/", {}),
        "suspects_clusters": (f"/suspects/{sr.id}/clusters/", {}),
        "suspects_queue": (f"/suspects/{sr.id}/queue/", {}),
        "suspects_runs_list": (f"/p/{SLUG}/suspects/", {}),
        "runs_list": (f"/p/{SLUG}/runs/", {"task": task.id}),
        "api_key_search_rare": ("/api/images/", {"project": project.id, "search": rare}),
        "api_key_search_none": ("/api/images/", {"project": project.id, "search": "no-such-key"}),
        "api_events_by_source": ("/api/events/", {"source": "mturk"}),
    }

    cold, server = [], None
    try:
        for k in range(args.cold):
            if server is not None:
                stop(server)
            server, base, http = start(db_url, key)
            t = time.perf_counter()
            get(http, f"{base}/images/{image_id}/")
            cold.append(round((time.perf_counter() - t) * 1000, 1))
        print(f"[bench] cold image page (ms, one per fresh process): {cold}", flush=True)
        results, sizes = {}, {}
        for name, (path, params) in cases.items():
            times, r = time_requests(lambda: get(http, base + path, params), args.repeats)
            results[name] = median_p95(times)
            sizes[name] = len(r.content)
            print(f"[bench] {name}: {results[name]} ({sizes[name] / 1024:.0f} KB)", flush=True)
        rss = rss_mb(worker_pid(server.pid))
    finally:
        if server is not None:
            stop(server)
    export_peak_mb, export_rows = export_memory()

    cold_ms = sorted(cold)[len(cold) // 2]
    figures = {
        "n_images": args.n,
        "cases": results,
        "cold_image_page_ms": cold_ms,
        "web_rss_mb": rss["VmRSS"],
        "export_peak_mb": export_peak_mb,
        "export_rows": export_rows,
        "machine": machine_info("cpu"),
    }
    print(f"\npages at {args.n:,} images ({args.repeats} requests each after 3 untimed; gunicorn, "
          f"gunicorn.conf.py, 1 worker; session cookie, scientist)")
    print(f"{'case':<24}{'median ms':>11}{'p95 ms':>9}{'KB':>8}")
    for name, r in results.items():
        print(f"{name:<24}{r['median_ms']:>11}{r['p95_ms']:>9}{sizes[name] / 1024:>8.1f}")
    print(f"cold image page: {cold_ms} ms (median of {cold})")
    print(f"web worker memory (MB): {rss}")
    print(f"export_manifest: peak RSS {export_peak_mb} MB, {export_rows:,} rows")
    print(f"kept counts equal a recount: {counts_right}")
    for name, plan in query_plans.items():
        print(f"\n-- EXPLAIN ANALYZE {name}\n{plan}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=1) + "\n")
    print(f"\nwrote {out}")
    ok = (counts_right and all(r["p95_ms"] < 200 for r in results.values()) and cold_ms < 1000
          and rss["VmRSS"] < 300)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
