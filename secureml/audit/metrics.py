"""How well a membership attack separates members from non-members.

An attack gives every audited example a score (higher means "more likely a member"). From the
scores and the true membership we measure the ROC curve, its AUC, the membership advantage
(max TPR - FPR, Yeom et al. 2018) and the TPR at a fixed low FPR (Carlini et al. 2022 argue this
is what matters: an attack that confidently identifies a few members is a real privacy risk even
when its AUC is near 0.5). Every rate comes with a Clopper-Pearson interval.
"""
from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve

# FPRs at which the TPR is reported (0.1% and 1%).
LOW_FPRS = (0.001, 0.01)
# Points of the stored ROC curve: enough for a smooth log-log plot, small in metrics.json.
_ROC_POINTS = 60


def clopper_pearson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided binomial confidence interval for successes / trials."""
    if trials == 0:
        return 0.0, 1.0
    alpha = 1.0 - confidence
    low = stats.beta.ppf(alpha / 2, successes, trials - successes + 1) if successes > 0 else 0.0
    high = (stats.beta.ppf(1 - alpha / 2, successes + 1, trials - successes)
            if successes < trials else 1.0)
    return float(low), float(high)


def proportion_interval(fraction: float, trials: int,
                        confidence: float = 0.95) -> list[float]:
    """Clopper-Pearson interval of a measured fraction of `trials` (an accuracy, agreement)."""
    if trials == 0:
        return [0.0, 1.0]
    return list(clopper_pearson(int(round(fraction * trials)), trials, confidence))


def difference_interval(first: float, first_ci, second: float, second_ci) -> list[float]:
    """Interval of first - second from the two estimates' intervals (MOVER, Zou & Donner 2008).

    It treats the two estimates as independent. Two models' accuracies on the same test set
    are usually positively correlated (both get the easy examples right), which makes the true
    interval narrower: this one then errs towards "inconclusive" rather than a false verdict.
    """
    difference = first - second
    low = difference - np.hypot(first - first_ci[0], second_ci[1] - second)
    high = difference + np.hypot(first_ci[1] - first, second - second_ci[0])
    return [float(low), float(high)]


def null_auc_std(members: int, non_members: int) -> float:
    """Standard deviation of the AUC of an attack that cannot tell members from non-members.

    Under that null hypothesis the Mann-Whitney statistic has variance (n1 + n2 + 1) / (12 n1 n2)
    after scaling to [0, 1]; an AUC within a few of these of 0.5 is no evidence of leakage.
    """
    return float(np.sqrt((members + non_members + 1) / (12.0 * members * non_members)))


def auc_interval(auc: float, members: int, non_members: int,
                 confidence: float = 0.95) -> tuple[float, float]:
    """Normal-approximation interval with the Hanley & McNeil (1982) standard error."""
    q1, q2 = auc / (2 - auc), 2 * auc ** 2 / (1 + auc)
    var = (auc * (1 - auc) + (members - 1) * (q1 - auc ** 2)
           + (non_members - 1) * (q2 - auc ** 2)) / (members * non_members)
    half = stats.norm.ppf(0.5 + confidence / 2) * np.sqrt(max(var, 0.0))
    return float(max(0.0, auc - half)), float(min(1.0, auc + half))


def tpr_at_fpr(scores: np.ndarray, is_member: np.ndarray, fpr: float,
               confidence: float = 0.95) -> dict:
    """TPR of the threshold that lets at most `fpr` of the non-members through.

    With n non-members the smallest FPR that can be measured is 1/n; below that the threshold
    admits no non-member at all and `resolution_limited` says so.
    """
    members, non_members = scores[is_member], scores[~is_member]
    allowed = int(np.floor(fpr * len(non_members)))
    ranked = np.sort(non_members)[::-1]
    threshold = ranked[allowed] if allowed < len(ranked) else -np.inf
    true_pos = int(np.sum(members > threshold))
    low, high = clopper_pearson(true_pos, len(members), confidence)
    return {"fpr": fpr, "tpr": true_pos / len(members), "tpr_ci": [low, high],
            "true_positives": true_pos,
            "fpr_achieved": float(np.mean(non_members > threshold)),
            "threshold": float(threshold),
            "resolution_limited": bool(fpr * len(non_members) < 1)}


def compact_roc(fpr: np.ndarray, tpr: np.ndarray, non_members: int) -> dict:
    """The ROC curve at log-spaced FPRs from 1/n to 1: best TPR with FPR at most each point."""
    grid = np.unique(np.concatenate([[0.0], np.geomspace(1.0 / non_members, 1.0, _ROC_POINTS)]))
    index = np.searchsorted(fpr, grid, side="right") - 1
    return {"fpr": [round(float(f), 6) for f in grid],
            "tpr": [round(float(t), 6) for t in tpr[np.clip(index, 0, None)]]}


def attack_metrics(scores, is_member, labels=None, class_names=None,
                   confidence: float = 0.95) -> dict:
    """ROC AUC (with interval), advantage, TPR at 0.1% and 1% FPR, the ROC curve, per class."""
    scores = np.asarray(scores, dtype=np.float64)
    is_member = np.asarray(is_member, dtype=bool)
    n_in, n_out = int(is_member.sum()), int((~is_member).sum())
    fpr, tpr, _ = roc_curve(is_member, scores, drop_intermediate=False)
    auc = float(roc_auc_score(is_member, scores))
    result = {
        "auc": auc,
        "auc_ci": list(auc_interval(auc, n_in, n_out, confidence)),
        "advantage": float(np.max(tpr - fpr)),
        "tpr_at_fpr": [tpr_at_fpr(scores, is_member, f, confidence) for f in LOW_FPRS],
        "roc": compact_roc(fpr, tpr, n_out),
    }
    if labels is not None:
        result["per_class"] = _per_class(scores, is_member, np.asarray(labels), class_names)
    return result


def _per_class(scores, is_member, labels, class_names) -> dict:
    out = {}
    for label in np.unique(labels):
        mask = labels == label
        n_in, n_out = int(is_member[mask].sum()), int((~is_member[mask]).sum())
        name = class_names[label] if class_names is not None else str(label)
        if n_in == 0 or n_out == 0:
            out[name] = {"members": n_in, "non_members": n_out, "auc": None, "advantage": None}
            continue
        fpr, tpr, _ = roc_curve(is_member[mask], scores[mask])
        out[name] = {"members": n_in, "non_members": n_out,
                     "auc": float(roc_auc_score(is_member[mask], scores[mask])),
                     "advantage": float(np.max(tpr - fpr))}
    return out
