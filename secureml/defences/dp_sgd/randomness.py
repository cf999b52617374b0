"""DP-SGD's secret randomness: which examples each batch takes, and the Gaussian noise.

The guarantee assumes that nobody can predict either: whoever can regenerate the noise can
subtract it from the weights, and the effective epsilon is then infinite. So by default (in the
spirit of Opacus' `secure_mode`) both come from the operating system's cryptographically secure
generator (`os.urandom`), fresh for every `fit` and independent of the run's seed, TensorFlow's
global seed and op determinism; the seed can be published with the run:

- Poisson sampling: every step draws 64 fresh bits of `os.urandom` per training example.
- Noise: TensorFlow's Philox generator (`tf.random.Generator`) with its whole state (64-bit key,
  128-bit counter) drawn from `os.urandom` at the start of every fit. Created in a
  `tf.distribute` strategy's scope, every replica derives its own key from it, so the replicas'
  draws are independent.

`reproducible=True` derives both from (seed, fit number) instead, for tests and debugging: a
run then replays exactly, and so can anyone who knows the seed, so the guarantee does not hold.
"""
from __future__ import annotations

import math
import os

import numpy as np
import tensorflow as tf

from ...errors import UnsupportedError

# Bits of each uniform draw that decide whether an example joins a batch: an example is included
# with probability floor(q 2^53) / 2^53, never above q (so the accounting for q stays an upper
# bound), and exactly 1 when q = 1.
_MASK_BITS = 53
_PHILOX_STATE = 3  # int64 words: two of counter, one of key
_SAMPLING, _SHUFFLE, _NOISE = 0, 1, 2  # stream ids under a reproducible seed


class DPRandomness(tf.keras.callbacks.Callback):
    """The source of DP-SGD's sampling and noise for one training setup (see the module
    docstring). As a callback it re-keys every noise generator at the start of each `fit`, so
    no two fits share randomness; `fits` counts them."""

    def __init__(self, reproducible: bool = False, seed: int = 0):
        super().__init__()
        self.reproducible, self.seed = reproducible, seed
        self.fits = 0
        self._generators: list[tf.random.Generator] = []

    def _words(self, stream: int, count: int) -> np.ndarray:
        """`count` fresh 64-bit words: from the OS, or from (seed, fit, stream) if reproducible."""
        if not self.reproducible:
            return np.frombuffer(os.urandom(8 * count), np.uint64)
        sequence = np.random.SeedSequence([self.seed, self.fits, stream])
        return sequence.generate_state(count, np.uint64)

    def _noise_state(self, index: int) -> np.ndarray:
        return self._words(_NOISE + index, _PHILOX_STATE).view(np.int64)

    def noise_generator(self) -> tf.random.Generator:
        """A Philox generator for one engine's noise; create it in the strategy's scope (not
        inside a `tf.function`), so that each replica gets its own stream."""
        generator = tf.random.Generator(state=self._noise_state(len(self._generators)),
                                        alg="philox")
        self._generators.append(generator)
        return generator

    def on_train_begin(self, logs=None):
        self.fits += 1
        for index, generator in enumerate(self._generators):
            generator.reset(self._noise_state(index))

    def poisson_masks(self, size: int, rate: float):
        """Endless boolean masks over `size` examples, each True with probability `rate`
        (rounded down to a multiple of 2^-53), one per training step of the current fit."""
        threshold = np.uint64(math.floor(rate * 2**_MASK_BITS))
        shift = np.uint64(64 - _MASK_BITS)
        random_bytes = np.random.default_rng(self._words(_SAMPLING, 4)).bytes \
            if self.reproducible else os.urandom
        while True:
            yield (np.frombuffer(random_bytes(8 * size), np.uint64) >> shift) < threshold

    def shuffle_seed(self) -> int:
        """A seed for one fit's fixed-size shuffled batches (`sampling: shuffle`)."""
        return int(self._words(_SHUFFLE, 1)[0] >> np.uint64(1))


def add_noise_and_average(sums: list, count, generator: tf.random.Generator,
                          noise_multiplier: float, l2_norm_clip: float,
                          expected_batch_size: int | None) -> list:
    """(clipped sums + N(0, (sigma C)^2)) / B for one replica's share of the update.

    B is the expected batch size under Poisson sampling, else the `count` of clipped examples
    (or microbatches) summed over the replicas. Under R replicas the optimizer adds the
    replicas' updates, so each adds noise sigma C / sqrt(R): their independent draws (see
    `DPRandomness.noise_generator`) sum to exactly the N(0, (sigma C)^2) the accountant assumes.
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas > 1 and not isinstance(generator.state, tf.distribute.DistributedValues):
        # Replicas would share one state variable: correlated (or racing) draws.
        raise UnsupportedError("the DP noise generator was created outside the tf.distribute "
                               "strategy's scope that trains with it; build the engine (or "
                               "call make_private) inside `with strategy.scope():`")
    if expected_batch_size:
        denominator = tf.constant(float(expected_batch_size))
    else:
        denominator = tf.cast(count, tf.float32)
        if replicas > 1:
            denominator = tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.SUM, denominator)
    stddev = noise_multiplier * l2_norm_clip / math.sqrt(replicas)
    if stddev > 0:
        sums = [s + generator.normal(tf.shape(s), stddev=stddev, dtype=s.dtype) for s in sums]
    return [s / denominator for s in sums]
