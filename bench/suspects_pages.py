"""How fast are the suspects pages at a million images? The runs list, a suspects run's page,
its queue and its cluster view, in-process (Django's test client, logged in as a scientist),
with the query plans of what they count.

    python bench/suspects_pages.py                      # 1,000,000 images, drops its database at the end
    python bench/suspects_pages.py --keep               # keep the database (and reuse it next time)
    python bench/suspects_pages.py --n 200000 --keep

What it builds, by COPY, in the PostgreSQL database ``retag_bench_suspects`` (``--db``): N images
(10 classes in turn, a fifth of them test), their annotations, a finished training run and
``--runs`` finished suspects runs on it; the last one holds ``--suspects`` suspects (every
N/suspects-th image), 20 clusters per class (cluster 0 the core) with every image a member
(N cluster members) and 2% of each class outliers, plus 1,000 retags since it was scored (the
stale suspects the open count must leave out). ``bench/pages_bench.py`` times every page over
HTTP; this is the quick check of the suspects pages alone.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench.common import (bench_scientist, drop_database, ensure_database, fresh_project, median_p95,  # noqa: E402
                          server_url, setup_django)

USERNAME = "bench-scientist"
LABELS = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
CLUSTERS = 20
OUTLIER_SHARE = 0.02
RETAGS = 1000


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000, help="number of images")
    p.add_argument("--suspects", type=int, default=50_000)
    p.add_argument("--runs", type=int, default=5, help="suspects runs in the runs list")
    p.add_argument("--db", default="retag_bench_suspects")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--keep", action="store_true", help="keep the database for the next run")
    return p.parse_args()


def copy_rows(cursor, table: str, columns: list[str], rows) -> None:
    with cursor.cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def build(n: int, n_suspects: int, n_runs: int):
    from datetime import timedelta

    from django.db import connection
    from django.utils import timezone

    from labeling.models import Image, SuspectRun, TrainingRun

    user = bench_scientist(USERNAME)
    sr = SuspectRun.objects.filter(project__slug="bench-suspects", state="done").order_by("-id").first()
    if sr is not None and Image.objects.filter(project=sr.project).count() == n:
        print(f"[bench] reusing the {n:,}-image project already in the database", flush=True)
        return sr, user
    t0 = time.perf_counter()
    project, task, label_ids = fresh_project(
        "Bench suspects", "bench-suspects", LABELS, n,
        ["labeling_clustermember", "labeling_cluster", "labeling_suspect", "labeling_suspectrun", "labeling_trainingrun",
         "labeling_labelevent", "labeling_annotation", "labeling_image", "labeling_label", "labeling_task",
         "labeling_project"])
    first = Image.objects.filter(project=project).order_by("id").values_list("id", flat=True).first()
    ids = range(first, first + n)
    now = timezone.now()
    scored = now - timedelta(hours=1)
    with connection.cursor() as c:
        copy_rows(c, "labeling_annotation", ["image_id", "task_id", "label_id", "version", "verified", "updated_at"],
                  ((i, task.id, label_ids[k % 10], 1, False, scored - timedelta(hours=1)) for k, i in enumerate(ids)))
    print(f"[bench] {n:,} images and annotations in {time.perf_counter() - t0:.1f} s", flush=True)
    run = TrainingRun.objects.create(project=project, task=task, state="done", label_ids=label_ids,
                                     label_names=LABELS, snapshot_at=now - timedelta(days=1), created_by=user,
                                     finished_at=now - timedelta(hours=2), n_train=n * 4 // 5, n_test=n // 5)
    step = max(10, n // n_suspects)
    t0 = time.perf_counter()
    for r in range(n_runs):
        sr = SuspectRun.objects.create(project=project, task=task, run=run, state="done", created_by=user,
                                       config={"k": 4}, scored_at=scored, finished_at=scored,
                                       counts={"scored": n, "suspects": n_suspects})
        columns = ["suspect_run_id", "image_id", "task_id", "score", "suggested_label_id", "given_label_id",
                   "version", "reasons", "reason_text", "rank", "status"]
        with connection.cursor() as c:
            copy_rows(c, "labeling_suspect", columns,
                      ((sr.id, first + k, task.id, 1 - j / n_suspects, label_ids[(k + 1) % 10], label_ids[k % 10],
                        1, 1, "model disagrees", j, "open")
                       for j, k in ((j, j * step + j % 10) for j in range(n_suspects)) if k < n))
    print(f"[bench] {n_runs} suspects runs of {n_suspects:,} suspects in {time.perf_counter() - t0:.1f} s", flush=True)
    t0 = time.perf_counter()
    with connection.cursor() as c:
        # Cluster c of class g: images k with k % 10 == g; members spread over clusters by k // 10.
        copy_rows(c, "labeling_cluster", ["suspect_run_id", "label_id", "number", "size", "is_core"],
                  ((sr.id, label_ids[g], j, 0, j == 0) for g in range(10) for j in range(CLUSTERS)))
        c.execute("SELECT id, label_id, number FROM labeling_cluster WHERE suspect_run_id = %s", [sr.id])
        cluster = {(label_id, number): pk for pk, label_id, number in c.fetchall()}
        every = int(1 / OUTLIER_SHARE)

        def members():
            for k, i in enumerate(ids):
                g, m = k % 10, k // 10
                outlier = m % every == 0
                number = 1 + m % (CLUSTERS - 1) if outlier else 0
                yield cluster[(label_ids[g], number)], i, outlier

        copy_rows(c, "labeling_clustermember", ["cluster_id", "image_id", "is_outlier"], members())
        c.execute("UPDATE labeling_cluster c SET size = m.n FROM (SELECT cluster_id, count(*) n FROM "
                  "labeling_clustermember GROUP BY cluster_id) m WHERE m.cluster_id = c.id")
        # Retags since scoring: 1,000 suspects' images changed label (stale: not open any more).
        c.execute("UPDATE labeling_annotation SET version = 2, updated_at = now() WHERE task_id = %s AND image_id IN "
                  "(SELECT image_id FROM labeling_suspect WHERE suspect_run_id = %s ORDER BY rank LIMIT %s)",
                  [task.id, sr.id, RETAGS])
        for table in ("labeling_image", "labeling_annotation", "labeling_suspect", "labeling_cluster",
                      "labeling_clustermember"):
            c.execute(f"ANALYZE {table}")
    SuspectRun.objects.filter(pk=sr.pk).update(counts={"scored": n, "suspects": n_suspects, "clusters": 10 * CLUSTERS,
                                                       "outliers": n // every})
    for other in SuspectRun.objects.filter(project=project):
        other.class_figures = figures_of(other)
        other.save(update_fields=["class_figures"])
    print(f"[bench] {n:,} cluster members in {time.perf_counter() - t0:.1f} s", flush=True)
    sr.refresh_from_db()
    return sr, user


def figures_of(sr) -> dict:
    """What services.suspects.store_results stores per class, from the rows COPY wrote."""
    from django.db.models import Count, Q

    from labeling.models import Cluster, Suspect

    figures = {}
    for label_id, n in Suspect.objects.filter(suspect_run=sr).values_list("given_label_id").annotate(
            n=Count("id")).order_by():
        figures.setdefault(str(label_id), {"suspects": 0, "clusters": 0, "core": 0, "outliers": 0})["suspects"] = n
    for c in Cluster.objects.filter(suspect_run=sr).annotate(n_out=Count("members", filter=Q(members__is_outlier=True))):
        f = figures.setdefault(str(c.label_id), {"suspects": 0, "clusters": 0, "core": 0, "outliers": 0})
        f["clusters"] += 1
        f["outliers"] += c.n_out
        f["core"] = c.size if c.is_core else f["core"]
    return figures


def explain(sql: str, params) -> str:
    from django.db import connection

    with connection.cursor() as c:
        c.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
        return "\n".join(r[0] for r in c.fetchall())


def main() -> int:
    args = parse_args()
    server = server_url()
    db_url = ensure_database(server, args.db)
    setup_django(db_url, migrate=True, DEBUG="0")
    from django.db.models import Count
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from labeling.models import Suspect
    from labeling.services import suspects

    sr, user = build(args.n, args.suspects, args.runs)
    client = Client()
    client.force_login(user)
    first_label = sr.run.label_ids[0]
    cases = {"runs list": f"/p/{sr.project.slug}/suspects/", "run page": f"/suspects/{sr.pk}/",
             "clusters": f"/suspects/{sr.pk}/clusters/?label={first_label}",
             "clusters, page 10": f"/suspects/{sr.pk}/clusters/?label={first_label}&page=10",
             "queue": f"/suspects/{sr.pk}/queue/"}
    print(f"\n{args.n:,} images, {args.suspects:,} suspects, {args.runs} suspects runs; "
          f"median / p95 ms of {args.repeats} requests (after 2 warm-ups), in-process test client; "
          f"the page's queries and their time in one more request")
    for name, url in cases.items():
        times, size = [], 0
        for i in range(args.repeats + 2):
            t0 = time.perf_counter()
            r = client.get(url)
            if i >= 2:
                times.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200, (url, r.status_code)
            size = len(r.content)
        s = median_p95(times)
        with CaptureQueriesContext(connection) as q:
            client.get(url)
        sql_ms = 1000 * sum(float(x["time"]) for x in q.captured_queries)
        print(f"  {name:20s} {s['median_ms']:8.1f} {s['p95_ms']:8.1f}   {size / 1024:7.1f} KB   "
              f"{len(q.captured_queries):3d} queries, {sql_ms:6.1f} ms of SQL", flush=True)
    from labeling.models import ClusterMember

    # The two counts suspects.open_counts runs (the runs list, the run page, the queue's "remaining").
    for name, qs in [("settled per class (suspect_settled_idx)",
                      Suspect.objects.filter(suspect_run_id__in=[sr.pk], status__in=Suspect.SETTLED)),
                     ("open, no longer current, per class (suspect_stale_idx)",
                      Suspect.objects.filter(suspect_run_id__in=[sr.pk], status=Suspect.Status.OPEN, current=False))]:
        sql, params = qs.values_list("suspect_run_id", "given_label_id").annotate(n=Count("*")).order_by() \
            .query.sql_with_params()
        print(f"\nEXPLAIN {name}:\n{explain(sql, params)}")

    page = ClusterMember.objects.filter(cluster__suspect_run=sr, cluster__label_id=first_label, is_outlier=True) \
        .order_by("-cluster__is_core", "-cluster__size", "cluster_id", "image_id").values_list(
            "cluster_id", "image_id")[900:1000]
    sql, params = page.query.sql_with_params()
    print(f"\nEXPLAIN outliers, page 10:\n{explain(sql, params)}")
    print(f"\nopen: {suspects.open_count(sr):,} (queue: {suspects.queue(sr).count():,}) "
          f"of {Suspect.objects.filter(suspect_run=sr).count():,}")
    if not args.keep:
        from django.db import connections

        connections.close_all()
        drop_database(server, args.db)
    return 0


if __name__ == "__main__":
    sys.exit(main())
