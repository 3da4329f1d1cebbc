"""The training loop: :func:`fit`, its epoch step, its per-epoch validation and its checkpoints.

Laid out as torchvision's classification reference lays out its ``train.py``, with the
optimizer, schedule and loss beside it in :mod:`mlcore.objective`: :meth:`Loop.train_epoch`
(the step, on one screen), :meth:`Loop.validate`, the checkpoint helpers, and :func:`fit`,
which strings them together epoch by epoch.

Resuming continues from ``checkpoints/last.pt`` with the result of an uninterrupted run: the
data order is a function of (seed, epoch) and each image's augmentation is seeded by (seed,
epoch, index), so a restart mid-epoch replays exactly what remains.

The step never waits for the device: losses and accuracy are summed on it and read at
progress intervals, checkpoints and epoch ends.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from . import storage
from .data import EpochBatches, collate, to_input
from .device import amp_default, autocast, channels_last_default, default_workers, resolve_device
from .evaluate import infer
from .features import batch_rows, head_infer
from .models import set_backbone_trainable
from .objective import batch_loss, lr_lambda, make_optimizer, task_weights, validation_scores

Progress = Callable[[dict], None]


class Cancelled(Exception):
    """``should_stop()`` returned true; the latest state is in ``checkpoints/last.pt``."""


def fresh_state() -> dict:
    """The loop's checkpointable state before the first step."""
    return {"epoch": 0, "step": 0, "global_step": 0, "history": [], "best_f1": -1.0, "best_epoch": None,
            "bad_epochs": 0, "running": _fresh_running()}


def _fresh_running() -> dict:
    return {"loss": 0.0, "correct": 0, "seen": 0, "train_s": 0.0}


# --------------------------------------------------------------------------- one run's loop

