import numpy as np
import pytest

from mlcore import storage
from mlcore.manifest import read_manifest
from mlcore.storage import load_npz, npz_bytes
from mlcore.folds import combine_folds, fold_configs, fold_of, write_fold_manifest
from mlcore.train import TrainConfig

from tests.mlcore.helpers import COLOURS

LABELS = list(COLOURS)


def test_fold_of_is_deterministic_balanced_enough_and_order_free():
    uris = [f"s3://b/img/{i}.jpg" for i in range(4000)]
    f = fold_of(uris, 4)
    assert f.tolist() == fold_of(list(reversed(uris)), 4)[::-1].tolist()
    assert set(f.tolist()) == {0, 1, 2, 3} and np.bincount(f).min() > 900
    assert (fold_of(uris, 4, seed=1) != f).any()
    with pytest.raises(ValueError):
        fold_of(uris, 1)


def test_fold_manifests_are_disjoint_and_cover_train(colour_set, tmp_path):
    m = read_manifest(str(colour_set))
    train = {m.uris[i] for i in m.indices("train")}
    held = []
    for f in range(3):
        fm = read_manifest(write_fold_manifest(str(colour_set), 3, f, str(tmp_path / f"fold{f}")))
        assert set(fm.splits) <= {"train", "val"}  # test rows are the main run's to predict
        assert set(fm.uris) == train
        held.append({u for u, s in zip(fm.uris, fm.splits) if s == "val"})
        trained = {u for u, s in zip(fm.uris, fm.splits) if s == "train"}
        assert trained.isdisjoint(held[-1])
    assert sum(map(len, held)) == len(train) and set().union(*held) == train


def test_fold_configs_are_independent_runs(colour_set, tmp_path):
    base = TrainConfig(manifest_uri=str(colour_set), output_uri=str(tmp_path / "main"), epochs=5, notes={"x": 1})
    configs = fold_configs(base, 4, str(tmp_path / "folds"), fold_epochs=2)
    assert [c.epochs for c in configs] == [2] * 4 and all(c.labels == sorted(LABELS) for c in configs)
    assert len({c.output_uri for c in configs}) == 4 and all(c.notes["x"] == 1 for c in configs)
    assert [c.notes["fold"]["fold"] for c in configs] == [0, 1, 2, 3]
    assert all(storage.exists(c.manifest_uri) for c in configs)


def _preds(uri, uris, split, label, prob):
    storage.write_bytes(storage.join(uri, "predictions.npz"), npz_bytes(
        {"uri": np.array(uris), "split": np.array(split), "label": np.array(label), "prob": np.array(prob, np.float32),
         "labels": np.array(["a", "b"])}))


def test_combine_folds_takes_each_train_image_from_the_model_that_did_not_see_it(tmp_path):
    main, f0, f1 = (storage.to_uri(str(tmp_path / n)) for n in ("main", "f0", "f1"))
    uris = ["u0", "u1", "u2", "u3", "t0"]
    _preds(main, uris, ["train"] * 4 + ["test"], [0, 1, 0, 1, 0], [[1, 0]] * 4 + [[0.7, 0.3]])
    # fold 0 held out u0, u2 (val); fold 1 held out u1, u3. Their train rows' predictions must be ignored.
    _preds(f0, ["u0", "u2", "u1", "u3"], ["val", "val", "train", "train"], [0, 0, 1, 1],
           [[0.1, 0.9], [0.2, 0.8], [0.5, 0.5], [0.5, 0.5]])
    _preds(f1, ["u1", "u3", "u0", "u2"], ["val", "val", "train", "train"], [1, 1, 0, 0],
           [[0.3, 0.7], [0.4, 0.6], [0.5, 0.5], [0.5, 0.5]])
    out = combine_folds([f0, f1], main, str(tmp_path / "oos"))
    oos = load_npz(storage.read_bytes(out))
    assert out.endswith("oos.npz") and oos["uri"].tolist() == uris
    assert np.allclose(oos["prob"][:, 1], [0.9, 0.7, 0.8, 0.6, 0.3])
    assert oos["fold"].tolist() == [0, 1, 0, 1, -1] and not oos["in_sample"].any()
    assert oos["label"].tolist() == [0, 1, 0, 1, 0]


def test_out_of_sample_end_to_end_on_a_tiny_set(colour_set, tmp_path):
    from mlcore.folds import out_of_sample

    base = TrainConfig(manifest_uri=str(colour_set), output_uri=str(tmp_path / "run"), labels=LABELS,
                       arch="resnet18", image_size=32, epochs=1, batch_size=8, device="cpu", workers=0, seed=3)
    seen = set()
    uri = out_of_sample(base, k=2, progress=lambda p: seen.add(p["job"]))
    oos = load_npz(storage.read_bytes(uri))
    main = load_npz((tmp_path / "run" / "predictions.npz").read_bytes())
    assert oos["uri"].tolist() == main["uri"].tolist() and seen == {"main", "fold 0", "fold 1"}
    train = oos["split"] == "train"
    assert (oos["fold"][train] >= 0).all() and (oos["fold"][~train] == -1).all()
    assert not np.allclose(oos["prob"][train], main["prob"][train])
    assert np.allclose(oos["prob"][~train], main["prob"][~train])
    assert (tmp_path / "run" / "folds" / "folds.json").exists()
