"""Suspects: images whose label is probably wrong, found from a finished training run.

The life of a suspects run::

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
                       failed or cancelled fold fails it. Idempotent, so it is also called
                       by the status page / API poll and ``manage.py suspects --advance``:
                       a fold that the stale-run check re-sent as a plain ``train_run``
                       still leads to scoring.
    score_suspect_run  mlcore.folds.combine_folds -> oos.npz (train split from the folds, test
                       split from the run's own predictions); mlcore.suspects.score with the
                       run's embeddings.npz; near duplicates; the similar-images index; then
                       :func:`store_results` writes suspects, clusters, members and pairs in
                       one transaction (replacing earlier rows: a retried scoring is harmless).

The queue: annotators lease the best open suspect (``select_for_update(skip_locked=True)``
and ``lease_until``), so several annotators never get the same image at the same time;
an expired lease frees the suspect. :func:`resolve` retags through services.retag with
the annotation version the page saw (409 rule).

A verified image (a person confirmed its current label, ``Annotation.verified``) is not a
suspect again until its label changes (a non-human change clears ``verified``); nor is an
image whose label changed since the training snapshot (the scores are about the old label).

mlcore is imported lazily: the web process never loads torch for this.
"""
from __future__ import annotations

import logging
import time
from datetime import timedelta

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Count, Exists, OuterRef, Q
from django.utils import timezone

from mlcore import storage

from ..models import (Annotation, Cluster, ClusterMember, Image, Label, NearDuplicate, Suspect, SuspectRun,
                      TrainingExclusion, TrainingRun)
from .enqueue import send
from .projects import project_storage_uri
from .retag import RetagConflict, retag_image
from .suspect_quality import ranking_order

logger = logging.getLogger(__name__)
State = SuspectRun.State
Status = Suspect.Status

DEFAULTS = {"k": 4, "fold_epochs": None, "method": "fused", "cluster_threshold": None, "knn": 10,
            "duplicate_threshold": 0.97, "core_share": None, "decision": None, "embeddings": "folds"}
# embeddings: "folds" (kNN and clusters of each image in the fold model that held it out: never
# saw its label) or "run" (the main run's, which trained on every label). decision None:
# mlcore.suspects.DEFAULT_DECISION. Both defaults: bench/suspects_cifar10n.py.
EMBEDDINGS = ("folds", "run")
BULK = 5000


def lease_seconds() -> float:
    """How long an annotator holds a suspect they were shown (SUSPECT_LEASE_S, default 5 minutes)."""
    return settings.SUSPECT_LEASE_S


class SuspectError(ValueError):
    """A suspects run cannot start (run not done, bad config...)."""


class SuspectResolved(Exception):
    """The suspect was already resolved (by someone else, or a second keypress)."""

    def __init__(self, suspect: Suspect):
        self.suspect = suspect
        who = suspect.resolved_by.get_username() if suspect.resolved_by_id else "someone"
        super().__init__(f"this suspect was already {suspect.status} by {who}")


# --------------------------------------------------------------------------- start

def validate_config(config: dict | None) -> dict:
    given = dict(config or {})
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise SuspectError(f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(DEFAULTS))}")
    out = {**DEFAULTS, **{k: v for k, v in given.items() if v not in ("",)}}
    try:
        out["k"] = int(out["k"])
        out["knn"] = int(out["knn"])
        out["fold_epochs"] = None if out["fold_epochs"] in (None, "") else int(out["fold_epochs"])
        out["cluster_threshold"] = None if out["cluster_threshold"] in (None, "") else float(out["cluster_threshold"])
        out["duplicate_threshold"] = float(out["duplicate_threshold"])
        out["core_share"] = None if out["core_share"] in (None, "") else float(out["core_share"])
    except (TypeError, ValueError) as e:
        raise SuspectError(f"bad number in config: {e}") from None
    if not 2 <= out["k"] <= 20:
        raise SuspectError("k (folds) must be between 2 and 20")
    if out["fold_epochs"] is not None and not 1 <= out["fold_epochs"] <= 1000:
        raise SuspectError("fold_epochs must be between 1 and 1000")
    if not 1 <= out["knn"] <= 100:
        raise SuspectError("knn must be between 1 and 100")
    if not 0 < out["duplicate_threshold"] <= 1:
        raise SuspectError("duplicate_threshold must be in (0, 1]")
    from mlcore.suspects import DECISIONS, METHODS

    if out["core_share"] is not None and not 0.5 <= out["core_share"] < 1:
        raise SuspectError("core_share must be in [0.5, 1)")
    if out["method"] not in METHODS:
        raise SuspectError(f"unknown method {out['method']!r}; choose one of {', '.join(METHODS)}")
    if out["decision"] not in (None, *DECISIONS):
        raise SuspectError(f"unknown decision {out['decision']!r}; choose one of {', '.join(DECISIONS)}")
    if out["embeddings"] not in EMBEDDINGS:
        raise SuspectError(f"unknown embeddings {out['embeddings']!r}; choose one of {', '.join(EMBEDDINGS)}")
    return out


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
            transaction.on_commit(lambda: _send("suspects_prepare", sr.pk))
    logger.info("suspects %s of run %s queued (k=%s)", sr.pk, run.pk, config["k"])
    return sr


