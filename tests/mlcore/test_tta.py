"""Test-time flips: a prediction is the mean of the image's and its left-right mirror's, whether
the model runs on the images or a frozen backbone's cached features feed the heads; training
is untouched, and suspects fold runs predict that way unless told not to."""
import numpy as np
import pytest
import torch
from PIL import Image

from mlcore import storage
from mlcore.data import ImageDataset, eval_crop
from mlcore.evaluate import infer
from mlcore.features import extract, head_infer
from mlcore.folds import fold_configs
from mlcore.models import build_model
from mlcore.storage import load_npz
from mlcore.train import TrainConfig, train

from tests.mlcore.helpers import COLOURS, write_colour_set

CPU = torch.device("cpu")


def two_halves(folder, n: int = 6) -> list[str]:
    """Images whose left and right halves differ, so that a mirror is another input."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    uris = []
    for i in range(n):
        a = np.zeros((32, 32, 3), np.uint8)
        a[:, :16], a[:, 16:] = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        Image.fromarray(a).save(folder / f"h{i}.png")
        uris.append(str(folder / f"h{i}.png"))
    return uris


@pytest.fixture
def views(tmp_path):
    uris = two_halves(tmp_path / "img")
    targets = np.full(len(uris), -1)
    torch.manual_seed(0)
    model = build_model("resnet18", 3, None, True)
    return (model, ImageDataset(uris, targets, eval_crop(32)), ImageDataset(uris, targets, eval_crop(32, mirror=True)),
            list(range(len(uris))))


def test_infer_with_flip_averages_each_image_and_its_mirror(views):
    model, plain, mirrored, idx = views
    a, b = infer(model, plain, idx, device=CPU), infer(model, mirrored, idx, device=CPU)
    both = infer(model, plain, idx, device=CPU, flip=True)
    (task,) = a["probs"]
    assert not np.allclose(a["probs"][task], b["probs"][task], atol=1e-4)  # the mirror is another input
    np.testing.assert_allclose(both["probs"][task], (a["probs"][task] + b["probs"][task]) / 2, atol=1e-5)
    np.testing.assert_allclose(both["features"], a["features"], atol=1e-6)  # the embedding is the image's own


def test_cached_features_keep_the_mirror_and_the_heads_average_it(views):
    model, plain, mirrored, idx = views
    cache = extract(model, plain, idx, device=CPU, batch_size=4, mirror_set=mirrored)
    only_mirror = extract(model, mirrored, idx, device=CPU, batch_size=4)
    torch.testing.assert_close(cache.mirror, only_mirror.eval)
    (task,) = model.heads
    a = head_infer(model, cache, idx)["probs"][task]
    b = head_infer(model, only_mirror, idx)["probs"][task]
    np.testing.assert_allclose(head_infer(model, cache, idx, flip=True)["probs"][task], (a + b) / 2, atol=1e-6)
    with pytest.raises(ValueError, match="mirror"):
        head_infer(model, only_mirror, idx, flip=True)


@pytest.mark.parametrize("frozen,workers", [(True, 2), (False, 0)])
def test_a_run_with_flips_trains_the_same_model_and_predicts_with_both_views(tmp_path, frozen, workers):
    """Loader workers > 0 too: the mirrored view is a dataset of its own that they must carry."""
    manifest = write_colour_set(tmp_path / "d", per_class=4, test_per_class=1)
    runs = {}
    for flip in (False, True):
        out = tmp_path / f"flip{flip}"
        train(TrainConfig(manifest_uri=str(manifest), output_uri=str(out), labels=list(COLOURS), arch="resnet18",
                          small_input=True, image_size=32, epochs=1, batch_size=4, device="cpu", workers=workers, seed=1,
                          freeze_backbone=frozen, tta_flip=flip))
        runs[flip] = (torch.load(out / "model.pt"), load_npz((out / "predictions.npz").read_bytes()))
    (w0, p0), (w1, p1) = runs[False], runs[True]
    assert all(torch.equal(w0[k], w1[k]) for k in w0)  # training is the same
    assert p0["uri"].tolist() == p1["uri"].tolist()
    assert not np.allclose(p0["prob"], p1["prob"], atol=1e-6)
    assert np.allclose(p1["prob"].sum(1), 1, atol=1e-5)


def test_fold_runs_predict_with_flips_unless_told_not_to(tmp_path):
    manifest = write_colour_set(tmp_path / "d", per_class=4, test_per_class=1)
    base = TrainConfig(manifest_uri=str(manifest), output_uri=storage.to_uri(str(tmp_path / "main")))
    assert base.tta_flip is False  # a plain run predicts each image once
    assert all(c.tta_flip for c in fold_configs(base, 2, storage.to_uri(str(tmp_path / "f"))))
    assert not any(c.tta_flip for c in fold_configs(base, 2, storage.to_uri(str(tmp_path / "g")), tta_flip=False))
