"""Executing a claimed run in the worker: the training in a child process of its own
(mlcore.train.train there; services.run_process says why), what it reports relayed to the
run's :class:`~.lease.RunSession`, the results loaded (services.run_results), the run marked
done / failed / cancelled, or given back to the queue when its training process dies.

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
import time

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from mlcore import storage
from mlcore.config import TrainConfig

from ...models import TrainingRun
from .config import KNOWN
from .lease import LeaseLost, RunSession, claim_run, recover_lost
from .lineage import default_worker_id

logger = logging.getLogger(__name__)
State = TrainingRun.State


def train_kwargs(run: TrainingRun, *, resume: bool) -> dict:
    """The keyword arguments of the run's ``mlcore.train.TrainConfig``, as plain JSON: what the
    training process (services.run_process) is started with."""
    return {**{k: v for k, v in run.config.items() if k in KNOWN},
            "manifest_uri": run.manifest_uri, "output_uri": run.output_uri, "labels": list(run.label_names),
            "resume": resume, "device": getattr(settings, "RUN_DEVICE", "auto"),
            "notes": {"run_id": run.pk, "task": run.task.name, "project": run.project.slug}}


def train_config(run: TrainingRun, *, resume: bool) -> TrainConfig:
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

    from ..run_process import TrainingProcess

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

    from ..run_results import load_run_results, read_json

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
        # The limit is a signal: its exception may have cut a query short (a progress write),
        # leaving this connection mid-command. The failure is written on a fresh one.
        connection.close()
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
        recover_lost(run, timezone.now(), reason=reason)