def _send(task_name: str, *args) -> None:
    """Send a step of suspects run ``args[0]``; a broker that cannot be reached fails the run."""
    def fail(reason: str) -> None:
        SuspectRun.objects.filter(pk=args[0]).exclude(state__in=SuspectRun.FINAL_STATES).update(
            state=State.FAILED, state_reason=reason, finished_at=timezone.now())

    send(task_name, *args, fail=fail)


def base_config(sr: SuspectRun):
    """The run's TrainConfig (its snapshot), with the folds' epochs."""
    from .runs import train_config

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

    from .runs import KNOWN, code_version

    with transaction.atomic():
        sr = SuspectRun.objects.select_for_update().select_related("run", "run__project").filter(pk=sr_id).first()
        if sr is None or sr.state != State.QUEUED:
            return sr
        run = sr.run
        try:
            configs = fold_configs(base_config(sr), sr.config["k"], storage.join(sr.output_uri, "folds"))
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
                transaction.on_commit(lambda f=fold_id: _send("train_suspects_fold", sr.pk, f))
    return sr


def execute_fold(sr_id: int, fold_run_id: int, *, worker: str | None = None, enqueue: bool = True) -> None:
    """Train one fold, then see whether scoring can start. The fold is an ordinary training run:
    ``execute_run`` trains it in a process of its own (so its DataLoader may start workers inside
    a Celery pool process) under the run's lease, heartbeats and cancel."""
    from .runs import execute_run

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
                transaction.on_commit(lambda: _send("suspects_score", sr.pk))
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

        from .run_results import image_ids_for

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
        _store_fit(sr, scores, given)
        from .duplicates import find_near_duplicates  # hashes / pretrained features, not the run's embedding

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


def _store_fit(sr: SuspectRun, scores: dict, given) -> None:
    """What the data said about the witnesses, with the counts: their weights, the flagged set's
    expected precision, the cluster cut of each class (cosine distance) and the decision rule."""
    names = dict(Label.objects.filter(pk__in=sr.run.label_ids).values_list("pk", "name"))
    cut = np.asarray(scores.get("cluster_cut", np.full(len(given), np.nan)), dtype=float)
    cuts = {}
    for i, label_id in enumerate(sr.run.label_ids):
        rows = np.flatnonzero(np.asarray(given) == i)
        if len(rows) and np.isfinite(cut[rows[0]]):
            cuts[names.get(label_id, str(label_id))] = round(float(cut[rows[0]]), 4)
    def number(key, digits):  # JSON has no NaN
        v = float(scores.get(key, np.nan))
        return None if np.isnan(v) else round(v, digits)

    fit = {"witness_weights": {str(n): round(float(w), 4) for n, w in
                               zip(scores.get("witness_names", []), scores.get("witness_weights", []))},
           "expected_precision": number("expected_precision", 4), "expected_errors": number("expected_errors", 1),
           "cluster_cuts": cuts, "decision": str(scores.get("decision", ""))}
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


# --------------------------------------------------------------------------- storing scores

def reason_text(bits: int, *, given: str | None, suggested: str | None, p_given: float | None,
                knn: float | None) -> str:
    parts = []
    if bits & Suspect.MODEL:
        parts.append(f"model disagrees: p({given})={p_given:.2f}, suggests {suggested}" if p_given is not None
                     else f"model suggests {suggested}")
    if bits & Suspect.CLUSTER:
        parts.append(f"outlier of the {given} clusters")
    if bits & Suspect.KNN:
        parts.append(f"neighbours disagree ({knn:.0%} agree)" if knn is not None else "neighbours disagree")
    return "; ".join(parts)[:500]


