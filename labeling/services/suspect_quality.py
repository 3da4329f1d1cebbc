"""How good a suspects run proved, and whether its evidence can be trusted.

Three questions a suspects run page answers (and ``GET /api/suspect-runs/<id>/quality/``):

**What did people decide?** (:func:`human_quality`) Every suspect a person settled counts:
*changed* when its label moved away from the scored one (the queue's accept or another label,
a retag on the image page or the grids, an applied MTurk consensus), *kept* when a person
confirmed the scored label (the queue's keep, or a human retag to the same label, which marks
the annotation verified; MTurk consensus "no change" does the same). Open suspects (skipped
ones too) are not reviewed. The share changed is the precision of the suspects as reviewed so far, per
signal (the reason bits: model, cluster, kNN; a suspect counts in each of its signals) and per
given class, with a 95% Wilson score interval (:func:`wilson`): unlike the normal approximation
it stays inside [0, 1] and is honest for 3 reviews out of 3. The figures are computed on each
request from the suspects and annotations, so they follow the queue as it is worked.

**How good is the ranking against the truth?** (:func:`truth_quality`) A benchmark project can
carry the known-correct labels as a *truth task* (``Task.truth_of``: e.g. a dev set imported
with a ``category_clean`` column, then ``manage.py set_truth_task``); it is hidden from
annotators. An image is *mislabelled* when its label in the run's snapshot differs from the
truth (compared by label name). Against that: precision, recall and F1 of the flagged set,
precision at k with k = the number of mislabelled images (so P@k = R@k, the measure of the
issue's bench), and the AUROC of the score over every scored image with a truth label
(:func:`ranking_metrics`, ties counted half). The scores of all images, not only the flagged
ones, come from the run's ``scores.npz`` (written by services.suspects.store_results).

**Was the evidence any good?** (:func:`fold_health`) The out-of-sample probabilities of the train
split come from the K fold models; a fold model that learnt nothing (one epoch that collapsed
to one class: macro-F1 0.019 on ten classes) makes every image of its fold look mislabelled
while the run still says "done". Each fold model's quality is its macro-F1 on its held-out fold
(the fold run's ``val`` split: a fold manifest holds its fold out as ``val``,
:func:`mlcore.folds.write_fold_manifest`), shown beside the main run's test macro-F1. The rule
(:data:`WEAK_RATIO`, :data:`CHANCE_FACTOR`): a fold is *weak* when its held-out macro-F1 is
below half the main run's test macro-F1, or not above what guessing gets (1/C for C classes),
or when it predicted a single class for its whole held-out fold (*collapsed*). One weak fold
makes the evidence weak: its images' scores are noise, so the page warns before anyone works
the queue (retrain the folds with more epochs).

Also here: the time estimate of the start page (:func:`estimate`) and the tie-breaking order of
the ranking (:func:`ranking_order`).
"""
from __future__ import annotations

import io
import math

import numpy as np

from mlcore import storage

from ..models import HUMAN_SOURCES, Annotation, Label, LabelEvent, Suspect, SuspectRun, Task, TrainingRun

Z95 = 1.959963984540054  # the normal quantile of a two-sided 95% interval
WEAK_RATIO = 0.5         # a fold model below this share of the main run's test macro-F1 is weak
CHANCE_FACTOR = 1.0      # ... and so is one not above CHANCE_FACTOR / C (guessing)
SIGNALS = ((Suspect.MODEL, "model"), (Suspect.CLUSTER, "cluster"), (Suspect.KNN, "knn"))


# --------------------------------------------------------------------------- statistics

def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float] | tuple[None, None]:
    """The Wilson score interval of a proportion ``k / n`` (None, None for n = 0)."""
    if n <= 0:
        return None, None
    p = k / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z / d * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def share(k: int, n: int) -> dict:
    lo, hi = wilson(k, n)
    return {"n": n, "changed": k, "kept": n - k, "share": (k / n) if n else None, "low": lo, "high": hi}


