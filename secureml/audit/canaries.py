"""Canary audit: plant examples, train, and see whether an attacker can tell which were planted.

Each of m canaries (random-noise images or random token sequences, with random labels: easy to
memorize, so the most revealing examples a training set can contain) joins the training set
independently with probability 1/2. One model is trained with the variant's recipe; the
auditor ranks canaries by loss and guesses "in" for the lowest-loss tenth and "out" for the
highest-loss tenth. Steinke, Nasr & Jagielski (2023) turn the number of right guesses into an
epsilon lower bound from this one training run (`empirical.one_run_epsilon_lower_bound`).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..evaluation import predict_logits
from .attacks import threshold_scores
from .empirical import one_run_epsilon_lower_bound
from .metrics import attack_metrics

# Fraction of canaries guessed "in" (lowest loss) and, separately, "out" (highest loss);
# fixed in advance, as the bound requires.
GUESS_FRACTION = 0.1


def make_canaries(count: int, x_like: np.ndarray, num_classes: int, vocab_size: int | None,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random inputs shaped like `x_like` with random labels."""
    shape = (count,) + x_like.shape[1:]
    if np.issubdtype(x_like.dtype, np.integer):  # token ids: 0 is padding, 1 out-of-vocabulary
        x = rng.integers(2, max(vocab_size or 3, 3), size=shape).astype(x_like.dtype)
    else:
        x = rng.random(shape).astype(x_like.dtype)
    return x, rng.integers(0, num_classes, size=count).astype(np.int64)


def canary_audit(train: Callable[[np.ndarray, np.ndarray], tuple[Any, dict | None]],
                 x_train: np.ndarray, y_train: np.ndarray, count: int, num_classes: int, *,
                 vocab_size: int | None = None, confidence: float = 0.95, seed: int = 0,
                 batch_size: int = 512) -> dict:
    """Train once on the training set plus a random half of `count` canaries; bound epsilon.

    `train(x, y) -> (model, privacy)` must train a fresh model exactly as the audited one was
    trained and return its `privacy` section (None without DP). The bound is compared with the
    epsilon and delta accounted for that training run, the one the canaries went through: its
    training set is larger than the audited variant's, so its accounting differs slightly.
    """
    rng = np.random.default_rng(seed + 2)
    x_can, y_can = make_canaries(count, x_train, num_classes, vocab_size, rng)
    included = rng.random(count) < 0.5
    model, privacy = train(np.concatenate([x_train, x_can[included]]),
                           np.concatenate([y_train, y_can[included]]))
    accounted_epsilon = (privacy or {}).get("epsilon")
    delta = (privacy or {}).get("delta") or 0.0
    scores = threshold_scores(predict_logits(model, x_can, batch_size), y_can)["loss"]
    guesses = max(1, int(GUESS_FRACTION * count))
    order = np.argsort(scores, kind="stable")
    correct = int(included[order[-guesses:]].sum() + (~included[order[:guesses]]).sum())
    bound = one_run_epsilon_lower_bound(count, 2 * guesses, correct, delta, confidence)
    auc = attack_metrics(scores, included, confidence=confidence)
    return {
        "canaries": count,
        "included": int(included.sum()),
        "kind": "random token sequences" if np.issubdtype(x_train.dtype, np.integer)
        else "uniform noise images",
        "guesses": 2 * guesses,
        "correct": correct,
        "epsilon_lower_bound": bound,
        "confidence": confidence,
        "delta": delta,
        "accounted_epsilon": accounted_epsilon,
        "guarantee_broken": (bool(bound > accounted_epsilon)
                             if accounted_epsilon is not None else None),
        "auc": auc["auc"],
        "tpr_at_fpr": auc["tpr_at_fpr"],
        "method": "Steinke, Nasr & Jagielski 2023 (one training run), loss ranking",
    }