@dataclass
class Loop:
    """What the epochs of one :func:`fit` share: model, optimizer, data, device, callbacks."""

    config: object                      # a mlcore.train.TrainConfig
    model: torch.nn.Module
    tasks: dict
    device: torch.device
    amp: bool
    channels_last: bool
    workers: int
    step_model: Callable
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    sampler: EpochBatches
    weights: list
    train_set: object
    val_set: object = None
    val_idx: np.ndarray | None = None
    features: object = None             # a mlcore.features.FeatureCache: heads only, on cached features
    dist: object = None                 # a mlcore.distributed.Dist: this process's share
    progress: Progress | None = None
    should_stop: Callable[[], bool] | None = None
    skipped: dict = field(default_factory=dict)
    max_steps: int | None = None
    loader: DataLoader | None = None
    val_loader: DataLoader | None = None
    features_targets: torch.Tensor | None = None  # every row's targets on the device (cached features)
    ckpt_uri: str | None = None
    best_uri: str | None = None
    run_steps: int = 0                  # steps taken by this call (not restored by a resume)
    t_run: float = field(default_factory=time.perf_counter)
    _blank: dict | None = None

    @property
    def main(self) -> bool:
        return self.dist is None or self.dist.main

    @property
    def world(self) -> int:
        return self.dist.world if self.dist is not None else 1

    @property
    def steps(self) -> int:
        return len(self.sampler)

    @property
    def has_val(self) -> bool:
        return self.val_set is not None and self.val_idx is not None and len(self.val_idx) > 0

    # ----------------------------------------------------------------------- checkpoints

    def save_checkpoint(self, state: dict) -> None:
        """``checkpoints/last.pt`` (rank 0), after merging every rank's skipped images."""
        if self.dist is not None:
            self.skipped.update(self.dist.merge(self.skipped))
        if self.ckpt_uri and self.main:
            storage.save_torch(self.ckpt_uri, {
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "state": state,
                "skipped": {str(k): v for k, v in self.skipped.items()}})

    def load_checkpoint(self) -> dict | None:
        """The state of ``checkpoints/last.pt`` with model, optimizer and schedule restored; None if none."""
        if not (self.ckpt_uri and storage.exists(self.ckpt_uri)):
            return None
        ck = storage.load_torch(self.ckpt_uri)
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        self.skipped.update({int(k): v for k, v in ck.get("skipped", {}).items()})
        return ck["state"]

    def restore_best(self, state: dict) -> None:
        """With early stopping, end on the best epoch's weights."""
        if self.main and self.config.patience is not None and self.best_uri and state["best_epoch"] is not None \
                and storage.exists(self.best_uri):
            self.model.load_state_dict(storage.load_torch(self.best_uri))

    # ----------------------------------------------------------------------- one epoch

    def batches(self, epoch: int):
        """The epoch's batches from the loader, or gathered from the cached features."""
        if self.features is None:
            yield from self.loader
            return
        feats = self.features.train_features(epoch)
        targets = self.features_targets
        for keys in self.sampler:
            rows = batch_rows(keys)
            rows = (rows.pin_memory() if self.device.type == "cuda" else rows).to(self.device, non_blocking=True)
            yield {"skipped": [], "image": feats[rows], "target": targets[rows]}

    def step(self, batch: dict, sums: torch.Tensor) -> None:
        """One optimizer step on ``batch``; adds (loss x images, correct, images) to ``sums`` on the device."""
        cfg, device = self.config, self.device
        x = batch["image"] if self.features is not None else to_input(batch, device, self.channels_last)
        y = batch["target"].to(device, non_blocking=True)
        with autocast(device, self.amp and self.features is None):
            _, logits = self.step_model(x)
            heads = list(logits.values())
        loss, n_global = batch_loss(heads, y, self.weights, cfg.label_smoothing, self.dist)
        self.optimizer.zero_grad(set_to_none=True)
        (loss * self.world).backward()  # DDP averages over the world; the sum of the shares is wanted
        self.optimizer.step()
        sums += torch.stack([loss.detach() * n_global, (heads[0].argmax(1) == y[:, 0]).sum().float(),
                             torch.full((), float(len(y)), device=device)])

    def train_epoch(self, state: dict, epoch: int) -> bool:
        """Train from ``state["step"]`` to the epoch's end; False when a benchmark's step budget ran out."""
        cfg, run = self.config, state["running"]
        sums = torch.zeros(3, device=self.device)  # loss x images, correct, images: summed on the device
        t_epoch, t_report = time.perf_counter(), 0.0
        for step, batch in enumerate(self.batches(epoch), start=state["step"]):
            stop = self.should_stop is not None and self.should_stop()
            if self.dist is not None:
                stop = self.dist.agree(stop)
            if stop or (cfg.stop_after_steps and state["global_step"] >= cfg.stop_after_steps):
                _flush(run, sums, t_epoch, self.dist)
                state["step"] = step
                self.save_checkpoint(state)
                raise Cancelled(f"cancelled at epoch {epoch + 1}, step {step}")
            self.skipped.update({int(i): r for i, r in batch["skipped"]})
            if "image" not in batch and self.dist is not None:  # every rank must step: a blank image, no label
                batch = {**batch, **self.blank()}
            if "image" in batch:
                self.step(batch, sums)
            self.scheduler.step()
            state["global_step"] += 1
            self.run_steps += 1
            t_report = self.report(t_report, run, sums, t_epoch, epoch, step)
            if cfg.checkpoint_every and state["global_step"] % cfg.checkpoint_every == 0 and step + 1 < self.steps:
                _flush(run, sums, t_epoch, self.dist)
                t_epoch = time.perf_counter()
                state["step"] = step + 1
                self.save_checkpoint(state)
            if self.max_steps and self.run_steps >= self.max_steps:
                break
        _flush(run, sums, t_epoch, self.dist)
        return not (self.max_steps and self.run_steps >= self.max_steps and state["global_step"] % self.steps)

    def blank(self) -> dict:
        """A one-image batch without labels, for a rank whose share of a batch was all unreadable."""
        if self._blank is None:
            size = self.config.image_size
            self._blank = {"image": torch.zeros(1, size, size, 3, dtype=torch.uint8),
                           "target": torch.full((1, len(self.tasks)), -1, dtype=torch.long)}
        return self._blank

    def report(self, t_report: float, run: dict, sums: torch.Tensor, t_epoch: float, epoch: int, step: int) -> float:
        """Send a progress dict at most every 0.5 s (and at the epoch's last step): the only
        moment within an epoch that the host reads the device's sums. In a data-parallel run
        rank 0 reports its own sums scaled by the world (an estimate until the epoch's end)."""
        now = time.perf_counter()
        if not (self.progress and self.main and (now - t_report > 0.5 or step + 1 == self.steps)):
            return t_report
        loss_sum, _, seen = (v * self.world for v in sums.tolist())
        seen += run["seen"]
        epochs = self.config.epochs
        left = (self.steps - step - 1) + (epochs - epoch - 1) * self.steps
        self.progress({"phase": "train", "epoch": epoch + 1, "epochs": epochs, "step": step + 1, "steps": self.steps,
                       "loss": (run["loss"] + loss_sum) / max(1, seen),
                       "images_per_s": seen / (run["train_s"] + now - t_epoch + 1e-9),
                       "eta_s": (now - self.t_run) / self.run_steps * left})
        return now

    # ----------------------------------------------------------------------- validation

    def validate(self, state: dict, epoch: int) -> tuple[dict, bool]:
        """(the epoch's ``val_*`` scores, stop early?); keeps the best epoch in ``state``."""
        cfg = self.config
        if self.features is not None:
            res = head_infer(self.model, self.features, self.val_idx)
        else:
            res = infer(self.model, self.val_set, self.val_idx, device=self.device,
                        batch_size=cfg.eval_batch_size or cfg.batch_size * 2, workers=self.workers, amp=self.amp,
                        channels_last=self.channels_last, progress=self.progress, epoch=epoch + 1,
                        epochs=cfg.epochs, loader=self.val_loader)
        self.skipped.update({int(i): r for i, r in res["skipped"]})
        scores = validation_scores(res, self.val_set.targets.numpy(), self.tasks)
        f1 = scores.get("macro_f1", -1.0)
        stop = False
        if f1 > state["best_f1"]:
            state["best_f1"], state["best_epoch"], state["bad_epochs"] = f1, epoch + 1, 0
            if cfg.patience is not None and self.best_uri:
                storage.save_torch(self.best_uri, self.model.state_dict())
        else:
            state["bad_epochs"] += 1
            stop = cfg.patience is not None and state["bad_epochs"] > cfg.patience
        return {f"val_{k}": v for k, v in scores.items()}, stop


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


