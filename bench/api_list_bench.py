"""How fast is GET /api/images/ at a million images? First page and a deep page, plain
and filtered (task + label + split), measured over HTTP against a real server.

    python bench/api_list_bench.py                # 1,000,000 images, drops its database at the end
    python bench/api_list_bench.py --keep         # keep (and on the next run reuse) the database
    python bench/api_list_bench.py --n 100000     # smaller

What it does:
1. creates the PostgreSQL database ``retag_bench_api`` (``--db``), migrates it, and loads
   N images with COPY, one task with 10 labels and one annotation per image (an
   INSERT ... SELECT on the server); a database that already holds N images is reused;
2. starts a server on a free loopback port against it: Django's threaded WSGI server
   (runserver's), with TCP_NODELAY (see bench/common.serve());
3. times requests (``requests``, one keep-alive session) as an annotator: the first page,
   and a deep page whose cursor is made with the API's own pagination class at the
   image 90% of the way into the table; each unfiltered and filtered;
4. prints a table, the query plans (EXPLAIN ANALYZE) of the filtered pages, and writes
   bench/results/api_list.json.

Authentication: the timed requests carry a session cookie. HTTP basic auth is timed too,
separately: it runs Django's password hasher (PBKDF2, 1,000,000 rounds) on every request,
a fixed cost per request that has nothing to do with the list, so it is reported apart.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import app_bench, figure_fields, load_average, machine_info, median_p95, time_requests  # noqa: E402

LABELS = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
PASSWORD = "bench-annotator-pw"
USERNAME = "bench-annotator"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000, help="number of images")
    p.add_argument("--db", default="retag_bench_api", help="PostgreSQL database to create and use")
    p.add_argument("--repeats", type=int, default=40, help="timed requests per case")
    p.add_argument("--basic-repeats", type=int, default=5, help="timed requests with HTTP basic auth")
    p.add_argument("--server", choices=["nodelay", "runserver"], default="nodelay",
                   help="nodelay: Django's threaded WSGI server with TCP_NODELAY (default); "
                        "runserver: manage.py runserver --noreload as it is (Nagle on)")
    p.add_argument("--keep", action="store_true", help="keep the database for the next run")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "api_list.json"))
    return p.parse_args()


# --- database ------------------------------------------------------------------------

def load(n: int) -> dict:
    """Project, task, labels, annotator; N images and N annotations (reused when present)."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    from labeling.models import Annotation, Image, Label, Project
    from labeling.services.labels import ensure_labels, get_or_create_task
    from labeling.services.roles import set_role

    project = Project.objects.filter(slug="bench").first()
    if project and Image.objects.filter(project=project).count() == n and Annotation.objects.count() == n:
        print(f"[bench] reusing the {n:,} images already in the database", flush=True)
        loaded_s = None
    else:
        t0 = time.perf_counter()
        with connection.cursor() as c:
            c.execute("TRUNCATE labeling_labelevent, labeling_annotation, labeling_image, labeling_label, "
                      "labeling_task, labeling_project RESTART IDENTITY CASCADE")
        project = Project.objects.create(name="Bench", slug="bench")
        task = get_or_create_task(project, "category")
        ensure_labels(task, LABELS)
        label_ids = list(Label.objects.filter(task=task).order_by("position").values_list("id", flat=True))
        copy_images(project.id, n)
        with connection.cursor() as c:
            # Labels spread over the ids (i * 7 mod 10), so each label is on every page's neighbourhood.
            c.execute(
                "INSERT INTO labeling_annotation (image_id, task_id, label_id, version, verified, updated_at) "
                "SELECT i.id, %s, (%s::bigint[])[1 + (i.id * 7) %% 10], 1, false, now() "
                "FROM labeling_image i WHERE i.project_id = %s", [task.id, label_ids, project.id])
            c.execute("ANALYZE labeling_image")
            c.execute("ANALYZE labeling_annotation")
        loaded_s = round(time.perf_counter() - t0, 1)
        print(f"[bench] loaded {n:,} images and annotations in {loaded_s} s", flush=True)

    user = get_user_model().objects.filter(username=USERNAME).first()
    if user is None:
        user = get_user_model().objects.create_user(USERNAME, password=PASSWORD)
    set_role(user, "annotator")
    task = project.tasks.get()
    return {"project": project, "task": task, "label": task.labels.order_by("position")[3], "user": user,
            "loaded_s": loaded_s}


