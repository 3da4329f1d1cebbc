#!/usr/bin/env python3
"""Rebuild the demo archives in demo/ from ../shared/data (a developer tool).

    .venv/bin/python scripts/build_demo.py [--data ../shared/data] [--out demo]

``make run`` does not call this: the archives ship with the project, so the demo
never downloads anything. Run it only to change what the demo holds. The output is
deterministic (sorted entries, fixed timestamps, selection by hash, same Pillow
encoder), so a rebuild with unchanged inputs gives byte-identical archives.

- demo/clothing.zip: about 500 CC0 photos of clothes (the ten largest classes of the
  clothing dataset plus a few small ones, and the 26 items the published top-10
  subset classes differently: real label noise), short side 176 px, JPEG q80, with
  ``manifest.csv`` (uri,split,category,audience), ``known_relabels.csv``, the CC0
  licence and PROVENANCE.md.
- demo/fashion-mnist.zip: 3,000 train + 1,000 test Fashion-MNIST thumbnails,
  stratified (300 / 100 per class), as PNGs in ``split/<label dir>/<name>.png`` with a
  ``manifest.csv`` (uri,split,category) that carries the canonical label names
  ("T-shirt/top" cannot be a directory name), the MIT licence and PROVENANCE.md.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import re
import struct
import sys
import zipfile
from collections import Counter, defaultdict
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
ZIP_TIME = (2020, 1, 1, 0, 0, 0)

# --- clothing ---------------------------------------------------------------------

CLOTHING_ZIP = "clothing_dataset_full_short224_q75.zip"
SHORT_SIDE = 176
JPEG_QUALITY = 80
# Images per class: the ten largest classes (about 9 % of each, between 30 and 70),
# and a few of the small ones. "Not sure", "Skip", "Other", "Undershirt", "Top" and
# "Blouse" are left out; the 26 relabelled items below bring their own labels.
CLOTHING_PER_CLASS = {
    "T-Shirt": 70, "Longsleeve": 63, "Pants": 62, "Shoes": 39, "Shirt": 34, "Dress": 32,
    "Outwear": 30, "Shorts": 30, "Hat": 30, "Skirt": 30,
    "Polo": 15, "Hoodie": 15, "Blazer": 15, "Body": 12,
}
# How the published subset's split maps onto Retag's two splits.
# Validation goes to test: Retag evaluates on test, and train+test then split about
# 81/19, close to the default test ratio of 0.2 used for the images without a split.
SPLIT_MAP = {"train": "train", "validation": "test", "test": "test"}
# Share of each class taken from kids' clothes where there are enough (images.csv has
# only 9 % kids items; the demo wants the audience facet to have two real labels).
KIDS_SHARE = 0.2
SUBSET_CLASS = {"t-shirt": "T-Shirt", "longsleeve": "Longsleeve", "pants": "Pants", "shirt": "Shirt",
                "shoes": "Shoes", "dress": "Dress", "shorts": "Shorts", "outwear": "Outwear",
                "hat": "Hat", "skirt": "Skirt"}

# --- Fashion-MNIST -------------------------------------------------------------------

FMNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                  "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FMNIST_PER_CLASS = {"train": 300, "test": 100}
FMNIST_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def fmnist_dir_name(label: str) -> str:
    """A directory name for a label: "T-shirt/top" -> "T-shirt_top", "Ankle boot" -> "Ankle_boot"."""
    return re.sub(r"[^A-Za-z0-9-]+", "_", label)


def stable_key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class DeterministicZip:
    """A zip whose bytes depend only on what is written into it."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, tuple[bytes, int]] = {}

    def add(self, name: str, data: bytes, compress: bool = True) -> None:
        if name in self.entries:
            raise ValueError(f"duplicate archive member {name}")
        self.entries[name] = (data, zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED)

    def write(self) -> None:
        tmp = self.path.with_suffix(".zip.tmp")
        with zipfile.ZipFile(tmp, "w") as zf:
            for name in sorted(self.entries):
                data, method = self.entries[name]
                info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
                info.compress_type = method
                info.external_attr = 0o644 << 16
                info.create_system = 3
                zf.writestr(info, data, compresslevel=9 if method == zipfile.ZIP_DEFLATED else None)
        tmp.replace(self.path)


