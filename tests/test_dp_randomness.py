"""DP-SGD's guarantee as stated: secret noise and sampling (not replayable from the seed), fresh
randomness for every fit with the accountant composing all of them, weight regularization in
every engine, and the provenance of the hyperparameters."""
import numpy as np
import pytest
import tensorflow as tf

from secureml.defences import adversarial, dp_sgd
from secureml.defences.dp_sgd.callback import PrivacyBudgetSpent
from secureml.defences.dp_sgd.engines import TFPrivacyEngine
from secureml.defences.dp_sgd.fast import FastClippingEngine
from secureml.defences.dp_sgd.randomness import DPRandomness
from secureml.errors import UnsupportedError
from secureml.training import Objective, PlainEngine, TrainingConfig, TrainingSetup
from secureml.training.wrapper import HardenedModel

L = tf.keras.layers
N = 256  # training examples: 8 steps an epoch at batch 32


@pytest.fixture(scope="module", autouse=True)
def op_determinism():
    # As every `secureml run` sets it (runtime.deterministic): the noise must stay secret anyway.
    tf.config.experimental.enable_op_determinism()


def tiny(l2: float = 0.0) -> tf.keras.Model:
    """A small CNN, its kernels (and the logits' bias) L2-regularized with factor `l2`."""
    reg = tf.keras.regularizers.l2(l2) if l2 else None
    return tf.keras.Sequential([
        tf.keras.Input((8, 8, 1)), L.Conv2D(4, 3, kernel_regularizer=reg, name="conv"),
        L.Flatten(), L.Dense(10, kernel_regularizer=reg, bias_regularizer=reg, name="logits")])


@pytest.fixture(scope="module")
def weights():
    tf.keras.utils.set_random_seed(0)
    return tiny().get_weights()


def private_model(weights, l2=0.0, **options):
    model = tiny(l2)
    model.set_weights(weights)
    settings = {"data_size": N, "batch_size": 32, "epochs": 1, "noise_multiplier": 1.0,
                "optimizer": "sgd", "learning_rate": 0.5, "hyperparameters": "public", **options}
    return model, dp_sgd.make_private(model, **settings)


def private_fit(digits, weights, **options):
    """The weights and privacy record after one fit, from `weights`, seeded as a run is."""
    x, y, *_ = digits
    tf.keras.utils.set_random_seed(0)
    model, private = private_model(weights, **options)
    private.fit(x[:N], y[:N], verbose=0)
    return model.get_weights(), private.privacy


@pytest.mark.parametrize("clipping", ["fast", "microbatch"])
def test_one_seed_trains_different_weights_unless_reproducible(clipping, digits, weights):
    first, privacy = private_fit(digits, weights, clipping=clipping)
    second, _ = private_fit(digits, weights, clipping=clipping)
    assert privacy["randomness"] == "os.urandom" and privacy["guarantee_holds"] is True
    assert not any(np.allclose(a, b) for a, b in zip(first, second))
    replays = [private_fit(digits, weights, clipping=clipping, reproducible=True)
               for _ in range(2)]
    for a, b in zip(replays[0][0], replays[1][0]):
        np.testing.assert_array_equal(a, b)
    privacy = replays[0][1]
    assert privacy["randomness"] == "seed" and privacy["guarantee_holds"] is False
    assert "noise and sampling derived from the recorded seed: replayable" in privacy["notes"][0]


def noised_update(engine_name, randomness, digits, weights):
    """One SGD step (learning rate 1) of a large-noise engine on 16 examples."""
    x, y, *_ = digits
    engine = FastClippingEngine(1.0, 10.0, randomness=randomness) if engine_name == "fast" \
        else TFPrivacyEngine(engine_name, 1.0, 10.0, randomness=randomness)
    optimizer = tf.keras.optimizers.legacy.SGD(1.0) if engine_name == "fast" else \
        engine.make_optimizer(TrainingConfig(optimizer="sgd", learning_rate=1.0))
    return one_step(engine, optimizer, tiny(), weights, x[:16], y[:16])


def one_step(engine, optimizer, model, weights, x, y, objective=None) -> list:
    model.set_weights(weights)
    trainable = HardenedModel(model, objective or Objective(), engine)
    trainable.compile(optimizer=optimizer)
    trainable.train_on_batch(x, y)
    return [a - b for a, b in zip(model.get_weights(), weights)]


