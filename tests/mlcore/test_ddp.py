"""Several processes: ``gpus: 2`` trains under torchrun with DDP, here on the CPU with gloo.

The backbone is frozen without feature caching, so batch norm runs in eval mode and the
2-process run must give the one-process weights (up to float summation order): that checks
the sharding of each global batch, the all-reduced loss denominators and DDP's averaging.
The 2-process run is stopped mid-epoch and resumed, so the same test checks exact resume.
"""
import json

import pytest
import torch

from mlcore.storage import load_npz
from mlcore.train import Cancelled, TrainConfig, train

from tests.mlcore.helpers import COLOURS, write_colour_set


def config(manifest, out, **kw):
    base = dict(manifest_uri=str(manifest), output_uri=str(out), labels=list(COLOURS), arch="resnet18",
                image_size=32, epochs=2, batch_size=8, lr=0.05, warmup_epochs=0.5, device="cpu", workers=0, seed=3,
                freeze_backbone=True, cache_features=False, checkpoint_every=1)
    return TrainConfig(**{**base, **kw})


def test_two_processes_stop_resume_and_match_one_process(tmp_path):
    manifest = write_colour_set(tmp_path / "d", per_class=6, test_per_class=2, corrupt=1)
    one = train(config(manifest, tmp_path / "one"))

    seen = []
    with pytest.raises(Cancelled, match="epoch 2, step 1"):
        train(config(manifest, tmp_path / "two", gpus=2, stop_after_steps=3), progress=seen.append)
    assert any(p["phase"] == "train" for p in seen)  # rank 0's progress reached this process
    ck = torch.load(tmp_path / "two" / "checkpoints" / "last.pt", weights_only=True)
    assert (ck["state"]["epoch"], ck["state"]["step"]) == (1, 1)
    assert not (tmp_path / "two" / "model.pt").exists()

    two = train(config(manifest, tmp_path / "two", gpus=2, resume=True))
    assert two["environment"]["processes"] == 2 and one["environment"]["processes"] == 1
    a = torch.load(tmp_path / "one" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "two" / "model.pt", weights_only=True)
    assert a.keys() == b.keys()  # the plain model's keys, not DDP's "module." ones
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    assert [h["train_loss"] for h in two["history"]] == pytest.approx([h["train_loss"] for h in one["history"]],
                                                                      rel=1e-4)
    assert two["skipped"] == one["skipped"] and len(one["skipped"]) == 1  # the corrupt image, seen by one rank
    m1, m2 = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in ("one", "two"))
    assert m1["test"]["confusion"] == m2["test"]["confusion"] and m1["train"]["accuracy"] == m2["train"]["accuracy"]
    p1, p2 = (load_npz((tmp_path / r / "predictions.npz").read_bytes()) for r in ("one", "two"))
    assert p1["uri"].tolist() == p2["uri"].tolist()
    torch.testing.assert_close(torch.from_numpy(p1["prob"]), torch.from_numpy(p2["prob"]), rtol=1e-3, atol=1e-4)
    c1 = torch.load(tmp_path / "one" / "checkpoints" / "last.pt", weights_only=True)
    c2 = torch.load(tmp_path / "two" / "checkpoints" / "last.pt", weights_only=True)
    assert c1.keys() == c2.keys() and c1["model"].keys() == c2["model"].keys()
    assert c1["state"]["global_step"] == c2["state"]["global_step"]


def test_a_bad_manifest_fails_before_any_process_starts(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("uri,split,label\na.png,nowhere,red\n")
    with pytest.raises(ValueError, match="split 'nowhere'"):
        train(config(manifest, tmp_path / "o", gpus=2))
    with pytest.raises(ValueError, match="gpus"):
        train(config(manifest, tmp_path / "o", gpus=0))
