"""Poisson subsampling: the batching DP-SGD's privacy accounting assumes.

Each step, every training example joins the batch independently with probability
q = batch_size / N, so batch sizes vary around `batch_size` (and can be 0). The accountant's
amplification-by-sampling bound holds for exactly this; fixed-size shuffled batches are only an
approximation of it.
"""
import numpy as np
import tensorflow as tf

from ...errors import ConfigError
from .accounting import steps_per_epoch


class PoissonBatches:
    """Batches of independently sampled examples; an 'epoch' is ceil(N / batch_size) steps."""

    name = "poisson"

    def dataset(self, x, y, batch_size: int, seed: int, drop_remainder: bool = False):
        """(infinite dataset of Poisson batches, steps per epoch). `drop_remainder` does not
        apply: batches have no fixed size."""
        n = len(y)
        if not 1 <= batch_size <= n:
            raise ConfigError(f"batch_size {batch_size} must be between 1 and the {n} training "
                              "examples for Poisson sampling; lower training.batch_size")
        x, y = np.asarray(x), np.asarray(y)
        rate = batch_size / n

        def batches():
            rng = np.random.default_rng(seed)
            while True:
                chosen = np.flatnonzero(rng.random(n) < rate)
                yield x[chosen], y[chosen]

        signature = (tf.TensorSpec((None, *x.shape[1:]), tf.as_dtype(x.dtype)),
                     tf.TensorSpec((None,), tf.as_dtype(y.dtype)))
        dataset = tf.data.Dataset.from_generator(batches, output_signature=signature)
        return dataset.prefetch(tf.data.AUTOTUNE), steps_per_epoch(n, batch_size, self.name)

    def describe(self) -> dict:
        return {"name": self.name}
