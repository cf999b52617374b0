"""DP-SGD gradient engines and the choice between them.

- `fast` (secureml.defences.dp_sgd.fast): per-example norms from one backward pass; chosen by
  `clipping: auto` when the model and objective support it.
- `microbatch`: tensorflow-privacy's `DPKerasSGDOptimizer` / `DPKerasAdamOptimizer` on the
  unreduced per-example loss: one gradient per example (or per microbatch), clipped, summed,
  noised.
- `vectorized`: tensorflow-privacy's `VectorizedDPKeras*Optimizer`: the same computed with
  `vectorized_map`, faster on small models and much hungrier for memory.

Every engine computes (sum of clipped per-example gradients + N(0, (sigma C)^2)) / B, where B is
the expected batch size under Poisson sampling and the actual global batch size otherwise, with
the noise from the secret generator of `randomness`, then adds the gradient of the model's
weight penalty (`regularization`).
"""
from __future__ import annotations

import math
import warnings

import tensorflow as tf

from ...errors import UnsupportedError
from .randomness import DPRandomness, add_noise_and_average
from .regularization import add_weight_penalty, check_example_independent

# The measured ratios are in docs/fast-clipping.md; a figure here would go stale.
MICROBATCH_COST = ("many times the time of a plain training step (measured ratios: "
                   "docs/fast-clipping.md; this run's own is recorded after training in "
                   "metrics.json cost.vs_plain_step)")


def _tf_privacy():
    # Imported on first use: tensorflow-privacy takes seconds to import.
    from tensorflow_privacy.privacy.optimizers import dp_optimizer_keras as keras_dp
    from tensorflow_privacy.privacy.optimizers import dp_optimizer_keras_vectorized as vectorized
    return keras_dp, vectorized


def is_dp_optimizer(optimizer) -> bool:
    """Whether `optimizer` is one of tensorflow-privacy's DP Keras SGD or Adam optimizers."""
    keras_dp, vectorized = _tf_privacy()
    return isinstance(optimizer, (keras_dp.GenericDPAdamOptimizer, keras_dp.GenericDPSGDOptimizer,
                                  vectorized.VectorizedDPKerasAdamOptimizer,
                                  vectorized.VectorizedDPKerasSGDOptimizer))


class TFPrivacyEngine:
    """DP-SGD through tensorflow-privacy's DP Keras optimizers ('microbatch' or 'vectorized').

    The optimizer clips each replica's examples (or microbatches), sums them and divides by
    their number. It is built with noise multiplier 0: tensorflow-privacy draws its noise with
    `tf.random.normal` from TensorFlow's global seed, which the run's seed sets and op
    determinism replays, so this engine adds the noise itself, from `randomness`, exactly as
    the fast engine does (`add_noise_and_average`, which also rescales to the global B).
    """

    def __init__(self, name: str, l2_norm_clip: float, noise_multiplier: float,
                 num_microbatches: int | None = None, expected_batch_size: int | None = None,
                 replicas: int = 1, randomness: DPRandomness | None = None):
        if name not in ("microbatch", "vectorized"):
            raise ValueError(f"unknown tensorflow-privacy engine {name!r}")
        self.name = name
        self.l2_norm_clip = l2_norm_clip
        self.noise_multiplier = noise_multiplier
        self.num_microbatches = num_microbatches
        self.expected_batch_size = expected_batch_size
        self.replicas = replicas
        # Built here, in the strategy's scope, so that each replica gets its own stream.
        self._noise = (randomness or DPRandomness()).noise_generator()

    def make_optimizer(self, config) -> tf.keras.optimizers.Optimizer:
        """The clipping DP version of `training.optimizer` (a `TrainingConfig`), for one
        replica, without noise of its own (see the class docstring)."""
        kwargs = {"learning_rate": config.learning_rate}
        if config.optimizer == "sgd":
            kwargs["momentum"] = config.momentum
        if self.name == "vectorized":
            # An unconnected variable (a frozen branch) gets a zero gradient, not a crash.
            kwargs["unconnected_gradients_to_zero"] = True
        keras_dp, vectorized = _tf_privacy()
        factory = {("microbatch", "adam"): keras_dp.DPKerasAdamOptimizer,
                   ("microbatch", "sgd"): keras_dp.DPKerasSGDOptimizer,
                   ("vectorized", "adam"): vectorized.VectorizedDPKerasAdamOptimizer,
                   ("vectorized", "sgd"): vectorized.VectorizedDPKerasSGDOptimizer,
                   }[self.name, config.optimizer]
        return factory(self.l2_norm_clip, 0.0, self._local_microbatches(), **kwargs)

    def _local_microbatches(self) -> int | None:
        return None if self.num_microbatches is None else self.num_microbatches // self.replicas

    def step(self, model: tf.keras.Model, objective, optimizer, x, y):
        if not is_dp_optimizer(optimizer):
            raise UnsupportedError(
                f"optimizer {type(optimizer).__name__} is not differentially private: the "
                f"'{self.name}' engine needs the tensorflow-privacy optimizer that dp_sgd builds "
                "from training.optimizer (it clips and noises); do not replace it")
        size = tf.shape(y)[0]
        if self.expected_batch_size is not None:
            x, y, weight = _never_empty(x, y)
        prepared = objective.prepare(model, x, y)
        with tf.GradientTape() as tape:
            loss_vector, logits = objective.loss(model, prepared, y, training=True)
            dp_loss = loss_vector if self.expected_batch_size is None else loss_vector * weight
        check_example_independent(model)
        variables = model.trainable_variables
        clipped = optimizer._compute_gradients(dp_loss, variables, tape=tape)
        # tensorflow-privacy divided this replica's clipped sum by its number of units.
        units = self._local_microbatches() or tf.shape(dp_loss)[0]
        sums = [g * tf.cast(units, g.dtype) for g, _ in clipped]
        gradients = add_noise_and_average(sums, units, self._noise, self.noise_multiplier,
                                          self.l2_norm_clip, self.expected_batch_size)
        gradients = add_weight_penalty(model, gradients)
        optimizer.apply_gradients(zip(gradients, variables))
        return loss_vector[:size], logits[:size]

    def describe(self) -> dict:
        return {"name": self.name, "num_microbatches": self.num_microbatches,
                "l2_norm_clip": self.l2_norm_clip, "noise_multiplier": self.noise_multiplier,
                "noise_multiplier_per_replica": self.noise_multiplier / math.sqrt(self.replicas)}


