import numpy as np
import pytest
import torch

from mlcore import data, storage
from mlcore.data import EpochBatches, ImageDataset, collate, holdout
from mlcore.manifest import read_manifest

from tests.mlcore.helpers import make_image


def write(path, text):
    path.write_text(text)
    return str(path)


def test_read_manifest_single_task_resolves_relative_uris_and_keeps_label_order(colour_set):
    m = read_manifest(str(colour_set), ["red", "green", "blue"])
    assert m.tasks == {"label": ["red", "green", "blue"]}
    assert len(m) == 3 * 11 + 2
    assert m.uris[0] == storage.to_uri(colour_set.parent / "img/red_000.png")
    assert m.targets[0, 0] == 0 and set(m.targets[:, 0]) == {0, 1, 2}
    assert len(m.indices("train")) == 26 and len(m.indices("test")) == 9
    assert len(m.sha256) == 64 and not m.notes


def test_manifest_without_labels_sorts_and_notes_it(colour_set):
    m = read_manifest(str(colour_set))
    assert m.tasks["label"] == ["blue", "green", "red"]
    assert "sorted" in m.notes[0]


def test_manifest_errors_are_listed_with_lines(tmp_path):
    bad = write(tmp_path / "m.csv", "uri,split,label\na.png,train,cat\nb.png,holdout,dog\na.png,test,cat\n")
    with pytest.raises(ValueError) as e:
        read_manifest(bad, ["cat"])
    msg = str(e.value)
    assert "line 3: split 'holdout'" in msg and "label 'dog'" in msg and "line 4: duplicate uri" in msg
    with pytest.raises(ValueError, match="lacks column"):
        read_manifest(write(tmp_path / "n.csv", "path,label\na,b\n"))


def test_multi_facet_manifest_with_missing_labels(tmp_path):
    m = read_manifest(write(tmp_path / "m.csv",
                            "uri,split,neckline,sleeve\na.png,train,v,long\nb.png,validation,round,\n"),
                      {"neckline": ["round", "v"], "sleeve": ["short", "long"]})
    assert m.task_names == ["neckline", "sleeve"]
    assert m.targets.tolist() == [[1, 1], [0, -1]]
    assert m.splits == ["train", "val"]


def test_holdout_is_stable_and_order_independent():
    uris = [f"s3://b/{i}.jpg" for i in range(200)]
    keep, held = holdout(np.arange(200), uris, 0.2)
    assert 20 < len(held) < 60 and len(keep) + len(held) == 200
    rev = holdout(np.arange(200)[::-1], uris, 0.2)[1]
    assert sorted(rev) == sorted(held)


def test_epoch_batches_are_seeded_and_can_start_mid_epoch():
    s = EpochBatches(range(10), 3, shuffle=True, seed=1, drop_last=True)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, start_step=1)
    assert list(s) == full[1:]
    s.set_epoch(3)
    assert list(s) != full
    assert len(full) == 3 and all(isinstance(k, tuple) for k in full[0])


def test_dataset_returns_sentinels_for_unreadable_images(tmp_path):
    ok = tmp_path / "ok.png"
    ok.write_bytes(make_image((1, 2, 3), 0))
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    uris = [storage.to_uri(p) for p in (ok, tmp_path / "bad.jpg", tmp_path / "missing.jpg")]
    ds = ImageDataset(uris, np.array([0, 1, 0]), data.eval_transform(16))
    batch = collate([ds[0], ds[1], ds[2]])
    assert batch["image"].shape == (1, 3, 16, 16) and batch["index"].tolist() == [0]
    reasons = dict(batch["skipped"])
    assert set(reasons) == {1, 2}
    assert "not an image" in reasons[1] and "FileNotFoundError" in reasons[2]
    assert "image" not in collate([ds[1]])


def test_train_transform_is_reproducible_per_sample_seed(tmp_path):
    p = tmp_path / "x.png"
    p.write_bytes(make_image((100, 50, 20), 3, size=(64, 48)))
    ds = ImageDataset([storage.to_uri(p)], np.array([0]), data.train_transform(32))
    a, b, c = ds[(0, 7)], ds[(0, 7)], ds[(0, 8)]
    assert torch.equal(a["image"], b["image"]) and not torch.equal(a["image"], c["image"])


def test_tensor_images_shift_and_flip():
    x = torch.arange(2 * 8 * 8, dtype=torch.uint8).reshape(2, 8, 8)
    ds = TensorImages = data.TensorImages(x, [0, 1], pad=2)
    plain, aug = ds[0]["image"], ds[(0, 5)]["image"]
    assert plain.shape == (3, 8, 8) and aug.shape == (3, 8, 8)
    assert torch.equal(ds[(0, 5)]["image"], aug)


def test_s3_fetch_goes_through_a_content_addressed_cache(s3, tmp_path):
    body = make_image((9, 9, 9), 1)
    for key in ("a/1.png", "b/2.png"):
        s3.put_object(Bucket=s3.bucket, Key=key, Body=body)
    uris = [f"s3://{s3.bucket}/a/1.png", f"s3://{s3.bucket}/b/2.png", f"s3://{s3.bucket}/nope.png"]
    failures = data.prefetch(uris, workers=4)
    assert list(failures) == [uris[2]]
    blobs = list((data.cache_dir() / "blobs").rglob("*"))
    assert len([b for b in blobs if b.is_file()]) == 1  # same bytes stored once
    assert data.cached_path(uris[0]) == data.cached_path(uris[1])
    s3.delete_object(Bucket=s3.bucket, Key="a/1.png")
    assert data.fetch(uris[0]) == body  # served from the cache