@transaction.atomic
def store_results(sr: SuspectRun, *, image_ids, given, scores: dict, pairs=(), prob=None) -> dict:
    """Write the suspects, clusters (with members) and near-duplicate pairs of ``scores``
    (mlcore.suspects.score's dict, rows aligned with ``image_ids`` and ``given`` label
    indices in ``sr.run.label_ids`` order); replaces what ``sr`` had. Returns the counts.

    Flagged images become suspects unless their annotation is verified now or their label
    is no longer the scored one.
    """
    image_ids = np.asarray(image_ids, dtype=np.int64)
    given = np.asarray(given, dtype=np.int64)
    label_ids = np.asarray(sr.run.label_ids, dtype=np.int64)
    names = dict(Label.objects.filter(pk__in=label_ids.tolist()).values_list("pk", "name"))
    n = len(image_ids)

    def col(name, default=None):
        v = scores.get(name)
        return np.asarray(v) if v is not None else default

    flagged = col("flagged", np.zeros(n, bool)).astype(bool)
    score = col("score", np.zeros(n)).astype(float)
    suggested = col("suggested", given).astype(np.int64)
    reasons = col("reasons", np.zeros(n, np.int64)).astype(np.int64)
    self_conf = col("self_confidence")
    knn = col("knn_agreement")
    cluster_id = col("cluster_id")
    is_core = col("is_core")
    outlier = col("cluster_outlier", np.zeros(n, bool)).astype(bool)

    Suspect.objects.filter(suspect_run=sr).delete()
    Cluster.objects.filter(suspect_run=sr).delete()
    NearDuplicate.objects.filter(suspect_run=sr).delete()
    now = timezone.now()
    # The ranking with its ties broken by the other evidence (suspect_quality.ranking_order).
    order = ranking_order(score, self_confidence=self_conf, knn_agreement=knn, reasons=reasons, image_ids=image_ids)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)

    def label_of(i):
        return int(label_ids[i]) if 0 <= i < len(label_ids) else None

    # Suspects: flagged, labelled, not verified, label unchanged since the snapshot.
    idx = np.flatnonzero(flagged & (given >= 0))
    notes = {a[0]: a[1:] for a in Annotation.objects.filter(task_id=sr.task_id, image_id__in=image_ids[idx].tolist())
             .values_list("image_id", "label_id", "version", "verified")}
    rows, skipped_verified, skipped_changed = [], 0, 0
    for i in idx.tolist():
        image_id, g = int(image_ids[i]), label_of(int(given[i]))
        label_id, version, verified = notes.get(image_id, (None, 0, False))
        if label_id != g:
            skipped_changed += 1
            continue
        if verified:
            skipped_verified += 1
            continue
        s = label_of(int(suggested[i]))
        p_given = float(prob[i, given[i]]) if prob is not None else (
            float(self_conf[i]) if self_conf is not None else None)
        k = float(knn[i]) if knn is not None else None
        rows.append(Suspect(
            suspect_run=sr, image_id=image_id, task_id=sr.task_id, score=float(score[i]), suggested_label_id=s,
            given_label_id=g, version=version, reasons=int(reasons[i]), rank=int(rank[i]),
            self_confidence=float(self_conf[i]) if self_conf is not None else None, knn_agreement=k,
            reason_text=reason_text(int(reasons[i]), given=names.get(g), suggested=names.get(s), p_given=p_given,
                                    knn=k)))
    Suspect.objects.bulk_create(rows, batch_size=BULK)

    # Clusters per class: (given label, cluster id) -> members; core if its members are core.
    n_clusters = n_outliers = 0
    if cluster_id is not None:
        cluster_id = cluster_id.astype(np.int64)
        groups: dict[tuple[int, int], list[int]] = {}
        for i in np.flatnonzero(given >= 0).tolist():
            groups.setdefault((int(given[i]), int(cluster_id[i])), []).append(i)
        made = Cluster.objects.bulk_create([
            Cluster(suspect_run=sr, label_id=label_of(g), number=c, size=len(members),
                    is_core=bool(is_core is not None and np.asarray(is_core)[members].any()))
            for (g, c), members in groups.items()], batch_size=BULK)
        members = []
        for cluster, rows_i in zip(made, groups.values()):
            for i in rows_i:
                members.append(ClusterMember(cluster_id=cluster.pk, image_id=int(image_ids[i]),
                                             is_outlier=bool(outlier[i])))
                n_outliers += bool(outlier[i])
        ClusterMember.objects.bulk_create(members, batch_size=BULK)
        n_clusters = len(made)

    # mlcore's kinds: "duplicate", "cross_split", "label_conflict" or both joined by "+": one row
    # per kind we show (a plain duplicate, same split and label, is harmless and not stored).
    dups = [NearDuplicate(suspect_run=sr, image_a_id=int(image_ids[i]), image_b_id=int(image_ids[j]),
                          similarity=float(sim), kind=part)
            for i, j, sim, kind in pairs for part in str(kind).split("+") if part in NearDuplicate.Kind.values]
    NearDuplicate.objects.bulk_create(dups, batch_size=BULK)
    counts = {"scored": n, "flagged": int(flagged.sum()), "suspects": len(rows),
              "skipped_verified": skipped_verified, "skipped_changed": skipped_changed,
              "clusters": n_clusters, "outliers": n_outliers, "near_duplicates": len(dups)}
    cuts = cluster_cuts(scores, label_ids, given)
    scores_uri = write_scores(sr, image_ids=image_ids, given=np.where(given >= 0, label_ids[np.maximum(given, 0)], -1)
                              if len(label_ids) else given, score=score, flagged=flagged, rank=rank)
    sr.counts, sr.scored_at, sr.cluster_cuts, sr.scores_uri = counts, now, cuts, scores_uri
    SuspectRun.objects.filter(pk=sr.pk).update(counts=counts, scored_at=now, cluster_cuts=cuts, scores_uri=scores_uri)
    return counts


