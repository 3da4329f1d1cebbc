"""Training runs: start one on a label snapshot, run it in a worker, load what it found.

The life of a run::

    start_training_run  validate the config, write the label snapshot (services.manifests),
                        create the run (queued), queue ``labeling.tasks.train_run`` (gpu queue)
    execute_run         in the worker: claim the run, train it in a child process of its own
                        (mlcore.train.train there; services.run_process says why), load the
                        results (services.run_results), mark it done / failed / cancelled
    cancel_run          queued: cancelled at once; running: the worker stops at its next step
    retrain             the same config on the current labels (a new snapshot), parent=run
    check_stale_runs    periodic: a run whose worker stopped beating is resumed or failed

**The lease.** Celery tasks are acknowledged late (``acks_late``), so a message can come
twice: a worker killed mid-run leaves it unacknowledged and the broker delivers it again
(RabbitMQ at once; Redis only after its ``visibility_timeout``, one hour by default, and
also to a second worker while the first still runs when a run lasts longer than that).
So a worker first *claims* the run in one locked update: it may take a queued run, or a
running one whose heartbeat is older than ``RUN_STALE_AFTER_S`` (or whose holder is a
dead process on this machine). It then holds a random lease token; a heartbeat thread
renews ``heartbeat_at`` every ``RUN_HEARTBEAT_S`` seconds, and every write it makes (progress,
results, final state) is conditional on that token. A duplicate delivery therefore finds a
fresh heartbeat held by someone else and exits without doing anything; a worker that
was presumed dead and comes back finds its token gone and stops (``LeaseLost``) without
writing.

**Recovery.** With Redis and a ``kill -9`` the unacknowledged message only returns after
the visibility timeout, so :func:`check_stale_runs` (the beat task
``labeling.tasks.check_stale_runs``) is the main recovery path: a running run whose
heartbeat is older than ``RUN_STALE_AFTER_S`` is queued again and re-sent, and the next
worker resumes it from ``checkpoints/last.pt`` (mlcore ``resume=True``, same
``output_uri``); after ``RUN_MAX_ATTEMPTS`` attempts it fails with "worker lost N times".
A late redelivery of the original message then finds the run running (fresh heartbeat)
or finished, and exits.

**The training process.** The worker that holds the lease does the database work (claim,
heartbeats, progress, cancel, results); the training itself runs in a child process started
for the run, where mlcore's DataLoader may start its workers (Celery's pool processes are
daemonic and may not) and which frees the GPU when it exits. The child exits at once when its
parent dies, so a killed worker leaves no training behind; the parent kills the child when
the lease is lost. A child that dies without a word (the OOM killer) sends the run back to
the queue at once, counted as an attempt.

mlcore's training is imported lazily (it brings torch): the web process only validates
configs, and the worker's pool process leaves torch to the training process.
"""
from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import threading
import time
import uuid
from datetime import timedelta
from functools import lru_cache

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from mlcore import storage

from ..models import Annotation, EventSource, Image, ImageStatus, LabelEvent, Project, Split, Task, TrainingRun
from .enqueue import send, send_on_commit
from .labels import ordered_labels
from .projects import project_storage_uri
from .storage_roots import SourceRefused, check_allowed

logger = logging.getLogger(__name__)
State = TrainingRun.State
Trigger = TrainingRun.Trigger

PROGRESS_EVERY_S = 0.5   # at most ~2 progress writes a second
MAX_HISTORY = 1200       # progress points kept on the run; older ones are thinned out
HUMAN_SOURCES = (EventSource.ANNOTATOR, EventSource.MTURK)


def stale_after_s() -> float:
    """A running run whose heartbeat is older than this is presumed lost (RUN_STALE_AFTER_S)."""
    return settings.RUN_STALE_AFTER_S


def heartbeat_s() -> float:
    """How often the worker renews its lease (RUN_HEARTBEAT_S); well inside the stale threshold."""
    return min(settings.RUN_HEARTBEAT_S, stale_after_s() / 4)


def max_attempts() -> int:
    """Attempts before a run whose workers keep dying fails (RUN_MAX_ATTEMPTS)."""
    return settings.RUN_MAX_ATTEMPTS


