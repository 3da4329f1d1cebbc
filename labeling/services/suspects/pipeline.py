"""A suspects run's life: start, fold runs, advance, score; and what its page polls.

::

    start_suspect_run  check the run (done, with embeddings), create the SuspectRun (queued),
                       queue ``labeling.tasks.suspects_prepare`` (default queue)
    prepare_folds      mlcore.folds.fold_configs(run's config, k) -> one child TrainingRun per
                       fold (parent = the run, same snapshot), each sent as
                       ``labeling.tasks.train_suspects_fold`` to the gpu queue
    execute_fold       in a gpu worker: services.runs.execute_run(fold run) - the ordinary run
                       machinery: lease, heartbeat, progress, resume from checkpoint, stale
                       detection - then :func:`advance`
    advance            under a row lock on the SuspectRun: when every fold run is done the
                       first caller moves it to ``scoring`` and queues ``suspects_score``; a
                       failed or cancelled fold fails it. Idempotent: the beat
                       (``advance_suspect_runs``, every minute) and ``manage.py suspects
                       --advance`` call it too, so a fold that the stale-run check re-sent as a
                       plain ``train_run`` still leads to scoring. Reads (:func:`status`) never do.
    score_suspect_run  mlcore.folds.combine_folds -> oos.npz (train split from the folds, test
                       split from the run's own predictions); mlcore.suspects.score with the
                       run's embeddings.npz; near duplicates; the similar-images index; then
                       ``results.store_results`` writes suspects, clusters, members and pairs in
                       one transaction (replacing earlier rows: a retried scoring is harmless).

mlcore is imported lazily: the web process never loads torch for this.
"""
from __future__ import annotations

import logging
import time

import numpy as np
from django.db import transaction
from django.utils import timezone

from mlcore import storage

from ...models import SuspectRun, TrainingRun
from ..enqueue import send_on_commit
from ..projects import project_storage_uri
from .config import DEFAULTS, SuspectError, validate_config
from .results import store_results

logger = logging.getLogger(__name__)
State = SuspectRun.State


def start_suspect_run(*, run: TrainingRun, by=None, config: dict | None = None, enqueue: bool = True) -> SuspectRun:
    """Create a suspects run for a finished training run and queue its preparation."""
    config = validate_config(config)
    if run.state != TrainingRun.State.DONE:
        raise SuspectError(f"run {run.pk} is {run.state}; suspects need a finished run")
    if not storage.exists(storage.join(run.output_uri, "embeddings.npz")):
        raise SuspectError(f"run {run.pk} has no embeddings.npz")
    with transaction.atomic():
        sr = SuspectRun.objects.create(project_id=run.project_id, task_id=run.task_id, run=run, config=config,
                                       created_by=by, progress={"phase": "queued"})
        sr.output_uri = project_storage_uri(run.project, "suspects", str(sr.pk))
        sr.save(update_fields=["output_uri"])
        if enqueue:
            _send_on_commit("suspects_prepare", sr.pk)
    logger.info("suspects %s of run %s queued (k=%s)", sr.pk, run.pk, config["k"])
    return sr


def _send_on_commit(task_name: str, sr_id: int, *args) -> None:
    """Send a step of suspects run ``sr_id`` once the transaction commits (services.enqueue);
    a broker that cannot be reached fails the run, with the reason."""
    def fail(reason: str) -> None:
        SuspectRun.objects.filter(pk=sr_id).exclude(state__in=SuspectRun.FINAL_STATES).update(
            state=State.FAILED, state_reason=reason, finished_at=timezone.now())

    send_on_commit(task_name, sr_id, *args, fail=fail)


def base_config(sr: SuspectRun):
    """The run's TrainConfig (its snapshot), with the folds' epochs."""
    from ..runs import train_config

    cfg = train_config(sr.run, resume=False)
    if sr.config.get("fold_epochs"):
        cfg.epochs = int(sr.config["fold_epochs"])
    return cfg


