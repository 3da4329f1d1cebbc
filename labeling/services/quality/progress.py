"""A run as its pages show it: summary, status, progress over its phases, the loss curve."""
from __future__ import annotations

from django.utils import timezone

from ...models import Task, TrainingRun

# --- runs --------------------------------------------------------------------------------


def previous_finished_run(run: TrainingRun) -> TrainingRun | None:
    """The run the dashboard compares ``run`` with: the run it retrains, else the previous
    finished training run of the task; never a suspects fold model (services.runs.baseline_run)."""
    from ..runs import baseline_run

    return baseline_run(run)


def duration_s(run: TrainingRun) -> float | None:
    """Seconds from start to finish (to now while it runs); None before it starts."""
    if run.started_at is None:
        return None
    end = run.finished_at or timezone.now()
    return max(0.0, (end - run.started_at).total_seconds())


def run_state(run: TrainingRun) -> dict:
    """What every view of a run says of it (the run list's row, the live progress poll):
    its state, device, test macro-F1 and times."""
    return {
        "id": run.id,
        "state": run.state,
        "state_reason": run.state_reason,
        "device": run.device,
        "test_macro_f1": run.test_macro_f1,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "duration_s": duration_s(run),
    }


def run_summary(run: TrainingRun) -> dict:
    """One run as a row of the run list (and the API's run objects)."""
    return {
        **run_state(run),
        "task": run.task_id,
        "created_by": run.created_by.get_username() if run.created_by_id else None,
        "created_at": run.created_at.isoformat() if run.created_at else None,
        "n_train": run.n_train,
        "n_test": run.n_test,
        "snapshot_size": run.n_train + run.n_test,
        "parent": run.parent_id,
        "fold_of": run.fold_of_id,
        "config": run.config,
    }


def task_runs(task: Task, limit: int = 200) -> list[TrainingRun]:
    """The task's training runs, newest first, with who started them (fold models are listed
    with their suspects run, not here)."""
    return list(TrainingRun.objects.main().filter(task=task).select_related("created_by")
                .order_by("-created_at", "-id")[:limit])


FINISHED_STATES = (TrainingRun.State.DONE, TrainingRun.State.FAILED, TrainingRun.State.CANCELLED)


def run_status(run: TrainingRun) -> dict:
    """What the live progress page polls: state, progress, the whole run's share done and ETA,
    the loss curve (and which images its validation loss is on), the reason of a failure.
    Small: the history is per epoch / sampled steps, not every step."""
    progress = dict(run.progress or {})
    history = run.history if isinstance(run.history, list) else []
    return {
        **run_state(run),
        "finished": run.state in FINISHED_STATES,
        "cancel_requested": run.cancel_requested,
        "progress": progress,
        "overall": overall_progress(run),
        "share_label": share_label(run),
        "loss_curve": loss_curve(history),
        "validation": validation_source(run),
        # The latest training sample: epoch, step, loss and speed stay on the page during
        # evaluation and after the run ends, when ``progress`` holds only the phase.
        "last_train": next((row for row in reversed(history)
                            if isinstance(row, dict) and row.get("phase") == "train"), None),
        "history": history,
        "heartbeat_at": run.heartbeat_at.isoformat() if run.heartbeat_at else None,
    }


# Relative cost of one image in each phase: a training step (forward + backward) costs about
# three forward passes; validation and the final prediction pass are one forward pass each.
TRAIN_COST, FORWARD_COST = 3.0, 1.0


def _plan(run: TrainingRun) -> dict:
    """The run's work in forward-pass units: per epoch training and validation, and the final
    prediction pass over every image (mlcore predicts train and test to write predictions.npz)."""
    cfg = run.config or {}
    epochs = max(1, int(cfg.get("epochs") or 1))
    held = float(cfg.get("val_fraction") or 0.0)
    n_train, n_test = max(0, run.n_train), max(0, run.n_test)
    n_val = round(n_train * held) if held > 0 else n_test
    train_units = TRAIN_COST * (n_train - (n_val if held > 0 else 0))
    if train_units <= 0:  # no snapshot counts (yet): epochs alone
        return {"epochs": epochs, "train": 1.0, "val": 0.0, "final": 0.0}
    return {"epochs": epochs, "train": train_units, "val": FORWARD_COST * n_val,
            "final": FORWARD_COST * (n_train + n_test)}


def overall_progress(run: TrainingRun) -> dict:
    """The whole run's share done (0..1) and its ETA in seconds, across phases.

    mlcore's ``eta_s`` is the ETA of the phase it is in: during an epoch's validation it said
    "5 s", then minutes again when the next epoch started. Here every phase is weighed by its
    images (a training image ~3 forward passes), so the share only grows and the ETA is the
    elapsed time scaled by what is left. A finished run is at 100 %, a failed or cancelled one
    keeps its share and has no ETA.
    """
    p = run.progress or {}
    plan = _plan(run)
    per_epoch = plan["train"] + plan["val"]
    total = plan["epochs"] * per_epoch + plan["final"]
    phase = p.get("phase")
    epoch = max(1, int(p.get("epoch") or 1))
    within = (p.get("step") or 0) / p["steps"] if p.get("steps") else 0.0
    if run.state == TrainingRun.State.DONE:
        share = 1.0
    elif phase == "train":
        share = ((epoch - 1) * per_epoch + within * plan["train"]) / total
    elif phase == "eval":  # the validation pass after an epoch
        share = ((epoch - 1) * per_epoch + plan["train"] + within * plan["val"]) / total
    elif phase == "embed":
        share = (plan["epochs"] * per_epoch + within * plan["final"]) / total
    elif phase == "load":
        share = 0.99
    else:  # queued, starting, or a final state: the last figure of the history
        share = _last_share(run, plan, total)
    share = max(0.0, min(1.0, share))
    eta = None
    if run.state == TrainingRun.State.RUNNING:
        elapsed = p.get("t") or duration_s(run) or 0.0
        if share >= 0.02 and elapsed:
            eta = elapsed * (1 - share) / share
        elif p.get("eta_s") is not None and phase == "train":
            eta = float(p["eta_s"])  # too early to scale: mlcore's own estimate of the training
    return {"share": round(share, 4), "eta_s": round(eta, 1) if eta is not None else None, "phase": phase}