class RunConfigError(ValueError):
    """A config (or task) a run cannot start with; ``errors`` maps field -> message."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


class RunStateError(ValueError):
    """The run is not in a state that allows this (cancel a finished run...)."""


class LeaseLost(Exception):
    """Another worker holds the run now (or it was requeued): stop without writing."""


# --------------------------------------------------------------------------- config

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v2")  # mlcore.models.ARCHS

DEFAULTS = {"arch": "resnet18", "weights": None, "epochs": 10, "batch_size": 64, "lr": None,
            "class_weights": "inverse", "freeze_backbone": False, "image_size": 224, "small_input": False}

# field -> (kind, minimum, maximum) for the optional knobs passed through to mlcore.TrainConfig.
NUMBERS = {
    "epochs": (int, 1, 1000), "batch_size": (int, 1, 4096), "lr": (float, 1e-8, 10.0),
    "image_size": (int, 16, 1024), "momentum": (float, 0.0, 1.0), "weight_decay": (float, 0.0, 1.0),
    "warmup_epochs": (float, 0.0, 100.0), "label_smoothing": (float, 0.0, 0.5),
    "val_fraction": (float, 0.0, 0.5), "patience": (int, 0, 1000), "checkpoint_every": (int, 0, 10**7),
    "seed": (int, 0, 2**31 - 1), "workers": (int, 0, 64), "eval_batch_size": (int, 1, 8192),
    "gpus": (int, 1, 64),  # >1: mlcore trains with DistributedDataParallel under torchrun
}
BOOLS = ("freeze_backbone", "small_input", "maxpool", "amp", "compile")
CHOICES = {"arch": ARCHS, "class_weights": ("inverse", "none"), "optimizer": ("sgd", "adamw")}
NULLABLE = ("lr", "patience", "weights", "amp", "workers", "eval_batch_size", "weight_decay")
KNOWN = set(DEFAULTS) | set(NUMBERS) | set(BOOLS) | set(CHOICES)


def default_config(task: Task) -> dict:
    """The config the start-run form shows first: mlcore's defaults, and for small images
    (Fashion-MNIST's 28 px) their own size with mlcore's small-input stem."""
    config = dict(DEFAULTS)
    sizes = list(Image.objects.filter(project_id=task.project_id, status=ImageStatus.OK, width__isnull=False)
                 .values_list("width", "height")[:200])
    if sizes:
        side = max(max(w or 0, h or 0) for w, h in sizes)
        if 0 < side <= 64:
            config.update(image_size=max(16, side), small_input=True)
    return config


def validate_config(config: dict | None, *, task: Task | None = None) -> dict:
    """The complete, checked config (defaults filled in), or :class:`RunConfigError`.

    Checked here, before anything is queued, so that a bad config is a 400 / a form error
    and never a failed run: the architecture, numbers in range, known fields only, and
    the weights: none, a torchvision weights name already in the local torch hub cache,
    or a state_dict URI inside an allowed storage root (or Retag's own storage, e.g. an
    earlier run's model.pt) that exists.
    """
    if config is not None and not isinstance(config, dict):
        raise RunConfigError({"config": "must be an object"})
    given = dict(config or {})
    errors: dict[str, str] = {}
    unknown = sorted(set(given) - KNOWN)
    if unknown:
        errors["config"] = f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(KNOWN))}"
    out = {**(default_config(task) if task is not None else DEFAULTS), **{k: v for k, v in given.items()
                                                                             if k in KNOWN}}
    for name, (kind, lo, hi) in NUMBERS.items():
        if name not in out:
            continue
        value = out[name]
        if value is None or value == "":
            if name in NULLABLE:
                out[name] = None
                continue
            errors[name] = "is required"
            continue
        try:
            if isinstance(value, bool):
                raise ValueError
            number = kind(value)
            if kind is int and float(value) != number:
                raise ValueError
        except (TypeError, ValueError):
            errors[name] = f"must be {'an integer' if kind is int else 'a number'}"
            continue
        if not lo <= number <= hi:
            errors[name] = f"must be between {lo:g} and {hi:g}"
            continue
        out[name] = number
    for name in BOOLS:
        if name in out and not (out[name] is None and name in NULLABLE):
            value = out[name]
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "on", "off", "yes", "no"):
                value = value.lower() in ("true", "1", "on", "yes")
            if not isinstance(value, bool):
                errors[name] = "must be true or false"
            out[name] = value
    for name, choices in CHOICES.items():
        if name in out and out[name] not in choices:
            errors[name] = f"unknown {name} {out[name]!r}; choose one of {', '.join(choices)}"
    if "arch" not in errors:
        weights_error = check_weights(out["arch"], out.get("weights"))
        if weights_error:
            errors["weights"] = weights_error
        elif out.get("weights"):
            out["weights"] = str(out["weights"]).strip()
        else:
            out["weights"] = None
    if errors:
        raise RunConfigError(errors)
    return out


def check_weights(arch: str, weights) -> str | None:
    """Why ``weights`` cannot be used, or None. Never downloads anything."""
    if weights in (None, ""):
        return None
    if not isinstance(weights, str):
        return "must be a URI or a torchvision weights name"
    weights = weights.strip()
    if "://" in weights or "/" in weights or weights.endswith((".pt", ".pth")):
        try:
            uri = canonical_weights_uri(weights)
        except SourceRefused as e:
            return e.reason
        try:
            if not storage.exists(uri):
                return f"{weights} does not exist"
        except Exception as e:  # noqa: BLE001 - S3 errors, permissions: the user must hear why
            return f"{weights} cannot be read: {e}"
        return None
    try:  # a torchvision weights name, e.g. IMAGENET1K_V1: only if already in the local cache
        from mlcore.models import _hub_file

        _hub_file(arch, weights)
    except (ValueError, FileNotFoundError) as e:
        return str(e)
    return None


def canonical_weights_uri(weights: str) -> str:
    """Weights may come from an allowed storage root or from Retag's own storage."""
    try:
        return check_allowed(weights)
    except SourceRefused:
        own = settings.STORAGE_URI.rstrip("/") + "/"
        uri = storage.to_uri(weights) if not storage.is_s3(weights) else weights
        if storage.is_s3(uri):
            if uri.startswith(own) and ".." not in uri.split("/"):
                return uri
        elif not storage.is_s3(own):
            path = os.path.realpath(storage.local_path(uri))
            root = os.path.realpath(storage.local_path(own))
            if path.startswith(root.rstrip("/") + "/"):
                return storage.to_uri(path)
        raise


# --------------------------------------------------------------------------- lineage

@lru_cache(maxsize=1)
def code_version() -> str:
    """``git describe`` of the checkout when there is one, else $RETAG_VERSION, else the app's version."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], cwd=settings.BASE_DIR,
                             capture_output=True, text=True, timeout=5)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()[:64]
    except (OSError, subprocess.SubprocessError):
        pass
    return (os.environ.get("RETAG_VERSION") or f"retag {settings.SPECTACULAR_SETTINGS.get('VERSION', '?')}")[:64]


def default_worker_id(node: str | None = None) -> str:
    """``<celery node> pid <pid> on <machine>``: the pid and machine let a worker on the same
    machine tell that a holder died (a killed pool process) without waiting for staleness."""
    return f"{node or 'local'} pid {os.getpid()} on {socket.gethostname()}"[:200]


_WORKER_RE = re.compile(r" pid (\d+) on (\S+)$")


def _holder_dead(worker: str) -> bool:
    """True only when the holder is a process on this machine that no longer exists."""
    m = _WORKER_RE.search(worker or "")
    if not m or m.group(2) != socket.gethostname():
        return False
    pid = int(m.group(1))
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


# --------------------------------------------------------------------------- start

def start_training_run(*, task: Task, config: dict | None, by=None, parent: TrainingRun | None = None,
                       trigger: str = Trigger.MANUAL, enqueue: bool = True) -> TrainingRun:
    """Check the config, snapshot the task's labels, create the run and queue it on the gpu queue.

    Raises :class:`RunConfigError` (nothing created) for a bad config or a task without
    labelled training images. ``enqueue=False`` leaves the queued run for the caller to
    :func:`execute_run` itself (tests, ``manage.py train --here``).
    """
    from .manifests import build_training_manifest

    config = validate_config(config, task=task)
    labels = list(task.labels.order_by("position", "id").values_list("id", "name"))
    if len(labels) < 2:
        raise RunConfigError({"task": f"task {task.name!r} needs at least two labels to train"})
    if not Annotation.objects.filter(task=task, label__isnull=False, image__split="train",
                                     image__status=ImageStatus.OK).exists():
        raise RunConfigError({"task": f"task {task.name!r} has no labelled, usable training images"})
    t0 = time.perf_counter()
    snapshot_at = timezone.now()
    manifest = build_training_manifest(task)
    ids_by_name = dict((name, i) for i, name in labels)
    missing = [n for n in manifest.labels if n not in ids_by_name]
    if missing:  # a label renamed between the two reads: rare, and the user can start again
        raise RunConfigError({"task": f"labels changed while the snapshot was taken ({missing}); try again"})
    with transaction.atomic():
        run = TrainingRun.objects.create(
            project_id=task.project_id, task=task, config=config, manifest_uri=manifest.uri,
            manifest_sha256=manifest.sha256, label_ids=[ids_by_name[n] for n in manifest.labels],
            label_names=list(manifest.labels), n_train=manifest.counts.get("train", 0),
            n_test=manifest.counts.get("test", 0), snapshot_at=snapshot_at, parent=parent, created_by=by,
            trigger=trigger, code_version=code_version(),
            timings={"snapshot_s": round(time.perf_counter() - t0, 3)})
        run.output_uri = project_storage_uri(task.project, "runs", str(run.id))
        run.save(update_fields=["output_uri"])
        if enqueue:
            transaction.on_commit(lambda: enqueue_run(run.id))
    logger.info("run %s queued: task %s, %s train / %s test images, snapshot %s", run.id, task, run.n_train,
                run.n_test, manifest.sha256[:12])
    return run


def enqueue_run(run_id: int) -> None:
    """Send the run to the gpu queue; a broker that cannot be reached fails the run with the reason."""
    send("train_run", run_id, fail=lambda reason: TrainingRun.objects.filter(pk=run_id, state=State.QUEUED).update(
        state=State.FAILED, state_reason=reason, finished_at=timezone.now()))


def retrain(run: TrainingRun, by=None, *, trigger: str = Trigger.RETRAIN, enqueue: bool = True) -> TrainingRun:
    """A new run with ``run``'s config on the task's current labels (a new snapshot); parent=run.
    A suspects fold model is not retrained: it is a part of its suspects run."""
    if run.fold_of_id is not None:
        raise RunStateError(f"run {run.pk} is a fold model of suspects run {run.fold_of_id}; retrain run "
                            f"{run.parent_id} instead")
    return start_training_run(task=run.task, config=run.config, by=by, parent=run, trigger=trigger,
                              enqueue=enqueue)


def cancel_run(run: TrainingRun, by=None) -> TrainingRun:
    """Cancel a run: a queued one at once, a running one at the worker's next step.

    Raises :class:`RunStateError` for a finished run.
    """
    who = getattr(by, "username", None) or "someone"
    with transaction.atomic():
        locked = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if locked.state == State.QUEUED:
            locked.state, locked.finished_at = State.CANCELLED, timezone.now()
            locked.cancel_requested = True
            locked.state_reason = f"cancelled by {who} before it started"
            locked.save(update_fields=["state", "finished_at", "cancel_requested", "state_reason"])
        elif locked.state == State.RUNNING:
            locked.cancel_requested = True
            locked.state_reason = f"cancel requested by {who}"
            locked.save(update_fields=["cancel_requested", "state_reason"])
        else:
            raise RunStateError(f"run {run.pk} is {locked.state}; only queued or running runs can be cancelled")
    run.refresh_from_db()
    return run


# --------------------------------------------------------------------------- execute (the worker)

def claim_run(run_id: int, worker: str) -> tuple[TrainingRun, str] | None:
    """Take the run's lease for ``worker``: (run, token), or None when it is not ours to run.

    Ours: a queued run; or a running run whose holder is gone (heartbeat older than the
    stale threshold, or a dead process on this machine), which counts as a new attempt.
    Not ours: a finished run, a cancelled queued run, a run that another live worker holds.
    """
    now = timezone.now()
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None:
            logger.warning("run %s: gone; nothing to do", run_id)
            return None
        if run.state == State.RUNNING:
            fresh = run.heartbeat_at is not None and (now - run.heartbeat_at).total_seconds() < stale_after_s()
            if fresh and not _holder_dead(run.worker):
                logger.warning("run %s: held by %s (heartbeat %s); duplicate delivery ignored", run_id,
                               run.worker, run.heartbeat_at)
                return None
            if run.attempts >= max_attempts():
                _fail_lost(run, now)
                return None
            run.history = [*run.history, {"kind": "lost", "worker": run.worker, "at": now.isoformat(),
                                          "attempt": run.attempts}]
        elif run.state != State.QUEUED:
            logger.info("run %s: %s; nothing to do", run_id, run.state)
            return None
        if run.cancel_requested:
            run.state, run.finished_at, run.lease = State.CANCELLED, now, ""
            run.save(update_fields=["state", "finished_at", "lease", "history"])
            return None
        token = uuid.uuid4().hex
        run.attempts += 1
        run.state, run.lease, run.worker, run.heartbeat_at = State.RUNNING, token, worker, now
        run.started_at = run.started_at or now
        run.code_version = code_version()  # the device: the training process reports it
        if run.attempts == 1:
            run.timings = {**run.timings, "queued_s": round((now - run.created_at).total_seconds(), 3)}
        run.history = [*run.history, {"kind": "attempt", "attempt": run.attempts, "worker": worker,
                                      "at": now.isoformat()}]
        run.save(update_fields=["attempts", "state", "lease", "worker", "heartbeat_at", "started_at",
                                "code_version", "timings", "history"])
    return run, token


def _fail_lost(run: TrainingRun, now, last: str = "") -> None:
    run.state, run.finished_at, run.lease = State.FAILED, now, ""
    run.state_reason = f"worker lost {run.attempts} times (last: {last or run.worker or 'unknown'})"
    run.save(update_fields=["state", "finished_at", "lease", "state_reason", "history"])
    logger.error("run %s: %s", run.pk, run.state_reason)


def _lost(run: TrainingRun, now, *, reason: str = "", enqueue: bool = True) -> str:
    """A locked running run whose worker (or training process) is lost: cancel it when a cancel was
    asked for, fail it after ``RUN_MAX_ATTEMPTS``, else queue it again and re-send it (the next
    worker resumes from the checkpoint). Clears the lease, so that a holder that was only slow
    stops at its next write. Returns "cancelled", "failed" or "requeued"."""
    note = {"kind": "lost", "worker": run.worker, "at": now.isoformat(), "attempt": run.attempts,
            "heartbeat_at": run.heartbeat_at.isoformat() if run.heartbeat_at else None}
    if reason:
        note["reason"] = reason
    run.history = [*run.history, note]
    if run.cancel_requested:
        run.state, run.finished_at, run.lease = State.CANCELLED, now, ""
        run.state_reason = "cancelled (its worker was lost)"
        run.save(update_fields=["state", "finished_at", "lease", "state_reason", "history"])
        return "cancelled"
    if run.attempts >= max_attempts():
        _fail_lost(run, now, reason)
        return "failed"
    run.state, run.lease = State.QUEUED, ""
    if reason:
        run.state_reason = f"{reason}; resuming from the last checkpoint"
    elif run.heartbeat_at:
        run.state_reason = (f"worker {run.worker or '?'} lost (no heartbeat since "
                            f"{run.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC); resuming from the last checkpoint")
    else:
        run.state_reason = "worker lost; resuming"
    run.save(update_fields=["state", "lease", "state_reason", "history"])
    if enqueue:
        transaction.on_commit(lambda pk=run.pk: enqueue_run(pk))
    logger.warning("run %s: %s", run.pk, run.state_reason)
    return "requeued"


class RunSession:
    """The worker side of a claimed run: progress writes (throttled), heartbeats, cancel polls.

    Every write is ``UPDATE ... WHERE id = run AND lease = token``: zero rows means the
    lease is gone, and :class:`LeaseLost` stops the run without another write.
    A heartbeat thread keeps the lease while no progress comes (prefetching S3, writing
    outputs, loading a million predictions), unless the training has shown no sign of life
    for ``RUN_HANG_AFTER_S`` (then :func:`train_in_process` stops it and fails the run; a
    hang of this thread itself lets the run go stale, to be retried or failed).
    """

    def __init__(self, run: TrainingRun, token: str):
        self.run_id, self.token = run.pk, token
        self.history = list(run.history)
        self.cancel = run.cancel_requested
        self.lost = False
        self.last_write = 0.0
        self.last_phase = None
        self.alive_at = time.monotonic()
        self.t0 = time.monotonic()
        # Time continues across attempts: the history's clock goes on from its last point.
        self.offset_s = max([float(h.get("t", 0) or 0) for h in self.history if isinstance(h, dict)] or [0.0])
        self._stop = threading.Event()
        # No lock between the two threads: each write is one conditional UPDATE, and the flags
        # are plain booleans. (A lock would deadlock: the heartbeat's UPDATE waits for the
        # row lock of the main thread's result transaction, which would wait for the lock.)
        self._thread = threading.Thread(target=self._beat, name=f"run-{run.pk}-heartbeat", daemon=True)

    def _mine(self):
        return TrainingRun.objects.filter(pk=self.run_id, lease=self.token, state=State.RUNNING)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _beat(self) -> None:
        hang_after = settings.RUN_HANG_AFTER_S
        try:
            while not self._stop.wait(heartbeat_s()):
                if time.monotonic() - self.alive_at > hang_after:
                    logger.error("run %s: no sign of life for %.0f s; heartbeat stopped", self.run_id, hang_after)
                    return
                if not self._mine().update(heartbeat_at=timezone.now()):
                    self.lost = True
                    return
                self.cancel = self._mine().filter(cancel_requested=True).exists()
        except Exception:  # noqa: BLE001 - a broken connection: the run will go stale, which is right
            logger.exception("run %s: heartbeat failed", self.run_id)
        finally:
            connection.close()

    def elapsed(self) -> float:
        return self.offset_s + time.monotonic() - self.t0

    def progress(self, p: dict) -> None:
        """mlcore's progress callback: written at most every PROGRESS_EVERY_S, and at each phase
        change or epoch end."""
        self.alive_at = time.monotonic()
        if self.lost:
            raise LeaseLost(f"run {self.run_id}: lease lost")
        now = time.monotonic()
        boundary = p.get("phase") != self.last_phase or p.get("step") == p.get("steps")
        if not boundary and now - self.last_write < PROGRESS_EVERY_S:
            return
        self.last_write, self.last_phase = now, p.get("phase")
        point = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in p.items()}
        point["t"] = round(self.elapsed(), 2)
        if p.get("phase") == "train" and p.get("steps"):
            point["global_step"] = (p["epoch"] - 1) * p["steps"] + p["step"]
        self.history.append({"kind": "progress", **point})
        if len(self.history) > MAX_HISTORY:
            self.history = _thin(self.history)
        self.write(progress=point, history=self.history)

    def started(self, *, pid, device: str) -> None:
        """The training process said hello: its pid (in the history, for whoever looks at the
        machine) and the device it trains on."""
        self.alive_at = time.monotonic()
        self.history.append({"kind": "process", "pid": pid, "device": device, "t": round(self.elapsed(), 2)})
        self.write(device=device[:100], history=self.history)

    def hung(self) -> bool:
        """No sign of life from the training for ``RUN_HANG_AFTER_S``."""
        return time.monotonic() - self.alive_at > settings.RUN_HANG_AFTER_S

    def phase(self, name: str, **extra) -> None:
        self.alive_at = time.monotonic()
        self.write(progress={"phase": name, "t": round(self.elapsed(), 2), **extra})

    def write(self, **fields) -> None:
        if not self._mine().update(heartbeat_at=timezone.now(), **fields):
            self.lost = True
            raise LeaseLost(f"run {self.run_id}: lease lost")
        self.cancel = self._mine().filter(cancel_requested=True).exists()

    def should_stop(self) -> bool:
        """Polled by mlcore every step; reads flags the writes and heartbeats refresh."""
        self.alive_at = time.monotonic()
        if self.lost:
            raise LeaseLost(f"run {self.run_id}: lease lost")  # no checkpoint: the new holder owns them
        return self.cancel

    def finish(self, state: str, reason: str = "", **fields) -> None:
        """The final write; LeaseLost when the lease is gone (the caller's transaction rolls back)."""
        updated = self._mine().update(state=state, state_reason=reason, finished_at=timezone.now(),
                                      heartbeat_at=timezone.now(), lease="", **fields)
        if not updated:
            raise LeaseLost(f"run {self.run_id}: lease lost")


def _thin(history: list) -> list:
    """Drop every other progress point of the older half; markers (attempts...) stay."""
    half = len(history) // 2
    old = [h for i, h in enumerate(history[:half]) if h.get("kind") != "progress" or i % 2 == 0]
    return old + history[half:]


def train_kwargs(run: TrainingRun, *, resume: bool) -> dict:
    """The keyword arguments of the run's ``mlcore.train.TrainConfig``, as plain JSON: what the
    training process (services.run_process) is started with."""
    return {**{k: v for k, v in run.config.items() if k in KNOWN},
            "manifest_uri": run.manifest_uri, "output_uri": run.output_uri, "labels": list(run.label_names),
            "resume": resume, "device": getattr(settings, "RUN_DEVICE", "auto"),
            "notes": {"run_id": run.pk, "task": run.task.name, "project": run.project.slug}}


def train_config(run: TrainingRun, *, resume: bool):
    from mlcore.train import TrainConfig

    return TrainConfig(**train_kwargs(run, resume=resume))


def outputs_complete(run: TrainingRun) -> bool:
    """mlcore writes run.json last: when it is there, training and prediction are done."""
    return storage.exists(storage.join(run.output_uri, "run.json")) and \
        storage.exists(storage.join(run.output_uri, "predictions.npz"))


class Cancelled(Exception):
    """The training process stopped on a cancel request (its checkpoint is kept)."""


class TrainingFailed(Exception):
    """The training process reported an error; ``reason`` is what the run shows."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


class ProcessLost(Exception):
    """The training process ended without a last word (killed, crashed): the run resumes."""


class WorkerGone(Exception):
    """The Celery worker this pool process belonged to is gone: stop, write nothing more."""


def child_env() -> dict:
    """The training process's environment: the worker's, with the S3 endpoint from the settings
    (mlcore.storage reads it from the environment)."""
    env = dict(os.environ)
    if settings.S3_ENDPOINT_URL:
        env["S3_ENDPOINT_URL"] = settings.S3_ENDPOINT_URL
    return env


POLL_S = 0.5  # how often the parent looks at the lease, cancel and its own parent between messages


def train_in_process(run: TrainingRun, session: RunSession, *, resume: bool) -> None:
    """Train ``run`` in a child process (services.run_process says why) and relay what it reports
    to ``session``; returns when the child has written the run's outputs.

    The parent acts on what it sees between messages: a lost lease or a worker that is gone
    kills the child (nothing more is written: the run's next holder owns the checkpoints), a
    cancel request asks it to stop (mlcore checkpoints, then ``cancelled``), no progress for
    ``RUN_HANG_AFTER_S`` kills it and fails the run. Whatever happens, the child is gone when
    this returns or raises (a Celery soft time limit included).
    """
    from celery.exceptions import SoftTimeLimitExceeded

    from .run_process import TrainingProcess

    ppid = os.getppid()
    child = TrainingProcess(train_kwargs(run, resume=resume), cwd=str(settings.BASE_DIR), env=child_env())
    logger.info("run %s: training in process %s", run.pk, child.pid)
    finished = False
    try:
        while True:
            messages = child.read(POLL_S)
            if messages is None:
                raise ProcessLost(f"training process {child.pid} {child.exit_description()}")
            for m in messages:
                kind = m.get("kind")
                if kind == "progress":
                    session.progress(m.get("p") or {})
                elif kind == "hello":
                    session.started(pid=m.get("pid"), device=str(m.get("device") or ""))
                elif kind == "done":
                    finished = True
                    return
                elif kind == "cancelled":
                    finished = True
                    raise Cancelled()
                elif kind == "error":
                    finished = True
                    raise TrainingFailed(str(m.get("error") or "the training process failed"))
            if session.lost:
                raise LeaseLost(f"run {run.pk}: lease lost")
            if os.getppid() != ppid:
                raise WorkerGone(f"run {run.pk}: the worker process {ppid} is gone")
            if session.hung():
                raise TrainingFailed(f"no progress for {settings.RUN_HANG_AFTER_S:.0f} s (RUN_HANG_AFTER_S); "
                                     f"the training process was stopped")
            if session.cancel:
                child.stop()
    except SoftTimeLimitExceeded:
        # The task's time limit: ask the child to stop (mlcore checkpoints at its next step),
        # give it until shortly before the hard limit, then let execute_run fail the run.
        child.stop()
        deadline = time.monotonic() + settings.TASK_TIME_LIMIT_GRACE_S / 2
        while time.monotonic() < deadline:
            messages = child.read(POLL_S)
            if messages is None or any(m.get("kind") in ("cancelled", "done", "error") for m in messages):
                break
        raise
    finally:
        # After its last word the child only exits (loader workers, interpreter shutdown);
        # in every other case it is killed here, before anyone else may take the run.
        child.close(grace=60 if finished else 0)


def execute_run(run_id: int, *, worker: str | None = None) -> TrainingRun | None:
    """Run a queued run here (the Celery task calls this; so can tests and ``manage.py train``).

    Claims the run (or returns at once when it is not ours), trains with mlcore in a child
    process (:func:`train_in_process`), resuming from the last checkpoint on a later attempt,
    loads the results and marks the run done; a failure marks it failed with the reason, a
    cancel request cancelled, a training process that dies without a word sends the run back
    to the queue (it resumes; after ``RUN_MAX_ATTEMPTS`` it fails). Safe to call twice for one
    run: see the module docstring.
    """
    from celery.exceptions import SoftTimeLimitExceeded

    from .run_results import load_run_results, read_json

    worker = worker or default_worker_id()
    claimed = claim_run(run_id, worker)
    if claimed is None:
        return TrainingRun.objects.filter(pk=run_id).first()
    run, token = claimed
    session = RunSession(run, token)
    session.start()
    t0 = time.perf_counter()
    try:
        resume = run.attempts > 1
        if resume and outputs_complete(run):
            logger.info("run %s: outputs already complete; loading them", run_id)
        else:
            logger.info("run %s: training (attempt %s%s)", run_id, run.attempts, ", resuming" if resume else "")
            train_in_process(run, session, resume=resume)
        result = read_json(storage.join(run.output_uri, "run.json"))
        session.phase("load")
        with transaction.atomic():
            # The run row is written last (load_run_results, then finish), so the heartbeat
            # thread's UPDATE waits for this transaction only briefly.
            run = TrainingRun.objects.get(pk=run_id)
            load_run_results(run, run_json=result)
            epochs = [{"kind": "epoch", **h} for h in result.get("history", [])]
            session.finish(State.DONE, "", history=session.history + epochs + [
                {"kind": "done", "t": round(session.elapsed(), 2)}],
                progress={"phase": "done", "t": round(session.elapsed(), 2)},
                timings={**run.timings, "elapsed_s": round(session.elapsed(), 2),
                         "execute_s": round(time.perf_counter() - t0, 2)})
        logger.info("run %s: done, test macro-F1 %s", run_id, run.test_macro_f1)
    except Cancelled:
        _final(session, State.CANCELLED, _cancel_reason(run_id))
    except (LeaseLost, WorkerGone) as e:
        logger.warning("%s; this worker stops without writing", e)
    except ProcessLost as e:
        logger.error("run %s: %s", run_id, e)
        _release_lost(session, str(e))
    except TrainingFailed as e:
        logger.error("run %s failed: %s", run_id, e.reason)
        _final(session, State.FAILED, e.reason[:2000])
    except SoftTimeLimitExceeded:
        limit = settings.RUN_TIME_LIMIT_S
        logger.error("run %s: time limit of %.0f s exceeded", run_id, limit)
        _final(session, State.FAILED, f"time limit exceeded: the run trained longer than {limit:.0f} s "
                                      f"(RUN_TIME_LIMIT_S); its last checkpoint is kept")
    except Exception as e:  # noqa: BLE001 - every failure is shown on the run
        logger.exception("run %s failed", run_id)
        _final(session, State.FAILED, f"{type(e).__name__}: {e}"[:2000])
    finally:
        session.stop()
        close_old_connections()
    return TrainingRun.objects.filter(pk=run_id).first()


def _cancel_reason(run_id: int) -> str:
    reason = TrainingRun.objects.filter(pk=run_id).values_list("state_reason", flat=True).first() or ""
    return reason.replace("cancel requested by", "cancelled by") or "cancelled"


def _final(session: RunSession, state: str, reason: str) -> None:
    try:
        session.finish(state, reason, progress={"phase": state, "t": round(session.elapsed(), 2)},
                       history=session.history + [{"kind": state, "t": round(session.elapsed(), 2)}])
    except LeaseLost:
        logger.warning("run %s: lease lost; %s not recorded", session.run_id, state)


def _release_lost(session: RunSession, reason: str) -> None:
    """The training process died under a live worker: give the run back at once (resumed from
    its checkpoint, as the stale-run check would do later), or fail it after
    ``RUN_MAX_ATTEMPTS``; only while the lease is still ours."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().filter(pk=session.run_id, lease=session.token,
                                                             state=State.RUNNING).first()
        if run is None:
            return
        run.history = session.history
        _lost(run, timezone.now(), reason=reason)


# --------------------------------------------------------------------------- stale runs

def check_stale_runs(*, stale_after: float | None = None, enqueue: bool = True) -> dict:
    """Resume or fail running runs whose worker stopped beating; return what was done.

    A running run with a heartbeat older than ``stale_after`` (default ``RUN_STALE_AFTER_S``)
    is queued again and re-sent (the next worker resumes it from its checkpoint), unless it
    had ``RUN_MAX_ATTEMPTS`` attempts already ("worker lost N times") or a cancel was
    requested (then it is cancelled). Its lease is cleared, so a worker that was only slow
    stops at its next write. Called every minute by the beat task.
    """
    stale_after = stale_after_s() if stale_after is None else stale_after
    cutoff = timezone.now() - timedelta(seconds=stale_after)
    done = {"requeued": [], "failed": [], "cancelled": []}
    candidates = TrainingRun.objects.filter(state=State.RUNNING).filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True)).values_list("pk", flat=True)
    for run_id in list(candidates):
        with transaction.atomic():
            run = TrainingRun.objects.select_for_update(skip_locked=True).filter(
                pk=run_id, state=State.RUNNING).filter(Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True)).first()
            if run is None:
                continue
            done[_lost(run, timezone.now(), enqueue=enqueue)].append(run.pk)
    return done


