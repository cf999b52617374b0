"""DP-SGD training: clipping and noise of every engine, Poisson batches, guardrails, the engine
choice, `make_private`, and real training runs (digits, SMS spam) through `train` and the runner.
"""
import json
import sys
import types

import numpy as np
import pytest
import tensorflow as tf

from secureml.data import load_dataset
from secureml.defences import adversarial, dp_sgd
from secureml.defences.dp_sgd.callback import PrivacyBudgetSpent
from secureml.defences.dp_sgd.engines import TFPrivacyEngine, choose_engine
from secureml.defences.dp_sgd.fast import FastClippingEngine
from secureml.defences.dp_sgd.randomness import DPRandomness
from secureml.defences.dp_sgd.sampling import PoissonBatches
from secureml.errors import ConfigError, UnsupportedError
from secureml.models import build_model
from secureml.training import Objective, PlainEngine, TrainingConfig, train
from secureml.training.wrapper import HardenedModel

ENGINES = ["microbatch", "vectorized", "fast"]


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's digits through secureml's loader: 1,200 training and 237 held-out images."""
    data = load_dataset({"name": "digits", "validation_fraction": 0.0}, progress=False)
    return data.x_train[:1200], data.y_train[:1200], data.x_train[1200:], data.y_train[1200:]


@pytest.fixture(scope="module")
def initial_weights():
    tf.keras.utils.set_random_seed(0)
    return build_model("image_cnn", (8, 8, 1), 10).get_weights()


def make_engine(name, clip, noise, expected_batch_size=None, num_microbatches=None):
    if name == "fast":
        return FastClippingEngine(clip, noise, expected_batch_size)
    return TFPrivacyEngine(name, clip, noise, num_microbatches, expected_batch_size)


def sgd_steps(engine, weights, batches, model_name="image_cnn", num_classes=10,
              **model_options) -> list:
    """For each batch (x, y): the change of every weight after one SGD step (learning rate 1)
    from `weights`."""
    x0 = batches[0][0]
    model = build_model(model_name, x0.shape[1:], num_classes, **model_options)
    trainable = HardenedModel(model, Objective(), engine)
    config = TrainingConfig(optimizer="sgd", learning_rate=1.0)
    optimizer = engine.make_optimizer(config) if isinstance(engine, TFPrivacyEngine) \
        else tf.keras.optimizers.legacy.SGD(1.0)
    trainable.compile(optimizer=optimizer)
    updates = []
    for x, y in batches:
        model.set_weights(weights)
        trainable.train_on_batch(x, y)
        updates.append(np.concatenate([(a - b).ravel()
                                       for a, b in zip(model.get_weights(), weights)]))
    return updates


@pytest.mark.parametrize("engine_name", ENGINES)
def test_zero_noise_one_huge_example_moves_weights_by_its_clipped_share(engine_name, digits,
                                                                        initial_weights):
    x, y, *_ = digits
    clip, size = 0.5, 8
    batch = x[:size].copy()
    batch[-1] *= 1000.0  # a huge gradient
    engine = make_engine(engine_name, clip, 0.0)
    with_outlier, without = sgd_steps(engine, initial_weights,
                                      [(batch, y[:size]), (batch[:-1], y[:size - 1])])
    # Each update is minus the mean of the clipped gradients, so this is the outlier's own
    # clipped gradient: its norm is exactly the clip norm, not the raw (huge) norm.
    outlier_share = size * with_outlier - (size - 1) * without
    assert np.linalg.norm(outlier_share) == pytest.approx(clip, rel=2e-3)
    assert np.linalg.norm(size * with_outlier) <= size * clip * (1 + 1e-4)


def test_microbatch_engine_clips_text_models_per_example():
    rng = np.random.default_rng(0)
    x = rng.integers(2, 50, size=(1, 8)).astype(np.int32)
    x[:, 6:] = 0  # padding
    tf.keras.utils.set_random_seed(0)
    options = {"vocab_size": 50, "embedding_dim": 8, "lstm_units": 8}
    weights = build_model("text_lstm", (8,), 2, **options).get_weights()
    clip = 1e-3  # below every example's gradient norm
    update, = sgd_steps(TFPrivacyEngine("microbatch", clip, 0.0), weights,
                        [(x, np.array([1]))], "text_lstm", 2, **options)
    assert np.linalg.norm(update) == pytest.approx(clip, rel=2e-3)


@pytest.mark.parametrize("engine_name", ENGINES)
@pytest.mark.parametrize("batch, expected_batch_size", [(40, None), (40, 64), (0, 64)])
def test_noise_spread_is_noise_times_clip_over_batch(engine_name, batch, expected_batch_size,
                                                     digits, initial_weights):
    x, y, *_ = digits
    noise, clip = 200.0, 0.5
    engine = make_engine(engine_name, clip, noise, expected_batch_size)
    update, = sgd_steps(engine, initial_weights, [(x[:batch], y[:batch])])
    # Poisson batches divide by the expected size, whatever the actual size (even empty).
    denominator = expected_batch_size or batch
    assert np.all(np.isfinite(update))
    assert np.std(update) == pytest.approx(noise * clip / denominator, rel=0.03)


def test_without_clipping_or_noise_every_engine_takes_the_plain_step(digits, initial_weights):
    x, y, *_ = digits
    batch = [(x[:16], y[:16])]
    plain, = sgd_steps(PlainEngine(), initial_weights, batch)
    for engine in (TFPrivacyEngine("microbatch", 1e6, 0.0),
                   TFPrivacyEngine("microbatch", 1e6, 0.0, num_microbatches=4),
                   TFPrivacyEngine("vectorized", 1e6, 0.0, num_microbatches=4)):
        np.testing.assert_allclose(sgd_steps(engine, initial_weights, batch)[0], plain,
                                   atol=1e-6)


def poisson_batches(randomness, n=1000, batch_size=50, steps=400):
    x = np.arange(n, dtype=np.float32)[:, None]
    dataset, steps_per_epoch = PoissonBatches(randomness).dataset(
        x, np.zeros(n, np.int64), batch_size, seed=3)
    return [b.numpy()[:, 0].astype(int) for b, _ in dataset.take(steps)], steps_per_epoch


def test_poisson_batches_include_each_example_independently():
    batches, steps = poisson_batches(DPRandomness())
    assert steps == 20
    sizes = np.array([len(b) for b in batches])
    assert sizes.std() > 3 and abs(sizes.mean() - 50) < 1.5  # binomial(1000, 0.05)
    counts = np.bincount(np.concatenate(batches), minlength=1000)
    assert abs(counts.mean() / 400 - 0.05) < 0.002
    # The same seed (3) gives other batches: the masks come from os.urandom, not from it.
    again, _ = poisson_batches(DPRandomness(seed=3), steps=3)
    assert not any(np.array_equal(a, b) for a, b in zip(again, batches))
    # Reproducible: the seed decides, and the same seed replays the same batches.
    replayed = [poisson_batches(DPRandomness(reproducible=True, seed=3), steps=3)[0]
                for _ in range(2)]
    assert all(np.array_equal(a, b) for a, b in zip(*replayed))
    assert not all(np.array_equal(a, b) for a, b in zip(
        replayed[0], poisson_batches(DPRandomness(reproducible=True, seed=4), steps=3)[0]))


def test_batch_normalization_is_refused_with_the_reason(digits):
    x, y, *_ = digits
    model = tf.keras.Sequential([tf.keras.Input((8, 8, 1)), tf.keras.layers.Flatten(),
                                 tf.keras.layers.BatchNormalization(name="bn"),
                                 tf.keras.layers.Dense(10)])
    with pytest.raises(UnsupportedError, match=r"'bn' \(BatchNormalization\).*whole batch"):
        train(model, x, y, defences=[dp_sgd.make({"target_epsilon": 3}, "image")],
              progress=False)


def test_make_private_refuses_a_non_dp_optimizer(digits):
    x, *_ = digits
    model = build_model("image_cnn", (8, 8, 1), 10)
    plan = {"data_size": 1200, "batch_size": 64, "epochs": 2, "target_epsilon": 3.0}
    with pytest.raises(UnsupportedError, match="Adam is not differentially private"):
        dp_sgd.make_private(model, optimizer=tf.keras.optimizers.legacy.Adam(), **plan)
    private = dp_sgd.make_private(model, **plan)
    with pytest.raises(UnsupportedError, match="SGD is not differentially private"):
        private.compile(optimizer=tf.keras.optimizers.SGD())


def test_make_private_reports_epsilon_every_epoch_and_stops_at_the_budget(digits):
    x, y, xv, yv = digits
    tf.keras.utils.set_random_seed(0)
    model = build_model("image_cnn", (8, 8, 1), 10)
    plan = dp_sgd.make_plan(data_size=1200, batch_size=64, epochs=1, noise_multiplier=1.5)
    two, three = plan.epsilon(2 * plan.steps_per_epoch), plan.epsilon(3 * plan.steps_per_epoch)
    private = dp_sgd.make_private(model, data_size=1200, batch_size=64, epochs=6,
                                  noise_multiplier=1.5, learning_rate=0.02,
                                  epsilon_budget=(two + three) / 2)
    history = private.fit(x, y, validation_data=(xv, yv), verbose=0)
    assert history.history["epsilon"] == pytest.approx(
        [plan.epsilon(plan.steps_per_epoch), two])
    report = private.privacy
    assert report["stopped_at_budget"] and report["within_budget"] and report["epochs"] == 2
    assert report["epsilon"] == pytest.approx(two) and report["steps"] == 2 * 19
    assert history.history["val_accuracy"][-1] > 0.3  # chance is 0.1
    with pytest.raises(PrivacyBudgetSpent, match="budget is spent"):
        private.fit(x, y, verbose=0)
    before = [w.copy() for w in model.get_weights()]
    compared = private.compare_step_time(x, y, pairs=3)
    assert compared["pairs"] == 3 and compared["batch_size"] == 64 and compared["ratio"] > 0
    with pytest.raises(ConfigError, match="pairs must be at least 1"):
        private.compare_step_time(x, y, pairs=0)
    with pytest.raises(ConfigError, match="1200 inputs but 10 labels"):
        private.compare_step_time(x, y[:10])
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def without_fast_module(monkeypatch, replacement=None):
    """Make `from . import fast` inside dp_sgd fail (None) or return `replacement`."""
    import secureml.defences.dp_sgd as package
    monkeypatch.delattr(package, "fast", raising=False)
    monkeypatch.setitem(sys.modules, "secureml.defences.dp_sgd.fast", replacement)


def choose(clipping, model, objective=None, num_microbatches=None):
    return choose_engine(clipping, model, objective or Objective(), l2_norm_clip=1.0,
                         noise_multiplier=1.0, num_microbatches=num_microbatches,
                         expected_batch_size=64, replicas=1)


def test_auto_clipping_falls_back_to_microbatch_with_the_cost(monkeypatch):
    model = build_model("image_cnn", (8, 8, 1), 10)
    without_fast_module(monkeypatch)
    with pytest.warns(UserWarning, match=r"could not be imported.*cost.vs_plain_step"):
        assert choose("auto", model).name == "microbatch"
    with pytest.raises(UnsupportedError, match="clipping 'fast' is not available"):
        choose("fast", model)
    fake = types.ModuleType("fast")
    fake.fast_clipping_support = lambda model, objective: (False, "layer 'x' has no fast path")
    without_fast_module(monkeypatch, fake)
    with pytest.warns(UserWarning, match=r"layer 'x' has no fast path.*falling back"):
        assert choose("auto", model).name == "microbatch"
    with pytest.raises(UnsupportedError, match="layer 'x' has no fast path"):
        choose("fast", model)
    assert choose("vectorized", model).name == "vectorized"


def test_auto_clipping_takes_the_fast_engine_when_it_supports_the_model(recwarn):
    model = build_model("image_cnn", (8, 8, 1), 10)
    assert choose("auto", model).name == "fast"
    assert choose("auto", model, num_microbatches=4).name == "microbatch"  # fast is per example
    assert not [w for w in recwarn.list if "dp_sgd" in str(w.message)]


def test_dp_composes_with_adversarial_training_listed_after_it(digits):
    x, y, *_ = digits
    tf.keras.utils.set_random_seed(0)
    # TRADES mixes a clean and an adversarial pass, which fast clipping cannot instrument: the
    # engine is chosen after every defence is applied, so auto falls back to microbatch.
    defences = [dp_sgd.make({"target_epsilon": 8}, "image"),
                adversarial.make({"method": "trades", "epsilon": 0.1, "steps": 1}, "image")]
    with pytest.warns(UserWarning, match="falling back to tensorflow-privacy's microbatch"):
        result = train(build_model("image_cnn", (8, 8, 1), 10), x[:128], y[:128],
                       config={"epochs": 1, "batch_size": 32}, defences=defences,
                       progress=False)
    assert result.sections["privacy"]["clipping"] == "microbatch"
    assert "trades" in result.setup.describe()["objective"]["name"]
    assert 0 < result.sections["privacy"]["epsilon"] <= 8


def test_run_folder_gets_privacy_section_and_epsilon_history(tmp_path):
    from secureml.runner import run_experiment
    config = {"name": "dp", "data": {"name": "digits"}, "model": {"name": "image_cnn"},
              "training": {"epochs": 8, "batch_size": 64, "learning_rate": 0.005},
              "audit": {"data": False, "report": False},
              "variants": {"plain": {}, "dp": {"defences": {"dp_sgd": {
                  "target_epsilon": 8, "hyperparameters": "private_unaccounted"}}}}}
    result = run_experiment(config, out_dir=tmp_path, progress=False)
    metrics = result.metrics["dp"]
    privacy = metrics["privacy"]
    history = json.loads((result.directory / "dp" / "history.json").read_text())
    epsilons = [row["epsilon"] for row in history]
    assert len(epsilons) == 8 and all(a < b for a, b in zip(epsilons, epsilons[1:]))
    assert epsilons[-1] == pytest.approx(privacy["epsilon"]) and 7.99 < privacy["epsilon"] <= 8
    assert privacy["delta"] == 1e-5 and privacy["sampling"] == "poisson"
    assert privacy["steps"] == privacy["planned_steps"] and privacy["randomness"] == "os.urandom"
    # The learning rate here was chosen on digits runs, which the config says.
    assert privacy["guarantee_holds"] is False
    assert privacy["hyperparameters"] == "private_unaccounted"
    assert "chosen on this private data" in privacy["notes"][0]
    assert privacy["data_size"] == metrics["data"]["sizes"]["train"]
    assert metrics["training"]["batching"] == {"name": "poisson"}
    assert "privacy" not in result.metrics["plain"]
    # One step-cost figure: the paired ratio (unpaired medians of separately trained models
    # disagreed with it).
    assert "step_time_ratio" not in metrics["cost"]
    # The DP step timed against a plain step on copies of the model, whatever the variants.
    assert metrics["cost"]["vs_plain_step"]["ratio"] > 0
    assert metrics["cost"]["vs_plain_step"]["batch_size"] == 64
    assert "vs_plain_step" not in result.metrics["plain"]["cost"]
    assert metrics["test"]["accuracy"] > 0.5  # chance is 0.1
    # clipping: auto chose the fast engine and records each layer's norm method.
    assert privacy["clipping"] == "fast"
    engine = metrics["training"]["engine"]
    assert engine["name"] == "fast"
    assert {"conv1", "conv2", "dense", "logits"} <= set(engine)
    assert set(engine.values()) - {"fast"} <= {"direct", "ghost"}


def test_shuffled_microbatches_train_and_say_the_guarantee_does_not_hold_as_stated(digits):
    x, y, *_ = digits
    defence = dp_sgd.make({"noise_multiplier": 1.0, "sampling": "shuffle", "num_microbatches": 8,
                           "hyperparameters": "default"}, "image")
    # 250 = 3 * 64 + 58: the incomplete last batch cannot be split into 8 microbatches and is
    # dropped.
    result = train(build_model("image_cnn", (8, 8, 1), 10), x[:250], y[:250],
                   config={"epochs": 1, "batch_size": 64}, defences=[defence], progress=False)
    privacy = result.sections["privacy"]
    assert privacy["sampling"] == "shuffle" and privacy["guarantee_holds"] is False
    assert "computed for Poisson sampling" in privacy["notes"][0]
    assert "microbatches of 8 examples" in privacy["notes"][1]
    assert privacy["clipping"] == "microbatch" and privacy["steps"] == 3
    assert result.setup.describe()["drop_remainder"] is True


@pytest.mark.realdata
def test_text_model_trains_under_dp_on_real_sms_and_beats_the_majority(shared_datasets,
                                                                        monkeypatch):
    from secureml.data import TextVectorizer
    monkeypatch.setenv("SECUREML_DATA_DIR", str(shared_datasets))
    data = load_dataset({"name": "sms_spam", "limit": 4400, "test_limit": 1100,
                         "validation_fraction": 0.0}, progress=False)
    vectorizer = TextVectorizer(vocab_size=2000, sequence_length=30).fit(data.x_train)
    tf.keras.utils.set_random_seed(0)
    model = build_model("text_lstm", (30,), 2, vocab_size=len(vectorizer.vocabulary),
                        lstm_units=32)
    result = train(model, vectorizer(data.x_train), data.y_train,
                   config={"epochs": 8, "batch_size": 64, "learning_rate": 0.02},
                   defences=[dp_sgd.make({"target_epsilon": 8}, "text")], progress=False)
    privacy = result.sections["privacy"]
    assert 7.99 < privacy["epsilon"] <= 8
    assert any("vocabulary" in note for note in privacy["notes"])
    predicted = (model.predict(vectorizer(data.x_test), verbose=0)[:, 0] > 0).astype(int)
    majority = max(np.mean(data.y_test), 1 - np.mean(data.y_test))
    assert np.mean(predicted == data.y_test) > majority + 0.03
