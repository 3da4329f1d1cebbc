"""The K fold runs of a frozen backbone share one backbone pass through the FeatureStore:
fold 1 computes the features, the other folds read them, and they train the same heads as
folds that computed their own."""
import numpy as np
import pytest
import torch

from mlcore import storage
from mlcore.folds import fold_configs
from mlcore.storage import load_npz
from mlcore.train import TrainConfig, train

from tests.mlcore.helpers import COLOURS, make_image, write_colour_set
from tests.mlcore.test_features import _count_backbone_images


def base(manifest, out, **kw):
    return TrainConfig(**{**dict(manifest_uri=str(manifest), output_uri=str(out), labels=list(COLOURS),
                                 arch="resnet18", image_size=32, epochs=2, batch_size=8, lr=0.05,
                                 warmup_epochs=0.5, device="cpu", workers=0, seed=3, freeze_backbone=True), **kw})


def _folds(manifest, out, k=3, **kw):
    return fold_configs(base(manifest, out, **kw), k, storage.to_uri(out))


def test_folds_after_the_first_run_no_backbone_and_train_what_a_fresh_pass_gives(tmp_path, monkeypatch):
    manifest = write_colour_set(tmp_path / "d", per_class=5, test_per_class=1, corrupt=1)
    readable = 3 * 5  # the fold manifests hold the train rows; the broken one is skipped
    readable *= 2  # and fold runs predict with test-time flips: each image and its mirror
    seen = _count_backbone_images(monkeypatch)
    per_fold, runs = [], []
    for c in _folds(manifest, tmp_path / "shared"):
        before = seen["images"]
        runs.append(train(c))
        per_fold.append(seen["images"] - before)
    assert per_fold == [readable, 0, 0]
    assert [r["timing"]["features_from_store"] for r in runs] == [0, readable, readable]
    assert all(len(r["skipped"]) == 1 for r in runs)  # the broken image is reported by every fold

    monkeypatch.setenv("MLCORE_FEATURE_STORE", "off")
    for shared, c in zip(runs, _folds(manifest, tmp_path / "alone")):
        before = seen["images"]
        alone = train(c)
        assert seen["images"] - before == readable and alone["timing"]["features_from_store"] == 0
        a = load_npz(storage.read_bytes(storage.join(shared["config"]["output_uri"], "predictions.npz")))
        b = load_npz(storage.read_bytes(storage.join(c.output_uri, "predictions.npz")))
        assert a["uri"].tolist() == b["uri"].tolist()
        np.testing.assert_allclose(a["prob"], b["prob"], atol=1e-5)
        assert [h["val_accuracy"] for h in shared["history"]] == [h["val_accuracy"] for h in alone["history"]]


def test_augmented_views_are_stored_per_seed_and_resume_reads_them(tmp_path, monkeypatch):
    manifest = write_colour_set(tmp_path / "d", per_class=4, test_per_class=1)
    seen = _count_backbone_images(monkeypatch)
    first, second = _folds(manifest, tmp_path / "f", k=2, feature_views=2, predict=False)
    train(first)
    n_first = seen["images"]
    assert n_first == 12 + 2 * len(np.flatnonzero(np.array(_splits(first)) == "train"))
    train(second)
    # the eval view of all 12 is stored; fold 2's training views are other images (or the same
    # images with the same seeds: row order is the same), so only its new (row, seed) pairs run
    new_rows = set(np.flatnonzero(np.array(_splits(second)) == "train")) - \
        set(np.flatnonzero(np.array(_splits(first)) == "train"))
    assert seen["images"] - n_first == 2 * len(new_rows)


def _splits(config):
    from mlcore.manifest import read_manifest

    return read_manifest(config.manifest_uri, config.labels).splits


def test_a_changed_image_or_other_weights_are_computed_again(tmp_path, monkeypatch):
    manifest = write_colour_set(tmp_path / "d", per_class=3, test_per_class=1)
    seen = _count_backbone_images(monkeypatch)
    train(base(manifest, tmp_path / "a", predict=False))
    assert seen["images"] == 12
    train(base(manifest, tmp_path / "b", predict=False))
    assert seen["images"] == 12  # everything read
    (tmp_path / "d" / "img" / "red_000.png").write_bytes(make_image((255, 0, 0), 999))
    train(base(manifest, tmp_path / "c", predict=False))
    assert seen["images"] == 13  # the changed file only
    train(base(manifest, tmp_path / "e", predict=False, seed=4))  # other random weights: another backbone
    assert seen["images"] == 25


def test_a_stop_while_another_run_holds_the_lock_cancels(tmp_path):
    from mlcore.features import FeatureStore, Stopped
    from mlcore.models import build_model

    torch.manual_seed(0)
    store = FeatureStore.for_model(build_model("resnet18", 3), device=torch.device("cpu"), amp=False,
                                   channels_last=False)
    with store.locked():
        with pytest.raises(Stopped):
            with store.locked(should_stop=lambda: True):
                pass
