"""How an attack sees a classifier: K class logits, whatever the model outputs.

cleverhans' attacks take `model_fn(x) -> logits` with one logit per class. secureml models
return logits, one for a binary task; models from elsewhere may end in a softmax or sigmoid.
`AttackTarget` hides both differences in one place:

- A final softmax/sigmoid (as a `Dense(activation=...)`, `Activation` or `Softmax` layer) is
  removed by cloning the model with a linear output and the same weights. Taking the log of
  probabilities instead would saturate at p == 1.0 in float32 and give zero gradients: an
  attack would fail and report false robustness.
- Class logits are `secureml.models.log_probabilities(logits)`: log-softmax for K logits and
  [log sigmoid(-z), log sigmoid(z)] for one binary logit. Cross-entropy and logit margins are
  unchanged by the shift, so cleverhans' losses mean what they say.
"""
from __future__ import annotations

import sys
import warnings
import weakref

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from ..errors import DataError, UnsupportedError
from ..models.outputs import log_probabilities

_SQUASHING = ("softmax", "sigmoid")


def _squashing_name(layer) -> str | None:
    """'softmax' or 'sigmoid' when `layer` turns logits into probabilities, else None."""
    if isinstance(layer, tf.keras.layers.Softmax):
        return "softmax"
    if not isinstance(layer, (tf.keras.layers.Dense, tf.keras.layers.Activation)):
        return None
    name = getattr(getattr(layer, "activation", None), "__name__", None)
    return name if name in _SQUASHING else None


def _linear_twin(model: tf.keras.Model, last) -> tf.keras.Model:
    """A copy of `model` whose last layer outputs the pre-activation logits."""

    def clone(layer):
        if layer is not last:
            return layer.__class__.from_config(layer.get_config())
        if isinstance(layer, tf.keras.layers.Dense):
            config = {**layer.get_config(), "activation": "linear"}
            return tf.keras.layers.Dense.from_config(config)
        return tf.keras.layers.Activation("linear", name=layer.name)

    twin = tf.keras.models.clone_model(model, clone_function=clone)
    twin.set_weights(model.get_weights())
    return twin


class AttackTarget:
    """A classifier prepared for attacks: `logits_model` outputs logits, `__call__` class logits.

    `note` says how the model's outputs were read (recorded in the robustness section).
    """

    def __init__(self, model: tf.keras.Model):
        self.logits_model = model
        self.note = "logits"
        # Compiled attack steps built for this model, reused across calls and epsilons.
        self.compiled: dict = {}
        last = model.layers[-1] if getattr(model, "layers", None) else None
        squashing = _squashing_name(last) if last is not None else None
        if squashing:
            try:
                self.logits_model = _linear_twin(model, last)
            except (ValueError, TypeError, NotImplementedError) as err:
                raise UnsupportedError(
                    f"model '{model.name}' outputs probabilities ({squashing} in layer "
                    f"'{last.name}') and cannot be cloned to reach its logits ({err}); attack a "
                    "version of the model without the final activation") from None
            self.note = (f"probabilities ({squashing} in layer '{last.name}'): attacked through "
                         "a copy of the model that outputs the pre-activation logits")
            warnings.warn(f"model '{model.name}' outputs probabilities; {self.note}",
                          UserWarning, stacklevel=3)

    @property
    def num_logits(self) -> int:
        return int(self.logits_model.output_shape[-1])

    @property
    def num_classes(self) -> int:
        return 2 if self.num_logits == 1 else self.num_logits

    def __call__(self, x):
        """Class logits of shape (batch, num_classes), the form cleverhans expects."""
        return log_probabilities(self.logits_model(x, training=False))


_TARGETS: "weakref.WeakKeyDictionary[tf.keras.Model, AttackTarget]" = weakref.WeakKeyDictionary()


def attack_target(model) -> AttackTarget:
    """The `AttackTarget` of `model`, made once per model.

    One target per model keeps cleverhans' `tf.function`s from retracing for every call.
    """
    if isinstance(model, AttackTarget):
        return model
    if not isinstance(model, tf.keras.Model):
        raise UnsupportedError(f"attacks take a Keras classifier, got {type(model).__name__}")
    if model not in _TARGETS:
        _TARGETS[model] = AttackTarget(model)
    return _TARGETS[model]


def check_gradient_path(gradient: tf.Tensor | None, what: str) -> None:
    """Refuse a model whose inputs get no usable gradient: gradient attacks would fail
    silently and report the model as robust."""
    fix = ("gradient attacks cannot evaluate it, and their numbers would overstate robustness. "
           "Remove the non-differentiable step (rounding, argmax, tf.stop_gradient, a lookup "
           "on the inputs) for the evaluation, or evaluate with the gradient-free 'spsa' attack")
    if gradient is None:
        raise UnsupportedError(f"the model has no gradient path from its {what} to its "
                               f"logits; {fix}")
    if not np.any(gradient.numpy()):
        raise UnsupportedError(f"the gradient of the loss with respect to the {what} is zero for "
                               f"every example checked (masked gradients); {fix}")


def check_value_range(x: np.ndarray, value_range: tuple[float, float]) -> None:
    low, high = value_range
    if x.size and (float(x.min()) < low - 1e-6 or float(x.max()) > high + 1e-6):
        raise DataError(
            f"the inputs range over [{float(x.min()):.4g}, {float(x.max()):.4g}] but the attacks "
            f"keep adversarial inputs in value_range [{low:g}, {high:g}]; scale the images to "
            "that range (secureml loads images in [0, 1]) or set value_range to the data's range")


def batch_starts(n: int, batch_size: int, desc: str, progress: bool):
    """Start indices of the batches of n examples, with a progress bar on stderr."""
    return tqdm(range(0, n, batch_size), desc=desc, unit="batch", leave=False, file=sys.stderr,
                disable=not progress)