def prepare_folds(sr_id: int, *, enqueue: bool = True) -> SuspectRun | None:
    """Create the K fold runs (child TrainingRuns) and send them to the gpu queue. A second
    call (redelivery) finds the run past ``queued`` and re-sends nothing but unfinished folds'
    messages are left to the runs machinery."""
    import dataclasses

    from mlcore.folds import fold_configs

    from ..runs import KNOWN, code_version

    with transaction.atomic():
        sr = SuspectRun.objects.select_for_update().select_related("run", "run__project").filter(pk=sr_id).first()
        if sr is None or sr.state != State.QUEUED:
            return sr
        run = sr.run
        try:
            configs = fold_configs(base_config(sr), sr.config["k"], storage.join(sr.output_uri, "folds"),
                                   tta_flip=sr.config.get("flip", DEFAULTS["flip"]))
        except Exception as e:  # noqa: BLE001 - shown on the suspects run
            logger.exception("suspects %s: fold configs failed", sr_id)
            _fail(sr, f"fold configs: {type(e).__name__}: {e}")
            return sr
        ids = []
        for i, cfg in enumerate(configs):
            fields = dataclasses.asdict(cfg)
            fold = TrainingRun.objects.create(
                project_id=run.project_id, task_id=run.task_id, parent=run, fold_of=sr, created_by=sr.created_by,
                config={k: v for k, v in fields.items() if k in KNOWN}, manifest_uri=cfg.manifest_uri,
                manifest_sha256=run.manifest_sha256, label_ids=list(run.label_ids),
                label_names=list(run.label_names), snapshot_at=run.snapshot_at, code_version=code_version(),
                n_train=run.n_train - run.n_train // len(configs), n_test=run.n_train // len(configs),
                output_uri=cfg.output_uri, state_reason=f"fold {i + 1}/{len(configs)} of suspects {sr.pk}")
            ids.append(fold.pk)
        sr.fold_run_ids = ids
        sr.state, sr.started_at = State.FOLDS, timezone.now()
        sr.progress = {"phase": "folds", "folds": len(ids), "folds_done": 0}
        sr.save(update_fields=["fold_run_ids", "state", "started_at", "progress"])
        if enqueue:
            for fold_id in ids:
                _send_on_commit("train_suspects_fold", sr.pk, fold_id)
    return sr


def execute_fold(sr_id: int, fold_run_id: int, *, worker: str | None = None, enqueue: bool = True) -> None:
    """Train one fold, then see whether scoring can start. The fold is an ordinary training run:
    ``execute_run`` trains it in a process of its own (so its DataLoader may start workers inside
    a Celery pool process) under the run's lease, heartbeats and cancel."""
    from ..runs import execute_run

    execute_run(fold_run_id, worker=worker)
    advance(sr_id, enqueue=enqueue)


def advance(sr_id: int, *, enqueue: bool = True) -> SuspectRun | None:
    """Move a suspects run on when its folds are finished; safe to call any time, from anywhere.

    The row lock makes the last fold (or a poll) the only one to start scoring.
    """
    with transaction.atomic():
        sr = SuspectRun.objects.select_for_update().filter(pk=sr_id).first()
        if sr is None or sr.state != State.FOLDS:
            return sr
        folds = list(TrainingRun.objects.filter(pk__in=sr.fold_run_ids).values_list("pk", "state", "state_reason"))
        bad = [(pk, st, why) for pk, st, why in folds if st in (TrainingRun.State.FAILED, TrainingRun.State.CANCELLED)]
        done = sum(1 for _, st, _ in folds if st == TrainingRun.State.DONE)
        if bad or len(folds) < len(sr.fold_run_ids):
            pk, st, why = bad[0] if bad else (None, "gone", "")
            _fail(sr, f"fold run {pk} {st}: {why}"[:2000])
            return sr
        sr.progress = {**sr.progress, "folds_done": done}
        if done == len(folds):
            sr.state = State.SCORING
            sr.progress = {**sr.progress, "phase": "scoring"}
            if enqueue:
                _send_on_commit("suspects_score", sr.pk)
        sr.save(update_fields=["state", "progress"])
    return sr


def advance_open_runs() -> int:
    """Advance every suspects run still training folds (beat, every minute): a fold that the
    stale-run check re-sent finishes as a plain training run, and nobody else would move on."""
    ids = list(SuspectRun.objects.filter(state=State.FOLDS).values_list("pk", flat=True))
    for sr_id in ids:
        advance(sr_id)
    return len(ids)


def _fail(sr: SuspectRun, reason: str) -> None:
    SuspectRun.objects.filter(pk=sr.pk).update(state=State.FAILED, state_reason=reason, finished_at=timezone.now(),
                                               progress={**sr.progress, "phase": "failed"})
    sr.state, sr.state_reason = State.FAILED, reason


