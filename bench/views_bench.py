"""How fast are the quality pages at a million predictions? The run dashboard, the
confusion matrix and a deep page of a false-negative grid, over HTTP against a real server.

    python bench/views_bench.py                 # 1,000,000 images, drops its database at the end
    python bench/views_bench.py --keep          # keep the database (and reuse it next time)
    python bench/views_bench.py --n 100000      # smaller

What it does:
1. creates the PostgreSQL database ``retag_bench_views`` (``--db``), migrates it, COPYs N
   images (bench/load_predictions_bench.make_images), synthesises a run's
   ``predictions.npz`` arrays and ``metrics.json`` as mlcore writes them (10 classes), and
   loads them with the runs backend's loader, ``services.run_results.load_run_results``
   (binary COPY): its time is ``load_predictions_s``. Every image also gets its
   annotation (the run's given label), and an earlier finished run of the task (metrics
   and ClassMetric rows only) gives the dashboard its deltas, with 500 retags between;
2. starts Django's threaded WSGI server with TCP_NODELAY on a free loopback port
   (bench/common.serve; ``--server runserver`` for ``manage.py runserver --noreload``);
3. times GET requests (``requests``, one keep-alive session, logged in as a scientist with
   a session cookie): the dashboard (``/runs/<id>/``), the confusion matrix
   (``/runs/<id>/confusion/``), the first and a deep page of the false negatives of one
   class on the train split (``/runs/<id>/images/?kind=fn&...&after=<cursor>``, the
   cursor of the row 90% of the way into the class: page ~240 of 60), and the same
   numbers from the API;
4. prints a table and the query plan (EXPLAIN ANALYZE) of the deep page, and writes
   bench/results/views.json. Target: p95 under 200 ms each.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench.common import (app_bench, bench_scientist, figure_fields, fresh_project, label_as_trained,  # noqa: E402
                          load_average, machine_info, median_p95, time_requests)

USERNAME = "bench-scientist"
CLASS_INDEX = 3  # the class whose false negatives are paged
DEEP = 0.9       # how far into the class the deep page starts


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000, help="number of images (and predictions)")
    p.add_argument("--db", default="retag_bench_views", help="PostgreSQL database to create and use")
    p.add_argument("--repeats", type=int, default=40, help="timed requests per case")
    p.add_argument("--server", choices=["nodelay", "runserver"], default="nodelay")
    p.add_argument("--keep", action="store_true", help="keep the database for the next run")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "views.json"))
    return p.parse_args()


def load(n: int) -> dict:
    """The project, its task, two finished runs (the second with N predictions) and a scientist."""
    from datetime import timedelta

    from django.utils import timezone

    from api_list_bench import LABELS
    from labeling.models import ClassMetric, EventSource, Image, LabelEvent, Prediction, TrainingRun
    from labeling.services.run_results import class_metric_rows, load_run_results, metrics_summary
    from load_predictions_bench import synthesise

    user = bench_scientist(USERNAME)
    run = TrainingRun.objects.filter(state="done", project__slug="bench-views").order_by("-id").first()
    if run is not None and Prediction.objects.filter(run=run).count() == n:
        print(f"[bench] reusing the {n:,} predictions already in the database", flush=True)
        return {"run": run, "user": user, "load_predictions_s": None, "reused": True}

    t0 = time.perf_counter()
    project, task, label_ids = fresh_project(
        "Bench views", "bench-views", LABELS, n,
        ["labeling_prediction", "labeling_classmetric", "labeling_trainingrun", "labeling_labelevent",
         "labeling_annotation", "labeling_image", "labeling_label", "labeling_task", "labeling_project"])
    # Its images are named file:///bench/img/<i>.png, which is what synthesise predicts for.
    print(f"[bench] {n:,} images in {time.perf_counter() - t0:.1f} s", flush=True)

    t0 = time.perf_counter()
    arrays, metrics = synthesise(n, LABELS, seed=0)
    _, earlier = synthesise(min(n, 200_000), LABELS, seed=1)
    print(f"[bench] synthesised predictions in {time.perf_counter() - t0:.1f} s", flush=True)
    now = timezone.now()
    common = dict(project=project, task=task, label_ids=label_ids, label_names=list(LABELS), created_by=user,
                  config={"arch": "resnet50", "epochs": 20, "batch_size": 256}, device="cuda: bench")
    previous = TrainingRun.objects.create(state="done", snapshot_at=now - timedelta(days=1),
                                          started_at=now - timedelta(days=1), finished_at=now - timedelta(hours=20),
                                          n_train=n * 4 // 5, n_test=n // 5, **common)
    previous.metrics = metrics_summary(previous, earlier)
    previous.test_macro_f1 = earlier["test"]["macro"]["f1"]
    previous.save()
    ClassMetric.objects.bulk_create(class_metric_rows(previous, earlier))
    # Retags between the two runs: what the dashboard counts.
    images = list(Image.objects.filter(project=project).order_by("id").values_list("id", flat=True)[:500])
    LabelEvent.objects.bulk_create([LabelEvent(image_id=i, task=task, from_label_id=label_ids[0],
                                               to_label_id=label_ids[1], by=user, source=EventSource.ANNOTATOR)
                                    for i in images])
    LabelEvent.objects.filter(task=task).update(created_at=now - timedelta(hours=2))

    run = TrainingRun.objects.create(state="running", snapshot_at=now - timedelta(hours=1), parent=previous,
                                     started_at=now - timedelta(hours=1), n_train=n * 4 // 5, n_test=n // 5,
                                     **common)
    t0 = time.perf_counter()
    result = load_run_results(run, predictions=arrays, metrics=metrics, run_json={})
    load_s = time.perf_counter() - t0
    print(f"[bench] load_run_results: {result['predictions']:,} predictions in {load_s:.1f} s", flush=True)
    TrainingRun.objects.filter(pk=run.pk).update(state="done", finished_at=timezone.now())
    run.refresh_from_db()
    # Every image's current label: the run's given label (the grid shows "now").
    label_as_trained(run, analyze=("labeling_prediction", "labeling_annotation", "labeling_image",
                                   "labeling_classmetric", "labeling_labelevent"))
    return {"run": run, "user": user, "load_predictions_s": round(load_s, 2), "reused": False,
            "loader": result}


def deep_cursor(run, label_id: int) -> tuple[str, int, int]:
    """The cursor of the false-negative row ``DEEP`` of the way into the class (an OFFSET,
    once, here: the page under test never uses one); and the class's false-negative count."""
    from labeling.models import Prediction
    from labeling.services.quality import Cursor

    qs = Prediction.objects.filter(run=run, split="train", given_label_id=label_id, correct=False)
    total = qs.count()
    position = int(total * DEEP)
    row = qs.order_by("-confidence", "id").values_list("confidence", "id")[position]
    return str(Cursor(row[0], row[1])), position, total


