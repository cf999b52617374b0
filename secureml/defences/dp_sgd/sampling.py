"""How DP-SGD draws its batches, from its secret randomness (`randomness.DPRandomness`).

Poisson subsampling, the batching the privacy accounting assumes: each step, every training
example joins the batch independently with probability q = batch_size / N, so batch sizes vary
around `batch_size` (and can be 0). The accountant's amplification-by-sampling bound holds for
exactly this; fixed-size shuffled batches (`sampling: shuffle`) are only an approximation of it.
"""
import numpy as np
import tensorflow as tf

from ...errors import ConfigError
from ...training import ShuffledBatches
from .accounting import steps_per_epoch
from .randomness import DPRandomness


class PoissonBatches:
    """Batches of independently sampled examples; an 'epoch' is ceil(N / batch_size) steps."""

    name = "poisson"

    def __init__(self, randomness: DPRandomness):
        self.randomness = randomness

    def dataset(self, x, y, batch_size: int, seed: int, drop_remainder: bool = False):
        """(infinite dataset of Poisson batches, steps per epoch). The masks come from the
        randomness source, not from `seed`; `drop_remainder` does not apply: batches have no
        fixed size."""
        n = len(y)
        if not 1 <= batch_size <= n:
            raise ConfigError(f"batch_size {batch_size} must be between 1 and the {n} training "
                              "examples for Poisson sampling; lower training.batch_size")
        x, y = np.asarray(x), np.asarray(y)

        def batches():
            for mask in self.randomness.poisson_masks(n, batch_size / n):
                chosen = np.flatnonzero(mask)
                yield x[chosen], y[chosen]

        signature = (tf.TensorSpec((None, *x.shape[1:]), tf.as_dtype(x.dtype)),
                     tf.TensorSpec((None,), tf.as_dtype(y.dtype)))
        dataset = tf.data.Dataset.from_generator(batches, output_signature=signature)
        return dataset.prefetch(tf.data.AUTOTUNE), steps_per_epoch(n, batch_size, self.name)

    def describe(self) -> dict:
        return {"name": self.name}


class SecretShuffledBatches(ShuffledBatches):
    """`sampling: shuffle` under DP: fixed-size shuffled batches whose order, like the noise,
    comes from the randomness source instead of the run's seed, fresh for every fit."""

    def __init__(self, randomness: DPRandomness):
        self.randomness = randomness

    def dataset(self, x, y, batch_size: int, seed: int, drop_remainder: bool):
        return super().dataset(x, y, batch_size, self.randomness.shuffle_seed(), drop_remainder)
