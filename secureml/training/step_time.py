"""A hardened training step's time against a plain step on the same batch, in the same process.

DP-SGD and adversarial training change what one step costs, and that ratio (unlike seconds)
carries across machines. Both steps run on copies of the trained model, so its weights are
untouched, and are timed in interleaved pairs: the median of the per-pair ratios follows a
shared machine's load far better than two medians taken minutes apart.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import tensorflow as tf

from ..errors import ConfigError
from .engine import PlainEngine
from .objective import Objective
from .optimizer import make_optimizer
from .wrapper import HardenedModel


def is_plain(setup) -> bool:
    """Whether no defence changed how a step is computed (engine or objective)."""
    return isinstance(setup.engine, PlainEngine) and type(setup.objective) is Objective


def compiled_step(model: tf.keras.Model, objective, engine, optimizer, x, y,
                  jit_compile: bool = False) -> Callable[[], dict]:
    """`run()`: one training step on the batch (x, y), exactly as `fit` runs it (objective,
    engine, optimizer and the strategy `model` was built under), returning its logs once the
    step has finished. Traced before it is returned, so a first call times the step alone."""
    trainable = HardenedModel(model, objective, engine)
    trainable.compile(optimizer=optimizer, jit_compile=jit_compile)
    function = trainable.make_train_function()
    strategy = trainable.distribute_strategy
    batches = iter(strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors((x, y)).repeat()))

    def run() -> dict:
        return {name: float(value) for name, value in function(batches).items()}
    run()
    return run


def time_pairs(step: Callable, plain_step: Callable, pairs: int) -> dict:
    """`pairs` back-to-back pairs of a plain step and `step`: the median of the per-pair ratios
    (step / plain) and the median time of each."""
    times = []
    for _ in range(pairs):
        start = time.perf_counter()
        plain_step()
        middle = time.perf_counter()
        step()
        times.append((time.perf_counter() - middle, middle - start))
    step_s, plain_s = np.array(times).T
    return {"ratio": float(np.median(step_s / plain_s)),
            "step_time_median_s": float(np.median(step_s)),
            "plain_step_time_median_s": float(np.median(plain_s))}


def _copy(model: tf.keras.Model) -> tf.keras.Model:
    copy = tf.keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def compare_with_plain(setup, x, y, pairs: int, jit_compile: bool = False) -> dict:
    """Time the setup's step (its objective, engine and optimizer) against a plain step with the
    same kind of optimizer, both on the first `batch_size` examples of (x, y)."""
    if pairs < 1:
        raise ConfigError(f"pairs must be at least 1 to time anything, got {pairs}")
    if len(x) != len(y):
        raise ConfigError(f"{len(x)} inputs but {len(y)} labels; they must match")
    replicas = setup.strategy.num_replicas_in_sync
    size = min(setup.config.batch_size, len(y)) // replicas * replicas
    if size == 0:
        return {"skipped": f"fewer training examples than the {replicas} replicas"}
    x, y = tf.constant(x[:size]), tf.constant(y[:size])
    with setup.strategy.scope():
        step = compiled_step(_copy(setup.model), setup.objective, setup.engine,
                             setup.make_optimizer(setup.config), x, y, jit_compile)
        plain = compiled_step(_copy(setup.model), Objective(), PlainEngine(),
                              make_optimizer(setup.config), x, y, jit_compile)
    timed = time_pairs(step, plain, pairs)
    return {**timed, "ratio": round(timed["ratio"], 3), "pairs": pairs, "batch_size": size}
