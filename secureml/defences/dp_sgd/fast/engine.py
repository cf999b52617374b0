"""`FastClippingEngine`: DP-SGD's clipped and noised update from one ordinary backward pass.

The update is tensorflow-privacy's Gaussian sum query: the sum over the batch of each example's
gradient clipped to L2 norm C (over all trainable variables jointly), plus N(0, (sigma C)^2) on
every coordinate from the secret noise generator, divided by the expected batch size (Poisson
sampling) or else the actual one (`randomness.add_noise_and_average`, which also covers several
replicas), plus the gradient of the model's weight penalty (`regularization`).
"""
import numpy as np
import tensorflow as tf

from secureml.errors import ConfigError, UnsupportedError

from ..randomness import DPRandomness, add_noise_and_average
from ..regularization import add_weight_penalty, check_example_independent
from .instrument import InstrumentedModel


def _require_single_pass(objective) -> None:
    if not getattr(objective, "single_pass", False):
        raise UnsupportedError(
            f"objective '{getattr(objective, 'name', type(objective).__name__)}' combines "
            "several forward passes (single_pass=False); fast clipping instruments exactly one")


class FastClippingEngine:
    """Per-example clipping from layer inputs and output gradients (book-keeping, Bu et al.
    2023) for chains of Dense, Conv2D, Embedding and LSTM layers; see `fast_clipping_support`.
    """

    name = "fast"

    def __init__(self, l2_norm_clip: float, noise_multiplier: float,
                 expected_batch_size: int | None = None,
                 randomness: DPRandomness | None = None):
        """`randomness` (default: fresh OS entropy) gives the noise generator; construct the
        engine in the strategy's scope that trains with it, so each replica has its own."""
        if not l2_norm_clip > 0:
            raise ConfigError(f"l2_norm_clip must be positive, got {l2_norm_clip}")
        if not noise_multiplier >= 0:
            raise ConfigError(f"noise_multiplier must be at least 0, got {noise_multiplier}")
        if expected_batch_size is not None and expected_batch_size < 1:
            raise ConfigError(f"expected_batch_size must be a positive number of examples, got "
                              f"{expected_batch_size}")
        self.l2_norm_clip = float(l2_norm_clip)
        self.noise_multiplier = float(noise_multiplier)
        self.expected_batch_size = expected_batch_size
        self._noise = (randomness or DPRandomness()).noise_generator()
        self._instrumented = None

    def _instrument(self, model) -> InstrumentedModel:
        if self._instrumented is None or self._instrumented.model is not model:
            self._instrumented = InstrumentedModel(model)
        return self._instrumented

    def step(self, model: tf.keras.Model, objective, optimizer, x, y):
        _require_single_pass(objective)
        instrumented = self._instrument(model)
        prepared = objective.prepare(model, x, y)

        def clipped_sum():
            losses, logits, norms, layer_gradients = instrumented.per_example(prepared, y)
            return losses, logits, instrumented.clipped_sum(norms, layer_gradients,
                                                            self.l2_norm_clip)

        def nothing():  # a Poisson-sampled batch can be empty; its step still adds noise
            return (tf.zeros([0]), tf.zeros([0, model.output_shape[-1]]),
                    [tf.zeros_like(v) for v in model.trainable_variables])

        batch_size = tf.shape(y)[0]
        losses, logits, sums = tf.cond(batch_size > 0, clipped_sum, nothing)
        check_example_independent(model)
        gradients = add_noise_and_average(sums, batch_size, self._noise, self.noise_multiplier,
                                          self.l2_norm_clip, self.expected_batch_size)
        gradients = add_weight_penalty(model, gradients)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return losses, logits

    def describe(self, model: tf.keras.Model | None = None) -> dict:
        """The per-example norm method of each trainable layer ('direct' or 'ghost') of `model`,
        or of the model last trained; empty before either is known."""
        if model is not None:
            return dict(self._instrument(model).methods)
        return dict(self._instrumented.methods) if self._instrumented else {}


def fast_clipping_support(model: tf.keras.Model, objective) -> tuple[bool, str]:
    """(True, the method of each layer) when `FastClippingEngine` can train `model` under
    `objective`; else (False, the reason, naming the layer or objective)."""
    try:
        _require_single_pass(objective)
        methods = InstrumentedModel(model).methods
    except UnsupportedError as err:
        return False, str(err)
    return True, "fast clipping: " + ", ".join(f"{k} {v}" for k, v in methods.items())


def per_example_gradient_norms(model: tf.keras.Model, x, y) -> np.ndarray:
    """Each example's gradient norm over all trainable variables, shape (batch,), from the fast
    path, under the cross-entropy loss in training mode (so with dropout, if the model has it)."""
    instrumented = InstrumentedModel(model)
    norms = tf.function(lambda x, y: instrumented.per_example(x, y)[2])
    return norms(tf.convert_to_tensor(x), tf.convert_to_tensor(y)).numpy()