def _never_empty(x, y):
    """A Poisson batch can be empty, which tensorflow-privacy cannot take; the step must still
    add its noise. An empty batch becomes one all-zero example of weight 0 (its clipped
    gradient is exactly zero); any other batch is returned as it is, with weight 1."""
    empty = tf.equal(tf.shape(y)[0], 0)
    x = tf.cond(empty, lambda: tf.zeros(tf.concat([[1], tf.shape(x)[1:]], 0), x.dtype),
                lambda: x)
    y = tf.cond(empty, lambda: tf.zeros([1], y.dtype), lambda: y)
    weight = 1.0 - tf.cast(empty, tf.float32)
    return x, y, weight


def choose_engine(clipping: str, model: tf.keras.Model, objective, *, l2_norm_clip: float,
                  noise_multiplier: float, num_microbatches: int | None,
                  expected_batch_size: int | None, replicas: int,
                  randomness: DPRandomness | None = None):
    """The engine for `clipping` ('auto', 'fast', 'microbatch' or 'vectorized').

    'auto' takes fast clipping when its module is installed and supports the model and
    objective, and otherwise falls back to 'microbatch' with a warning stating the cost.
    """
    if clipping in ("auto", "fast") and num_microbatches is None:
        fast, reason = _fast_clipping(model, objective)
        if fast is not None:
            return fast.FastClippingEngine(l2_norm_clip, noise_multiplier, expected_batch_size,
                                           randomness)
        if clipping == "fast":
            raise UnsupportedError(f"clipping 'fast' is not available: {reason}. Use clipping: "
                                   "auto (falls back to microbatch) or microbatch")
        warnings.warn(f"dp_sgd: fast per-example clipping is not available ({reason}); falling "
                      f"back to tensorflow-privacy's microbatch clipping, {MICROBATCH_COST}",
                      stacklevel=3)
    name = "microbatch" if clipping in ("auto", "fast") else clipping
    return TFPrivacyEngine(name, l2_norm_clip, noise_multiplier, num_microbatches,
                           expected_batch_size, replicas, randomness)


def _fast_clipping(model, objective):
    """(the fast clipping module, why) if it is installed and supports model and objective,
    else (None, why not)."""
    try:
        from . import fast
    except ImportError as err:
        return None, f"the fast clipping module could not be imported: {err}"
    supported, reason = fast.fast_clipping_support(model, objective)
    return (fast if supported else None), reason


class EngineChoice:
    """The DP engine of a training setup, chosen when the optimizer is built.

    `train` builds the optimizer after every defence has been applied, so the objective that
    fast clipping is checked against is the final one, even when a defence listed after dp_sgd
    (adversarial training) replaces it. Until then `step` and `describe` are not used.
    """

    def __init__(self, setup, clipping: str, **engine_options):
        self._setup = setup
        self._make_plain_optimizer = setup.make_optimizer
        self._clipping = clipping
        self._options = engine_options
        self.chosen = None

    def make_optimizer(self, config):
        if self.chosen is None:  # later calls (a step-time comparison) reuse the choice
            self.chosen = choose_engine(self._clipping, self._setup.model,
                                        self._setup.objective, **self._options)
        if isinstance(self.chosen, TFPrivacyEngine):
            return self.chosen.make_optimizer(config)
        return self._make_plain_optimizer(config)  # fast clipping noises the gradients itself

    @property
    def name(self) -> str:
        return self.chosen.name if self.chosen else "not chosen yet"

    def step(self, model, objective, optimizer, x, y):
        return self.chosen.step(model, objective, optimizer, x, y)

    def describe(self) -> dict:
        return {"name": self.name, **(self.chosen.describe() if self.chosen else {})}