@pytest.mark.parametrize("engine_name", ["fast", "microbatch", "vectorized"])
def test_noise_ignores_tensorflows_global_seed(engine_name, digits, weights):
    # tensorflow-privacy's own noise would repeat here: tf.random.normal under one global seed.
    updates = []
    for randomness in (None, None, DPRandomness(True, 7), DPRandomness(True, 7)):
        tf.keras.utils.set_random_seed(0)
        updates.append(noised_update(engine_name, randomness, digits, weights))
    secret, again, replayed, replayed_again = updates
    assert not any(np.allclose(a, b) for a, b in zip(secret, again))
    for a, b in zip(replayed, replayed_again):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_both_engines_add_the_same_noise_from_the_same_source(digits, weights):
    # tensorflow-privacy only clips here; the noise is secureml's, exactly as the fast engine's.
    fast, microbatch = (noised_update(name, DPRandomness(True, 7), digits, weights)
                        for name in ("fast", "microbatch"))
    assert np.abs(fast[2]).max() > 0.1  # mostly noise: sigma C / B = 10 / 16
    for a, b in zip(fast, microbatch):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_poisson_masks_are_fresh_for_every_fit_and_replay_only_from_the_seed():
    def masks(randomness, fits=2, steps=3):
        out = []
        for _ in range(fits):
            randomness.on_train_begin()
            stream = randomness.poisson_masks(500, 0.1)
            out.append([next(stream) for _ in range(steps)])
        return out

    secret = masks(DPRandomness())
    again = masks(DPRandomness())
    steps = [m for fit in secret + again for m in fit]
    assert all(m.dtype == bool and 20 < m.sum() < 90 for m in steps)  # about 50 of 500
    assert len({m.tobytes() for m in steps}) == len(steps)  # every step draws anew
    replayed, replayed_again = masks(DPRandomness(True, 3)), masks(DPRandomness(True, 3))
    assert all(np.array_equal(a, b) for a, b in zip(replayed[0] + replayed[1],
                                                    replayed_again[0] + replayed_again[1]))
    assert not any(np.array_equal(a, b) for a, b in zip(*replayed))  # two fits differ
    everyone = next(DPRandomness().poisson_masks(100, 1.0))
    assert everyone.all()  # q = 1 takes every example


def test_fitting_twice_draws_new_batches_and_composes_both_fits(digits, weights, monkeypatch):
    x, y, *_ = digits
    recorded = []
    original = DPRandomness.poisson_masks

    def recording(self, size, rate):
        fit = []
        recorded.append(fit)
        for mask in original(self, size, rate):
            fit.append(mask)
            yield mask
    monkeypatch.setattr(DPRandomness, "poisson_masks", recording)
    _, private = private_model(weights)
    private.fit(x[:N], y[:N], verbose=0)
    one_fit = private.privacy
    private.fit(x[:N], y[:N], verbose=0)
    assert len(recorded) == 2
    assert not any(np.array_equal(a, b) for a, b in zip(recorded[0][:8], recorded[1][:8]))
    privacy = private.privacy
    plan = private.defence.plan
    assert privacy["fits"] == 2 and privacy["steps"] == 2 * plan.steps_per_epoch == 16
    assert privacy["epsilon"] == pytest.approx(
        dp_sgd.compute_epsilon(1.0, 32 / N, 16, plan.delta)) and privacy["epsilon"] > \
        one_fit["epsilon"]
    assert any("2 fits" in note for note in privacy["notes"])


def test_a_fit_past_the_target_is_refused_or_warned_about(digits, weights):
    x, y, *_ = digits
    _, private = private_model(weights, noise_multiplier=None, target_epsilon=4.0)
    private.fit(x[:N], y[:N], verbose=0)
    assert 3.99 < private.privacy["epsilon"] <= 4.0
    with pytest.raises(PrivacyBudgetSpent, match="budget is spent"):
        private.fit(x[:N], y[:N], verbose=0)
    _, private = private_model(weights, noise_multiplier=None, target_epsilon=4.0,
                               stop_at_budget=False)
    private.fit(x[:N], y[:N], verbose=0)
    with pytest.warns(UserWarning, match="OVER BUDGET: epsilon .* exceeds the budget 4"):
        private.fit(x[:N], y[:N], verbose=0)
    privacy = private.privacy
    assert privacy["within_budget"] is False and privacy["epsilon"] > 4.0
    assert any(note.startswith("OVER BUDGET") for note in privacy["notes"])