def cluster_cuts(scores: dict, label_ids, given=None) -> dict:
    """{label id (text): cosine cut} from mlcore's result when it says which cut each class's
    clustering used (``cluster_cut``: per image, the cut of its class, as ``mlcore.suspects.score``
    returns it; or one per class, or one for all); {} when it does not (the configured or
    default cut was used: see :func:`cut_shown`)."""
    for key in ("cluster_cut", "cluster_cuts", "cluster_threshold"):
        v = scores.get(key)
        if v is None:
            continue
        a = np.atleast_1d(np.asarray(v, dtype=np.float64))
        if given is not None and a.size == len(given) and a.size != len(label_ids):
            g = np.asarray(given)
            a = np.array([a[np.flatnonzero(g == i)[0]] if (g == i).any() else np.nan
                          for i in range(len(label_ids))])
        if a.size == 1:
            a = np.repeat(a, len(label_ids))
        if a.size == len(label_ids):
            return {str(int(lid)): round(float(c), 4) for lid, c in zip(label_ids, a) if np.isfinite(c)}
    return {}


def cut_shown(sr: SuspectRun, label_id: int) -> dict:
    """The cut the cluster view shows for a class: mlcore's (stored), else the configured one,
    else mlcore's default."""
    cut = (sr.cluster_cuts or {}).get(str(label_id))
    if cut is not None:
        return {"cut": cut, "source": "chosen from the data"}
    if sr.config.get("cluster_threshold") is not None:
        return {"cut": float(sr.config["cluster_threshold"]), "source": "configured"}
    import inspect

    from mlcore.cluster import cluster_per_class

    default = inspect.signature(cluster_per_class).parameters["threshold"].default
    return {"cut": default if isinstance(default, (int, float)) else None, "source": "mlcore's default"}


def write_scores(sr: SuspectRun, *, image_ids, given, score, flagged, rank) -> str:
    """Every scored image's score, flag and rank (``scores.npz`` beside the run's other files):
    what suspect_quality.truth_quality measures against. '' when the run has no output folder."""
    if not sr.output_uri:
        return ""
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, image_id=np.asarray(image_ids, dtype=np.int64), given=np.asarray(given, dtype=np.int64),
                        score=np.asarray(score, dtype=np.float32), flagged=np.asarray(flagged, dtype=bool),
                        rank=np.asarray(rank, dtype=np.int64))
    uri = storage.join(sr.output_uri, "scores.npz")
    storage.write_bytes(uri, buf.getvalue())
    return uri


# --------------------------------------------------------------------------- the queue