def csv_bytes(header: list[str], rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode()


def resize_jpeg(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGB")
        w, h = im.size
        scale = SHORT_SIDE / min(w, h)
        if scale < 1:
            im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        im.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True, progressive=False)
        return out.getvalue()


def build_clothing(data: Path, out: Path) -> dict:
    src = data / "clothing"
    labels = {r["image"]: r for r in csv.DictReader(open(src / "images.csv", newline=""))}
    subset = {r["image"]: r for r in csv.DictReader(open(src / "small_subset_splits.csv", newline=""))}
    archive = zipfile.ZipFile(src / CLOTHING_ZIP)
    present = {Path(n).stem for n in archive.namelist() if n.startswith("images/") and n.endswith(".jpg")}

    # Items that the published subset classes differently from images.csv: keep the
    # images.csv label (the noisy one) and record the other in known_relabels.csv.
    relabelled = {i: r for i, r in subset.items()
                  if i in labels and i in present and SUBSET_CLASS[r["small_class_dir"]] != labels[i]["label"]}

    chosen: dict[str, dict] = {i: labels[i] for i in relabelled}
    by_class = defaultdict(list)
    for image, row in labels.items():
        if image in present and image not in chosen and row["label"] in CLOTHING_PER_CLASS:
            in_subset = image in subset and SUBSET_CLASS[subset[image]["small_class_dir"]] == row["label"]
            # Prefer images with a published split; then a fixed pseudo-random order.
            by_class[row["label"]].append((not in_subset, stable_key(image), image))
    for label, n in CLOTHING_PER_CLASS.items():
        ranked = sorted(by_class[label])
        kids = [c for c in ranked if labels[c[2]]["kids"] == "True"]
        adults = [c for c in ranked if labels[c[2]]["kids"] != "True"]
        n_kids = round(n * KIDS_SHARE)
        n_kids = max(n_kids, n - len(adults))  # classes of mostly kids' clothes (Body)
        take = kids[:n_kids] + adults[:n - min(n_kids, len(kids))]
        for _, _, image in sorted(take):
            chosen[image] = labels[image]

    # Rows in round-robin class order, so that the first N rows (load_demo --limit)
    # already cover many classes and both audiences.
    queues = defaultdict(list)
    for image in sorted(chosen, key=stable_key):
        queues[chosen[image]["label"]].append(image)
    order = []
    while any(queues.values()):
        for label in sorted(queues, key=lambda lb: (-len(queues[lb]), lb)):
            if queues[label]:
                order.append(queues[label].pop(0))

    z = DeterministicZip(out / "clothing.zip")
    rows, splits = [], Counter()
    for image in order:
        row = chosen[image]
        split = SPLIT_MAP[subset[image]["small_split"]] if image in subset else ""
        splits[split or "(by hash)"] += 1
        uri = f"images/{image}.jpg"
        z.add(f"clothing/{uri}", resize_jpeg(archive.read(uri)), compress=False)
        audience = "kids" if row["kids"] == "True" else "adult"
        rows.append([uri, split, row["label"], audience])
    z.add("clothing/manifest.csv", csv_bytes(["uri", "split", "category", "audience"], rows))
    z.add("clothing/known_relabels.csv", csv_bytes(
        ["uri", "category_in_manifest", "category_in_published_subset"],
        [[f"images/{i}.jpg", labels[i]["label"], SUBSET_CLASS[r["small_class_dir"]]]
         for i, r in sorted(relabelled.items())]))
    z.add("clothing/LICENSE", (src / "LICENSE").read_bytes())
    counts = Counter(r[2] for r in rows)
    audiences = Counter(r[3] for r in rows)
    z.add("clothing/PROVENANCE.md", clothing_provenance(len(rows), counts, audiences, splits,
                                                        len(relabelled)).encode())
    z.write()
    return {"images": len(rows), "classes": dict(counts.most_common()), "audience": dict(audiences),
            "splits": dict(splits), "relabelled": len(relabelled)}


def clothing_provenance(n, counts, audiences, splits, n_relabelled) -> str:
    table = "\n".join(f"| {label} | {c} |" for label, c in counts.most_common())
    return f"""# Clothing demo set: provenance

{n} photos of real clothes from the **Clothing dataset** by Alexey Grigorev and
contributors (github.com/alexeygrigorev/clothing-dataset, commit 7ed86a9), released
under **CC0 1.0** (see LICENSE). Built by `scripts/build_demo.py` from the project's
shared data copy (short side 224 px, JPEG q75): each photo resized so its short side
is {SHORT_SIDE} px (Lanczos) and re-encoded as JPEG quality {JPEG_QUALITY}.

## manifest.csv

`uri,split,category,audience`; `uri` is relative to this folder.

- `category` is the `label` column of the dataset's images.csv, unchanged.
- `audience` is `kids` where images.csv says `kids=True`, else `adult`.
- `split` comes from the published top-10 subset (github.com/alexeygrigorev/clothing-dataset-small,
  commit 1196151): its `train` images are `train` here, its `validation` and `test`
  images are `test` (Retag has two splits and evaluates on test; this gives about
  the default 80/20). Images outside that subset have an empty split: Retag assigns
  one by hash at import. Counts: {", ".join(f"{k} {v}" for k, v in sorted(splits.items()))}.
- Audience: {", ".join(f"{k} {v}" for k, v in sorted(audiences.items()))}.

Selection: a fixed number of images per class (sorted by the SHA-256 of the image
id, images with a published split first), about {round(KIDS_SHARE * 100)} % of each class from kids'
clothes where the class has enough, leaving out "Not sure", "Skip", "Other" and the
smallest classes.

## Label noise on purpose

`known_relabels.csv` lists {n_relabelled} images whose class in the published subset
differs from images.csv (for instance a jacket labelled Longsleeve that the subset
files under outwear). The manifest keeps the images.csv label, so the demo starts
with real, known label noise for the suspect ranking to find.

| category | images |
|---|---|
{table}
"""


# --- Fashion-MNIST ---------------------------------------------------------------------

def read_idx(path: Path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, n = struct.unpack(">II", data[:8])
    if magic == 0x00000801:
        return data[8:8 + n]
    if magic == 0x00000803:
        rows, cols = struct.unpack(">II", data[8:16])
        return [data[16 + i * rows * cols:16 + (i + 1) * rows * cols] for i in range(n)], (cols, rows)
    raise ValueError(f"{path}: unexpected IDX magic {magic:#x}")


def png_bytes(pixels: bytes, size) -> bytes:
    out = io.BytesIO()
    Image.frombytes("L", size, pixels).save(out, "PNG", optimize=True)
    return out.getvalue()


def build_fashion_mnist(data: Path, out: Path) -> dict:
    src = data / "fashion-mnist"
    z = DeterministicZip(out / "fashion-mnist.zip")
    by_split_class = {split: defaultdict(list) for split in FMNIST_FILES}
    counts = Counter()
    for split, (images_file, labels_file) in FMNIST_FILES.items():
        images, size = read_idx(src / images_file)
        labels = read_idx(src / labels_file)
        for index, label_id in enumerate(labels):  # the first N of each class, in file order
            taken = by_split_class[split][label_id]
            if len(taken) >= FMNIST_PER_CLASS[split]:
                continue
            label = FMNIST_CLASSES[label_id]
            uri = f"{split}/{fmnist_dir_name(label)}/{split}-{index:05d}.png"
            z.add(f"fashion-mnist/{uri}", png_bytes(images[index], size), compress=False)
            taken.append([uri, split, label])
            counts[split] += 1
    # Manifest rows interleaved: one image of each class, train then test, round after
    # round, so the first N rows (load_demo --limit) cover every class and both splits.
    rows = []
    for r in range(max(FMNIST_PER_CLASS.values())):
        for split in FMNIST_FILES:
            for label_id in range(len(FMNIST_CLASSES)):
                if r < len(by_split_class[split][label_id]):
                    rows.append(by_split_class[split][label_id][r])
    z.add("fashion-mnist/manifest.csv", csv_bytes(["uri", "split", "category"], rows))
    z.add("fashion-mnist/LICENSE", (src / "LICENSE").read_bytes())
    z.add("fashion-mnist/PROVENANCE.md", fmnist_provenance(counts).encode())
    z.write()
    return dict(counts)


def fmnist_provenance(counts) -> str:
    dirs = "\n".join(f"| {i} | {name} | `{fmnist_dir_name(name)}` |" for i, name in enumerate(FMNIST_CLASSES))
    return f"""# Fashion-MNIST demo set: provenance

{counts['train']:,} train + {counts['test']:,} test thumbnails (28x28 grey) from
**Fashion-MNIST** by Zalando Research (github.com/zalandoresearch/fashion-mnist),
released under the **MIT licence** (see LICENSE, (c) 2017 Zalando SE). Built by
`scripts/build_demo.py` from the upstream IDX files (MD5s as published upstream).

Selection: the first {FMNIST_PER_CLASS['train']} images of each class in the training
file and the first {FMNIST_PER_CLASS['test']} of each class in the test file, so both
splits are stratified. Each is stored as an 8-bit grey PNG named
`<split>/<label dir>/<split>-<index>.png`, where `<index>` is the image's position in
the upstream file.

The folders follow the `split/label/image` layout; `manifest.csv` (`uri,split,category`)
gives the canonical class names, since "T-shirt/top" cannot be a directory name:

| class id | label | directory |
|---|---|---|
{dirs}
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "demo")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    print("clothing:", build_clothing(args.data, args.out))
    print("fashion-mnist:", build_fashion_mnist(args.data, args.out))
    for name in ("clothing.zip", "fashion-mnist.zip"):
        path = args.out / name
        print(f"{path}: {path.stat().st_size:,} bytes, sha256 {hashlib.sha256(path.read_bytes()).hexdigest()[:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