def copy_images(project_id: int, n: int, chunk: int = 50_000) -> None:
    """COPY the rows in chunks of text: the fastest way in from Python. Columns the
    bench does not care about get their model default (or NULL / empty)."""
    from django.db import connection, models

    from labeling.models import Image

    now = "2026-01-01 00:00:00+00"
    varying = ["project_id", "key", "uri", "checksum", "size_bytes", "split", "status", "status_reason",
               "created_at", "updated_at"]
    fixed = {}
    for f in Image._meta.concrete_fields:
        if f.primary_key or f.column in varying:
            continue
        if f.has_default() and not callable(f.default):
            fixed[f.column] = str(f.default)
        elif f.column in ("width", "height"):
            fixed[f.column] = "256"
        elif f.null:
            fixed[f.column] = r"\N"
        elif isinstance(f, (models.CharField, models.TextField)):
            fixed[f.column] = ""
        else:
            raise RuntimeError(f"the bench does not know what to put in Image.{f.name}")
    cols = ", ".join(varying + list(fixed))
    tail = "".join("\t" + v for v in fixed.values())
    connection.ensure_connection()
    with connection.cursor() as c:
        with c.cursor.copy(f"COPY labeling_image ({cols}) FROM STDIN") as copy:
            for start in range(0, n, chunk):
                buf = io.StringIO()
                for i in range(start, min(n, start + chunk)):
                    key = f"img/{i // 1000:04d}/{i:07d}.jpg"
                    split = "test" if i % 5 == 0 else "train"
                    status = "corrupt" if i % 997 == 0 else "ok"
                    reason = "cannot identify image file" if status == "corrupt" else ""
                    buf.write(f"{project_id}\t{key}\tfile:///data/bench/{key}\t{i:064x}\t{20000 + i % 5000}\t"
                              f"{split}\t{status}\t{reason}\t{now}\t{now}{tail}\n")
                copy.write(buf.getvalue())


# --- server and client ----------------------------------------------------------------

def deep_cursor(base_url: str, image_id: int) -> str:
    """The cursor of the page that starts after ``image_id``, made by the API's pagination class."""
    from rest_framework.pagination import Cursor

    from labeling.api.pagination import IdCursorPagination

    paginator = IdCursorPagination()
    paginator.base_url = base_url
    url = paginator.encode_cursor(Cursor(offset=0, reverse=False, position=str(image_id)))
    return parse_qs(urlparse(url).query)["cursor"][0]


def time_case(session, url: str, params: dict, repeats: int, warmup: int = 3) -> dict:
    def check(r):
        r.raise_for_status()
        r.json()

    times, r = time_requests(lambda: session.get(url, params=params, timeout=60), repeats, warmup, check)
    body = r.json()
    return {**median_p95(times),
            "n": len(times), "results": len(body["results"]), "first_id": body["results"][0]["id"],
            "has_next": bool(body["next"])}


def time_in_process(user, cases: dict, repeats: int) -> dict:
    """The cases through Django's test client: the server's own time, without the HTTP
    server, the client, or their share of a busy machine's CPUs."""
    from django.db import connection
    from django.test import Client

    client = Client()
    client.force_login(user)
    def check(r):
        assert r.status_code == 200, r.content[:300]

    out = {}
    for name, params in cases.items():
        times, _ = time_requests(lambda: client.get("/api/images/", params), repeats, 3, check)
        out[name] = median_p95(times)
    connection.close()
    return out