def setup(config, model, tasks: dict[str, list[str]], train_set, train_idx, val_set=None, val_idx=None, *,
          progress: Progress | None = None, should_stop: Callable[[], bool] | None = None,
          skipped: dict | None = None, max_steps: int | None = None, features=None, dist=None) -> Loop:
    """Put the model on its device and build the optimizer, schedule and loaders of :func:`fit`."""
    device = dist.device if dist is not None else resolve_device(config.device)
    amp, channels_last = amp_default(config.amp, device), channels_last_default(config.channels_last, device)
    world, rank = (dist.world, dist.rank) if dist is not None else (1, 0)
    workers = config.workers if config.workers is not None else \
        -(-default_workers(device) // world)  # the machine's cores shared among the processes
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
    sampler = EpochBatches(train_idx, config.batch_size, shuffle=True, seed=config.seed,
                           drop_last=len(train_idx) > config.batch_size, rank=rank, world=world)
    optimizer = make_optimizer(config, params)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(round(config.warmup_epochs * len(sampler)), config.epochs * len(sampler)))
    out = config.output_uri
    loop = Loop(config, model, tasks, device, amp, channels_last, workers, step_model, optimizer, scheduler, sampler,
                task_weights(config, targets, train_idx, tasks, device), train_set, val_set, val_idx, features, dist,
                progress, should_stop, {} if skipped is None else skipped, max_steps,
                ckpt_uri=storage.join(out, "checkpoints", "last.pt") if out else None,
                best_uri=storage.join(out, "checkpoints", "best.pt") if out else None)
    pin = device.type == "cuda"
    if features is None:
        loop.loader = DataLoader(train_set, batch_sampler=sampler, num_workers=workers, collate_fn=collate,
                                 pin_memory=pin, persistent_workers=workers > 0)
    else:
        loop.features_targets = torch.as_tensor(targets, device=device)
    if loop.has_val and features is None and loop.main:  # built once: its workers live as long as the run
        eval_bs = config.eval_batch_size or config.batch_size * 2
        loop.val_loader = DataLoader(val_set, batch_sampler=EpochBatches(val_idx, eval_bs, shuffle=False),
                                     num_workers=workers, collate_fn=collate, pin_memory=pin,
                                     persistent_workers=workers > 0)
    return loop