@pytest.mark.parametrize("provenance, holds, phrase", [
    ("default", True, "hyperparameters: default, chosen without this data"),
    ("public", True, "hyperparameters: public, chosen without this data"),
    ("private_unaccounted", False, "NOT AS STATED: the hyperparameters were chosen on this "
                                   "private data, outside the accounting"),
    (None, False, "is not stated, and a choice made on this data is not accounted. Set "
                  "dp_sgd.hyperparameters"),
])
def test_the_hyperparameters_provenance_is_stated_and_decides_the_guarantee(
        provenance, holds, phrase, weights):
    _, private = private_model(weights, hyperparameters=provenance)
    privacy = private.privacy
    assert privacy["hyperparameters"] == provenance and privacy["guarantee_holds"] is holds
    assert any(phrase in note for note in privacy["notes"]), privacy["notes"]


def regularized_steps(make_engine, make_optimizer, weights, digits, objective=None) -> list:
    """Each weight's update with L2 factor 0.5 minus its update without, after one SGD step
    (learning rate 1) from `weights` on 16 examples."""
    x, y, *_ = digits
    updates = []
    for l2 in (0.5, 0.0):
        tf.keras.utils.set_random_seed(0)  # the same adversarial random start in both
        updates.append(one_step(make_engine(), make_optimizer(), tiny(l2), weights, x[:16],
                                y[:16], objective))
    return [a - b for a, b in zip(*updates)]


def sgd():
    return tf.keras.optimizers.legacy.SGD(1.0)


def tf_privacy(name):
    engine = TFPrivacyEngine(name, 0.01, 0.0)
    return (lambda: engine), lambda: engine.make_optimizer(
        TrainingConfig(optimizer="sgd", learning_rate=1.0))


@pytest.mark.parametrize("engine_name", ["plain", "fast", "microbatch", "vectorized"])
def test_weight_regularization_adds_its_unclipped_gradient_in_every_engine(engine_name, weights,
                                                                           digits):
    # 0.5 ||W||^2 has gradient W, so the L2 model steps by exactly -W more on its regularized
    # weights (the conv bias is not). The clip norm 0.01 is far below ||W||: a penalty clipped
    # with each example's gradient, or dropped, moves the weights otherwise.
    make_engine, make_optimizer = {
        "plain": (PlainEngine, sgd),
        "fast": (lambda: FastClippingEngine(0.01, 0.0), sgd),
        "microbatch": tf_privacy("microbatch"),
        "vectorized": tf_privacy("vectorized"),
    }[engine_name]
    difference = regularized_steps(make_engine, make_optimizer, weights, digits)
    kernel, bias, logits_kernel, logits_bias = weights
    for got, expected in zip(difference, [-kernel, np.zeros_like(bias), -logits_kernel,
                                          -logits_bias]):
        np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("engine_name", ["plain", "fast"])
def test_adversarial_training_keeps_the_weight_penalty(engine_name, weights, digits):
    model = tiny()
    setup = TrainingSetup(model, TrainingConfig(), 16, tf.distribute.get_strategy())
    adversarial.make({"method": "pgd", "epsilon": 0.1, "steps": 2}, "image").apply(setup)
    make_engine = PlainEngine if engine_name == "plain" else \
        (lambda: FastClippingEngine(0.01, 0.0))
    difference = regularized_steps(make_engine, sgd, weights, digits, setup.objective)
    np.testing.assert_allclose(difference[0], -weights[0], atol=1e-5)
    np.testing.assert_allclose(difference[2], -weights[2], atol=1e-5)


def test_losses_that_depend_on_the_examples_are_refused_under_dp(weights):
    activity = tf.keras.Sequential([tf.keras.Input((8, 8, 1)), L.Flatten(),
                                    L.Dense(10, activity_regularizer="l2", name="act")])
    plan = {"data_size": N, "batch_size": 32, "epochs": 1, "noise_multiplier": 1.0}
    with pytest.raises(UnsupportedError, match="'act' has an activity_regularizer"):
        dp_sgd.make_private(activity, **plan)
    inputs = tf.keras.Input((8, 8, 1))
    hidden = L.Flatten()(inputs)
    functional = tf.keras.Model(inputs, L.Dense(10)(hidden))
    functional.add_loss(tf.reduce_mean(hidden))
    with pytest.raises(UnsupportedError, match="adds a loss computed from its inputs"):
        dp_sgd.make_private(functional, **plan)
