"""Training: one readable loop (:func:`fit`) and the manifest-to-results run (:func:`train`).

``train(config)`` reads the manifest, trains, then predicts, scores and embeds every
image of the manifest in one pass and writes, under ``config.output_uri``:
``model.pt`` (state_dict), ``run.json``, ``metrics.json``, ``predictions.npz``,
``embeddings.npz`` and ``checkpoints/last.pt``.

Resuming continues from ``checkpoints/last.pt`` with the result of an uninterrupted
run: the data order is a function of (seed, epoch) and each image's augmentation is
seeded by (seed, epoch, index), so a restart mid-epoch replays exactly what remains.
"""
from __future__ import annotations

import io
import json
import math
import os
import platform
import time
from dataclasses import asdict
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from . import storage
from .config import TrainConfig  # declared with its options in mlcore.config; imported from here too
from .data import (EpochBatches, ImageDataset, collate, eval_crop, holdout, prefetch, read_manifest, to_input,
                   train_crop)
from .evaluate import (autocast, classification_metrics, infer, npz_bytes, prediction_arrays,
                       split_metrics)
from .features import Stopped, batch_rows, extract, head_infer
from .models import build_model, set_backbone_trainable

Progress = Callable[[dict], None]


class Cancelled(Exception):
    """``should_stop()`` returned true; the latest state is in ``checkpoints/last.pt``."""


# --------------------------------------------------------------------------- helpers

