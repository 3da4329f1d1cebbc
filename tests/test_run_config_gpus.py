"""The app passes ``gpus`` (DistributedDataParallel processes) through to mlcore's TrainConfig."""
import dataclasses

import pytest

from labeling.services import runs
from mlcore.train import TrainConfig


def test_gpus_is_checked_and_reaches_train_config(db):
    assert runs.validate_config({"gpus": "2"})["gpus"] == 2
    for bad, message in ((0, "between"), (1.5, "integer"), ("many", "integer")):
        with pytest.raises(runs.RunConfigError) as e:
            runs.validate_config({"gpus": bad})
        assert message in e.value.errors["gpus"]
    assert "gpus" in {f.name for f in dataclasses.fields(TrainConfig)}  # what train_config passes it to
