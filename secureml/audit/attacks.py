"""Membership inference attacks as plain functions of logits: a higher score means "member".

- `loss`: Yeom et al. 2018; members tend to have lower loss. Uses the label.
- `confidence`: the largest predicted probability (Salem et al. 2019); label-free.
- `entropy`: the entropy of the prediction, lower for members (Salem et al. 2019); label-free.
- `shadow`: Shokri et al. 2017: an attack classifier learns from shadow models, trained like the
  target on data whose membership the attacker knows, what member outputs look like.
- `lira_offline`, `lira_online`: the likelihood-ratio attack of Carlini et al. 2022. For each
  example, shadow models give the distribution of its logit-scaled confidence when it is out
  of the training set (offline) and also when it is in (online); the target's value is scored
  by how much more likely it is under "in" than under "out".
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
from scipy import stats
from scipy.special import logsumexp

from ..models.outputs import log_probabilities

THRESHOLD_ATTACKS = ("loss", "confidence", "entropy")
SHADOW_ATTACKS = ("shadow", "lira_offline", "lira_online")
ATTACKS = THRESHOLD_ATTACKS + SHADOW_ATTACKS


def log_probs(logits) -> np.ndarray:
    """Log-probabilities of every class, (N, classes), also for one-logit binary models."""
    return log_probabilities(tf.constant(np.asarray(logits, dtype=np.float32))).numpy() \
        .astype(np.float64)


def scaled_confidence(logits, labels) -> np.ndarray:
    """log(p_y / (1 - p_y)), computed stably; LiRA's statistic, close to Gaussian per example."""
    lp = log_probs(logits)
    labels = np.asarray(labels).reshape(-1)
    rows = np.arange(len(labels))
    true = lp[rows, labels]
    others = lp.copy()
    others[rows, labels] = -np.inf
    return true - logsumexp(others, axis=1)


def threshold_scores(logits, labels) -> dict[str, np.ndarray]:
    """Scores of the three attacks that need only the target model."""
    lp = log_probs(logits)
    labels = np.asarray(labels).reshape(-1)
    probs = np.exp(lp)
    return {
        "loss": lp[np.arange(len(labels)), labels],  # minus the cross-entropy loss
        "confidence": probs.max(axis=1),
        "entropy": np.sum(probs * lp, axis=1),  # minus the entropy
    }


def shadow_features(logits, labels) -> np.ndarray:
    """What the Shokri attack classifier sees: sorted log-probabilities, the true class's
    scaled confidence, whether the prediction is right, and the label (one-hot)."""
    lp = log_probs(logits)
    labels = np.asarray(labels).reshape(-1)
    ranked = -np.sort(-lp, axis=1)
    correct = (lp.argmax(axis=1) == labels).astype(np.float64)
    onehot = np.eye(lp.shape[1])[labels]
    return np.column_stack([ranked, scaled_confidence(logits, labels), correct, onehot])


def shadow_attack(train_features: np.ndarray, train_is_member: np.ndarray,
                  target_features: np.ndarray, seed: int = 0) -> np.ndarray:
    """Train the attack classifier on shadow outputs; return member probabilities for the target.

    Shokri et al. train one attack model per class; one shared gradient-boosted model with the
    label as a feature needs fewer shadow examples and does as well on 10 classes.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05,
                                           early_stopping=True, random_state=seed)
    model.fit(train_features, train_is_member)
    return model.predict_proba(target_features)[:, 1]


def _mean_and_std(values: np.ndarray, mask: np.ndarray, fixed_variance: bool):
    """Per-example mean and std over the shadow models selected by mask, (N, queries) each.

    values (K, N, queries), mask (K, N). With few shadow models a per-example std is noisy;
    Carlini et al. then use one variance shared by all examples (`fixed_variance`); we pool the
    per-example variances.
    """
    weights = mask[..., None].astype(np.float64)
    count = weights.sum(axis=0)
    mean = (values * weights).sum(axis=0) / np.maximum(count, 1)
    var = ((values - mean) ** 2 * weights).sum(axis=0) / np.maximum(count - 1, 1)
    if fixed_variance:
        var = np.full_like(var, np.mean(var[count[:, 0] > 1]) if np.any(count > 1) else 1.0)
    return mean, np.sqrt(var) + 1e-8


def lira_offline(target: np.ndarray, shadows: np.ndarray, out_mask: np.ndarray,
                 fixed_variance: bool = True) -> np.ndarray:
    """One-sided test against the "out" distribution: how far above it the target's value lies.

    target (N, queries) scaled confidences on the target model; shadows (K, N, queries) on the
    shadow models; out_mask (K, N) marks the shadow models that did not train on the example.
    """
    mean, std = _mean_and_std(shadows, out_mask, fixed_variance)
    return stats.norm.logcdf((target - mean) / std).mean(axis=1)


def lira_online(target: np.ndarray, shadows: np.ndarray, in_mask: np.ndarray,
                fixed_variance: bool = True) -> np.ndarray:
    """Log-likelihood ratio of the target's value under the "in" and "out" Gaussians."""
    mean_in, std_in = _mean_and_std(shadows, in_mask, fixed_variance)
    mean_out, std_out = _mean_and_std(shadows, ~in_mask, fixed_variance)
    ratio = stats.norm.logpdf(target, mean_in, std_in) - stats.norm.logpdf(target, mean_out,
                                                                           std_out)
    return ratio.mean(axis=1)