# --------------------------------------------------------------------------- queries (lineage)
#
# A suspects run's K fold models are TrainingRuns (leases, progress, resume apply to them),
# but they are not training runs of the task: they train on part of the train split, often
# for fewer epochs. ``TrainingRun.fold_of`` marks them and ``TrainingRun.objects.main()``
# leaves them out, so a fold is never "the latest run", never a baseline to compare with,
# never in a run list or F1 over runs.

def main_runs(task: Task):
    """The task's own training runs (no fold models)."""
    return TrainingRun.objects.main().filter(task=task)


def latest_finished_run(task: Task) -> TrainingRun | None:
    """The task's most recent training run that finished successfully (the dashboard's default,
    the image page's predictions); never a suspects fold model."""
    return main_runs(task).filter(state=State.DONE).order_by(
        F("finished_at").desc(nulls_last=True), "-id").first()


def active_run(task: Task) -> TrainingRun | None:
    """A queued or running training run of the task, if any (newest; fold models are the
    suspects run's business and do not count)."""
    return main_runs(task).filter(state__in=TrainingRun.ACTIVE_STATES).order_by("-id").first()


def baseline_run(run: TrainingRun) -> TrainingRun | None:
    """The run ``run`` is compared with: the run it retrains (its parent) when that finished,
    else the previous finished training run of the task (started before it). Never a fold
    model, and None for a fold model itself (its numbers are about a part of the split)."""
    if run.fold_of_id is not None:
        return None
    parent = run.parent if run.parent_id else None
    if parent is not None and parent.fold_of_id is None and parent.state == State.DONE:
        return parent
    return (main_runs(run.task).filter(state=State.DONE)
            .filter(Q(created_at__lt=run.created_at) | Q(created_at=run.created_at, id__lt=run.id))
            .exclude(id=run.id).order_by("-created_at", "-id").first())


