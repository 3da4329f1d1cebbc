"""Training against an S3 that goes away (issue 11, item 9): a private moto server is stopped
in the middle of a small run (after the images are read, before the checkpoint and the
outputs are written) and brought back, or left down."""
import json
import logging

import pytest

from mlcore import storage
from mlcore.train import TrainConfig, train
from tests.mlcore.helpers import COLOURS, make_image
from tests.s3_outage import private_s3  # noqa: F401 - fixture


def _dataset(client, bucket) -> str:
    rows, n = ["uri,split,label"], 0
    for label, colour in COLOURS.items():
        for split, count in (("train", 3), ("test", 1)):
            for _ in range(count):
                client.put_object(Bucket=bucket, Key=f"images/{n}.png", Body=make_image(colour, n))
                rows.append(f"images/{n}.png,{split},{label}")
                n += 1
    client.put_object(Bucket=bucket, Key="manifest.csv", Body="\n".join(rows).encode())
    return f"s3://{bucket}/manifest.csv"


def _config(manifest: str, out: str) -> TrainConfig:
    return TrainConfig(manifest_uri=manifest, output_uri=out, labels=list(COLOURS), arch="mobilenet_v2",
                       image_size=32, epochs=1, batch_size=6, device="cpu", workers=0, prefetch_workers=2)


def _outage_at_first_step(server):
    """A progress callback that takes S3 down at the first training step (once)."""
    state = {"down": False}

    def progress(p):
        if p.get("phase") == "train" and not state["down"]:
            state["down"] = True
            server.stop()

    return progress, state


class _BackAfterFirstRetry(logging.Handler):
    """Brings S3 back 1.5 s after storage first reports a failed call: the outage is sure
    to meet a write however slow the machine is, and lasts beyond botocore's own connect."""

    def __init__(self, server):
        super().__init__(logging.WARNING)
        self.server, self.thread, self.first = server, None, None

    def emit(self, record):
        if self.thread is None and "S3 failed for" in record.getMessage():
            self.first = record.getMessage()
            self.thread = self.server.back_after(1.5)


def test_s3_down_mid_run_is_retried_and_the_run_completes(private_s3):
    server, client, bucket = private_s3
    manifest, out = _dataset(client, bucket), f"s3://{bucket}/runs/1"
    progress, state = _outage_at_first_step(server)
    back = _BackAfterFirstRetry(server)
    logger = logging.getLogger("mlcore.storage")
    logger.addHandler(back)
    try:
        run = train(_config(manifest, out), progress=progress)
    finally:
        logger.removeHandler(back)

    assert state["down"] and back.thread is not None
    back.thread.join()
    assert f"writing {out}/" in back.first  # a write met the outage, and was retried
    keys = {o.uri.removeprefix(out + "/") for o in storage.list_files(out)}
    assert keys >= {"model.pt", "run.json", "metrics.json", "predictions.npz", "checkpoints/last.pt"}
    saved = json.loads(storage.read_bytes(out + "/run.json"))
    assert saved["skipped"] == []  # no image was lost to the outage
    assert run["metrics"]["test"]["support"] == 3


def test_s3_down_for_good_fails_the_run_with_the_reason_and_no_finished_run_appears(private_s3, monkeypatch):
    server, client, bucket = private_s3
    monkeypatch.setenv("MLCORE_S3_RETRY_S", "1")
    manifest, out = _dataset(client, bucket), f"s3://{bucket}/runs/2"
    progress, state = _outage_at_first_step(server)
    with pytest.raises(storage.StorageUnavailable, match=f"writing {out}/"):
        train(_config(manifest, out), progress=progress)

    server.start()
    keys = {o.uri.removeprefix(out + "/") for o in storage.list_files(out)}
    assert not keys & {"run.json", "model.pt", "metrics.json", "predictions.npz"}, keys
