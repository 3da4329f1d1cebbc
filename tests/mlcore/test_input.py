"""The training input path: JPEGs decoded at the model's size, uint8 from the loader, flips and
normalisation on the device; the same crops, flips and corrupt-image reasons as before."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from mlcore import data, storage
from mlcore.data import ImageDataset, collate, decode_at, eval_crop, to_input, train_crop
from mlcore.images import CorruptImage, decode


def _photo(size=(1600, 1200), seed=0, fmt="JPEG", **kw) -> bytes:
    """A smooth picture (resizing it is well defined) with some detail."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([(xx * 255 / w), (yy * 255 / h), ((xx + yy) * 127 / (w + h) + 64)], -1)
    arr = arr + rng.normal(0, 3, arr.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, fmt, **kw)
    return buf.getvalue()


def test_large_jpegs_are_decoded_at_the_size_the_model_needs():
    img = decode_at(_photo(), 224)
    assert img.mode == "RGB" and img.size == (400, 300)  # libjpeg's 1/4 scale: still >= 224 on each side
    assert decode_at(_photo(), 600).size == (800, 600)
    assert decode_at(_photo((300, 200), fmt="PNG"), 64).size == (300, 200)  # not a JPEG: full decode


def test_exif_rotation_holds_on_the_fast_path():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    raw = _photo((800, 400), exif=exif.tobytes())
    assert decode(raw).size == (400, 800)
    assert decode_at(raw, 100).size == (100, 200)


@pytest.mark.parametrize("raw", [b"", b"\xff\xd8\xff\xe0 not a jpeg", _photo()[:5000]])
def test_corrupt_images_get_the_reason_decode_gives(raw):
    with pytest.raises(CorruptImage) as fast:
        decode_at(raw, 224)
    with pytest.raises(CorruptImage) as plain:
        decode(raw)
    assert fast.value.reason == plain.value.reason


def _dataset(tmp_path, raw, transform):
    p = tmp_path / "x.img"
    p.write_bytes(raw)
    return ImageDataset([storage.to_uri(p)], np.array([0]), transform)


def test_eval_input_matches_the_float_transform(tmp_path):
    raw = _photo((96, 72), fmt="PNG")
    fast = collate([_dataset(tmp_path, raw, eval_crop(32))[0]])
    assert fast["image"].dtype == torch.uint8 and fast["image"].shape == (1, 32, 32, 3)  # a quarter of float32
    x = to_input(fast, torch.device("cpu"))
    ref = _dataset(tmp_path, raw, data.eval_transform(32))[0]["image"]
    assert x.shape == (1, 3, 32, 32) and x.is_contiguous()
    torch.testing.assert_close(x[0], ref, atol=0.1, rtol=0)  # same crop; resize rounding differs slightly
    assert to_input(fast, torch.device("cpu"), channels_last=True).is_contiguous(memory_format=torch.channels_last)


def test_training_crops_and_flips_are_the_seeded_ones_of_train_transform(tmp_path):
    raw = _photo((96, 72), fmt="PNG")
    fast, ref = _dataset(tmp_path, raw, train_crop(32)), _dataset(tmp_path, raw, data.train_transform(32))
    flips = set()
    for seed in range(8):
        s = fast[(0, seed)]
        flips.add(s["flip"])
        x = to_input(collate([s]), torch.device("cpu"))[0]
        torch.testing.assert_close(x, ref[(0, seed)]["image"], atol=0.1, rtol=0)
        assert torch.equal(fast[(0, seed)]["image"], s["image"])  # reproducible per sample seed
    assert flips == {True, False}


def test_corrupt_files_stay_sentinels_on_the_fast_path(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 nope")
    ds = ImageDataset([storage.to_uri(tmp_path / "bad.jpg")], np.array([0]), train_crop(32))
    batch = collate([ds[(0, 1)]])
    assert "image" not in batch and "damaged image data" in batch["skipped"][0][1]