def fit(config, model, tasks: dict[str, list[str]], train_set, train_idx, val_set=None, val_idx=None, *,
        progress: Progress | None = None, should_stop: Callable[[], bool] | None = None,
        skipped: dict | None = None, max_steps: int | None = None, features=None, dist=None) -> dict:
    """Train ``model`` in place on ``train_set[train_idx]``; validate on ``val_set[val_idx]`` each epoch.

    ``config``: a :class:`mlcore.train.TrainConfig`. ``skipped`` (index -> reason) collects
    unreadable images. ``max_steps`` stops after that many steps in total (benchmarks).
    ``features`` (a :class:`mlcore.features.FeatureCache`): train and validate only the heads,
    on cached backbone features. ``dist`` (:class:`mlcore.distributed.Dist`): this process's
    share of a data-parallel run. Returns history, best epoch and timings.
    """
    loop = setup(config, model, tasks, train_set, train_idx, val_set, val_idx, progress=progress,
                 should_stop=should_stop, skipped=skipped, max_steps=max_steps, features=features, dist=dist)
    state = (loop.load_checkpoint() if config.resume else None) or fresh_state()
    loop.t_run = time.perf_counter()
    stopped_early = state.get("stopped_early", False)
    while state["epoch"] < config.epochs and not stopped_early:
        epoch = state["epoch"]
        loop.sampler.set_epoch(epoch, state["step"])
        model.train()
        if config.freeze_backbone:
            model.backbone.eval()
        if not loop.train_epoch(state, epoch):
            break  # a benchmark's step budget ran out mid-epoch
        run = state["running"]
        entry = {"epoch": epoch + 1, "train_loss": run["loss"] / max(1, run["seen"]),
                 "train_accuracy": run["correct"] / max(1, run["seen"]),
                 "images_per_s": run["seen"] / max(1e-9, run["train_s"]), "train_s": run["train_s"],
                 "lr": loop.optimizer.param_groups[0]["lr"]}
        if loop.has_val and loop.main:
            scores, stop = loop.validate(state, epoch)
            entry.update(scores)
            stopped_early = stopped_early or stop
        state["history"].append(entry)
        state.update(epoch=epoch + 1, step=0, running=_fresh_running(), stopped_early=stopped_early)
        if dist is not None:  # rank 0 validated: everyone continues (or stops early) with its state
            state = dist.broadcast(state)
            stopped_early = state["stopped_early"]
        loop.save_checkpoint(state)

    loop.restore_best(state)
    history = state["history"]
    seen = sum(h["train_s"] * h["images_per_s"] for h in history)
    train_s = sum(h["train_s"] for h in history)
    return {"history": history, "best_epoch": state["best_epoch"], "stopped_early": state.get("stopped_early", False),
            "epochs_run": len(history), "images_per_s": seen / train_s if train_s else None,
            "train_s": train_s, "wall_s": time.perf_counter() - loop.t_run, "steps": loop.run_steps,
            "device": str(loop.device), "amp": loop.amp, "channels_last": loop.channels_last,
            "workers": loop.workers}
