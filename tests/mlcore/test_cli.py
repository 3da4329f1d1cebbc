"""The CLI end to end on a 500-image Fashion-MNIST subset (400 train, 100 test), with a resume."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from mlcore.__main__ import main
from mlcore.storage import load_npz

from tests.conftest import SHARED_DATA, require_shared
from tests.mlcore.helpers import REPO, read_idx

FM = SHARED_DATA / "fashion-mnist"
CLASSES = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]


@pytest.mark.parametrize("cmd", ["train", "test", "predict", "embed", "plot"])
def test_every_subcommand_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0 and "usage: python -m mlcore " + cmd in capsys.readouterr().out


def test_module_runs_as_a_program():
    out = subprocess.run([sys.executable, "-m", "mlcore", "--help"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0 and "train" in out.stdout and "plot" in out.stdout


@pytest.fixture(scope="module")
def fashion_subset(tmp_path_factory):
    require_shared(FM / "train-images-idx3-ubyte.gz")
    root = tmp_path_factory.mktemp("fm")
    images, labels = read_idx(FM / "train-images-idx3-ubyte.gz")[:500], read_idx(FM / "train-labels-idx1-ubyte.gz")
    (root / "img").mkdir()
    lines = ["uri,split,label"]
    for i, img in enumerate(images):
        Image.fromarray(img).save(root / "img" / f"{i:03d}.png")
        lines.append(f"img/{i:03d}.png,{'train' if i < 400 else 'test'},{CLASSES[labels[i]]}")
    (root / "img" / "truncated.png").write_bytes((root / "img" / "000.png").read_bytes()[:60])
    lines.append("img/truncated.png,train,bag")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    (root / "labels.json").write_text(json.dumps(CLASSES))
    return root


def test_train_stop_resume_test_predict_embed_plot(fashion_subset, tmp_path, capsys):
    m, out = fashion_subset / "manifest.csv", tmp_path / "run"
    args = ["train", str(m), "-o", str(out), "--labels-file", str(fashion_subset / "labels.json"),
            "--arch", "resnet18", "--small-input", "--image-size", "28", "--epochs", "2", "--batch-size", "32",
            "--optimizer", "adamw", "--lr", "0.003", "--warmup-epochs", "0.2", "--device", "cpu", "--workers", "0",
            "--checkpoint-every", "5", "-q"]
    assert main(args + ["--stop-after-steps", "17"]) == 3  # stopped mid-epoch 2 (12 steps an epoch)
    ck = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert (ck["state"]["epoch"], ck["state"]["step"], ck["state"]["global_step"]) == (1, 5, 17)
    assert not (out / "run.json").exists()

    assert main(args + ["--resume"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert [h["epoch"] for h in run["history"]] == [1, 2] and run["config"]["resume"]
    assert [s["uri"].rsplit("/", 1)[-1] for s in run["skipped"]] == ["truncated.png"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["support"] == 400 and metrics["test"]["support"] == 100
    assert metrics["test"]["accuracy"] > 0.2  # chance is 0.1: it learned something
    assert len(metrics["test"]["confusion"]) == 10 and set(metrics["test"]["per_class"]) == set(CLASSES)
    pred = load_npz((out / "predictions.npz").read_bytes())
    assert pred["prob"].shape == (500, 10) and pred["labels"].tolist() == CLASSES
    assert np.mean(pred["correct"][pred["split"] == "test"]) == pytest.approx(metrics["test"]["accuracy"])
    emb = load_npz((out / "embeddings.npz").read_bytes())
    assert emb["emb"].shape == (500, 512) and emb["uri"].tolist() == pred["uri"].tolist()
    capsys.readouterr()

    assert main(["test", "--run", str(out), "-o", str(tmp_path / "again"), "--device", "cpu", "-q"]) == 0
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["test"]["accuracy"] == pytest.approx(metrics["test"]["accuracy"])

    capsys.readouterr()
    assert main(["predict", "--run", str(out), str(fashion_subset / "img" / "401.png"), "-k", "3",
                 "--device", "cpu"]) == 0
    item = json.loads(capsys.readouterr().out)
    assert len(item["top"]) == 3 and item["top"][0][0] in CLASSES

    assert main(["embed", "--run", str(out), "--input", str(fashion_subset / "img"), "-o", str(tmp_path / "e"),
                 "--device", "cpu", "-q"]) == 0
    e = load_npz((tmp_path / "e" / "embeddings.npz").read_bytes())
    assert e["emb"].shape == (500, 512)  # the truncated file is left out
    np.testing.assert_allclose(np.linalg.norm(e["emb"].astype(np.float32), axis=1), 1, atol=1e-2)

    assert main(["plot", "--run", str(out), "-o", str(tmp_path / "curves.png")]) == 0
    assert Image.open(tmp_path / "curves.png").size[0] > 500


def test_mlcore_imports_nothing_from_the_web_app_nor_boto3_until_s3_is_used():
    code = ("import sys, mlcore.train, mlcore.evaluate, mlcore.embed, mlcore.plot, mlcore.__main__; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'labeling', 'boto3', 'celery')); "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