def queue(sr: SuspectRun):
    """Open suspects still current: the label is the scored one and nobody confirmed it since."""
    current = Annotation.objects.filter(image_id=OuterRef("image_id"), task_id=OuterRef("task_id"),
                                        version=OuterRef("version"), verified=False)
    return Suspect.objects.filter(suspect_run=sr, status=Status.OPEN).filter(Exists(current))


def lease_next(sr: SuspectRun, user, *, now=None) -> Suspect | None:
    """The suspect ``user`` should look at now: the one they hold, else the best one nobody
    holds (or whose lease expired), leased to them. Concurrent callers skip each other's rows."""
    now = now or timezone.now()
    until = now + timedelta(seconds=lease_seconds())
    with transaction.atomic():
        mine = queue(sr).filter(lease_holder=user, lease_until__gt=now).select_for_update(
            skip_locked=True).order_by("-score", "rank", "id").first()
        if mine is None:
            mine = queue(sr).filter(Q(lease_until__isnull=True) | Q(lease_until__lte=now) | Q(lease_holder=user)) \
                .select_for_update(skip_locked=True).order_by("-score", "rank", "id").first()
        if mine is None:
            return None
        mine.lease_holder, mine.lease_until = user, until
        mine.save(update_fields=["lease_holder", "lease_until"])
    return Suspect.objects.select_related("image", "given_label", "suggested_label", "suspect_run").get(pk=mine.pk)


def release(suspect: Suspect, user) -> None:
    Suspect.objects.filter(pk=suspect.pk, lease_holder=user).update(lease_holder=None, lease_until=None)


ACTIONS = ("accept", "keep", "label", "skip")


def resolve(suspect: Suspect, *, user, action: str, label: Label | None = None,
            expected_version: int | None) -> Suspect:
    """Accept the suggestion, keep the label (marks it verified), set another ``label``, or skip.

    Raises :class:`~labeling.services.retag.RetagConflict` when the label changed since the
    page saw ``expected_version`` (nothing written), :class:`SuspectResolved` when someone
    resolved it already, ValueError for a bad action or label.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; choose one of {', '.join(ACTIONS)}")
    with transaction.atomic():
        s = Suspect.objects.select_for_update().get(pk=suspect.pk)
        if s.status != Status.OPEN:
            raise SuspectResolved(Suspect.objects.select_related("resolved_by").get(pk=s.pk))
        if action == "skip":
            s.status = Status.SKIPPED
        else:
            if action == "accept":
                target = s.suggested_label
            elif action == "keep":
                ann = Annotation.objects.filter(image_id=s.image_id, task_id=s.task_id).select_related("label").first()
                target = ann.label if ann else s.given_label
            else:
                if label is None or label.task_id != s.task_id:
                    raise ValueError("pick a label of the suspect's task")
                target = label
            result = retag_image(image=s.image, task=s.task, label=target, by=user, expected_version=expected_version,
                                 reference=f"suspects {s.suspect_run_id}")
            s.status = Status.RETAGGED if result.event is not None else Status.KEPT
            s.resolved_label = target
        s.resolved_by, s.resolved_at = user, timezone.now()
        s.lease_holder, s.lease_until = None, None
        s.save(update_fields=["status", "resolved_label", "resolved_by", "resolved_at", "lease_holder", "lease_until"])
    return s


def throughput(sr: SuspectRun, user, since) -> dict:
    """What ``user`` resolved in this run since ``since`` (their session), and per minute."""
    n = Suspect.objects.filter(suspect_run=sr, resolved_by=user, resolved_at__gte=since).count()
    minutes = max((timezone.now() - since).total_seconds() / 60, 1 / 60)
    return {"done": n, "minutes": round(minutes, 2), "per_minute": round(n / minutes, 1) if n else 0.0}


def queue_counts(sr: SuspectRun) -> dict:
    by = dict(Suspect.objects.filter(suspect_run=sr).values_list("status").annotate(n=Count("id")))
    return {"open": queue(sr).count(), **{s: by.get(s, 0) for s in Status.values}}


# --------------------------------------------------------------------------- clusters

def typical_images(sr: SuspectRun, label_id: int | None, n: int = 8) -> list[int]:
    """Image ids of the class's core cluster (not outliers): what the class looks like."""
    if label_id is None:
        return []
    return list(ClusterMember.objects.filter(cluster__suspect_run=sr, cluster__label_id=label_id,
                                             cluster__is_core=True, is_outlier=False)
                .order_by("image_id").values_list("image_id", flat=True)[:n])


