"""The adversarial_training defence on digits: it buys robustness, composes with DP-SGD and runs
through the experiment runner."""
import json

import numpy as np
import pytest
import tensorflow as tf

from secureml.attacks import pgd
from secureml.defences.adversarial import Config, make
from secureml.defences.adversarial.objectives import perturb
from secureml.errors import ConfigError, UnsupportedError
from secureml.models import build_model, log_probabilities
from secureml.training import train

EPSILON = 0.15  # about two of digits' 17 grey levels
TRAINING = {"epochs": 8, "batch_size": 32, "learning_rate": 0.003}


def fit(digits, defences=(), **training):
    x, y, *_ = digits
    tf.keras.utils.set_random_seed(0)
    return train(build_model("image_cnn", x.shape[1:], 10), x, y,
                 config={**TRAINING, **training}, defences=list(defences), progress=False)


def robust_accuracy(model, x, y):
    tf.random.set_seed(1)
    x_adv = pgd(model, x, y, EPSILON, steps=20, progress=False)
    return float(np.mean(np.argmax(model(x_adv).numpy(), -1) == y))


def test_pgd_training_beats_plain_training_under_pgd(digits):
    *_, xt, yt = digits
    plain = fit(digits)
    hardened = fit(digits, [make({"method": "pgd", "epsilon": EPSILON, "warmup_epochs": 2},
                                 "image")])
    plain_robust = robust_accuracy(plain.model, xt, yt)
    hardened_robust = robust_accuracy(hardened.model, xt, yt)
    # Measured: plain about 0.15, PGD-trained about 0.55 (clean 0.95 and 0.9).
    assert hardened_robust > plain_robust + 0.25
    assert np.mean(np.argmax(hardened.model(xt).numpy(), -1) == yt) > 0.8
    record = hardened.sections["adversarial_training"]
    assert record["epsilon_by_epoch"][:3] == pytest.approx([0.05, 0.1, 0.15])
    assert [h["adversarial_epsilon"] for h in hardened.history][:3] == pytest.approx(
        [0.05, 0.1, 0.15])
    assert record["objective"] == {"name": "pgd_adversarial", "single_pass": True}
    assert record["steps"] == 7 and record["relative_step_size"] == pytest.approx(2.5 / 7)


@pytest.mark.parametrize("method, options, single_pass", [
    ("pgd", {}, True), ("pgd", {"clean_weight": 0.5}, False), ("fast", {}, True),
    ("trades", {}, False)])
def test_objectives_declare_single_pass_only_for_one_forward_pass(method, options, single_pass):
    defence = make({"method": method, **options}, "image")
    model = build_model("image_cnn", (8, 8, 1), 10)
    setup = type("Setup", (), {"model": model, "objective": None, "callbacks": []})()
    defence.apply(setup)
    assert setup.objective.single_pass is single_pass
    assert setup.callbacks == [defence.warmup]
    x = tf.random.uniform((4, 8, 8, 1))
    y = tf.constant([0, 1, 2, 3])
    prepared = setup.objective.prepare(model, x, y)
    loss, logits = setup.objective.loss(model, prepared, y)
    assert loss.shape == (4,) and logits.shape == (4, 10)
    if single_pass:  # the loss is exactly cross-entropy of one pass on the prepared inputs
        expected = tf.nn.sparse_softmax_cross_entropy_with_logits(y, model(prepared))
        np.testing.assert_allclose(loss.numpy(), expected.numpy(), rtol=1e-6)


@pytest.mark.parametrize("method", ["fast", "trades"])
def test_fast_and_trades_training_buy_robustness(digits, method):
    *_, xt, yt = digits
    hardened = fit(digits, [make({"method": method, "epsilon": EPSILON}, "image")], epochs=5)
    assert robust_accuracy(hardened.model, xt, yt) > 0.3  # plain: about 0.15


def test_adversarial_example_of_one_example_ignores_the_others(digits):
    """What lets DP-SGD clip per example under adversarial training."""
    x, y, *_ = digits
    model = build_model("image_cnn", x.shape[1:], 10)

    def class_logits(v):
        return log_probabilities(model(v, training=False))

    batch = perturb(class_logits, tf.constant(x[:16]), tf.constant(y[:16]), 0.1, 0.03, 5,
                    "linf", (0.0, 1.0)).numpy()
    alone = perturb(class_logits, tf.constant(x[5:6]), tf.constant(y[5:6]), 0.1, 0.03, 5,
                    "linf", (0.0, 1.0)).numpy()
    np.testing.assert_allclose(batch[5:6], alone, atol=1e-6)
    assert np.abs(batch - x[:16]).max() <= 0.1 + 1e-6 and batch.min() >= 0 and batch.max() <= 1


