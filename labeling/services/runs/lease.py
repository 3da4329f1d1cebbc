"""The lease a worker holds on a run, and the stale-run check that recovers lost ones.

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
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from ...models import TrainingRun
from .lineage import code_version, holder_dead
from .start import enqueue_run

logger = logging.getLogger(__name__)
State = TrainingRun.State

PROGRESS_EVERY_S = 0.5   # at most ~2 progress writes a second
MAX_HISTORY = 1200       # progress points kept on the run; older ones are thinned out


def stale_after_s() -> float:
    """A running run whose heartbeat is older than this is presumed lost (RUN_STALE_AFTER_S)."""
    return settings.RUN_STALE_AFTER_S


def heartbeat_s() -> float:
    """How often the worker renews its lease (RUN_HEARTBEAT_S); well inside the stale threshold."""
    return min(settings.RUN_HEARTBEAT_S, stale_after_s() / 4)


def max_attempts() -> int:
    """Attempts before a run whose workers keep dying fails (RUN_MAX_ATTEMPTS)."""
    return settings.RUN_MAX_ATTEMPTS


class LeaseLost(Exception):
    """Another worker holds the run now (or it was requeued): stop without writing."""


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
            if fresh and not holder_dead(run.worker):
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


def recover_lost(run: TrainingRun, now, *, reason: str = "", enqueue: bool = True) -> str:
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
            done[recover_lost(run, timezone.now(), enqueue=enqueue)].append(run.pk)
    return done
