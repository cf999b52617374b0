"""Empirical privacy: lower bounds on epsilon from what an attack achieved.

If training is (epsilon, delta)-DP, every membership test obeys TPR <= e^eps * FPR + delta and
TNR <= e^eps * FNR + delta (Kairouz et al. 2015; for members and non-members drawn i.i.d. from
the same distribution, Humphries et al. 2020). An attack with low FPR and FNR therefore proves
that epsilon is at least log((1 - delta - FNR) / FPR). With upper confidence bounds on FPR and FNR
(Clopper-Pearson) the statement holds with the stated confidence: a correct DP run can never
show a lower bound above its accounted epsilon except with that small probability.

Two bounds:
- `epsilon_lower_bound`: from the scores of an attack on members and non-members. The threshold
  is chosen on one half of the examples and the rates are measured on the other half, so the
  choice does not inflate the bound.
- `one_run_epsilon_lower_bound`: Steinke, Nasr & Jagielski (2023) for canaries each included in
  training with probability 1/2, where the auditor guesses in/out for some of them.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats


def epsilon_from_rates(fpr: float, fnr: float, delta: float = 0.0) -> float:
    """The smallest epsilon consistent with an attack at (FPR, FNR); 0 if none is implied."""
    bounds = [0.0]
    for a, b in ((fpr, fnr), (fnr, fpr)):
        numerator = 1.0 - delta - a
        if numerator > 0:
            bounds.append(math.inf if b <= 0 else math.log(numerator / b))
    return max(bounds)


def _upper(errors: np.ndarray, trials: int, alpha: float) -> np.ndarray:
    """One-sided Clopper-Pearson upper bounds at level alpha for error counts out of trials."""
    errors = np.asarray(errors)
    upper = stats.beta.ppf(1 - alpha, errors + 1, np.maximum(trials - errors, 1e-12))
    return np.where(errors >= trials, 1.0, upper)


def _bounds(fp, fn, n_out: int, n_in: int, delta: float, alpha: float) -> np.ndarray:
    """Epsilon lower bounds for arrays of (false positives, false negatives) counts."""
    fpr, fnr = _upper(fp, n_out, alpha / 2), _upper(fn, n_in, alpha / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        one = np.log(np.clip(1 - delta - fpr, 1e-300, None) / fnr)
        two = np.log(np.clip(1 - delta - fnr, 1e-300, None) / fpr)
    return np.maximum(0.0, np.nan_to_num(np.maximum(one, two), neginf=0.0))


def _counts(scores: np.ndarray, is_member: np.ndarray, thresholds: np.ndarray):
    """False positives and false negatives of "member if score >= t" for every t."""
    members = np.sort(scores[is_member])
    non_members = np.sort(scores[~is_member])
    fn = np.searchsorted(members, thresholds, side="left")
    fp = len(non_members) - np.searchsorted(non_members, thresholds, side="left")
    return fp, fn


def epsilon_lower_bound(scores, is_member, delta: float = 0.0, confidence: float = 0.95,
                        seed: int = 0) -> dict:
    """A lower bound on epsilon that holds with probability `confidence`.

    Half of the members and half of the non-members (chosen at random with `seed`) select the
    threshold that maximizes the bound; the other half measure FPR and FNR at that threshold.
    `max_provable` is the bound a perfect attack would reach with this many examples.
    """
    scores = np.asarray(scores, dtype=np.float64)
    is_member = np.asarray(is_member, dtype=bool)
    rng = np.random.default_rng(seed)
    select = np.zeros(len(scores), dtype=bool)
    for group in (np.flatnonzero(is_member), np.flatnonzero(~is_member)):
        select[rng.choice(group, len(group) // 2, replace=False)] = True
    alpha = 1.0 - confidence

    a_scores, a_member = scores[select], is_member[select]
    candidates = np.unique(a_scores)
    fp, fn = _counts(a_scores, a_member, candidates)
    chosen = candidates[int(np.argmax(_bounds(fp, fn, int((~a_member).sum()),
                                              int(a_member.sum()), delta, alpha)))]

    b_scores, b_member = scores[~select], is_member[~select]
    n_in, n_out = int(b_member.sum()), int((~b_member).sum())
    fp, fn = _counts(b_scores, b_member, np.array([chosen]))
    bound = float(_bounds(fp, fn, n_out, n_in, delta, alpha)[0])
    return {
        "epsilon_lower_bound": bound,
        "confidence": confidence,
        "delta": delta,
        "threshold": float(chosen),
        "fpr": float(fp[0] / n_out), "fnr": float(fn[0] / n_in),
        "fpr_upper": float(_upper(fp, n_out, alpha / 2)[0]),
        "fnr_upper": float(_upper(fn, n_in, alpha / 2)[0]),
        "members_measured": n_in, "non_members_measured": n_out,
        "max_provable": float(_bounds(np.array([0]), np.array([0]), n_out, n_in, delta,
                                      alpha)[0]),
    }


def _one_run_p_value(examples: int, guesses: int, correct: int, epsilon: float,
                     delta: float) -> float:
    """P[at least `correct` right guesses] under (epsilon, delta)-DP (Steinke et al. 2023, Thm 5.2).

    Under pure DP the number of right guesses is dominated by Binomial(guesses, e^eps/(1+e^eps));
    delta adds at most 2 * examples * delta times the largest average tail step.
    """
    q = 1.0 / (1.0 + math.exp(-epsilon))
    tail = float(stats.binom.sf(correct - 1, guesses, q))
    if delta == 0:
        return tail
    steps = stats.binom.pmf(np.arange(correct - 1, -1, -1), guesses, q)
    average = np.cumsum(steps) / np.arange(1, correct + 1)
    return min(1.0, tail + float(average.max(initial=0.0)) * delta * 2 * examples)


def one_run_epsilon_lower_bound(examples: int, guesses: int, correct: int, delta: float = 0.0,
                                confidence: float = 0.95) -> float:
    """The largest epsilon that `correct` right guesses out of `guesses` rule out.

    `examples` canaries were each included in training independently with probability 1/2; the
    auditor guessed in/out for `guesses` of them (abstaining on the rest), `correct` rightly.
    """
    if not 0 <= correct <= guesses <= examples:
        raise ValueError(f"need 0 <= correct <= guesses <= examples, got {correct}, {guesses}, "
                         f"{examples}")
    alpha = 1.0 - confidence
    low, high = 0.0, 1.0
    if _one_run_p_value(examples, guesses, correct, 0.0, delta) >= alpha:
        return 0.0
    while _one_run_p_value(examples, guesses, correct, high, delta) < alpha and high < 100:
        low, high = high, high * 2
    for _ in range(40):
        middle = (low + high) / 2
        if _one_run_p_value(examples, guesses, correct, middle, delta) < alpha:
            low = middle
        else:
            high = middle
    return low
