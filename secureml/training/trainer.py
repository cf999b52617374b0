"""`train`: fit a logits model with any combination of training-time defences.

A defence adjusts a `TrainingSetup` before training starts (its objective, gradient engine,
optimizer, batching or callbacks) and reports what it measured afterwards. Plain training is a
setup that no defence touched.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Callable, Literal, Protocol, Sequence

import numpy as np
import tensorflow as tf

from .. import schema
from ..errors import ConfigError, DataError
from .callbacks import EpochHistory, Progress, StepTimer, StopOnNonFinite
from .engine import PlainEngine
from .objective import Objective
from .optimizer import make_optimizer
from .resources import PeakMemory, Stopwatch, device_info
from .step_time import compare_with_plain, is_plain
from .wrapper import HardenedModel


@dataclass
class TrainingConfig:
    epochs: schema.PositiveInt = 10
    batch_size: schema.PositiveInt = 64
    optimizer: Literal["adam", "sgd"] = "adam"
    learning_rate: schema.PositiveFloat = 1e-3
    momentum: Annotated[float, schema.Range(0, 1, "[)")] = 0.0
    eval_batch_size: schema.PositiveInt = 512
    # After training, time this many interleaved pairs of the defended step and a plain step
    # (cost.vs_plain_step); 0 skips it. Only runs when a defence changed the step.
    plain_step_pairs: schema.NonNegativeInt = 10


def steps_per_epoch(data_size: int, batch_size: int, drop_remainder: bool = False) -> int:
    """Batches in one pass over `data_size` examples: a last partial batch counts unless
    dropped."""
    return data_size // batch_size if drop_remainder else -(-data_size // batch_size)


class ShuffledBatches:
    """Fixed-size batches of a reshuffled training set, each example once an epoch."""

    name = "shuffle"

    def dataset(self, x, y, batch_size: int, seed: int, drop_remainder: bool):
        n = len(y)
        steps = steps_per_epoch(n, batch_size, drop_remainder)
        if steps == 0:
            raise ConfigError(f"batch_size {batch_size} is larger than the {n} training examples "
                              "and incomplete batches are dropped; lower training.batch_size")
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        batches = ds.batch(batch_size, drop_remainder=drop_remainder)
        return batches.prefetch(tf.data.AUTOTUNE), steps

    def describe(self) -> dict:
        return {"name": self.name}


@dataclass
class TrainingSetup:
    """Everything one training run is made of. Defences edit it in `Defence.apply`."""

    model: tf.keras.Model
    config: TrainingConfig
    num_examples: int
    strategy: tf.distribute.Strategy
    seed: int = 0
    objective: Any = field(default_factory=Objective)
    engine: Any = field(default_factory=PlainEngine)
    batching: Any = field(default_factory=ShuffledBatches)
    # Replicas must see equal, full batches under some engines (DP-SGD on several devices).
    drop_remainder: bool = False
    make_optimizer: Callable[[TrainingConfig], Any] = make_optimizer
    callbacks: list = field(default_factory=list)
    # Text: where the token ids' vocabulary came from (a dp_sgd.vocabulary.Vocabulary), for a
    # defence whose guarantee depends on it. None: unknown.
    vocabulary: Any = None
    # Whether defences may print (a warning about the plan before training starts).
    progress: bool = True

    def describe(self) -> dict:
        return {"objective": self.objective.describe(), "engine": self.engine.describe(),
                "batching": self.batching.describe(), "drop_remainder": self.drop_remainder}


class Defence(Protocol):
    """A training-time defence (DP-SGD, adversarial training)."""

    name: str

    def apply(self, setup: TrainingSetup) -> None:
        """Adjust the setup before training; may raise `UnsupportedError` for the model."""

    def sections(self, result: "TrainResult") -> dict[str, dict]:
        """metrics.json sections this defence owns, measured after training."""


@dataclass
class TrainResult:
    model: tf.keras.Model
    history: list[dict]
    cost: dict
    setup: TrainingSetup
    sections: dict = field(default_factory=dict)


def train(model: tf.keras.Model | Callable[[], tf.keras.Model], x: np.ndarray, y: np.ndarray, *,
          config: TrainingConfig | dict | None = None, defences: Sequence[Defence] = (),
          validation_data: tuple | None = None, strategy: tf.distribute.Strategy | None = None,
          seed: int = 0, progress: bool = True, label: str = "",
          jit_compile: bool = False, vocabulary=None) -> TrainResult:
    """Train `model` (a logits model, or a function that builds one) on (x, y).

    Pass a builder function when using a multi-device strategy: variables must be created in
    the strategy's scope. Returns the trained model with its per-epoch history, its cost (time,
    examples per second, step time, peak memory, device) and the sections each defence measured.
    `jit_compile` compiles the training step with XLA. `vocabulary` (text) tells the defences
    how the token ids' vocabulary was built (`TrainingSetup.vocabulary`).
    """
    config = schema.build(TrainingConfig, config, "training")
    seed = schema.coerce(schema.Seed, seed, "train: seed")
    x, y = _check_arrays(x, y, "training data")
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        base = model() if callable(model) and not isinstance(model, tf.keras.Model) else model
        setup = TrainingSetup(model=base, config=config, num_examples=len(y), strategy=strategy,
                              seed=seed, vocabulary=vocabulary, progress=progress)
        for defence in defences:
            defence.apply(setup)
        trainable = HardenedModel(setup.model, setup.objective, setup.engine)
        trainable.compile(optimizer=setup.make_optimizer(config), jit_compile=jit_compile)
    dataset, steps = setup.batching.dataset(x, y, config.batch_size, seed, setup.drop_remainder)
    validation = None
    if validation_data is not None and len(validation_data[1]):
        xv, yv = _check_arrays(*validation_data, "validation data")
        validation = tf.data.Dataset.from_tensor_slices((xv, yv)).batch(config.eval_batch_size)

    history, timer = EpochHistory(), StepTimer()
    callbacks = [timer, *setup.callbacks, history,
                 Progress(config.epochs, steps, label=label, enabled=progress),
                 StopOnNonFinite(config.learning_rate)]
    with PeakMemory() as memory, Stopwatch() as clock:
        trainable.fit(dataset, epochs=config.epochs, steps_per_epoch=steps,
                      validation_data=validation, callbacks=callbacks, verbose=0)
    steps_run = timer.summary()
    epochs_run = len(history.epochs)
    cost = {
        "train_time_s": round(clock.seconds, 3),
        "epochs": epochs_run,
        "examples_per_s": round(setup.num_examples * epochs_run / clock.seconds, 1),
        **steps_run,
        **memory.summary(),
        "device": device_info(strategy),
    }
    if config.plain_step_pairs and not is_plain(setup):
        cost["vs_plain_step"] = compare_with_plain(setup, x, y, config.plain_step_pairs,
                                                   jit_compile)
    result = TrainResult(model=setup.model, history=history.epochs, cost=cost, setup=setup)
    for defence in defences:
        result.sections.update(defence.sections(result))
    return result


def _check_arrays(x, y, what: str):
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ConfigError(f"{what}: {len(x)} inputs but {len(y)} labels; they must match")
    if len(y) == 0:
        raise ConfigError(f"{what} is empty")
    # A float64 sum streams over x without a copy and is finite unless some value is not.
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(np.sum(x, dtype=np.float64)):
        bad = np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))
        raise DataError(f"{what}: {len(bad)} example(s) hold NaN or infinite values (the "
                        f"first is example {bad[0]}); remove or impute them")
    if y.ndim > 1:
        if y.shape[1:] != (1,) * (y.ndim - 1):
            raise ConfigError(f"{what}: labels must be class ids of shape (N,), got shape "
                              f"{y.shape}; convert one-hot labels with y.argmax(axis=1)")
        y = y.reshape(-1)
    if not (np.issubdtype(y.dtype, np.integer) or y.dtype == bool):
        # astype(int64) would turn NaN into an arbitrary class and 2.5 into 2.
        numeric = np.issubdtype(y.dtype, np.floating)
        bad = ~(np.isfinite(y) & (y == np.round(y))) if numeric else np.ones(len(y), bool)
        if bad.any():
            raise ConfigError(f"{what}: labels must be class ids 0, 1, 2, ...; label "
                              f"{int(bad.argmax())} is {y[bad.argmax()]!r} ({y.dtype})")
    if y.min() < 0:
        raise ConfigError(f"{what}: labels must be class ids 0, 1, 2, ...; label "
                          f"{int(y.argmin())} is {y.min()!r}")
    return x, y.astype(np.int64)


__all__ = ["TrainingConfig", "TrainingSetup", "TrainResult", "Defence", "ShuffledBatches",
           "make_optimizer", "train"]