def retags_between(run_a: TrainingRun, run_b: TrainingRun) -> int:
    """Human retags (annotators, MTurk) of the task made between the two runs' snapshots,
    in either order of the arguments: what a retag round changed between two runs."""
    a, b = sorted([run_a.snapshot_at or run_a.created_at, run_b.snapshot_at or run_b.created_at])
    return LabelEvent.objects.filter(task_id=run_b.task_id, source__in=HUMAN_SOURCES,
                                     created_at__gt=a, created_at__lte=b).count()


def retags_since(run: TrainingRun) -> int:
    """Human retags of the run's task since its snapshot."""
    return LabelEvent.objects.filter(task_id=run.task_id, source__in=HUMAN_SOURCES,
                                     created_at__gt=run.snapshot_at or run.created_at).count()


def changed_test_labels(run: TrainingRun) -> dict:
    """How the run's test set moved since its snapshot: the test images whose label today is
    not the one they had then, and the net change of each label's count (a retag from the
    grids moves the next run's support: 100 -> 102 / 98).

    Read from the label events since the snapshot (any source: an import that relabels
    moves the test set too), never from the run's predictions: an image's label at the
    snapshot is the ``from`` of its first event since, its label today the ``to`` of its
    last one, so A -> B -> A is no change. Costs the events since the snapshot, nothing per
    test image. ``{"images": n, "labels": [{"name", "delta"}]}``, labels in the task's order.
    """
    first_from, last_to = {}, {}
    events = (LabelEvent.objects.filter(task_id=run.task_id, image__split=Split.TEST,
                                        created_at__gt=run.snapshot_at or run.created_at)
              .order_by("created_at", "id").values_list("image_id", "from_label_id", "to_label_id"))
    for image_id, from_id, to_id in events.iterator():
        first_from.setdefault(image_id, from_id)
        last_to[image_id] = to_id
    delta = {}
    changed = [i for i in last_to if last_to[i] != first_from[i]]
    for image_id in changed:
        delta[first_from[image_id]] = delta.get(first_from[image_id], 0) - 1
        delta[last_to[image_id]] = delta.get(last_to[image_id], 0) + 1
    labels = [{"name": lb.name, "delta": delta[lb.id]} for lb in ordered_labels(run.task) if delta.get(lb.id)]
    if delta.get(None):
        labels.append({"name": "no label", "delta": delta[None]})
    return {"images": len(changed), "labels": labels}


