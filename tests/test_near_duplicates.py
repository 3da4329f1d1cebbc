"""Near duplicates on a constructed set of real clothing photos (../shared/data/clothing/):
an exact copy across splits, a re-encoded copy with another label, a resized copy, a crop,
and different photos. mlcore.duplicates (hashes, pairs, calibration), the service that finds
and stores the pairs of a suspects run (hashes cached by checksum; pretrained features from
the shared ImageNet MobileNetV2 when configured), and the page in a browser: counts,
"showing 1-N of M", pages, the similarity, image A beside image B, the calibrated cut.
"""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from django.utils import timezone
from PIL import Image as PILImage
from playwright.sync_api import expect

from labeling.models import EventSource, Image, ImageHash, NearDuplicate, Project, SuspectRun, TrainingRun
from labeling.services import duplicates
from labeling.services.labels import ensure_labels, get_or_create_task
from labeling.services.retag import retag_image
from mlcore import duplicates as dup
from mlcore import storage
from tests.conftest import SHARED_DATA, require_shared

WEIGHTS = SHARED_DATA / "weights" / "mobilenet_v2_imagenet_features_torchvision_keys.pth"
N_PHOTOS = 14


def photos(n: int = N_PHOTOS, step: int = 97, offset: int = 0) -> list[bytes]:
    """``n`` different clothing photos (224 px JPEGs), always the same ones."""
    zpath = require_shared(SHARED_DATA / "clothing" / "clothing_dataset_full_short224_q75.zip")
    with zipfile.ZipFile(zpath) as z:
        names = sorted(m for m in z.namelist() if m.lower().endswith(".jpg"))[offset::step][:n]
        return [z.read(m) for m in names]