PHASE_NAMES = {"train": "training", "eval": "evaluating", "embed": "predicting every image",
               "load": "loading the results"}


def share_label(run: TrainingRun) -> dict:
    """What the progress page says beside the share (:func:`overall_progress`): ``phase``, the
    phase in words ("training · epoch 2 of 3", "evaluating · validation after epoch 2"), and
    ``covers``, what the share counts: the whole run, not the training alone, so 36 % at step
    13 of 46 of epoch 2 of 3 is no contradiction (training is a part of it, said in figures)."""
    p = run.progress or {}
    plan = _plan(run)
    phase = p.get("phase")
    epoch, epochs = p.get("epoch"), p.get("epochs") or plan["epochs"]
    if run.state in FINISHED_STATES or phase not in PHASE_NAMES:
        text = run.state if run.state in FINISHED_STATES or not phase else str(phase)
    elif phase == "train":
        text = "training" + (f" · epoch {epoch} of {epochs}" if epoch else "")
        if epoch and p.get("steps"):
            text += f" ({100 * ((int(epoch) - 1) + (p.get('step') or 0) / p['steps']) / max(1, int(epochs)):.0f} % of the training)"
    elif phase == "eval":
        text = "evaluating" + (f" · validation after epoch {epoch} of {epochs}" if epoch else "")
    else:
        text = PHASE_NAMES[phase]
    total = plan["epochs"] * (plan["train"] + plan["val"]) + plan["final"]
    if plan["val"] or plan["final"]:
        train_share = plan["epochs"] * plan["train"] / total
        covers = (f"of the whole run: {plan['epochs']} epoch{'s' if plan['epochs'] != 1 else ''} of training "
                  f"({100 * train_share:.0f} % of the work), a validation pass after each and a final prediction "
                  "pass over every image; each weighed by its images (a training image counts as "
                  f"{TRAIN_COST:g} forward passes)")
    else:
        covers = f"of the whole run: {plan['epochs']} epoch{'s' if plan['epochs'] != 1 else ''} of training"
    return {"phase": text, "covers": covers}


def _last_share(run: TrainingRun, plan: dict, total: float) -> float:
    last = next((row for row in reversed(run.history if isinstance(run.history, list) else [])
                 if isinstance(row, dict) and row.get("phase") == "train" and row.get("steps")), None)
    if last is None:
        return 0.0
    per_epoch = plan["train"] + plan["val"]
    return ((max(1, last.get("epoch") or 1) - 1) * per_epoch + last["step"] / last["steps"] * plan["train"]) / total


def validation_source(run: TrainingRun) -> dict:
    """Which images the per-epoch validation loss is on: ``{"source", "is_test"}``. From run.json
    once the run is loaded, else from the config (Retag's manifests have no val split, so it is
    the test split unless ``val_fraction`` holds part of train out)."""
    found = (run.metrics or {}).get("validation") if isinstance(run.metrics, dict) else None
    if isinstance(found, dict) and found.get("source"):
        source = str(found["source"])
    elif float((run.config or {}).get("val_fraction") or 0) > 0:
        source = f"{float(run.config['val_fraction']):.0%} of train held out by URI hash"
    else:
        source = "test split (no val split, val_fraction=0)"
    return {"source": source, "is_test": source.startswith("test split")}


def loss_curve(history) -> dict:
    """The loss chart's points on an epoch axis, from the run's history:
    ``{"train": [{"x", "loss"}], "val": [{"x", "loss"}]}``.

    Training loss comes from the progress samples (``{"kind": "progress", "phase": "train",
    "epoch", "step", "steps", "loss"}``; step k of epoch e lies at e - 1 + k/steps),
    validation loss from the per-epoch rows (``{"kind": "epoch", "epoch", "val_loss"}``).
    """
    train, val = [], []
    for row in history if isinstance(history, list) else []:
        if not isinstance(row, dict):
            continue
        kind = row.get("kind", "progress")
        epoch, step, steps = row.get("epoch"), row.get("step"), row.get("steps")
        if kind == "progress" and row.get("loss") is not None and epoch and step is not None and steps:
            train.append({"x": round((epoch - 1) + step / steps, 4), "loss": float(row["loss"])})
        elif kind == "epoch" and row.get("val_loss") is not None and epoch:
            val.append({"x": float(epoch), "loss": float(row["val_loss"])})
    return {"train": train, "val": val, **loss_axis([c["loss"] for c in train + val],
                                                     [c["loss"] for c in train + val if c["x"] > 1.0])}


def loss_axis(losses: list[float], after_first_epoch: list[float]) -> dict:
    """``{"y_max", "clipped"}``: the loss axis's top. A first-epoch loss of 20 beside later
    values near 0.3 flattens the curve, so the axis is clipped at 1.5 x the highest loss after
    the first epoch when the first epoch goes above twice that; points above are drawn on the
    top edge and the page says so. None when nothing needs clipping."""
    if not losses or not after_first_epoch:
        return {"y_max": None, "clipped": False}
    later = max(after_first_epoch)
    if max(losses) <= 2 * later:
        return {"y_max": None, "clipped": False}
    return {"y_max": round(1.5 * later, 4), "clipped": True, "max_loss": round(max(losses), 4)}
