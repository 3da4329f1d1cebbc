"""S3 in and out, against moto's server: images and manifest in a bucket, the run written to a prefix."""
import json

import numpy as np

from mlcore import data, storage
from mlcore.evaluate import predict
from mlcore.storage import load_npz
from mlcore.train import TrainConfig, train

from tests.mlcore.helpers import COLOURS, make_image


def test_train_from_s3_to_s3(s3):
    b = s3.bucket
    rows = ["uri,split,label"]
    n = 0
    for label, colour in COLOURS.items():
        for split, count in (("train", 4), ("test", 2)):
            for _ in range(count):
                s3.put_object(Bucket=b, Key=f"images/{n}.png", Body=make_image(colour, n))
                rows.append(f"images/{n}.png,{split},{label}")  # relative to the manifest's prefix
                n += 1
    rows.append(f"s3://{b}/images/gone.png,train,red")  # listed but never uploaded
    s3.put_object(Bucket=b, Key="manifest.csv", Body="\n".join(rows).encode())

    out = f"s3://{b}/runs/1"
    run = train(TrainConfig(manifest_uri=f"s3://{b}/manifest.csv", output_uri=out, labels=list(COLOURS),
                            arch="mobilenet_v2", image_size=32, epochs=1, batch_size=6, device="cpu", workers=0))
    keys = {o.uri.removeprefix(out + "/") for o in storage.list_files(out)}
    assert keys >= {"model.pt", "run.json", "metrics.json", "predictions.npz", "embeddings.npz",
                    "checkpoints/last.pt"}
    saved = json.loads(storage.read_bytes(out + "/run.json"))
    assert saved["manifest"]["uri"] == f"s3://{b}/manifest.csv"
    assert [s["uri"] for s in saved["skipped"]] == [f"s3://{b}/images/gone.png"]
    assert "NoSuchKey" in saved["skipped"][0]["reason"] or "404" in saved["skipped"][0]["reason"]
    pred = load_npz(storage.read_bytes(out + "/predictions.npz"))
    assert len(pred["uri"]) == 18 and pred["uri"][0].startswith(f"s3://{b}/images/")
    assert run["metrics"]["test"]["support"] == 6

    # every image was fetched once into the local content-addressed cache
    assert all(data.cached_path(u) is not None for u in pred["uri"])

    top = predict(out, f"s3://{b}/images/", topk=2, device="cpu")
    assert len(top) == 18 and len(top[0]["top"]) == 2
    assert abs(sum(p for _, p in top[0]["top"])) <= 1.0 + 1e-6
    assert np.isclose(sum(p for _, p in predict(out, f"s3://{b}/images/0.png", topk=3, device="cpu")[0]["top"]), 1,
                      atol=1e-4)
