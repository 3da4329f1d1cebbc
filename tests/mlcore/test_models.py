import pytest
import torch

from mlcore import models

from tests.conftest import SHARED_DATA, require_shared


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_heads_per_task_and_features(arch):
    m = models.build_model(arch, {"a": 3, "b": 5}, small_input=True).eval()
    f, logits = m(torch.randn(2, 3, 32, 32))
    assert f.shape == (2, m.feature_dim) and logits["a"].shape == (2, 3) and logits["b"].shape == (2, 5)


def test_all_architectures_build():
    dims = {a: models.build_model(a, 2).feature_dim for a in models.ARCHS}
    assert dims == {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048, "mobilenet_v2": 1280}


def test_small_input_stem():
    m = models.build_model("resnet18", 2, small_input=True, maxpool=False)
    assert m.backbone.conv1.kernel_size == (3, 3) and m.backbone.conv1.stride == (1, 1)
    assert isinstance(m.backbone.maxpool, torch.nn.Identity)


def test_weights_from_an_mlcore_state_dict_keep_heads_only_when_they_fit(tmp_path):
    a = models.build_model("resnet18", 3)
    torch.save(a.state_dict(), tmp_path / "a.pt")
    same = models.build_model("resnet18", 3, weights=str(tmp_path / "a.pt"))
    other = models.build_model("resnet18", 4, weights=str(tmp_path / "a.pt"))
    assert torch.equal(same.heads["label"].weight, a.heads["label"].weight)
    assert torch.equal(other.backbone.conv1.weight, a.backbone.conv1.weight)
    assert other.heads["label"].weight.shape == (4, 512)


def test_weights_name_not_in_cache_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match="never downloads"):
        models.build_model("resnet18", 2, weights="IMAGENET1K_V1")
    with pytest.raises(ValueError, match="has no weights"):
        models.build_model("resnet18", 2, weights="NOPE")


def test_wrong_backbone_weights_are_refused(tmp_path):
    torch.save(models.build_model("resnet18", 2).backbone.state_dict(), tmp_path / "r.pt")
    with pytest.raises(ValueError):
        models.build_model("resnet34", 2, weights=str(tmp_path / "r.pt"))


def test_imagenet_mobilenet_backbone_from_torchvision_keys():
    path = require_shared(SHARED_DATA / "weights" / "mobilenet_v2_imagenet_features_torchvision_keys.pth")
    m = models.build_model("mobilenet_v2", 4, weights=str(path))
    sd = torch.load(path, weights_only=True)
    assert torch.equal(m.backbone.features[0][0].weight, sd["features.0.0.weight"])
