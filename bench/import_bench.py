"""Import benchmark: the whole clothing set (plus ten broken files) through a manifest
import with thumbnails, into PostgreSQL, then the re-import that must change nothing.

    .venv/bin/python bench/import_bench.py [--limit N]

Uses its own database (``retag_bench``, created and migrated here, on the server of
``DATABASE_URL`` or var/test.env's) and a temporary storage folder. Prints a table and
writes bench/results/import.json.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import random
import struct
import sys
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import RESULTS, machine_info, recreate_database, server_url, setup_django, shared_data  # noqa: E402

BENCH_DB = "retag_bench"


def broken_files(real: bytes) -> dict[str, bytes]:
    from PIL import Image

    png = io.BytesIO()
    Image.open(io.BytesIO(real)).save(png, "PNG")
    ihdr = b"\x00\x01\x86\xa0" * 2 + b"\x08\x02\x00\x00\x00"  # 100000 x 100000 RGB

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b"")
    return {
        "broken/empty.jpg": b"", "broken/truncated.jpg": real[: len(real) // 2],
        "broken/header-only.jpg": real[:300], "broken/text.jpg": b"not a photo\n" * 20,
        "broken/page.jpg": b"<html>404</html>", "broken/zeros.jpg": bytes(2048),
        "broken/random.jpg": random.Random(3).randbytes(4096),
        "broken/truncated.png": png.getvalue()[: len(png.getvalue()) // 3],
        "broken/gzipped.jpg": gzip.compress(real), "broken/bomb.png": bomb,
    }


def stage(work: Path, limit: int | None) -> tuple[Path, int]:
    """Unzip the clothing set, add the broken files, write the manifest; (manifest, rows)."""
    from labeling.services.imports import safe_extract

    root = work / "clothing"
    _, refused = safe_extract(shared_data() / "clothing" / "clothing_dataset_full_short224_q75.zip", root)
    assert not refused, refused
    rows = [r for r in csv.DictReader(open(root / "images.csv")) if (root / "images" / f"{r['image']}.jpg").exists()]
    rows = rows[:limit] if limit else rows
    broken = broken_files((root / "images" / f"{rows[0]['image']}.jpg").read_bytes())
    for rel, content in broken.items():
        (root / rel).parent.mkdir(exist_ok=True)
        (root / rel).write_bytes(content)
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["uri", "split", "category"])
        w.writerows([f"images/{r['image']}.jpg", "", r["label"]] for r in rows)
        w.writerows([rel, "train", "Broken"] for rel in broken)
    return manifest, len(rows) + len(broken)


def thread_scaling(folder: Path, n: int = 400) -> dict[str, float]:
    """Images/s of read + sha256 + decode + thumbnail (no database) with 1, 2 and 4 threads."""
    from django.conf import settings

    from mlcore import storage
    from mlcore.images import decode, thumbnail_jpeg

    files = sorted(folder.glob("*.jpg"))[:n]

    def work(path):
        data = path.read_bytes()
        storage.sha256(data)
        return len(thumbnail_jpeg(decode(data, settings.IMAGE_MAX_PIXELS), settings.THUMBNAIL_SIZE))

    out = {}
    for threads in (1, 2, 4):
        t = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(work, files))
        out[str(threads)] = round(len(files) / (time.perf_counter() - t), 1)
    return out


def run_job(project, manifest: Path):
    from labeling.services.imports import run_import, start_import

    t = time.perf_counter()
    job = run_import(start_import(project=project, kind="manifest", source_uri=str(manifest), enqueue=False))
    return job, time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, help="import only the first N images (smoke runs)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="retag-import-bench-"))
    setup_django(recreate_database(server_url(), BENCH_DB), migrate=True, STORAGE_URI=(work / "storage").as_uri(),
                 RETAG_IMPORT_ROOTS=str(work), RETAG_VAR_DIR=str(work / "var"),
                 DJANGO_SETTINGS_MODULE="labeling.settings", LOG_LEVEL="WARNING")
    from labeling.models import LabelEvent
    from labeling.services.imports import worker_threads
    from labeling.services.projects import create_project

    project = create_project(name="bench-clothing")
    manifest, rows = stage(work, args.limit)
    scaling = thread_scaling(work / "clothing" / "images")

    job, wall = run_job(project, manifest)
    assert job.state == "done", job.message
    events = LabelEvent.objects.filter(image__project=project).count()
    again, rewall = run_job(project, manifest)
    assert again.unchanged == rows and LabelEvent.objects.filter(image__project=project).count() == events

    thumbs = sum(1 for _ in (work / "storage" / "projects" / project.slug / "thumbs").rglob("*.jpg"))
    result = {
        "images": job.added, "rows": rows, "corrupt_flagged": job.corrupt, "refused": job.refused,
        "wall_s": round(wall, 2), "images_per_s": round(rows / wall, 1), "thumbnails": thumbs,
        "label_events": events, "reimport_s": round(rewall, 2), "reimport_images_per_s": round(rows / rewall, 1),
        "reimport_unchanged": again.unchanged, "import_threads": worker_threads(job),
        "decode_thumbnail_images_per_s_by_threads": scaling,
        "database": "postgresql", "storage": "local folder", "machine": machine_info(device="cpu"),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "import.json").write_text(json.dumps(result, indent=1) + "\n")
    print_table(result)


def print_table(r: dict) -> None:
    lines = [("rows (images + broken)", r["rows"]), ("images imported", r["images"]),
             ("corrupt flagged", r["corrupt_flagged"]), ("thumbnails", r["thumbnails"]),
             ("import wall s", r["wall_s"]), ("import images/s", r["images_per_s"]),
             ("re-import wall s (no-op)", r["reimport_s"]), ("re-import images/s", r["reimport_images_per_s"]),
             ("import threads", r["import_threads"])]
    lines += [(f"decode+thumb img/s, {k} thread(s)", v) for k, v in r["decode_thumbnail_images_per_s_by_threads"].items()]
    m = r["machine"]
    lines.append(("machine", f"{m.get('cpu')} x{m.get('cores')}, {m.get('memory_gb')} GB"))
    width = max(len(k) for k, _ in lines)
    for k, v in lines:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