def test_composes_with_dp_sgd(digits):
    *_, xt, yt = digits
    from secureml.defences import dp_sgd
    result = fit(digits, [dp_sgd.make({"noise_multiplier": 0.5, "l2_norm_clip": 1.0}, "image"),
                          make({"method": "pgd", "epsilon": EPSILON, "steps": 3}, "image")],
                 epochs=4, learning_rate=0.01)
    accuracy = np.mean(np.argmax(result.model(xt).numpy(), -1) == yt)
    assert accuracy > 0.35  # measured 0.58; chance is 0.1
    assert result.setup.describe()["engine"]["name"] == "fast"  # pure PGD-AT is single-pass
    assert result.sections["privacy"]["epsilon"] > 0
    assert result.sections["adversarial_training"]["method"] == "pgd"


def test_config_errors():
    with pytest.raises(ConfigError, match="does not apply to text"):
        make({"method": "pgd"}, "text")
    with pytest.raises(ConfigError, match="use embedding"):
        make({"method": "fast"}, "text")
    with pytest.raises(ConfigError, match="does not apply to image"):
        make({"method": "embedding"}, "image")
    with pytest.raises(ConfigError, match="did you mean 8/255"):
        make({"epsilon": 8}, "image")
    with pytest.raises(ConfigError, match="cleverhans"):
        make({"norm": "l1"}, "image")
    with pytest.raises(ConfigError, match="trades_beta"):
        make({"method": "trades", "clean_weight": 0.5}, "image")
    with pytest.raises(ConfigError, match="positive"):
        make({"epsilon": 0}, "image")
    with pytest.raises(ConfigError, match="did you mean 'warmup_epochs'"):
        make({"warmup": 2}, "image")
    assert make({"epsilon": "4/255"}, "image").epsilon == pytest.approx(4 / 255)
    assert make(Config(), "text").epsilon == 1.0
    text_model = build_model("text_lstm", (10,), 2, vocab_size=30)
    setup = type("Setup", (), {"model": text_model, "objective": None, "callbacks": []})()
    with pytest.raises(UnsupportedError, match="float image inputs"):
        make({}, "image").apply(setup)
    image_model = build_model("image_cnn", (8, 8, 1), 10)
    setup = type("Setup", (), {"model": image_model, "objective": None, "callbacks": []})()
    with pytest.raises(UnsupportedError, match="Embedding"):
        make({}, "text").apply(setup)


def test_runner_writes_robustness_and_training_sections(tmp_path):
    from secureml.runner import run_experiment
    config = {
        "name": "adv", "seed": 0, "data": {"name": "digits"},
        "model": {"name": "image_cnn"},
        "training": {"epochs": 3, "batch_size": 64, "learning_rate": 0.003},
        "evaluation": {"robustness": {"examples": 60, "epsilons": [0, 0.1], "steps": 5,
                                      "headline_epsilon": 0.1}},
        "variants": {"plain": {}, "pgd": {"defences": {"adversarial_training": {
            "epsilon": 0.1, "steps": 3}}}},
        "audit": {"data": False, "report": False}, "output": {"save_model": False},
    }
    result = run_experiment(config, out_dir=tmp_path, progress=False)
    metrics = json.loads((result.directory / "pgd" / "metrics.json").read_text())
    robustness = metrics["robustness"]
    assert robustness["headline"].startswith("PGD-5 L-inf 0.1: ")
    assert robustness["training_cost"]["baseline_variant"] == "plain"
    # Written before the runner adds its ratios to `cost`, from the baseline's metrics.json.
    assert robustness["training_cost"]["train_time_ratio"] == metrics["cost"]["train_time_ratio"]
    assert robustness["training_cost"]["step_vs_plain_step"] == \
        metrics["cost"]["vs_plain_step"]["ratio"]
    assert metrics["adversarial_training"]["epsilon"] == 0.1
    assert metrics["training"]["objective"]["name"] == "pgd_adversarial"
    assert (result.directory / "pgd" / "robustness.png").is_file()
    resolved = (result.directory / "config.yaml").read_text()
    assert "adversarial_training" in resolved and "robustness" in resolved
