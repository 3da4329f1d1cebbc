import json

import numpy as np

from mlcore import clean, storage
from mlcore.manifest import read_manifest
from mlcore.storage import npz_bytes
from mlcore.train import TrainConfig


def fake_train(config, progress=None):
    """A stand-in for training: embeddings put each image at its *true* colour, whatever its label."""
    m = read_manifest(config.manifest_uri, config.labels)
    true = np.array([0 if "red" in u else 1 if "green" in u else 2 for u in m.uris])
    rng = np.random.default_rng(0)
    emb = np.eye(8)[true] + 0.02 * rng.standard_normal((len(true), 8))
    out = config.output_uri
    storage.write_bytes(storage.join(out, "embeddings.npz"),
                        npz_bytes({"uri": np.array(m.uris), "emb": emb.astype(np.float16)}))
    storage.write_bytes(storage.join(out, "predictions.npz"), npz_bytes({"uri": np.array(m.uris)}))
    trained = m.targets[:, 0][np.asarray(m.splits) == "train"]
    fake_train.trained.append(int((trained >= 0).sum()))
    storage.write_bytes(storage.join(out, "metrics.json"), json.dumps(
        {"test": {"accuracy": 0.5 + 0.1 * len(fake_train.trained), "macro": {"f1": 0.5}}}).encode())


def two_red_labelled_green(tmp_path, monkeypatch):
    """Colour images with two red train images labelled green (they sit in the red cluster,
    outside green's core), the fake training, and the config: (config, manifest, rows, bad rows)."""
    from tests.mlcore.helpers import write_colour_set

    manifest = write_colour_set(tmp_path / "data", per_class=6)
    rows = manifest.read_text().splitlines()
    bad = [i for i, r in enumerate(rows) if "red" in r and ",train," in r][:2]
    for i in bad:
        rows[i] = rows[i].replace(",red", ",green")
    manifest.write_text("\n".join(rows) + "\n")
    fake_train.trained = []
    monkeypatch.setattr(clean, "train", fake_train)
    config = TrainConfig(manifest_uri=str(manifest), output_uri=str(tmp_path / "clean"),
                         labels=["red", "green", "blue"])
    return config, manifest, rows, bad


def test_autoclean_excludes_core_outliers_keeps_them_listed_and_stops_when_stable(tmp_path, monkeypatch):
    config, manifest, rows, bad = two_red_labelled_green(tmp_path, monkeypatch)
    result = clean.autoclean(config, rounds=3, threshold=0.3)
    assert fake_train.trained == [18, 16]  # round 0, round 1; round 2 would exclude the same: converged
    assert result["stopped"] == "converged" and len(result["rounds"]) == 2
    assert result["rounds"][1]["excluded_per_class"] == {"red": 0, "green": 2, "blue": 0}
    assert sorted(u.rsplit("/", 1)[1] for u in result["excluded"]) == sorted(
        rows[i].split(",")[0].rsplit("/", 1)[1] for i in bad)
    m1 = read_manifest(result["rounds"][1]["manifest"], ["red", "green", "blue"])
    assert len(m1) == len(read_manifest(str(manifest)))  # excluded, not deleted: label cell emptied
    assert (m1.targets[:, 0] == -1).sum() == 2
    saved = json.loads((tmp_path / "clean" / "clean.json").read_text())
    assert saved["rounds"][1]["test_accuracy"] == result["rounds"][1]["test_accuracy"]


def test_each_class_is_cut_from_its_own_noise():
    """Three tight groups of 60; 6 images of group 2 labelled 1 (9% of class 1 wrong), class 0
    clean. The data-chosen cut leaves class 1's core at its own 60 images and so finds the
    planted ones; the clean class keeps nearly all its images."""
    rng = np.random.default_rng(0)
    centres = np.eye(16)[:3]
    true = np.repeat([0, 1, 2], 60)
    emb = centres[true] + 0.08 * rng.standard_normal((len(true), 16))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = true.copy()
    planted = np.flatnonzero(true == 2)[:6]
    labels[planted] = 1
    labels[-3:] = -1  # unlabelled: never an outlier
    out, cuts = clean.outliers(emb, labels)
    assert out[planted].all()
    assert out[labels == 0].sum() <= 1 and not out[-3:].any()
    assert out[labels == 1].sum() <= 6 + 1  # the core of class 1 keeps its own 60
    assert cuts.shape == (3,) and np.isfinite(cuts).all()
    # one fixed cut for every class, as before: wide enough to hold both groups of class 1
    fixed, fixed_cuts = clean.outliers(emb, labels, threshold=1.5)
    assert not fixed[planted].any() and np.allclose(fixed_cuts, 1.5)


def test_autoclean_by_default_cuts_each_class_from_the_data(tmp_path, monkeypatch):
    config, manifest, rows, bad = two_red_labelled_green(tmp_path, monkeypatch)
    result = clean.autoclean(config, rounds=3)
    assert result["threshold"] is None
    assert result["rounds"][1]["excluded_per_class"] == {"red": 0, "green": 2, "blue": 0}
    assert set(result["rounds"][1]["cuts"]) == {"red", "green", "blue"}
    assert sorted(u.rsplit("/", 1)[1] for u in result["excluded"]) == sorted(
        rows[i].split(",")[0].rsplit("/", 1)[1] for i in bad)