def auroc(score: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve of ``score`` for ``positive`` (Mann-Whitney; ties count half)."""
    from scipy.stats import rankdata

    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(np.asarray(score, dtype=np.float64))
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def ranking_metrics(score, flagged, is_error, *, order=None, k: int | None = None) -> dict:
    """Precision, recall, F1 of ``flagged``, precision at ``k`` (default: the number of errors) of
    the ranking (``order``: row indices best first; default by score, stable) and AUROC."""
    score = np.asarray(score, dtype=np.float64)
    flagged = np.asarray(flagged, dtype=bool)
    err = np.asarray(is_error, dtype=bool)
    tp = int((flagged & err).sum())
    n_flag, n_err = int(flagged.sum()), int(err.sum())
    precision = tp / n_flag if n_flag else None
    recall = tp / n_err if n_err else None
    f1 = (2 * precision * recall / (precision + recall)) if precision and recall else (
        0.0 if precision is not None and recall is not None else None)
    k = n_err if k is None else k
    order = np.argsort(-score, kind="stable") if order is None else np.asarray(order)
    p_at_k = float(err[order[:k]].mean()) if k else None
    return {"images": int(len(score)), "errors": n_err, "flagged": n_flag, "true_positives": tp,
            "precision": precision, "recall": recall, "f1": f1, "k": k, "precision_at_k": p_at_k,
            "auroc": auroc(score, err)}


def ranking_order(score, *, self_confidence=None, knn_agreement=None, reasons=None, image_ids=None) -> np.ndarray:
    """Row indices, best suspect first: by score, then (ties) the lower probability of the given
    label, the lower kNN agreement, the more reasons, and last the image id. A score saturates
    (the top 48 of a run all at 1.00), and rows come in import order, which follows label
    names: without this the queue would show one class after the other."""
    n = len(score)

    def col(v, fill):
        a = np.full(n, fill, dtype=np.float64) if v is None else np.asarray(v, dtype=np.float64)
        return np.where(np.isnan(a), fill, a)

    bits = np.zeros(n) if reasons is None else np.asarray(reasons, dtype=np.int64)
    n_reasons = sum(((bits & flag) > 0).astype(int) for flag, _ in SIGNALS)
    ids = np.arange(n) if image_ids is None else np.asarray(image_ids)
    # np.lexsort: the last key is the primary one.
    return np.lexsort((ids, -n_reasons, col(knn_agreement, 1.0), col(self_confidence, 1.0),
                       -np.round(col(score, 0.0), 6)))


# --------------------------------------------------------------------------- human verdicts

def verdicts(sr: SuspectRun) -> list[dict]:
    """The settled suspects, as ``{"given", "reasons", "changed", "n"}``: ``n`` suspects of that
    given label, reasons and verdict (see the module docstring); grouped in the database, so a
    run whose queue was worked through is a few dozen rows, not one per suspect. The open ones
    count only where their label changed or was confirmed since scoring (the others still carry
    the scored label, unconfirmed), so only those are read: the open ones no longer current
    (services.suspects.stale_open), each a row with ``n`` 1."""
    from django.db.models import Count

    from .suspects import stale_open

    out = [{"given": given, "reasons": reasons, "changed": status == Suspect.Status.RETAGGED, "n": n}
           for given, reasons, status, n in Suspect.objects.filter(
               suspect_run=sr, status__in=Suspect.SETTLED).values_list("given_label_id", "reasons", "status")
           .annotate(n=Count("*")).order_by()]  # suspect_settled_idx alone (index-only)
    pending = {row[0]: row for row in stale_open(sr)}
    since = sr.scored_at or sr.finished_at or sr.created_at
    touched = set(LabelEvent.objects.filter(task_id=sr.task_id, image_id__in=list(pending), source__in=HUMAN_SOURCES,
                                            created_at__gte=since).values_list("image_id", flat=True))
    for image_id, given, reasons, label_now, verified in pending.values():
        if label_now != given and image_id in touched:
            changed = True
        elif label_now == given and verified:
            changed = False
        else:
            continue
        out.append({"given": given, "reasons": reasons, "changed": changed, "n": 1})
    return out


def human_quality(sr: SuspectRun) -> dict:
    """Share of reviewed suspects that people changed, overall, per signal and per given class."""
    v = verdicts(sr)
    names = dict(Label.objects.filter(pk__in=sr.run.label_ids).values_list("pk", "name"))

    def tally(items):
        return share(sum(x["n"] for x in items if x["changed"]), sum(x["n"] for x in items))

    by_signal = [{"signal": name, **tally([x for x in v if x["reasons"] & flag])} for flag, name in SIGNALS]
    by_class = []
    for label_id in sr.run.label_ids:
        items = [x for x in v if x["given"] == label_id]
        if items:
            by_class.append({"label": label_id, "label_name": names.get(label_id), **tally(items)})
    total = sum(f.get("suspects", 0) for f in (sr.class_figures or {}).values())
    return {"suspects": total, "reviewed": sum(x["n"] for x in v), "overall": tally(v), "by_signal": by_signal,
            "by_class": by_class}


# --------------------------------------------------------------------------- truth

def truth_task(task: Task) -> Task | None:
    """The task holding the known-correct labels of ``task``, if the project has one."""
    return Task.objects.filter(truth_of=task).order_by("id").first()


def set_truth_task(*, truth: Task, of: Task) -> Task:
    """Mark ``truth`` as the truth of ``of`` (same project, not itself, label names known to ``of``)."""
    if truth.pk == of.pk or truth.project_id != of.project_id:
        raise ValueError("a truth task is another task of the same project")
    if of.truth_of_id is not None:
        raise ValueError(f"task {of.name!r} is itself a truth task")
    unknown = set(truth.labels.values_list("name", flat=True)) - set(of.labels.values_list("name", flat=True))
    if unknown:
        raise ValueError(f"truth labels unknown to {of.name!r}: {', '.join(sorted(unknown))}")
    truth.truth_of = of
    truth.save(update_fields=["truth_of"])
    return truth


def read_scores(sr: SuspectRun) -> dict[str, np.ndarray] | None:
    if not sr.scores_uri or not storage.exists(sr.scores_uri):
        return None
    with np.load(io.BytesIO(storage.read_bytes(sr.scores_uri)), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def truth_quality(sr: SuspectRun) -> dict | None:
    """The ranking and the flagged set against the truth task (None without one or without scores)."""
    truth = truth_task(sr.task)
    scores = read_scores(sr) if truth is not None else None
    if scores is None:
        return None
    names = dict(Label.objects.filter(pk__in=sr.run.label_ids).values_list("pk", "name"))
    true_name = dict(Annotation.objects.filter(task=truth, label__isnull=False)
                     .values_list("image_id", "label__name"))
    ids, given = scores["image_id"].astype(np.int64), scores["given"].astype(np.int64)
    keep = np.asarray([int(i) in true_name and int(g) in names for i, g in zip(ids, given)], dtype=bool)
    if not keep.any():
        return {"truth_task": truth.name, "truth_task_id": truth.pk, "images": 0}
    err = np.asarray([names[int(g)] != true_name[int(i)] for i, g in zip(ids[keep], given[keep])])
    order = None
    if "rank" in scores:
        order = np.argsort(scores["rank"][keep], kind="stable")
    out = ranking_metrics(scores["score"][keep], scores["flagged"][keep].astype(bool), err, order=order)
    return {"truth_task": truth.name, "truth_task_id": truth.pk, **out}


# --------------------------------------------------------------------------- evidence health

def held_out(metrics: dict) -> dict:
    """A fold run's metrics on the fold it held out (its ``val`` split)."""
    return metrics.get("val") or {}


def _collapsed(split: dict) -> bool:
    """True when the model predicted one class (or none) for every image of the split."""
    confusion = split.get("confusion")
    if not confusion:
        return False
    columns = np.asarray(confusion, dtype=np.int64).sum(0)
    return int((columns > 0).sum()) <= 1 and int(columns.sum()) > 0


def fold_health(sr: SuspectRun) -> dict:
    """Each fold model's held-out macro-F1 beside the main run's, and whether the evidence is weak."""
    main = sr.run.test_macro_f1
    c = max(2, len(sr.run.label_ids))
    floor = CHANCE_FACTOR / c
    folds = []
    for f in TrainingRun.objects.filter(pk__in=sr.fold_run_ids).order_by("pk"):
        fold = held_out(f.metrics or {})
        f1 = (fold.get("macro") or {}).get("f1")
        collapsed = _collapsed(fold)
        why = []
        if f.state == TrainingRun.State.DONE:
            if collapsed:
                why.append("predicts a single class")
            if f1 is not None and f1 <= floor:
                why.append(f"macro-F1 {f1:.3f} is no better than guessing (1/{c} = {floor:.3f})")
            if f1 is not None and main and f1 < WEAK_RATIO * main:
                why.append(f"macro-F1 {f1:.3f} is below half the main run's {main:.3f}")
        folds.append({"id": f.pk, "state": f.state, "macro_f1": f1, "collapsed": collapsed, "weak": bool(why),
                      "why": "; ".join(why), "epochs": (f.config or {}).get("epochs"),
                      "progress": f.progress or {}})
    weak = [f for f in folds if f["weak"]]
    warning = ""
    if weak:
        runs = ", ".join(str(f["id"]) for f in weak)
        f1s = ", ".join("—" if f["macro_f1"] is None else f"{f['macro_f1']:.3f}" for f in weak)
        against = f" against the main run's {main:.3f}" if main is not None else ""
        warning = (f"Weak evidence: {len(weak)} of {len(folds)} fold model{'s' if len(folds) != 1 else ''} "
                   f"learnt little (run{'s' if len(weak) != 1 else ''} {runs}: held-out macro-F1 {f1s}{against}). "
                   "Their images' scores are mostly noise: the queue is not worth working as it is. "
                   "Start a new suspects run with more epochs per fold.")
    return {"main_macro_f1": main, "chance": floor, "weak_ratio": WEAK_RATIO, "folds": folds,
            "weak": bool(weak), "warning": warning}


def estimate(run: TrainingRun, *, k: int, fold_epochs: int | None = None) -> dict | None:
    """How long a suspects run of ``run`` should take, from the run's own timings. Each fold trains
    on (k-1)/k of the train split for ``fold_epochs`` (default the run's epochs): the run's
    training time scaled by both; and predicts 1/k of the train split where the run predicted
    both splits: the rest of the run's time (evaluation, loading) scaled by that share.
    ``sequential_s``: one gpu worker trains the folds one after the other; ``parallel_s``: k
    workers. None when the run has no timings."""
    t = run.timings or {}
    total = t.get("execute_s") or t.get("elapsed_s")
    train_s = t.get("train_s") or total
    if not train_s:
        return None
    epochs = max(1, int((run.config or {}).get("epochs") or 1))
    fold_epochs = fold_epochs or epochs
    rest = max(0.0, float(total or train_s) - float(train_s))
    predicted = max(1, (run.n_train or 0) + (run.n_test or 0))
    per_fold = float(train_s) * fold_epochs / epochs * (k - 1) / k + rest * ((run.n_train or 0) / k) / predicted
    return {"per_fold_s": round(per_fold, 1), "sequential_s": round(per_fold * k, 1),
            "parallel_s": round(per_fold, 1), "k": k, "fold_epochs": fold_epochs, "run_s": float(total or train_s)}


def folds_eta(sr: SuspectRun, folds: list[dict]) -> float | None:
    """Seconds until the last fold finishes with one gpu worker: the running folds' own ETA plus
    the estimate (:func:`estimate`) for each fold still queued. None when nothing is left or
    nothing is known."""
    left = [f for f in folds if f["state"] in TrainingRun.ACTIVE_STATES]
    if not left:
        return None
    per = estimate(sr.run, k=max(2, len(folds)), fold_epochs=sr.config.get("fold_epochs"))
    total = 0.0
    for f in left:
        eta = (f.get("progress") or {}).get("eta_s")
        if f["state"] == TrainingRun.State.RUNNING and eta is not None:
            total += float(eta)
        elif per is not None:
            total += per["per_fold_s"]
        else:
            return None
    return round(total, 1)


# --------------------------------------------------------------------------- all of it

def quality(sr: SuspectRun) -> dict:
    """Everything the suspects run page and the API show about the run's quality."""
    return {"suspect_run": sr.pk, "human": human_quality(sr) if sr.state == SuspectRun.State.DONE else None,
            "truth": truth_quality(sr) if sr.state == SuspectRun.State.DONE else None,
            "evidence": fold_health(sr)}