def jpeg(img: PILImage.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def open_(data: bytes) -> PILImage.Image:
    return PILImage.open(io.BytesIO(data)).convert("RGB")


def variants(blobs: list[bytes]) -> dict[str, bytes]:
    """The constructed copies: of photo 0 (exact), 1 (JPEG 60), 2 (60 % size), 3 (5 % crop)."""
    img3 = open_(blobs[3])
    w, h = img3.size
    return {"exact": blobs[0], "reencoded": jpeg(open_(blobs[1]), 60),
            "resized": jpeg(open_(blobs[2]).resize((int(open_(blobs[2]).width * .6), int(open_(blobs[2]).height * .6))), 90),
            "cropped": jpeg(img3.crop((int(w * .05), int(h * .05), w - int(w * .05), h - int(h * .05))), 90)}


# --------------------------------------------------------------------------- mlcore

def test_hashes_put_copies_close_and_different_photos_far():
    blobs = photos()
    copies = variants(blobs)
    base = [dup.hash_bytes(b)[0] for b in blobs]
    h = np.array(base, dtype=np.int64).view(np.uint64)
    dist = lambda a, b: int(dup._popcount(np.array([a ^ b], dtype=np.uint64))[0])  # noqa: E731
    assert dist(h[0], np.int64(dup.hash_bytes(copies["exact"])[0]).view(np.uint64)) == 0
    assert dist(h[1], np.int64(dup.hash_bytes(copies["reencoded"])[0]).view(np.uint64)) <= 4
    assert dist(h[2], np.int64(dup.hash_bytes(copies["resized"])[0]).view(np.uint64)) <= 4
    different = [dist(h[i], h[j]) for i in range(len(h)) for j in range(i + 1, len(h))]
    assert min(different) >= 10 and np.median(different) >= 24  # about half of 64 bits

    # The blockwise scan finds what a brute-force comparison finds.
    hs = np.array(base + [dup.hash_bytes(copies["reencoded"])[0]], dtype=np.int64)
    i, j, d = dup.hamming_pairs(hs, 6)
    brute = {(a, b) for a in range(len(hs)) for b in range(a + 1, len(hs))
             if bin(int(hs.view(np.uint64)[a] ^ hs.view(np.uint64)[b])).count("1") <= 6}
    assert set(zip(i.tolist(), j.tolist())) == brute == {(1, len(hs) - 1)}
    assert dup.pair_kind(0, 1, splits=np.array(["train", "test"]), labels=np.array([0, 1])) == \
        "cross_split+label_conflict"


def test_calibration_separates_copies_from_other_photos():
    blobs = photos()
    imgs = [open_(b) for b in blobs]
    hashes = np.array([dup.phash(im) for im in imgs], dtype=np.int64)
    cut = dup.calibrate_hash(imgs, hashes)
    assert 2 <= cut["threshold"] <= 12
    assert cut["recall_by_kind"]["reencoded"] == 1.0 and cut["recall_by_kind"]["resized"] == 1.0
    assert cut["false_positive_rate"] == 0.0 and cut["positives"] == 2 * len(imgs)


# --------------------------------------------------------------------------- the service

def make_set(folder, more: int = 0):
    """10 different photos and 4 copies (and ``more`` different photos), in a project with a done
    run and a scoring suspects run.

    copy of 0 (exact, in test: leakage), of 1 (re-encoded, labelled otherwise), of 2 (resized,
    same split and label), of 3 (cropped, same split and label).
    """
    blobs = photos()[:10]
    copies = variants(photos())
    project = Project.objects.create(name="Clothes", slug="clothes")
    task = get_or_create_task(project, "category")
    labels = ensure_labels(task, ["shirt", "dress", "shoes"])
    names = ["shirt", "dress", "shoes"]
    rows = [(f"p{i:02d}.jpg", b, "train", names[i % 3]) for i, b in enumerate(blobs)]
    rows += [("copy-exact.jpg", copies["exact"], "test", names[0]),
             ("copy-reencoded.jpg", copies["reencoded"], "train", names[2]),
             ("copy-resized.jpg", copies["resized"], "train", names[2]),
             ("copy-cropped.jpg", copies["cropped"], "train", names[0])]
    rows += [(f"q{i:03d}.jpg", b, "train", names[i % 3]) for i, b in enumerate(photos(more, step=37, offset=11))]
    images = []
    for key, data, split, label in rows:
        path = folder / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        import hashlib

        im = Image.objects.create(project=project, key=key, uri=storage.to_uri(path), split=split,
                                  checksum=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
        retag_image(image=im, task=task, label=labels[label], expected_version=None, source=EventSource.IMPORT)
        images.append(im)
    run = TrainingRun.objects.create(project=project, task=task, state=TrainingRun.State.DONE,
                                     label_ids=[labels[n].id for n in names], label_names=names,
                                     snapshot_at=timezone.now())
    sr = SuspectRun.objects.create(project=project, task=task, run=run, state=SuspectRun.State.DONE,
                                   finished_at=timezone.now())
    given = np.array([names.index(r[3]) for r in rows])
    splits = np.array([r[2] for r in rows])
    return project, task, images, sr, given, splits


def pairs_of(sr):
    return {(p.image_a.key, p.image_b.key, p.kind): p for p in NearDuplicate.objects.filter(suspect_run=sr)
            .select_related("image_a", "image_b")}


@pytest.mark.django_db
def test_service_finds_copies_by_hash_and_caches_the_hashes(tmp_path, settings):
    settings.DUPLICATES_WEIGHTS = ""
    project, task, images, sr, given, splits = make_set(tmp_path / "photos")
    stats = duplicates.find_near_duplicates(sr, image_ids=[im.id for im in images], splits=splits, labels=given)
    found = pairs_of(sr)
    assert set(found) == {("p00.jpg", "copy-exact.jpg", "cross_split"),
                          ("p01.jpg", "copy-reencoded.jpg", "label_conflict"),
                          ("p02.jpg", "copy-resized.jpg", "duplicate")}
    assert found[("p00.jpg", "copy-exact.jpg", "cross_split")].similarity == 1.0
    assert all(p.method == "hash" for p in found.values())
    assert stats["hash"]["threshold"] >= 1 and "features" not in stats and stats["pairs"] == 3
    sr.refresh_from_db()
    assert sr.duplicate_stats["by_kind"] == {"cross_split": 1, "label_conflict": 1, "duplicate": 1}
    assert sr.counts["near_duplicates"] == 3
    assert ImageHash.objects.filter(image__project=project).count() == len(images)

    # A second scan reads the cached hashes (the originals could be gone); new bytes, new hashes.
    cached = dict(ImageHash.objects.values_list("image_id", "phash"))
    moved = images[1]
    (tmp_path / "photos" / moved.key).write_bytes(photos()[12])
    Image.objects.filter(pk=moved.pk).update(checksum="changed")
    duplicates.find_near_duplicates(sr, image_ids=[im.id for im in images], splits=splits, labels=given)
    assert ImageHash.objects.get(image=moved).phash != cached[moved.pk]
    assert ("p01.jpg", "copy-reencoded.jpg", "label_conflict") not in pairs_of(sr)  # replaced, not added
    assert ("p00.jpg", "copy-exact.jpg", "cross_split") in pairs_of(sr)


@pytest.mark.django_db
def test_pretrained_features_find_the_crop(tmp_path, settings, monkeypatch):
    """The features' cut lets about 1 % of the number of images in as false pairs: with 120 more
    photos, the crop is found and no two different photos are paired."""
    settings.DUPLICATES_WEIGHTS = storage.to_uri(require_shared(WEIGHTS))
    settings.DUPLICATES_IMAGE_SIZE = 96
    monkeypatch.setattr(duplicates, "CALIBRATION_IMAGES", 30)
    project, task, images, sr, given, splits = make_set(tmp_path / "photos", more=120)
    stats = duplicates.find_near_duplicates(sr, image_ids=[im.id for im in images], splits=splits, labels=given)
    found = pairs_of(sr)
    crop = found.get(("p03.jpg", "copy-cropped.jpg", "duplicate"))
    assert crop is not None and crop.method == "features" and crop.similarity >= stats["features"]["threshold"]
    assert ("p00.jpg", "copy-exact.jpg", "cross_split") in found
    f = stats["features"]
    assert 0.8 <= f["threshold"] < 1.0 and f["recall"] > 0.5 and f["expected_false_pairs"] <= 0.01 * len(images)
    originals = {k for k in found if not k[0].startswith("copy") and not k[1].startswith("copy")}
    assert not originals  # no two different photos paired


# --------------------------------------------------------------------------- the page

@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_page_pairs_side_by_side_with_counts_and_pages(tmp_path, settings, monkeypatch, login, page, annotator):
    settings.DUPLICATES_WEIGHTS = ""
    project, task, images, sr, given, splits = make_set(tmp_path / "photos")
    duplicates.find_near_duplicates(sr, image_ids=[im.id for im in images], splits=splits, labels=given)
    # Many more plain copies than one page holds: 7 pairs of one kind, 3 a page.
    extra = [NearDuplicate(suspect_run=sr, image_a=images[i], image_b=images[i + 1], similarity=0.9 - i / 100,
                           kind=NearDuplicate.Kind.DUPLICATE, method="hash") for i in range(4, 10)]
    NearDuplicate.objects.bulk_create(extra)
    monkeypatch.setattr(duplicates, "PAGE_SIZE", 3)
    login(annotator)

    page.goto(f"/suspects/{sr.id}/duplicates/")
    expect(page.get_by_test_id("count-cross_split")).to_have_text("1")
    expect(page.get_by_test_id("count-label_conflict")).to_have_text("1")
    expect(page.get_by_test_id("count-duplicate")).to_have_text("7")
    expect(page.get_by_test_id("showing")).to_have_text("Showing 1–1 of 1")
    row = page.locator("[data-testid=pairs] tbody tr").first
    expect(row.get_by_test_id("similarity")).to_have_text("1.000")
    a, b = row.get_by_test_id("image-a").bounding_box(), row.get_by_test_id("image-b").bounding_box()
    assert b["x"] >= a["x"] + a["width"] and abs(b["y"] - a["y"]) < 5  # B beside A, not under it
    threshold = str(SuspectRun.objects.get(pk=sr.pk).duplicate_stats["hash"]["threshold"])
    expect(page.get_by_test_id("hash-threshold")).to_have_text(threshold)

    page.click("[data-kind=label_conflict]")
    expect(page.locator("[data-testid=pairs] tbody tr")).to_have_count(1)
    pair = page.locator("[data-testid=pairs] tbody tr").first
    assert pair.get_attribute("data-a") == str(images[1].id) and pair.get_attribute("data-b") == str(images[11].id)

    page.click("[data-kind=duplicate]")
    expect(page.get_by_test_id("showing")).to_have_text("Showing 1–3 of 7")
    expect(page.locator("[data-testid=pairs] tbody tr")).to_have_count(3)
    sims = [float(t) for t in page.get_by_test_id("similarity").all_inner_texts()]
    assert sims == sorted(sims, reverse=True) and sims[0] >= 0.9  # the resized copy first
    page.get_by_test_id("next").click()
    expect(page.get_by_test_id("showing")).to_have_text("Showing 4–6 of 7")
    page.get_by_test_id("next").click()
    expect(page.get_by_test_id("showing")).to_have_text("Showing 7–7 of 7")
    expect(page.get_by_test_id("next")).to_have_count(0)
