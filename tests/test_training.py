"""train(): plain training, the objective/engine hooks, cost records, reproducibility."""
import numpy as np
import pytest
import tensorflow as tf

from secureml.errors import ConfigError
from secureml.models import build_model
from secureml.training import Objective, PlainEngine, train


def test_plain_training_learns_and_reports_cost(digits):
    x, y, xt, yt = digits
    tf.keras.utils.set_random_seed(0)
    result = train(build_model("image_cnn", x.shape[1:], 10), x, y,
                   config={"epochs": 8, "batch_size": 32, "learning_rate": 0.003},
                   validation_data=(xt, yt), progress=False)
    assert len(result.history) == 8
    assert result.history[-1]["val_accuracy"] > 0.85  # chance is 0.1
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    cost = result.cost
    assert cost["epochs"] == 8 and cost["steps"] == 8 * 38  # ceil(1200 / 32)
    assert cost["train_time_s"] > 0 and cost["examples_per_s"] > 0
    assert 0 < cost["step_time_median_s"] < cost["train_time_s"]
    assert cost["peak_rss_mb"] > 0
    assert cost["device"]["replicas"] == 1
    assert result.setup.describe()["engine"] == {"name": "plain"}
    assert "vs_plain_step" not in cost  # nothing to compare a plain step with


def test_binary_text_model_trains(digits):
    rng = np.random.default_rng(0)
    # Token 7 anywhere means class 1: learnable by an LSTM in a few epochs.
    x = rng.integers(2, 20, size=(600, 12)).astype(np.int32)
    y = rng.integers(0, 2, size=600)
    x[y == 1, rng.integers(0, 12, size=(y == 1).sum())] = 7
    x[y == 0] = np.where(x[y == 0] == 7, 8, x[y == 0])
    tf.keras.utils.set_random_seed(0)
    result = train(build_model("text_lstm", (12,), 2, vocab_size=20), x, y,
                   config={"epochs": 6, "batch_size": 32, "learning_rate": 0.01}, progress=False)
    assert result.history[-1]["accuracy"] > 0.9


class CountingObjective(Objective):
    name = "counting"

    def __init__(self):
        self.prepared = 0

    def prepare(self, model, x, y):
        self.prepared += 1  # runs at trace time inside tf.function: counts traces, not steps
        return x + 0.0


class HalfStepEngine(PlainEngine):
    """Scales the learning signal by zero: weights must not move."""

    name = "frozen"

    def step(self, model, objective, optimizer, x, y):
        prepared = objective.prepare(model, x, y)
        loss, logits = objective.loss(model, prepared, y)
        return loss, logits


def test_defences_plug_in_through_the_setup(digits):
    x, y, *_ = digits

    class Freeze:
        name = "freeze"

        def __init__(self):
            self.objective = CountingObjective()

        def apply(self, setup):
            setup.objective = self.objective
            setup.engine = HalfStepEngine()
            setup.drop_remainder = True

        def sections(self, result):
            return {"freeze": {"steps": result.cost["steps"]}}

    model = build_model("image_cnn", x.shape[1:], 10)
    before = [w.copy() for w in model.get_weights()]
    defence = Freeze()
    result = train(model, x, y, config={"epochs": 1, "batch_size": 100, "plain_step_pairs": 4},
                   defences=[defence], progress=False)
    # Unchanged also after the step-time comparison, whose plain steps train copies.
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert defence.objective.prepared >= 1
    assert result.sections == {"freeze": {"steps": 12}}
    assert result.setup.describe()["objective"] == {"name": "counting"}
    compared = result.cost["vs_plain_step"]
    assert compared["pairs"] == 4 and compared["batch_size"] == 100
    assert compared["step_time_median_s"] > 0 and compared["plain_step_time_median_s"] > 0
    assert compared["ratio"] > 0
    skipped = train(model, x, y, config={"epochs": 1, "batch_size": 100, "plain_step_pairs": 0},
                    defences=[Freeze()], progress=False)
    assert "vs_plain_step" not in skipped.cost


def test_same_seed_same_weights(digits):
    x, y, *_ = digits

    def run():
        tf.keras.utils.set_random_seed(3)
        return train(lambda: build_model("image_cnn", x.shape[1:], 10), x, y,
                     config={"epochs": 2, "batch_size": 64}, seed=3, progress=False)

    a, b = run(), run()
    for wa, wb in zip(a.model.get_weights(), b.model.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_bad_arrays_are_refused(digits):
    x, y, *_ = digits
    model = build_model("image_cnn", x.shape[1:], 10)
    with pytest.raises(ConfigError, match="1200 inputs but 10 labels"):
        train(model, x, y[:10], config={"epochs": 1}, progress=False)
    with pytest.raises(ConfigError, match="one-hot"):
        train(model, x, np.eye(10)[y], config={"epochs": 1}, progress=False)
    with pytest.raises(ConfigError, match="unknown key 'lr'"):
        train(model, x, y, config={"lr": 0.1}, progress=False)
