"""What a membership-inference audit costs, against training the target model once.

    pytest benchmarks/bench_membership.py --benchmark-only

On digits with a small image_cnn: threshold attacks (loss, confidence, entropy) cost one
forward pass over the audited examples; shadow attacks (shadow, LiRA offline) train K shadow
models the way the target was trained, so their cost is about K target trainings. The group's
baseline is one training of the target.
"""
import numpy as np
import pytest

from secureml.audit.membership import audit_membership
from secureml.models import build_model
from secureml.training import train

MODEL = {"filters": [8, 16], "dense_units": 32}
TRAINING = {"epochs": 2, "batch_size": 64, "learning_rate": 0.003}
SHADOW_MODELS = 2


@pytest.fixture(scope="module")
def audit_inputs(digits_arrays):
    """Target trained on 500 digits; 250 members, 250 non-members, the rest for shadows."""
    x, y = digits_arrays
    order = np.random.default_rng(0).permutation(len(y))
    train_idx, out_idx, pool_idx = order[:500], order[500:750], order[750:]

    def fit(xs, ys, seed):
        model = build_model("image_cnn", x.shape[1:], 10, **MODEL)
        return train(model, xs, ys, config=TRAINING, seed=seed, progress=False).model

    target = fit(x[train_idx], y[train_idx], 0)
    return {"fit": fit, "target": target, "train": (x[train_idx], y[train_idx]),
            "members": (x[train_idx[:250]], y[train_idx[:250]]),
            "non_members": (x[out_idx], y[out_idx]), "population": (x[pool_idx], y[pool_idx])}


AUDITS = {
    "train target (baseline)": None,
    "loss+confidence+entropy": ["loss", "confidence", "entropy"],
    f"shadow+lira_offline, K={SHADOW_MODELS}": ["shadow", "lira_offline"],
}


@pytest.mark.parametrize("name", list(AUDITS))
def test_membership_audit(benchmark, ratios, audit_inputs, name):
    inputs = audit_inputs
    benchmark.group = "membership audit, digits image_cnn, 250 members + 250 non-members"
    if AUDITS[name] is None:
        model = benchmark(inputs["fit"], *inputs["train"], 1)
        assert model.output_shape == (None, 10)
    else:
        config = {"attacks": AUDITS[name], "shadow_models": SHADOW_MODELS,
                  "target_examples": 250}
        section = benchmark(audit_membership, inputs["target"], inputs["members"],
                            inputs["non_members"], config=config,
                            population=inputs["population"], train=inputs["fit"],
                            target_train_size=500)
        assert 0 <= section["best"]["auc"] <= 1
        assert set(section["attacks"]) == set(AUDITS[name])
    ratios.record(benchmark, name, baseline="train target (baseline)")
