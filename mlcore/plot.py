"""Loss and F1 curves of a run, from its ``run.json``, to one PNG."""
from __future__ import annotations

import io
import json

from . import storage


def plot_run(run_uri: str, output: str | None = None) -> str:
    """Draw train/validation loss and validation macro-F1 (and accuracy) per epoch; returns the PNG's URI
    (default ``<run>/curves.png``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = json.loads(storage.read_bytes(storage.join(run_uri, "run.json")))
    hist = run["history"]
    epochs = [h["epoch"] for h in hist]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    ax1.plot(epochs, [h["train_loss"] for h in hist], "o-", label="train")
    if any("val_loss" in h for h in hist):
        ax1.plot(epochs, [h.get("val_loss") for h in hist], "o-", label=f"validation ({run['validation']['source']})")
    ax1.set(title="loss", xlabel="epoch")
    ax1.legend(fontsize=8)
    ax2.plot(epochs, [h["train_accuracy"] for h in hist], "o--", label="train accuracy")
    if any("val_macro_f1" in h for h in hist):
        ax2.plot(epochs, [h.get("val_macro_f1") for h in hist], "o-", label="validation macro-F1")
        ax2.plot(epochs, [h.get("val_accuracy") for h in hist], "o-", label="validation accuracy")
    if run.get("best_epoch"):
        ax2.axvline(run["best_epoch"], color="grey", lw=0.8, ls=":")
    ax2.set(title="F1 / accuracy", xlabel="epoch", ylim=(0, 1))
    ax2.legend(fontsize=8)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.suptitle(f"{run['config']['arch']} on {run['manifest']['uri'].rsplit('/', 1)[-1]}", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    out = storage.to_uri(output) if output and not storage.is_s3(output) else (output or storage.join(run_uri, "curves.png"))
    storage.write_bytes(out, buf.getvalue(), "image/png")
    return out
