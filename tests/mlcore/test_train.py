import csv
import json

import numpy as np
import pytest
import torch

from mlcore import storage
from mlcore.storage import load_npz
from mlcore.train import Cancelled, TrainConfig, class_weights, lr_lambda, train

from tests.mlcore.helpers import COLOURS, write_colour_set

LABELS = list(COLOURS)


def config(manifest, out, **kw):
    base = dict(manifest_uri=str(manifest), output_uri=str(out), labels=LABELS, arch="resnet18", image_size=32,
                epochs=2, batch_size=8, lr=0.05, warmup_epochs=0.5, device="cpu", workers=0, seed=3)
    return TrainConfig(**{**base, **kw})


def test_train_writes_every_output_and_reports_corrupt_images(colour_set, tmp_path):
    seen = []
    run = train(config(colour_set, tmp_path / "run"), progress=seen.append)
    out = tmp_path / "run"
    assert {p.name for p in out.iterdir()} >= {"model.pt", "run.json", "metrics.json", "predictions.npz",
                                               "embeddings.npz", "checkpoints"}
    saved = json.loads((out / "run.json").read_text())
    assert saved["labels"] == LABELS and saved["manifest"]["sha256"] == storage.sha256(colour_set.read_bytes())
    assert [h["epoch"] for h in saved["history"]] == [1, 2]
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_macro_f1", "images_per_s"} \
        <= set(saved["history"][0])
    assert saved["validation"]["source"].startswith("test split")
    assert saved["environment"]["torch"] == torch.__version__ and saved["environment"]["device"] == "cpu"
    reasons = {s["uri"].rsplit("/", 1)[-1]: s["reason"] for s in saved["skipped"]}
    assert set(reasons) == {"broken_0.jpg", "broken_1.jpg"}
    assert "empty file" in reasons["broken_1.jpg"]

    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"train", "test"}
    assert metrics["test"]["support"] == 9 and len(metrics["test"]["confusion"]) == 3
    assert set(metrics["test"]["per_class"]["red"]) == {"precision", "recall", "f1", "support"}

    pred = load_npz((out / "predictions.npz").read_bytes())
    assert len(pred["uri"]) == 33 and pred["prob"].shape == (33, 3)
    np.testing.assert_allclose(pred["prob"].sum(1), 1, atol=1e-4)
    assert set(pred["split"].tolist()) == {"train", "test"} and pred["label"].min() >= 0
    emb = load_npz((out / "embeddings.npz").read_bytes())
    assert emb["uri"].tolist() == pred["uri"].tolist()
    np.testing.assert_allclose(np.linalg.norm(emb["emb"].astype(np.float32), axis=1), 1, atol=1e-2)

    model_sd = torch.load(out / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in model_sd.values())
    phases = {p["phase"] for p in seen}
    assert phases == {"train", "eval", "embed"}
    assert set(seen[0]) == {"epoch", "epochs", "step", "steps", "loss", "images_per_s", "eta_s", "phase"}


def _weights(out):
    return torch.load(out / "model.pt", weights_only=True)


def test_resume_mid_epoch_gives_the_uninterrupted_result(tmp_path):
    manifest = write_colour_set(tmp_path / "d", per_class=6, test_per_class=2)
    train(config(manifest, tmp_path / "a", epochs=2, predict=False))
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 3  # after 3 steps: mid-epoch 2 (2 steps per epoch)

    cfg = config(manifest, tmp_path / "b", epochs=2, predict=False, checkpoint_every=1)
    with pytest.raises(Cancelled):
        train(cfg, should_stop=stop)
    assert not (tmp_path / "b" / "model.pt").exists()
    ck = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)
    assert ck["state"]["epoch"] == 1 and ck["state"]["step"] == 1
    run = train(config(manifest, tmp_path / "b", epochs=2, predict=False, checkpoint_every=1, resume=True))
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    ha = json.loads((tmp_path / "a" / "run.json").read_text())["history"]
    assert [h["val_macro_f1"] for h in run["history"]] == [h["val_macro_f1"] for h in ha]
    assert run["history"][1]["train_loss"] == pytest.approx(ha[1]["train_loss"], rel=1e-4)


def test_early_stopping_and_holdout_validation(tmp_path):
    manifest = write_colour_set(tmp_path / "d", per_class=6, test_per_class=1)
    run = train(config(manifest, tmp_path / "r", epochs=6, lr=0.0, warmup_epochs=0, patience=1, val_fraction=0.3,
                       freeze_backbone=True, predict=False))
    # lr 0 and a frozen backbone: nothing changes, so after epoch 1 no epoch is better; 1 + patience + 1 epochs run
    assert run["stopped_early"] and len(run["history"]) == 3 and run["best_epoch"] == 1
    assert "held out" in run["validation"]["source"] and run["validation"]["images"] > 0


def test_freeze_backbone_trains_only_the_head(colour_set, tmp_path):
    from mlcore.models import build_model

    train(config(colour_set, tmp_path / "f", epochs=1, freeze_backbone=True, predict=False, seed=0))
    sd = _weights(tmp_path / "f")
    torch.manual_seed(0)
    init = build_model("resnet18", 3).state_dict()
    assert torch.equal(sd["backbone.layer1.0.conv1.weight"], init["backbone.layer1.0.conv1.weight"])
    assert torch.equal(sd["backbone.bn1.running_mean"], init["backbone.bn1.running_mean"])
    assert not torch.equal(sd["heads.label.weight"], init["heads.label.weight"])


def test_multi_facet_training(tmp_path):
    manifest = write_colour_set(tmp_path / "d", per_class=4, test_per_class=1)
    rows = list(csv.DictReader(open(manifest)))
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["uri", "split", "colour", "warm"])
        for i, r in enumerate(rows):
            w.writerow([r["uri"], r["split"], r["label"], "" if i % 5 == 0 else ("yes" if r["label"] == "red" else "no")])
    run = train(config(manifest, tmp_path / "m", labels={"colour": LABELS, "warm": ["no", "yes"]}, epochs=1,
                       optimizer="adamw", lr=1e-3, label_smoothing=0.1))
    assert run["tasks"] == {"colour": LABELS, "warm": ["no", "yes"]}
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert set(metrics["tasks"]) == {"colour", "warm"}
    assert metrics["tasks"]["warm"]["train"]["support"] == sum(1 for i, r in enumerate(rows)
                                                              if r["split"] == "train" and i % 5)
    pred = load_npz((tmp_path / "m" / "predictions.npz").read_bytes())
    assert pred["colour.prob"].shape == (15, 3) and pred["warm.prob"].shape == (15, 2)
    assert (pred["warm.label"] == -1).sum() == 3 and pred["tasks"].tolist() == ["colour", "warm"]


def test_class_weights_and_schedule():
    w = class_weights(np.array([0, 0, 0, 1, -1]), 3)
    assert w[2] == 0 and w[1] == pytest.approx(3 * w[0]) and w[:2].mean() == pytest.approx(1)
    f = lr_lambda(2, 10)
    assert [f(0), f(1), f(2)] == [0.5, 1.0, 1.0] and f(9) < 0.05


def test_no_labelled_training_images_is_an_error(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("uri,split,label\nmissing.png,test,red\n")
    with pytest.raises(ValueError, match="no labelled"):
        train(config(manifest, tmp_path / "o"))