def score_suspect_run(sr_id: int) -> SuspectRun | None:
    """Combine the folds, score, find near duplicates, build the similar-images index, store."""
    sr = SuspectRun.objects.select_related("run").filter(pk=sr_id).first()
    if sr is None or sr.state != State.SCORING:
        return sr
    try:
        from mlcore.folds import combine_folds, held_out_spaces
        from mlcore.similar import SimilarIndex
        from mlcore.suspects import score

        from ..run_results import image_ids_for

        t0 = time.perf_counter()
        run = sr.run
        fold_uris = list(TrainingRun.objects.filter(pk__in=sr.fold_run_ids).order_by("pk")
                         .values_list("output_uri", flat=True))
        oos_uri = combine_folds(fold_uris, run.output_uri, storage.join(sr.output_uri, "oos.npz"))
        oos = storage.read_npz(oos_uri)
        emb_file = storage.read_npz(storage.join(run.output_uri, "embeddings.npz"))
        row = {u: i for i, u in enumerate(emb_file["uri"].tolist())}
        keep = [i for i, u in enumerate(oos["uri"].tolist()) if u in row]
        uris = oos["uri"][keep]
        emb = emb_file["emb"][[row[u] for u in uris.tolist()]].astype(np.float32)
        prob = np.asarray(oos["prob"][keep], dtype=np.float32)
        given = np.asarray(oos["label"][keep], dtype=np.int64)
        split = np.asarray(oos["split"][keep]).astype(str)
        t1 = time.perf_counter()
        kwargs = {"method": sr.config.get("method", "fused"), "knn": int(sr.config.get("knn", 10))}
        for key in ("cluster_threshold", "core_share", "decision"):
            if sr.config.get(key) is not None:
                kwargs[key] = sr.config[key]
        if sr.config.get("embeddings", "run") == "folds":
            kwargs["spaces"] = held_out_spaces(fold_uris, run.output_uri, uris.tolist(), oos["fold"][keep])
        scores = score(prob, given, emb, **kwargs)
        image_ids = image_ids_for(run, uris)
        index_uri = storage.join(sr.output_uri, "similar.npz")
        SimilarIndex(emb, image_ids).save(index_uri)
        t2 = time.perf_counter()
        SuspectRun.objects.filter(pk=sr.pk).update(oos_uri=oos_uri, index_uri=index_uri)
        sr.oos_uri, sr.index_uri = oos_uri, index_uri
        store_results(sr, image_ids=image_ids, given=given, scores=scores, prob=prob)
        _store_fit(sr, scores)
        from ..duplicates import find_near_duplicates  # hashes / pretrained features, not the run's embedding

        find_near_duplicates(sr, image_ids=image_ids, splits=split, labels=given)
        sr.timings = {**sr.timings, "combine_s": round(t1 - t0, 3), "score_s": round(t2 - t1, 3),
                      "store_s": round(time.perf_counter() - t2, 3)}
        sr.state, sr.finished_at = State.DONE, timezone.now()
        sr.progress = {**sr.progress, "phase": "done"}
        sr.save(update_fields=["timings", "state", "finished_at", "progress"])
    except Exception as e:  # noqa: BLE001 - every failure is shown on the suspects run
        logger.exception("suspects %s: scoring failed", sr_id)
        _fail(sr, f"scoring: {type(e).__name__}: {e}"[:2000])
    return sr


def _store_fit(sr: SuspectRun, scores: dict) -> None:
    """What the data said about the witnesses, with the counts: their weights, the flagged set's
    expected precision and the decision rule. (Each class's cluster cut is ``sr.cluster_cuts``,
    stored by ``results.store_results``.)"""
    def number(key, digits):  # JSON has no NaN
        v = float(scores.get(key, np.nan))
        return None if np.isnan(v) else round(v, digits)

    fit = {"witness_weights": {str(n): round(float(w), 4) for n, w in
                               zip(scores.get("witness_names", []), scores.get("witness_weights", []))},
           "expected_precision": number("expected_precision", 4), "expected_errors": number("expected_errors", 1),
           "decision": str(scores.get("decision", ""))}
    sr.counts = {**sr.counts, **fit}
    SuspectRun.objects.filter(pk=sr.pk).update(counts=sr.counts)


def execute_here(sr: SuspectRun) -> SuspectRun:
    """Run every step in this process (``manage.py suspects --here``, tests)."""
    prepare_folds(sr.pk, enqueue=False)
    sr.refresh_from_db()
    for fold_id in sr.fold_run_ids:
        execute_fold(sr.pk, fold_id, enqueue=False)
    score_suspect_run(sr.pk)
    sr.refresh_from_db()
    return sr



def latest_done(task=None, *, project=None) -> SuspectRun | None:
    """The task's (or project's) most recently finished suspects run."""
    qs = SuspectRun.objects.filter(state=State.DONE)
    if task is not None:
        qs = qs.filter(task=task)
    if project is not None:
        qs = qs.filter(project=project)
    return qs.order_by("-finished_at", "-id").first()


def status(sr: SuspectRun) -> dict:
    """What the suspects run page polls. A read: it moves nothing on (the fold tasks and the
    beat call :func:`advance`), so a page shows what the workers have written."""
    from ..suspect_quality import folds_eta

    folds = [{"id": r.pk, "state": r.state, "progress": r.progress}
             for r in TrainingRun.objects.filter(pk__in=sr.fold_run_ids).order_by("pk")]
    return {"id": sr.pk, "state": sr.state, "state_reason": sr.state_reason, "progress": sr.progress,
            "folds": folds, "folds_eta_s": folds_eta(sr, folds) if sr.state == State.FOLDS else None,
            "counts": sr.counts, "finished": sr.state in SuspectRun.FINAL_STATES}
