"""A scored suspects run's stored results: the suspects, the clusters with their members, the
near-duplicate pairs, each class's figures and cluster cut, and ``scores.npz``.

A verified image (a person confirmed its current label, ``Annotation.verified``) is not a
suspect again until its label changes (a non-human change clears ``verified``); nor is an
image whose label changed since the training snapshot (the scores are about the old label).
"""
from __future__ import annotations

import io

import numpy as np
from django.db import transaction
from django.utils import timezone

from mlcore import storage

from ...models import Annotation, Cluster, ClusterMember, Label, NearDuplicate, Suspect, SuspectRun
from ..suspect_quality import ranking_order

BULK = 5000


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

    # Per class figures, what the per-class summary shows (class_figures).
    figures: dict[str, dict] = {}

    def figure(label_id):
        return figures.setdefault(str(label_id), {"suspects": 0, "clusters": 0, "core": 0, "outliers": 0})

    for suspect in rows:
        figure(suspect.given_label_id)["suspects"] += 1

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
            f = figure(cluster.label_id)
            f["clusters"] += 1
            if cluster.is_core:
                f["core"] = cluster.size
            for i in rows_i:
                members.append(ClusterMember(cluster_id=cluster.pk, image_id=int(image_ids[i]),
                                             is_outlier=bool(outlier[i])))
                f["outliers"] += bool(outlier[i])
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
    sr.class_figures = figures
    SuspectRun.objects.filter(pk=sr.pk).update(counts=counts, scored_at=now, cluster_cuts=cuts, scores_uri=scores_uri,
                                               class_figures=figures)
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


def cuts_by_name(sr: SuspectRun, names: dict[int, str] | None = None) -> dict[str, float]:
    """``sr.cluster_cuts`` (stored by label id) keyed by label name, as the API shows them;
    ``names``, a cache of label names shared by the runs of one list, is filled as needed."""
    names = {} if names is None else names
    ids = {int(k) for k in sr.cluster_cuts or {}}
    if ids - set(names):
        names.update(Label.objects.filter(pk__in=ids - set(names)).values_list("pk", "name"))
    return {names.get(int(k), k): cut for k, cut in (sr.cluster_cuts or {}).items()}


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
    buf = io.BytesIO()
    np.savez_compressed(buf, image_id=np.asarray(image_ids, dtype=np.int64), given=np.asarray(given, dtype=np.int64),
                        score=np.asarray(score, dtype=np.float32), flagged=np.asarray(flagged, dtype=bool),
                        rank=np.asarray(rank, dtype=np.int64))
    uri = storage.join(sr.output_uri, "scores.npz")
    storage.write_bytes(uri, buf.getvalue())
    return uri

