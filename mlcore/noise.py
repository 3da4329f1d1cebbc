"""Label noise, estimated from probabilities of the given labels: confident learning's
thresholds, joint and error rates, the posterior that a given label is wrong, the witness
mixture weights and the calibration that :mod:`mlcore.suspects` scores with. Plain numpy
on (N, C) probabilities and (N,) given labels (-1: unlabelled).
"""
from __future__ import annotations

import numpy as np


def confident_thresholds(prob: np.ndarray, given: np.ndarray) -> np.ndarray:
    """(C,) per-class thresholds: the mean probability of class c over the images labelled c."""
    c = prob.shape[1]
    t = np.full(c, np.inf, dtype=np.float64)
    for k in range(c):
        rows = given == k
        if rows.any():
            t[k] = prob[rows, k].mean()
    return t


def confident_issue(prob: np.ndarray, given: np.ndarray) -> np.ndarray:
    """(N,) bool: another class reaches its confident threshold and beats the given label."""
    lab = given >= 0
    t = confident_thresholds(prob, given)
    p_given = np.where(lab, prob[np.arange(len(prob)), np.maximum(given, 0)], np.inf)
    other = (prob >= t[None, :]) & (prob > p_given[:, None])
    other[np.flatnonzero(lab), given[lab]] = False
    return lab & other.any(1)


def normalised_margin(prob: np.ndarray, given: np.ndarray) -> np.ndarray:
    """(N,) ``p[given] - max_{j != given} p[j]`` in [-1, 1] (NaN where unlabelled)."""
    n = len(prob)
    lab = given >= 0
    g = np.maximum(given, 0)
    p_given = prob[np.arange(n), g]
    rest = prob.copy()
    rest[np.arange(n), g] = -np.inf
    return np.where(lab, p_given - rest.max(1), np.nan).astype(np.float32)


def confident_joint(prob: np.ndarray, given: np.ndarray) -> np.ndarray:
    """(C, C) calibrated confident joint: estimated counts of (given label i, true label j).

    Confident learning's estimate: each labelled image counts for the most likely class
    among those whose probability reaches that class's threshold (:func:`confident_thresholds`),
    or for its given class when none does; each row is then scaled to the given class's count.
    """
    c = prob.shape[1]
    lab = np.flatnonzero(given >= 0)
    g = given[lab]
    p = prob[lab]
    over = p >= confident_thresholds(prob, given)[None, :]
    best = np.where(over.any(1), np.where(over, p, -np.inf).argmax(1), g)
    joint = np.zeros((c, c), dtype=np.float64)
    np.add.at(joint, (g, best), 1.0)
    counts = np.bincount(g, minlength=c).astype(np.float64)
    rows = joint.sum(1)
    return joint * np.divide(counts, rows, out=np.zeros(c), where=rows > 0)[:, None]


def error_rates(prob: np.ndarray, given: np.ndarray) -> np.ndarray:
    """(C,) estimated share of wrong labels among the images labelled c (off-diagonal of the confident joint)."""
    joint = confident_joint(prob, given)
    rows = joint.sum(1)
    return np.divide(rows - np.diag(joint), rows, out=np.zeros(len(rows)), where=rows > 0)


