"""Frozen backbones train from cached features: the backbone runs once per image (and view),
and the run's files are those of a run that ran the model on the images."""
import json

import numpy as np
import pytest
import torch

from mlcore import evaluate
from mlcore.storage import load_npz
from mlcore.train import Cancelled, TrainConfig, train

from tests.mlcore.helpers import COLOURS, write_colour_set


def config(manifest, out, **kw):
    base = dict(manifest_uri=str(manifest), output_uri=str(out), labels=list(COLOURS), arch="resnet18",
                image_size=32, epochs=3, batch_size=8, lr=0.05, warmup_epochs=0.5, device="cpu", workers=0, seed=3,
                freeze_backbone=True)
    return TrainConfig(**{**base, **kw})


def _count_backbone_images(monkeypatch):
    """Images the backbone sees, by patching the builder (the run builds its own model)."""
    import mlcore.train as mt

    seen = {"images": 0}
    build = mt.build_model

    def counting_build(*a, **kw):
        model = build(*a, **kw)
        model.backbone.register_forward_hook(lambda m, inp, out: seen.__setitem__("images", seen["images"] + len(out)))
        return model

    monkeypatch.setattr(mt, "build_model", counting_build)
    return seen


def test_cached_features_run_the_backbone_once_and_write_the_same_outputs(tmp_path, monkeypatch):
    manifest = write_colour_set(tmp_path / "d", per_class=6, test_per_class=2, corrupt=2)
    seen = _count_backbone_images(monkeypatch)
    progress = []
    run = train(config(manifest, tmp_path / "c"), progress=progress.append)
    readable = 3 * 8
    assert seen["images"] == readable  # every readable image once; 3 epochs and validation add nothing
    assert run["environment"]["cached_features"] and run["timing"]["features_s"] > 0
    assert {p["phase"] for p in progress} == {"features", "train"}
    assert {s["uri"].rsplit("/", 1)[-1] for s in run["skipped"]} == {"broken_0.jpg", "broken_1.jpg"}
    assert [h["epoch"] for h in run["history"]] == [1, 2, 3] and "val_macro_f1" in run["history"][0]

    out = tmp_path / "c"
    assert {p.name for p in out.iterdir()} >= {"model.pt", "run.json", "metrics.json", "predictions.npz",
                                               "embeddings.npz", "checkpoints"}
    pred = load_npz((out / "predictions.npz").read_bytes())
    emb = load_npz((out / "embeddings.npz").read_bytes())
    saved = json.loads((out / "metrics.json").read_text())
    # the same model run on the images (mlcore test) gives the cached run's predictions and metrics
    again = evaluate.test_run(str(out), output_uri=str(tmp_path / "again"), device="cpu")
    pred2 = load_npz((tmp_path / "again" / "predictions.npz").read_bytes())
    emb2 = load_npz((tmp_path / "again" / "embeddings.npz").read_bytes())
    assert pred["uri"].tolist() == pred2["uri"].tolist() and len(pred["uri"]) == readable
    np.testing.assert_allclose(pred["prob"], pred2["prob"], atol=1e-5)
    np.testing.assert_allclose(emb["emb"].astype(np.float32), emb2["emb"].astype(np.float32), atol=2e-3)
    assert again["metrics"]["test"]["confusion"] == saved["test"]["confusion"]


def test_cached_features_resume_mid_epoch_exactly(tmp_path):
    manifest = write_colour_set(tmp_path / "d", per_class=6, test_per_class=2)
    whole = train(config(manifest, tmp_path / "a", predict=False))
    with pytest.raises(Cancelled):
        train(config(manifest, tmp_path / "b", predict=False, checkpoint_every=1, stop_after_steps=3))
    resumed = train(config(manifest, tmp_path / "b", predict=False, checkpoint_every=1, resume=True))
    a = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "model.pt", weights_only=True)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    assert [h["val_macro_f1"] for h in resumed["history"]] == [h["val_macro_f1"] for h in whole["history"]]


def test_augmented_views_cost_one_backbone_pass_each(tmp_path, monkeypatch):
    manifest = write_colour_set(tmp_path / "d", per_class=4, test_per_class=1)
    seen = _count_backbone_images(monkeypatch)
    run = train(config(manifest, tmp_path / "v", feature_views=2, epochs=4, predict=False))
    # the eval view of train + test images, then 2 augmented views of the 12 train images; 4 epochs reuse them
    assert seen["images"] == 15 + 2 * 12
    assert len(run["history"]) == 4


def test_switching_the_cache_off_runs_the_backbone_every_epoch(tmp_path, monkeypatch):
    manifest = write_colour_set(tmp_path / "d", per_class=4, test_per_class=1)
    seen = _count_backbone_images(monkeypatch)
    run = train(config(manifest, tmp_path / "o", cache_features=False, epochs=2, predict=False))
    assert seen["images"] == 2 * (8 + 3)  # per epoch: one full batch of the 12 (drop_last) and validation
    assert not run["environment"]["cached_features"]