def time_case(session, url: str, params: dict, repeats: int, warmup: int = 3, check=None) -> dict:
    def ok(r):
        if r.status_code != 200:
            raise RuntimeError(f"GET {r.url}: HTTP {r.status_code}\n{r.text[:500]}")

    times, r = time_requests(lambda: session.get(url, params=params, timeout=60, allow_redirects=False),
                             repeats, warmup, ok)
    text = r.text
    if check is not None:
        check(text)
    return {**median_p95(times), "n": len(times), "bytes": len(text.encode())}


def explain_deep(run, label_id: int, cursor: str) -> str:
    """EXPLAIN ANALYZE of the deep page's prediction query, as services.quality runs it."""
    from django.db.models import Q

    from labeling.services import quality

    c = quality.Cursor.parse(cursor)
    q = quality.grid_query(run, kind=quality.FN, label_id=label_id, split="train")
    qs = (q.predictions().filter(confidence__lte=c.confidence).filter(Q(confidence__lt=c.confidence) | Q(id__gt=c.id))
          .order_by("-confidence", "id")[:quality.PAGE_SIZE + 1])
    return qs.explain(analyze=True)


def main() -> int:
    args = parse_args()
    with app_bench(args.db, keep=args.keep) as bench:
        world = load(args.n)
        run = world["run"]
        label_id = run.label_ids[CLASS_INDEX]
        cursor, position, fn_total = deep_cursor(run, label_id)
        plan = explain_deep(run, label_id, cursor)
        base, http = bench.serve(args.server, world["user"])
        fn = {"kind": "fn", "label": label_id, "split": "train"}

        def has_cells(text):
            assert text.count('<li class="pcell') >= min(60, fn_total - position - 1), "the grid page is short"

        def has_table(text):
            assert text.count('<tr data-label=') == 10, "the dashboard has not 10 classes"

        cases = {
            "dashboard": (f"{base}/runs/{run.id}/", {}, has_table),
            "confusion": (f"{base}/runs/{run.id}/confusion/", {}, lambda t: t.count('class="cm-cell') == 100),
            "false_negatives_first": (f"{base}/runs/{run.id}/images/", fn, has_cells),
            "false_negatives_deep": (f"{base}/runs/{run.id}/images/", {**fn, "after": cursor}, has_cells),
            "api_dashboard": (f"{base}/api/runs/{run.id}/dashboard/", {}, None),
            "api_confusion": (f"{base}/api/runs/{run.id}/confusion/", {"split": "train"}, None),
            "api_false_negatives_deep": (f"{base}/api/runs/{run.id}/false-negatives/",
                                         {"label": label_id, "split": "train", "after": cursor}, None),
            "api_f1_series": (f"{base}/api/tasks/{run.task_id}/f1-series/", {}, None),
        }
        results = {name: time_case(http, url, params, args.repeats, check=check)
                   for name, (url, params, check) in cases.items()}
        load_after = load_average()

    print(f"\nquality pages at {args.n:,} predictions ({args.repeats} requests each, session cookie, "
          f"server: {args.server})")
    print(f"{'case':<28}{'median ms':>11}{'p95 ms':>9}{'KB':>8}")
    for name, r in results.items():
        print(f"{name:<28}{r['median_ms']:>11}{r['p95_ms']:>9}{r['bytes'] / 1024:>8.1f}")
    print(f"\ndeep page: false negatives of class {CLASS_INDEX} (train), row {position:,} of {fn_total:,} "
          f"(page {position // 60 + 1}, pages of 60)")
    print(f"load_predictions_s: {world['load_predictions_s']}")
    print(f"load average (1, 5, 15 min) before {bench.load_before}, after {load_after} on {os.cpu_count()} cores")
    print(f"\n-- EXPLAIN ANALYZE false_negatives_deep\n{plan}")

    out = {
        "n_images": args.n,
        **figure_fields({k: results[k] for k in ("dashboard", "confusion", "false_negatives_deep")}),
        "load_predictions_s": world["load_predictions_s"],
        "load_predictions_by": "services.run_results.load_run_results (binary COPY), the runs backend's loader",
        "repeats": args.repeats,
        "auth": "session cookie (scientist)",
        "server": args.server,
        "deep_page": {"class_false_negatives": fn_total, "position": position, "page_size": 60,
                      "page_number": position // 60 + 1, "cursor": cursor},
        "cases": results,
        "plan_false_negatives_deep": plan,
        "load_average_before": bench.load_before,
        "load_average_after": load_after,
        "command": "python bench/views_bench.py" + ("" if args.n == 1_000_000 else f" --n {args.n}"),
        "machine": machine_info("cpu"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"\nwrote {args.out}")
    ok = all(out[k] < 200 for k in ("dashboard_p95_ms", "confusion_p95_ms", "false_negatives_deep_p95_ms"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