def error_posterior(f: np.ndarray, given: np.ndarray) -> np.ndarray:
    """(N,) probability that the given label is wrong, from ``f`` (N, C) and the noise it implies.

    ``f`` predicts the *given* labels (it was fit to them), so it carries their noise: with
    ``T[i, j] = P(given i | true j)`` from the confident joint, ``f = T q`` where ``q`` is the
    belief about the true class. ``q = T^-1 f`` (clipped to the simplex); then
    ``P(true = given | x, given) = T[g, g] q[g] / (T q)[g]``. Its mean over a flagged set is
    that set's expected precision. NaN where unlabelled.
    """
    joint = confident_joint(f, given)
    col = joint.sum(0, keepdims=True)
    c = f.shape[1]
    t = np.where(col > 0, joint / np.maximum(col, 1e-12), np.eye(c))
    try:
        q = np.asarray(f, dtype=np.float64) @ np.linalg.inv(t).T
    except np.linalg.LinAlgError:
        q = np.asarray(f, dtype=np.float64)
    q = np.clip(q, 0.0, None)
    q /= np.maximum(q.sum(1, keepdims=True), 1e-12)
    lab = given >= 0
    g = np.maximum(given, 0)
    rows = np.arange(len(f))
    noisy = q @ t.T  # (N, C): P(given = i | x)
    post = np.divide(t[g, g] * q[rows, g], noisy[rows, g], out=np.ones(len(f)), where=noisy[rows, g] > 0)
    return np.where(lab, np.clip(1.0 - post, 0.0, 1.0), np.nan)


def fit_weights(witnesses: dict[str, np.ndarray], given: np.ndarray, *, iters: int = 500,
                tol: float = 1e-7) -> dict[str, float]:
    """Mixture weights of the witnesses' (N, C) distributions that best predict the given labels.

    Maximum likelihood of the given labels under ``f = sum_w weight_w * witness_w`` (weights
    on the simplex), by EM, which finds the global optimum of this concave problem. Every
    witness must be honest about the image itself (out-of-sample probabilities, neighbours
    without the image), or it wins by echoing the label. A witness that knows nothing
    about the labels predicts them no better than the uniform ``"prior"`` witness (always
    included: it absorbs the wrong labels that every witness misses) and gets a weight near
    0; a strong one gets most. Only the labelled rows count.
    """
    names = list(witnesses)
    lab = np.flatnonzero(given >= 0)
    like = np.stack([np.asarray(witnesses[w], dtype=np.float64)[lab, given[lab]] for w in names], 1)
    w = np.full(len(names), 1.0 / len(names))
    last = -np.inf
    for _ in range(iters):
        mix = like @ w
        ll = float(np.log(np.maximum(mix, 1e-300)).mean())
        w = (like * w / np.maximum(mix, 1e-300)[:, None]).mean(0)
        w /= w.sum()
        if ll - last < tol:
            break
        last = ll
    return {name: float(x) for name, x in zip(names, w)}


def calibrate(f: np.ndarray, given: np.ndarray) -> np.ndarray:
    """``f ** a`` (rows renormalised) with the power that best predicts the given labels.

    A linear mix of witnesses is less sure than any of them (linear pooling is
    underconfident); one fitted power makes ``f`` a probability of the given label again,
    which :func:`error_posterior` needs. One parameter, on every labelled row.
    """
    logf = np.log(np.maximum(np.asarray(f, dtype=np.float64), 1e-12))
    return best_softmax((a * logf for a in (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)), given,
                        default=np.asarray(f, dtype=np.float64))


def best_softmax(logits, given: np.ndarray, default: np.ndarray | None = None) -> np.ndarray | None:
    """Of the row softmaxes of the candidate ``logits`` (an iterable of (N, C) arrays), the one
    whose probability of the given labels has the highest mean log (``default`` if none wins)."""
    lab = np.flatnonzero(given >= 0)
    best, best_ll = default, -np.inf
    for z in logits:
        z = z - z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        ll = float(np.log(np.maximum(p[lab, given[lab]], 1e-12)).mean())
        if ll > best_ll:
            best, best_ll = p, ll
    return best


def find_label_issues(f: np.ndarray, given: np.ndarray) -> np.ndarray:
    """cleanlab's ``find_label_issues`` on ``f`` (labelled rows; one process: it runs inside workers)."""
    from cleanlab.filter import find_label_issues as cleanlab_issues

    lab = np.flatnonzero(given >= 0)
    out = np.zeros(len(f), dtype=bool)
    if len(lab) < 2:
        return out
    p = f[lab] / np.maximum(f[lab].sum(1, keepdims=True), 1e-12)
    out[lab] = cleanlab_issues(given[lab], p, n_jobs=1)
    return out