def explain(params: dict, after: int | None) -> str:
    """EXPLAIN ANALYZE of the page query the API runs for these filters."""
    from labeling.models import Image

    qs = Image.objects.filter(project_id=params["project"])
    if "split" in params:
        qs = qs.filter(split=params["split"])
    if "label" in params:
        # As labeling.api.filters.ImageFilter does: the cursor's bound repeated on the join.
        hint = {"annotations__image_id__gte": after} if after is not None else {}
        qs = qs.filter(annotations__task_id=params["task"], annotations__label_id=params["label"], **hint)
    if after is not None:
        qs = qs.filter(id__gt=after)
    return qs.order_by("id")[:101].explain(analyze=True)


def main() -> int:
    args = parse_args()
    import requests

    with app_bench(args.db, keep=args.keep) as bench:
        from labeling.models import Image

        world = load(args.n)
        project, task, label = world["project"], world["task"], world["label"]
        ids = Image.objects.filter(project=project).order_by("id").values_list("id", flat=True)
        deep_id = ids[int(args.n * 0.9)]
        base, http = bench.serve(args.server, world["user"])
        url = f"{base}/api/images/"
        cursor = deep_cursor(url, deep_id)
        plain = {"project": project.id}
        filtered = {"project": project.id, "task": task.id, "label": label.id, "split": "train"}
        cases = {
            "first_page": plain,
            "deep_page": {**plain, "cursor": cursor},
            "filtered_first_page": filtered,
            "filtered_deep_page": {**filtered, "cursor": cursor},
        }
        results = {name: time_case(http, url, params, args.repeats) for name, params in cases.items()}
        for name in ("deep_page", "filtered_deep_page"):
            assert results[name]["first_id"] > deep_id, "the deep cursor did not start after its id"

        basic = requests.Session()
        basic.auth = (USERNAME, PASSWORD)
        basic_first = time_case(basic, url, plain, args.basic_repeats, warmup=1)

        in_process = time_in_process(world["user"], cases, args.repeats)
        load_after = load_average()

        plans = {"filtered_first_page": explain(filtered, None), "filtered_deep_page": explain(filtered, deep_id),
                 "deep_page": explain(plain, deep_id)}

    print(f"\nGET /api/images/ at {args.n:,} images ({args.repeats} requests each, session auth, page of 100, "
          f"server: {args.server})")
    print(f"{'case':<22}{'median ms':>11}{'p95 ms':>9}{'rows':>6}")
    for name, r in results.items():
        print(f"{name:<22}{r['median_ms']:>11}{r['p95_ms']:>9}{r['results']:>6}")
    print(f"{'first_page, basic auth':<22}{basic_first['median_ms']:>11}{basic_first['p95_ms']:>9}"
          f"{basic_first['results']:>6}   (PBKDF2 password check on every request)")
    print("\nthe same requests in-process (Django test client, no HTTP server or client):")
    for name, r in in_process.items():
        print(f"{name:<22}{r['median_ms']:>11}{r['p95_ms']:>9}")
    print(f"\nload average (1, 5, 15 min) before {bench.load_before}, after {load_after} on {os.cpu_count()} cores")
    for name, plan in plans.items():
        print(f"\n-- EXPLAIN ANALYZE {name}\n{plan}")

    out = {
        "n_images": args.n,
        "page_size": 100,
        "repeats": args.repeats,
        "auth": "session cookie (basic auth timed separately)",
        "server": args.server,
        **figure_fields({**results, "basic_auth_first_page": basic_first}),
        "in_process": in_process,
        "load_average_before": bench.load_before,
        "load_average_after": load_after,
        "deep_page_after_id": deep_id,
        "filter": "task + label + split=train (one label of 10)",
        "cases": results,
        "plans": plans,
        "load_seconds": world["loaded_s"],
        "command": "python " + " ".join([os.path.relpath(__file__, REPO), *sys.argv[1:]]),
        "machine": machine_info("cpu"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