# --------------------------------------------------------------------------- automatic retraining

def maybe_auto_retrain(task: Task, *, enqueue: bool = True) -> TrainingRun | None:
    """Retrain ``task`` when its project asks for it (``Project.auto_retrain_after`` = N) and N
    human retags were made since the task's latest run; returns the new run or None.

    Reuses the config of the latest run that finished (a task never trained successfully is
    not trained automatically). Never piles runs up: nothing starts while a run of the task
    is queued or running, N more retags are needed after any run (a failed one included, so
    that a failing config is not retried on every retag), and the task row is locked so that
    two concurrent retags start one run, not two.
    Call it after retags commit (see :func:`schedule_auto_retrain`).
    """
    n = Project.objects.filter(pk=task.project_id).values_list("auto_retrain_after", flat=True).first()
    if not n:
        return None
    with transaction.atomic():
        Task.objects.select_for_update().filter(pk=task.pk).first()
        if active_run(task) is not None:
            return None
        latest = main_runs(task).order_by("-created_at", "-id").first()
        base = latest_finished_run(task)
        if base is None or retags_since(latest) < n:
            return None
        try:
            run = retrain(base, by=None, trigger=Trigger.AUTO, enqueue=enqueue)
        except RunConfigError as e:
            logger.warning("task %s: automatic retrain not started: %s", task.pk, e)
            return None
    logger.info("task %s: %s retags since run %s; automatic retrain %s", task.pk, n, base.pk, run.pk)
    return run


def schedule_auto_retrain(task: Task) -> None:
    """Cheap hook for after a human retag: when the project retrains automatically, check (in the
    worker, after the retag commits) whether it is time. Does nothing otherwise."""
    if not Project.objects.filter(pk=task.project_id, auto_retrain_after__isnull=False).exists():
        return
    # The retag is saved whatever happens here: a broker that is down only delays the
    # check (the next retag schedules it again), so there is no job to fail.
    send_on_commit("auto_retrain", task.pk)