def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def default_workers(device: torch.device) -> int:
    cpus = os.cpu_count() or 1
    if device.type == "cuda":
        return min(16, cpus)
    return 0 if cpus <= 2 else min(4, cpus // 2)


def environment(device: torch.device) -> dict:
    import torchvision

    env = {"python": platform.python_version(), "torch": torch.__version__,
           "torchvision": torchvision.__version__, "platform": platform.platform(),
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


def class_weights(targets: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, mean 1 over the classes present; absent classes weigh 0."""
    counts = np.bincount(targets[targets >= 0], minlength=num_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1), 0.0)
    present = w > 0
    if present.any():
        w[present] /= w[present].mean()
    return torch.tensor(w, dtype=torch.float32)


def lr_lambda(warmup_steps: int, total_steps: int):
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, total_steps - warmup_steps)))
    return f


def make_optimizer(config: TrainConfig, params):
    if config.optimizer == "sgd":
        lr = config.lr if config.lr is not None else 0.1 * config.batch_size / 256
        wd = config.weight_decay if config.weight_decay is not None else 1e-4
        return torch.optim.SGD(params, lr=lr, momentum=config.momentum, nesterov=config.momentum > 0,
                               weight_decay=wd)
    if config.optimizer == "adamw":
        lr = config.lr if config.lr is not None else 1e-3
        wd = config.weight_decay if config.weight_decay is not None else 0.05
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    raise ValueError(f"unknown optimizer {config.optimizer!r} (sgd or adamw)")


def save_torch(uri: str, obj) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    storage.write_bytes(uri, buf.getvalue())


def load_torch(uri: str):
    return torch.load(io.BytesIO(storage.read_bytes(uri)), map_location="cpu", weights_only=True)


def write_json(uri: str, obj) -> None:
    storage.write_bytes(uri, json.dumps(obj, indent=1, default=_json_default).encode(), "application/json")


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def validation_scores(result: dict, targets: np.ndarray, tasks: dict[str, list[str]]) -> dict:
    """Loss, accuracy and macro-F1 of an :func:`infer` result, averaged over tasks."""
    per_task = {}
    for j, (t, labels) in enumerate(tasks.items()):
        y = targets[result["index"], j]
        keep = y >= 0
        p = result["probs"][t][keep]
        if not keep.any():
            continue
        m = classification_metrics(y[keep], p.argmax(1), labels)
        loss = float(-np.log(np.clip(p[np.arange(len(p)), y[keep]], 1e-12, None)).mean())
        per_task[t] = {"loss": loss, "accuracy": m["accuracy"], "macro_f1": m["macro"]["f1"]}
    if not per_task:
        return {}
    mean = {k: float(np.mean([v[k] for v in per_task.values()])) for k in ("loss", "accuracy", "macro_f1")}
    return {**mean, "tasks": per_task} if len(per_task) > 1 else mean


# --------------------------------------------------------------------------- the loop

def task_weights(config: TrainConfig, targets: np.ndarray, train_idx: np.ndarray, tasks: dict,
                 device: torch.device) -> list[torch.Tensor]:
    """Per task, the class weights of the loss (ones unless ``class_weights`` is ``inverse``)."""
    out = []
    for j, labels in enumerate(tasks.values()):
        w = class_weights(targets[train_idx, j], len(labels)) if config.class_weights == "inverse" \
            else torch.ones(len(labels))
        out.append(w.to(device))
    return out


def batch_loss(heads: list[torch.Tensor], y: torch.Tensor, weights: list[torch.Tensor], smoothing: float,
               dist=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(this process's loss, images in the global batch): each task's weighted mean cross-entropy
    over the labelled images of the global batch, summed over tasks.

    The denominators (the sum of the labelled images' class weights, per task) are computed on
    the device, so there is no host sync and a batch without labels for a task adds 0 instead
    of NaN; in a data-parallel run they are all-reduced, so each process's loss is its share of
    the global batch's mean and DDP's averaged gradient is the one-process gradient.
    """
    sums, dens = [], []
    for j, (lg, w) in enumerate(zip(heads, weights)):
        yj = y[:, j]
        sums.append(F.cross_entropy(lg.float(), yj, weight=w, ignore_index=-1, label_smoothing=smoothing,
                                    reduction="sum"))
        dens.append((w[yj.clamp(min=0)] * (yj >= 0)).sum())
    den = torch.stack([*dens, torch.full((), float(len(y)), device=y.device)])  # a fill, not a host copy
    if dist is not None:
        dist.all_reduce(den)
    loss = sum(s / d.clamp(min=1e-12) for s, d in zip(sums, den[:-1]))
    return loss, den[-1]


def fit(config: TrainConfig, model, tasks: dict[str, list[str]], train_set, train_idx, val_set=None,
        val_idx=None, *, progress: Progress | None = None, should_stop: Callable[[], bool] | None = None,
        skipped: dict | None = None, max_steps: int | None = None, features=None, dist=None) -> dict:
    """Train ``model`` in place on ``train_set[train_idx]``; validate on ``val_set[val_idx]`` each epoch.

    ``skipped`` (index -> reason) collects unreadable images. ``max_steps`` stops after that
    many steps in total (benchmarks). ``features`` (a :class:`mlcore.features.FeatureCache`):
    train and validate only the heads, on cached backbone features. ``dist``
    (:class:`mlcore.distributed.Dist`): this process's share of a data-parallel run. Returns
    history, best epoch and timings.

    The step never waits for the device: losses and accuracy are summed on it and read at
    progress intervals, checkpoints and epoch ends.
    """
    device = dist.device if dist is not None else resolve_device(config.device)
    amp = config.amp if config.amp is not None else device.type == "cuda"
    channels_last = config.channels_last if config.channels_last is not None else device.type == "cuda"
    main = dist is None or dist.main
    world, rank = (dist.world, dist.rank) if dist is not None else (1, 0)
    workers = config.workers if config.workers is not None else \
        -(-default_workers(device) // world)  # the machine's cores shared among the processes
    skipped = {} if skipped is None else skipped
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick its fastest kernels once
    torch.manual_seed(config.seed)

    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    set_backbone_trainable(model, not config.freeze_backbone)
    params = [p for p in model.parameters() if p.requires_grad]
    if features is not None:
        def step_model(f):
            return None, {t: h(f) for t, h in model.heads.items()}
    else:
        net = dist.wrap(model) if dist is not None else model
        step_model = torch.compile(net) if config.compile else net

    targets = train_set.targets.numpy() if hasattr(train_set.targets, "numpy") else np.asarray(train_set.targets)
    train_idx = np.asarray(train_idx, dtype=np.int64)
    weights = task_weights(config, targets, train_idx, tasks, device)

    sampler = EpochBatches(train_idx, config.batch_size, shuffle=True, seed=config.seed,
                           drop_last=len(train_idx) > config.batch_size, rank=rank, world=world)
    steps = len(sampler)
    if features is None:
        loader = DataLoader(train_set, batch_sampler=sampler, num_workers=workers, collate_fn=collate,
                            pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    else:
        all_targets = torch.as_tensor(targets, device=device)
    has_val = val_set is not None and val_idx is not None and len(val_idx) > 0
    eval_bs = config.eval_batch_size or config.batch_size * 2
    val_loader = None
    if has_val and features is None and main:  # built once: its workers live as long as the run
        val_loader = DataLoader(val_set, batch_sampler=EpochBatches(val_idx, eval_bs, shuffle=False),
                                num_workers=workers, collate_fn=collate, pin_memory=device.type == "cuda",
                                persistent_workers=workers > 0)
    optimizer = make_optimizer(config, params)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(round(config.warmup_epochs * steps), config.epochs * steps))

    out = config.output_uri
    ckpt_uri = storage.join(out, "checkpoints", "last.pt") if out else None
    best_uri = storage.join(out, "checkpoints", "best.pt") if out else None
    state = {"epoch": 0, "step": 0, "global_step": 0, "history": [], "best_f1": -1.0, "best_epoch": None,
             "bad_epochs": 0, "running": {"loss": 0.0, "correct": 0, "seen": 0, "train_s": 0.0}}
    if config.resume and ckpt_uri and storage.exists(ckpt_uri):
        ck = load_torch(ckpt_uri)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        state = ck["state"]
        skipped.update({int(k): v for k, v in ck.get("skipped", {}).items()})

    def checkpoint():
        if dist is not None:
            skipped.update(dist.merge(skipped))
        if ckpt_uri and main:
            save_torch(ckpt_uri, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                  "scheduler": scheduler.state_dict(), "state": state,
                                  "skipped": {str(k): v for k, v in skipped.items()}})

    def batches(epoch):
        if features is None:
            yield from loader
            return
        feats = features.train_features(epoch)
        for keys in sampler:
            rows = batch_rows(keys)
            rows = (rows.pin_memory() if device.type == "cuda" else rows).to(device, non_blocking=True)
            yield {"skipped": [], "image": feats[rows], "target": all_targets[rows]}

    blank = None
    t_run = time.perf_counter()
    run_steps = 0
    stopped_early = state.get("stopped_early", False)
    while state["epoch"] < config.epochs and not stopped_early:
        epoch = state["epoch"]
        sampler.set_epoch(epoch, state["step"])
        model.train()
        if config.freeze_backbone:
            model.backbone.eval()
        run = state["running"]
        sums = torch.zeros(3, device=device)  # loss x images, correct, images: summed on the device
        t_epoch, t_report = time.perf_counter(), 0.0
        for step, batch in enumerate(batches(epoch), start=state["step"]):
            stop = should_stop is not None and should_stop()
            if dist is not None:
                stop = dist.agree(stop)
            if stop or (config.stop_after_steps and state["global_step"] >= config.stop_after_steps):
                _flush(run, sums, t_epoch, dist)
                state["step"] = step
                checkpoint()
                raise Cancelled(f"cancelled at epoch {epoch + 1}, step {step}")
            skipped.update({int(i): r for i, r in batch["skipped"]})
            if "image" not in batch and dist is not None:  # every rank must step: a blank image, no label
                if blank is None:
                    blank = {"image": torch.zeros(1, config.image_size, config.image_size, 3, dtype=torch.uint8),
                             "target": torch.full((1, len(tasks)), -1, dtype=torch.long)}
                batch = {**batch, **blank}
            if "image" in batch:
                x = batch["image"] if features is not None else to_input(batch, device, channels_last)
                y = batch["target"].to(device, non_blocking=True)
                with autocast(device, amp and features is None):
                    _, logits = step_model(x)
                    heads = list(logits.values())
                loss, n_global = batch_loss(heads, y, weights, config.label_smoothing, dist)
                optimizer.zero_grad(set_to_none=True)
                (loss * world).backward()  # DDP averages over the world; the sum of the shares is wanted
                optimizer.step()
                sums += torch.stack([loss.detach() * n_global, (heads[0].argmax(1) == y[:, 0]).sum().float(),
                                     torch.full((), float(len(y)), device=device)])
            scheduler.step()
            state["global_step"] += 1
            run_steps += 1
            t_report = _report(progress, main, t_report, run, sums, world, t_epoch, t_run, run_steps,
                               epoch, step, steps, config.epochs)
            if config.checkpoint_every and state["global_step"] % config.checkpoint_every == 0 \
                    and step + 1 < steps:
                _flush(run, sums, t_epoch, dist)
                t_epoch = time.perf_counter()
                state["step"] = step + 1
                checkpoint()
            if max_steps and run_steps >= max_steps:
                break
        _flush(run, sums, t_epoch, dist)
        if max_steps and run_steps >= max_steps and state["global_step"] % steps:
            break  # a benchmark's step budget ran out mid-epoch
        entry = {"epoch": epoch + 1, "train_loss": run["loss"] / max(1, run["seen"]),
                 "train_accuracy": run["correct"] / max(1, run["seen"]),
                 "images_per_s": run["seen"] / max(1e-9, run["train_s"]), "train_s": run["train_s"],
                 "lr": optimizer.param_groups[0]["lr"]}
        if has_val and main:
            if features is not None:
                res = head_infer(model, features, val_idx)
            else:
                res = infer(model, val_set, val_idx, device=device, batch_size=eval_bs, workers=workers, amp=amp,
                            channels_last=channels_last, progress=progress, epoch=epoch + 1, epochs=config.epochs,
                            loader=val_loader)
            skipped.update({int(i): r for i, r in res["skipped"]})
            scores = validation_scores(res, val_set.targets.numpy(), tasks)
            entry.update({f"val_{k}": v for k, v in scores.items()})
            f1 = scores.get("macro_f1", -1.0)
            if f1 > state["best_f1"]:
                state["best_f1"], state["best_epoch"], state["bad_epochs"] = f1, epoch + 1, 0
                if config.patience is not None and best_uri:
                    save_torch(best_uri, model.state_dict())
            else:
                state["bad_epochs"] += 1
                if config.patience is not None and state["bad_epochs"] > config.patience:
                    stopped_early = True
        state["history"].append(entry)
        state.update(epoch=epoch + 1, step=0, running={"loss": 0.0, "correct": 0, "seen": 0, "train_s": 0.0},
                     stopped_early=stopped_early)
        if dist is not None:  # rank 0 validated: everyone continues (or stops early) with its state
            state = dist.broadcast(state)
            stopped_early = state["stopped_early"]
        checkpoint()

    if main and config.patience is not None and best_uri and state["best_epoch"] is not None \
            and storage.exists(best_uri):
        model.load_state_dict(load_torch(best_uri))
    history = state["history"]
    seen = sum(h["train_s"] * h["images_per_s"] for h in history)
    train_s = sum(h["train_s"] for h in history)
    return {"history": history, "best_epoch": state["best_epoch"], "stopped_early": state.get("stopped_early", False),
            "epochs_run": len(history), "images_per_s": seen / train_s if train_s else None,
            "train_s": train_s, "wall_s": time.perf_counter() - t_run, "steps": run_steps,
            "device": str(device), "amp": amp, "channels_last": channels_last, "workers": workers}


def _report(progress, main, t_report, run, sums, world, t_epoch, t_run, run_steps, epoch, step, steps,
            epochs) -> float:
    """Send a progress dict at most every 0.5 s (and at the epoch's last step): the only
    moment within an epoch that the host reads the device's sums. In a data-parallel run
    rank 0 reports its own sums scaled by the world (an estimate until the epoch's end)."""
    now = time.perf_counter()
    if not (progress and main and (now - t_report > 0.5 or step + 1 == steps)):
        return t_report
    loss_sum, _, seen = (v * world for v in sums.tolist())
    seen += run["seen"]
    ips = seen / (run["train_s"] + now - t_epoch + 1e-9)
    per_step = (now - t_run) / run_steps
    left = (steps - step - 1) + (epochs - epoch - 1) * steps
    progress({"phase": "train", "epoch": epoch + 1, "epochs": epochs, "step": step + 1, "steps": steps,
              "loss": (run["loss"] + loss_sum) / max(1, seen), "images_per_s": ips, "eta_s": per_step * left})
    return now


def _flush(run: dict, sums: torch.Tensor, t_epoch: float, dist=None) -> None:
    """Move the on-device sums (all ranks' in a data-parallel run) into the checkpointable totals."""
    if dist is not None:
        dist.all_reduce(sums)
    loss, correct, seen = sums.tolist()
    run["loss"] += loss
    run["correct"] += int(round(correct))
    run["seen"] += int(round(seen))
    run["train_s"] += time.perf_counter() - t_epoch
    sums.zero_()


# --------------------------------------------------------------------------- manifest -> results

def choose_validation(manifest, config: TrainConfig) -> tuple[np.ndarray, np.ndarray, str]:
    """(train rows, validation rows, where validation comes from).

    A ``val`` split wins; else ``val_fraction`` of train is held out by URI hash; else the
    test split is used for the per-epoch curves (and early stopping, which then is
    optimistic: run.json says so).
    """
    train_idx = manifest.indices("train")
    if len(manifest.indices("val")):
        return train_idx, manifest.indices("val"), "val split"
    if config.val_fraction > 0:
        keep, held = holdout(train_idx, manifest.uris, config.val_fraction)
        return keep, held, f"{config.val_fraction:.0%} of train held out by URI hash"
    if len(manifest.indices("test")):
        note = "test split (no val split, val_fraction=0)"
        if config.patience is not None:
            note += ": early stopping on the test split makes its test metrics optimistic"
        return train_idx, manifest.indices("test"), note
    return train_idx, train_idx[:0], "none"


def train(config: TrainConfig, progress: Progress | None = None,
          should_stop: Callable[[], bool] | None = None) -> dict:
    """Train on a manifest and write the run's files under ``config.output_uri``; returns run.json's dict.

    With ``gpus`` > 1 the run trains in that many processes under torchrun
    (:mod:`mlcore.distributed`), with the same files, resume and metrics as one process.
    """
    if not config.output_uri:
        raise ValueError("config.output_uri is required")
    if config.gpus < 1:
        raise ValueError(f"gpus must be at least 1, not {config.gpus}")
    config.output_uri = storage.to_uri(config.output_uri) if not storage.is_s3(config.output_uri) \
        else config.output_uri
    if config.gpus > 1 and not _heads_only(config):
        from .distributed import launch

        read_manifest(config.manifest_uri, config.labels)  # a bad manifest fails here, before N processes start
        return launch(config, progress, should_stop)
    return run_training(config, progress, should_stop)


def _heads_only(config: TrainConfig) -> bool:
    """A frozen backbone with cached features: the backbone runs once, the heads train in seconds."""
    return config.freeze_backbone and config.cache_features


def run_training(config: TrainConfig, progress: Progress | None = None,
                 should_stop: Callable[[], bool] | None = None, *, dist=None) -> dict:
    """:func:`train` in this process (``dist``: as one rank of a data-parallel run; rank 0 writes)."""
    t0 = time.time()
    config.output_uri = storage.to_uri(config.output_uri) if not storage.is_s3(config.output_uri) \
        else config.output_uri
    main = dist is None or dist.main
    manifest = read_manifest(config.manifest_uri, config.labels)
    device = dist.device if dist is not None else resolve_device(config.device)
    if dist is not None and not main:
        dist.barrier()  # rank 0 fills the S3 cache first; the others then find everything there
    failures = prefetch(manifest.uris, config.prefetch_workers)
    if dist is not None and main:
        dist.barrier()
    row = {u: i for i, u in enumerate(manifest.uris)}
    skipped = {row[u]: r for u, r in failures.items()}

    train_idx, val_idx, val_source = choose_validation(manifest, config)
    labelled = (manifest.targets[train_idx] >= 0).any(1)
    train_idx = np.asarray([i for i in train_idx[labelled] if i not in skipped], dtype=np.int64)
    val_idx = np.asarray([i for i in val_idx if i not in skipped], dtype=np.int64)
    if not len(train_idx):
        raise ValueError("no labelled, readable training images in the manifest")

    tasks = manifest.tasks
    torch.manual_seed(config.seed)  # the initial weights are part of what a seed reproduces
    model = build_model(config.arch, {t: len(v) for t, v in tasks.items()}, config.weights,
                        config.small_input, config.maxpool)
    train_set = ImageDataset(manifest.uris, manifest.targets, train_crop(config.image_size))
    eval_set = ImageDataset(manifest.uris, manifest.targets, eval_crop(config.image_size))
    amp = config.amp if config.amp is not None else device.type == "cuda"
    channels_last = config.channels_last if config.channels_last is not None else device.type == "cuda"
    workers = config.workers if config.workers is not None else default_workers(device)
    eval_bs = config.eval_batch_size or config.batch_size * 2
    predict_idx = [i for i in range(len(manifest)) if i not in skipped]

    cache, notes = None, []
    if _heads_only(config):
        if config.gpus > 1:
            notes.append(f"gpus={config.gpus} ignored: a frozen backbone with cached features trains in one process")
        model.to(device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        wanted = predict_idx if config.predict else sorted({*train_idx.tolist(), *val_idx.tolist()})
        try:
            cache = extract(model, eval_set, wanted, device=device, batch_size=eval_bs, workers=workers, amp=amp,
                            channels_last=channels_last, train_set=train_set, train_idx=train_idx,
                            views=config.feature_views, seed=config.seed, should_stop=should_stop,
                            progress=progress)
        except Stopped as e:
            raise Cancelled(str(e)) from None
        skipped.update(cache.skipped)
        train_idx, val_idx = train_idx[cache.ok[train_idx]], val_idx[cache.ok[val_idx]]
        if not len(train_idx):
            raise ValueError("no labelled, readable training images in the manifest")
    result = fit(config, model, tasks, train_set, train_idx, eval_set, val_idx, progress=progress,
                 should_stop=should_stop, skipped=skipped, features=cache, dist=dist)
    if not main:
        return {}

    out = config.output_uri
    storage.write_bytes(storage.join(out, "model.pt"), _state_bytes(model))
    metrics = {}
    if config.predict:
        if cache is not None:
            res = head_infer(model, cache, predict_idx)
        else:
            res = infer(model, eval_set, predict_idx, device=device, batch_size=eval_bs, workers=result["workers"],
                        amp=result["amp"], channels_last=result["channels_last"], progress=progress, phase="embed")
        skipped.update({int(i): r for i, r in res["skipped"]})
        per_split = split_metrics(res, manifest.targets, manifest.splits, tasks)
        metrics = _metrics_doc(per_split, tasks)
        write_json(storage.join(out, "metrics.json"), metrics)
        storage.write_bytes(storage.join(out, "predictions.npz"),
                            npz_bytes(prediction_arrays(res, manifest.uris, manifest.splits, manifest.targets, tasks)))
        storage.write_bytes(storage.join(out, "embeddings.npz"), npz_bytes(
            {"uri": np.asarray([manifest.uris[i] for i in res["index"]], dtype=str),
             "emb": res["features"].astype(np.float16)}))

    run = {
        "status": "completed",
        "config": asdict(config),
        "tasks": tasks,
        "labels": tasks[next(iter(tasks))] if len(tasks) == 1 else None,
        "manifest": {"uri": manifest.uri, "sha256": manifest.sha256, "rows": len(manifest),
                     "splits": {s: int(len(manifest.indices(s))) for s in ("train", "val", "test")},
                     "notes": manifest.notes},
        "validation": {"source": val_source, "images": int(len(val_idx))},
        "history": result["history"],
        "best_epoch": result["best_epoch"],
        "stopped_early": result["stopped_early"],
        "metrics": _summary(metrics),
        "skipped": [{"uri": manifest.uris[i], "split": manifest.splits[i], "reason": r}
                    for i, r in sorted(skipped.items())],
        "environment": {**environment(device), "amp_bf16": result["amp"], "channels_last": result["channels_last"],
                        "loader_workers": result["workers"], "compile": config.compile,
                        "processes": dist.world if dist is not None else 1,
                        "cached_features": cache is not None, "notes": notes},
        "timing": {"wall_s": time.time() - t0, "train_s": result["train_s"],
                   "images_per_s": result["images_per_s"],
                   "features_s": cache.seconds if cache is not None else None},
        "files": {"model": "model.pt", "metrics": "metrics.json", "predictions": "predictions.npz",
                  "embeddings": "embeddings.npz", "checkpoint": "checkpoints/last.pt"},
    }
    write_json(storage.join(out, "run.json"), run)
    return run


def _state_bytes(model) -> bytes:
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, buf)
    return buf.getvalue()


def _metrics_doc(per_split: dict, tasks: dict) -> dict:
    """Single task: ``{split: metrics}``. Multi-facet: ``{"tasks": {task: {split: metrics}}}``."""
    if len(tasks) == 1:
        t = next(iter(tasks))
        return {split: m[t] for split, m in per_split.items()}
    return {"tasks": {t: {split: m[t] for split, m in per_split.items() if t in m} for t in tasks}}


def _summary(metrics: dict) -> dict:
    def short(m):
        return {"accuracy": m["accuracy"], "macro_f1": m["macro"]["f1"], "micro_f1": m["micro"]["f1"],
                "support": m["support"]}
    if "tasks" in metrics:
        return {"tasks": {t: {s: short(m) for s, m in d.items()} for t, d in metrics["tasks"].items()}}
    return {s: short(m) for s, m in metrics.items()}
