"""Suspicious labels and outliers, from a simple model fitted independently of the classifier.

Labels: a linear model (logistic regression on 8x8 thumbnails for images, on hashed word
counts for text) predicts every training example out of fold (k-fold cross validation), so it
never saw the example it judges. An example is suspicious when that model predicts another
class and gives the example's own label less than `LOW_PROBABILITY` (Northcutt et al. 2021
call this low self-confidence). The checker is weak on hard data (its cross-validated
accuracy is reported beside the count): read the examples, don't delete them.

Outliers: images far from the rest (robust z-score of the distance to the mean in a whitened
principal-component space) or nearly constant; texts that are empty or of extreme length.
"""
from __future__ import annotations

import warnings

import numpy as np

# An example counts as an outlier this many robust standard deviations from the median.
OUTLIER_Z = 6.0
# A label the out-of-fold checker gives less probability than this, while preferring another
# class, is suspicious.
LOW_PROBABILITY = 0.1
# Below this cross-validated accuracy the checker is too weak for its count to mean much.
TRUSTED_CHECKER_ACCURACY = 0.8


def image_features(x: np.ndarray, side: int = 8) -> np.ndarray:
    """Standardized side x side thumbnails (area averaging), one row per image."""
    import tensorflow as tf

    rows = []
    for start in range(0, len(x), 8192):
        batch = tf.image.resize(np.asarray(x[start:start + 8192], np.float32), (side, side),
                                method="area", antialias=True)
        rows.append(batch.numpy().reshape(len(batch), -1))
    f = np.concatenate(rows)
    return (f - f.mean(axis=0)) / (f.std(axis=0) + 1e-6)


def text_features(texts):
    from sklearn.feature_extraction.text import HashingVectorizer

    vectorizer = HashingVectorizer(n_features=2 ** 18, alternate_sign=False, norm="l2")
    return vectorizer.transform([str(t) for t in texts])


def suspicious_labels(features, y: np.ndarray, class_names: list[str], *, folds: int = 3,
                      limit: int = 20000, seed: int = 0,
                      examples: int = 10) -> tuple[dict, np.ndarray]:
    """Cross-validated disagreement between the labels and an independent linear model.

    Returns the report and the indices of every flagged example. At most `limit` examples,
    chosen at random, are checked (the report says how many).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression, SGDClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    y = np.asarray(y)
    checked = np.arange(len(y))
    if len(y) > limit:
        checked = np.sort(np.random.default_rng(seed).choice(len(y), limit, replace=False))
        features, y = features[checked], y[checked]
    counts = np.bincount(y, minlength=len(class_names))
    folds = min(folds, int(counts[counts > 0].min()))
    if folds < 2:
        return {"checked": 0, "reason": "a class has fewer than 2 training examples"}, \
            np.zeros(0, dtype=np.int64)
    if hasattr(features, "tocsr"):  # sparse text features: a linear model trained by SGD
        model = SGDClassifier(loss="log_loss", alpha=2e-5, max_iter=30, tol=1e-3,
                              random_state=seed)
    else:
        model = LogisticRegression(max_iter=100)
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    present = np.flatnonzero(counts > 0)
    probs = np.zeros((len(y), len(class_names)))
    with warnings.catch_warnings():  # a rough checker need not converge fully
        warnings.simplefilter("ignore", ConvergenceWarning)
        probs[:, present] = cross_val_predict(model, features, y, cv=cv,
                                              method="predict_proba")
    given = probs[np.arange(len(y)), y]
    suggested = probs.argmax(axis=1)
    flagged = np.flatnonzero((suggested != y) & (given < LOW_PROBABILITY))
    margin = probs[flagged, suggested[flagged]] - given[flagged]
    top = flagged[np.argsort(-margin, kind="stable")][:examples]
    accuracy = float(np.mean(suggested == y))
    report = {
        "checked": int(len(y)),
        "method": f"{folds}-fold cross-validated {type(model).__name__}; suspicious when it "
                  f"predicts another class and gives the label < {LOW_PROBABILITY}",
        "checker_accuracy": accuracy,
        "trusted": accuracy >= TRUSTED_CHECKER_ACCURACY,
        "suspicious": int(len(flagged)),
        "fraction": float(len(flagged) / len(y)),
        "by_class": {class_names[c]: int(np.sum(y[flagged] == c)) for c in present},
        "examples": [{"index": int(checked[i]), "label": class_names[y[i]],
                      "suggested": class_names[suggested[i]],
                      "label_probability": round(float(given[i]), 4),
                      "suggested_probability": round(float(probs[i, suggested[i]]), 4)}
                     for i in top],
    }
    return report, checked[flagged]


def _robust_z(values: np.ndarray) -> np.ndarray:
    median = np.median(values)
    mad = np.median(np.abs(values - median)) * 1.4826
    return (values - median) / (mad if mad > 0 else 1e-12)


def image_outliers(features: np.ndarray, x: np.ndarray, examples: int = 10) -> dict:
    from sklearn.decomposition import PCA

    components = min(20, features.shape[1], len(features) - 1)
    projected = PCA(components, whiten=True, random_state=0).fit_transform(features)
    z = _robust_z(np.log(np.sqrt((projected ** 2).sum(axis=1)) + 1e-12))
    flat = np.asarray(x).reshape(len(x), -1)
    constant = flat.std(axis=1) < 1.0 / 255
    return _outlier_report({"far_from_the_rest": z > OUTLIER_Z, "constant": constant}, z,
                           examples, f"robust z-score of the whitened PCA distance > {OUTLIER_Z}; "
                                     "or pixel standard deviation below 1/255")


def text_outliers(texts, examples: int = 10) -> dict:
    lengths = np.fromiter((len(str(t).split()) for t in texts), dtype=np.float64,
                          count=len(texts))
    z = _robust_z(np.log1p(lengths))
    return _outlier_report({"empty": lengths == 0, "extreme_length": np.abs(z) > OUTLIER_Z},
                           np.abs(z), examples,
                           f"no words; or robust z-score of log word count beyond {OUTLIER_Z}",
                           extra={"words_median": float(np.median(lengths)),
                                  "words_max": int(lengths.max(initial=0))})


def _outlier_report(reasons: dict[str, np.ndarray], severity: np.ndarray, examples: int,
                    method: str, extra: dict | None = None) -> dict:
    any_reason = np.logical_or.reduce(list(reasons.values()))
    flagged = np.flatnonzero(any_reason)
    top = flagged[np.argsort(-severity[flagged], kind="stable")][:examples]
    return {
        "method": method,
        "outliers": int(len(flagged)),
        "fraction": float(any_reason.mean()) if len(any_reason) else 0.0,
        "by_reason": {name: int(mask.sum()) for name, mask in reasons.items()},
        "examples": [{"index": int(i), "reasons": [n for n, m in reasons.items() if m[i]],
                      "score": round(float(severity[i]), 2)} for i in top],
        **(extra or {}),
    }
