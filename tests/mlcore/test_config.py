"""mlcore.config: one declaration of the training options, read by the CLI and the app."""
import argparse
import dataclasses

import pytest

from mlcore import config
from mlcore.__main__ import parser


def test_every_field_is_described_and_what_a_user_sets_has_a_rule():
    assert list(config.OPTIONS) == [f.name for f in dataclasses.fields(config.TrainConfig)]
    for name in config.USER_OPTIONS:
        o = config.OPTIONS[name]
        assert o.help and o.kind in (int, float, bool, str), name
        if o.kind in (int, float):
            assert o.min is not None and o.max is not None, name  # the app bounds every number
    assert config.OPTIONS["arch"].choices is config.ARCHS
    assert config.TrainConfig().notes == {} and config.TrainConfig().notes is not config.TrainConfig().notes


def test_check_values_by_their_rule():
    out, errors = config.check({"epochs": "3", "lr": "", "amp": None, "freeze_backbone": "yes", "gpus": 1.5,
                                "batch_size": True, "arch": "vgg16", "image_size": 8, "maxpool": None})
    assert out["epochs"] == 3 and out["lr"] is None and out["amp"] is None and out["freeze_backbone"] is True
    assert errors == {"gpus": "must be an integer", "batch_size": "must be an integer",
                      "arch": "unknown arch 'vgg16'; choose one of " + ", ".join(config.ARCHS),
                      "image_size": "must be between 16 and 1024", "maxpool": "must be true or false"}


def test_the_command_line_is_generated_from_the_options():
    args = parser().parse_args(["train", "m.csv", "-o", "out", "--amp", "false", "--no-maxpool", "--epochs", "3",
                                "--freeze-backbone", "--lr", "0.01"])
    assert config.given(args) == {"manifest_uri": "m.csv", "output_uri": "out", "amp": False, "maxpool": False,
                                  "epochs": 3, "freeze_backbone": True, "lr": 0.01}
    cfg = config.TrainConfig(**config.given(args))
    assert cfg.batch_size == 64 and cfg.predict is True  # what was not given keeps its default

    p = argparse.ArgumentParser(exit_on_error=False)
    config.add_arguments(p, ["epochs", "optimizer"])
    with pytest.raises(argparse.ArgumentError, match="must be between 1 and 1000"):
        p.parse_args(["--epochs", "0"])
    with pytest.raises(argparse.ArgumentError, match="invalid choice"):
        p.parse_args(["--optimizer", "lion"])