def class_clusters(sr: SuspectRun, label_id: int, *, core_limit: int = 48) -> dict:
    """The class's core members (a sample), its outliers grouped by cluster, and counts."""
    clusters = list(Cluster.objects.filter(suspect_run=sr, label_id=label_id))
    core = next((c for c in clusters if c.is_core), None)
    core_ids = list(ClusterMember.objects.filter(cluster=core, is_outlier=False).order_by("image_id")
                    .values_list("image_id", flat=True)[:core_limit]) if core else []
    outliers = list(ClusterMember.objects.filter(cluster__in=clusters, is_outlier=True)
                    .order_by("cluster_id", "image_id").values_list("cluster_id", "image_id"))
    versions = dict(Annotation.objects.filter(task_id=sr.task_id, image_id__in=[i for _, i in outliers])
                    .values_list("image_id", "version"))
    labels_now = dict(Annotation.objects.filter(task_id=sr.task_id, image_id__in=[i for _, i in outliers])
                      .values_list("image_id", "label_id"))
    excluded = set(TrainingExclusion.objects.filter(task_id=sr.task_id, active=True,
                                                    image_id__in=[i for _, i in outliers])
                   .values_list("image_id", flat=True))
    by_id = {c.pk: c for c in clusters}
    groups: dict[int, dict] = {}
    for cid, image_id in outliers:
        g = groups.setdefault(cid, {"cluster": by_id[cid], "images": []})
        g["images"].append({"id": image_id, "version": versions.get(image_id, 0),
                            "label_id": labels_now.get(image_id), "excluded": image_id in excluded})
    return {"clusters": clusters, "core": core, "core_ids": core_ids,
            "groups": sorted(groups.values(), key=lambda g: (not g["cluster"].is_core, -len(g["images"]))),
            "outliers": len(outliers)}


def class_summary(sr: SuspectRun) -> list[dict]:
    """Per class: clusters, core size, outliers, open suspects (the cluster view's index)."""
    labels = {lb.pk: lb for lb in Label.objects.filter(pk__in=sr.run.label_ids)}
    rows = {lid: {"label": labels[lid], "clusters": 0, "core": 0, "outliers": 0, "suspects": 0}
            for lid in sr.run.label_ids if lid in labels}
    for c in Cluster.objects.filter(suspect_run=sr).annotate(n_out=Count("members", filter=Q(members__is_outlier=True))):
        r = rows.get(c.label_id)
        if r:
            r["clusters"] += 1
            r["outliers"] += c.n_out
            if c.is_core:
                r["core"] = c.size
    for lid, n in queue(sr).values_list("given_label_id").annotate(n=Count("id")):
        if lid in rows:
            rows[lid]["suspects"] = n
    return list(rows.values())


def retag_group(sr: SuspectRun, *, versions: dict[int, int], label: Label, by) -> dict:
    """Retag many images to ``label`` in one action, each with the version the page saw
    (one LabelEvent per image; conflicts are reported, not overwritten)."""
    if label.task_id != sr.task_id:
        raise ValueError("the label is not a label of this task")
    images = {im.pk: im for im in Image.objects.filter(project_id=sr.project_id, pk__in=list(versions))}
    out = {"changed": [], "unchanged": [], "conflicts": []}
    for image_id, version in versions.items():
        image = images.get(int(image_id))
        if image is None:
            continue
        try:
            r = retag_image(image=image, task=sr.task, label=label, by=by, expected_version=int(version),
                            reference=f"suspects {sr.pk} cluster")
        except RetagConflict:
            out["conflicts"].append(image.pk)
            continue
        out["changed" if r.event else "unchanged"].append(image.pk)
        Suspect.objects.filter(suspect_run=sr, image=image, status=Status.OPEN).update(
            status=Status.RETAGGED if r.event else Status.KEPT, resolved_by=by, resolved_at=timezone.now(),
            resolved_label=label, lease_holder=None, lease_until=None)
    return out


# --------------------------------------------------------------------------- automatic cleaning

def exclude_outliers(sr: SuspectRun, *, label_id: int | None = None, by=None) -> int:
    """Leave the cluster outliers (of one class, or all) out of the task's next trainings;
    returns how many images are now excluded by this call. Each exclusion remembers the class
    it was made for, so that putting the class back finds it after a retag."""
    members = ClusterMember.objects.filter(cluster__suspect_run=sr, is_outlier=True)
    if label_id is not None:
        members = members.filter(cluster__label_id=label_id)
    classes = dict(members.values_list("image_id", "cluster__label_id"))
    return exclude_images(sr.task, classes, reason=f"cluster outlier (suspects {sr.pk})", by=by, suspect_run=sr)


def exclude_images(task, classes: dict[int, int], *, reason: str, by=None, **extra) -> int:
    """Exclude images ``{image_id: the class it is excluded from}`` from the task's trainings
    (re-activating earlier exclusions); returns how many became excluded. ``extra``: suspect_run,
    cleaning_run, round."""
    ids = set(classes)
    with transaction.atomic():
        existing = dict(TrainingExclusion.objects.filter(task_id=task.pk, image_id__in=ids)
                        .values_list("image_id", "active"))
        again = [i for i, active in existing.items() if not active]
        for i in again:
            TrainingExclusion.objects.filter(task_id=task.pk, image_id=i).update(
                active=True, reason=reason, created_by=by, label_id=classes[i], updated_at=timezone.now(),
                **{"suspect_run": None, "cleaning_run": None, "round": None, **extra})
        TrainingExclusion.objects.bulk_create([
            TrainingExclusion(task_id=task.pk, image_id=i, reason=reason, created_by=by, label_id=classes[i], **extra)
            for i in ids - set(existing)], batch_size=BULK)
    return len(again) + len(ids - set(existing))


def restore_exclusions(task, *, label_id: int | None = None, image_ids=None, cleaning_run=None) -> int:
    """Put excluded images back into training: all, those excluded from class ``label_id`` (the
    class they were left out of, whatever their label is now; exclusions made before that was
    recorded: by their current label), some images, or those of a cleaning run."""
    qs = TrainingExclusion.objects.filter(task=task, active=True)
    if label_id is not None:
        qs = qs.filter(Q(label_id=label_id) | Q(label__isnull=True, image__annotations__task=task,
                                                  image__annotations__label_id=label_id))
    if image_ids is not None:
        qs = qs.filter(image_id__in=list(image_ids))
    if cleaning_run is not None:
        qs = qs.filter(cleaning_run=cleaning_run)
    return TrainingExclusion.objects.filter(pk__in=list(qs.values_list("pk", flat=True))).update(
        active=False, updated_at=timezone.now())


def exclusion_summary(task) -> dict:
    """Active exclusions of the task, per class they were left out of (the one "put back" restores)."""
    recorded = dict(TrainingExclusion.objects.filter(task=task, active=True, label__isnull=False)
                    .values_list("label__name").annotate(n=Count("id")).order_by())
    legacy = (TrainingExclusion.objects.filter(task=task, active=True, label__isnull=True,
                                               image__annotations__task=task)
              .values_list("image__annotations__label__name").annotate(n=Count("id")).order_by())
    for name, n in legacy:
        recorded[name] = recorded.get(name, 0) + n
    per = [{"label": name, "n": n} for name, n in sorted(recorded.items(), key=lambda kv: str(kv[0]))]
    return {"total": sum(r["n"] for r in per), "by_label": per}


# --------------------------------------------------------------------------- queries

def latest_done(task=None, *, project=None) -> SuspectRun | None:
    qs = SuspectRun.objects.filter(state=State.DONE)
    if task is not None:
        qs = qs.filter(task=task)
    if project is not None:
        qs = qs.filter(project=project)
    return qs.order_by("-finished_at", "-id").first()


def status(sr: SuspectRun) -> dict:
    """What the suspects run page polls (and advances: see :func:`advance`)."""
    if sr.state == State.FOLDS:
        sr = advance(sr.pk) or sr
    from .suspect_quality import folds_eta

    folds = [{"id": r.pk, "state": r.state, "progress": r.progress}
             for r in TrainingRun.objects.filter(pk__in=sr.fold_run_ids).order_by("pk")]
    return {"id": sr.pk, "state": sr.state, "state_reason": sr.state_reason, "progress": sr.progress,
            "folds": folds, "folds_eta_s": folds_eta(sr, folds) if sr.state == State.FOLDS else None,
            "counts": sr.counts, "finished": sr.state in SuspectRun.FINAL_STATES}
