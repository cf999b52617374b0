"""A model as a chain of tapped layers: support check, instrumented forward and backward pass.

`InstrumentedModel(model)` checks once that every layer either has a tap (`layers.TAPS`) or
leaves examples independent without trainable weights, and fixes each tapped layer's method from
its static shapes. Inside a training step it runs one forward and one backward pass and returns
every example's gradient norm over all trainable variables jointly, and the clipped sum.
"""
import tensorflow as tf

from secureml.errors import UnsupportedError
from secureml.models.outputs import per_example_loss
from secureml.models.split import _takes_mask
from .layers import PER_EXAMPLE_LAYERS, TAPS, Probes


def _describe(layer) -> str:
    return f"layer '{layer.name}' ({type(layer).__name__})"


def _chain(model) -> list:
    """The model's layers in order, if each one feeds only the next."""
    if not getattr(model, "_is_graph_network", False) or len(model.inputs or ()) != 1 \
            or len(model.outputs) != 1:
        raise UnsupportedError(
            f"model '{model.name}' is not a functional or Sequential Keras model with one input "
            "and one output; fast clipping walks such a model's layers in order")
    layers = [layer for layer in model.layers
              if not isinstance(layer, tf.keras.layers.InputLayer)]
    previous = model.inputs[0]
    for layer in layers:
        if len(layer._inbound_nodes) != 1 or layer.input is not previous:
            raise UnsupportedError(
                f"{_describe(layer)} does not simply take the previous layer's output (a "
                "branch, a shared layer or a nested model); fast clipping needs a chain of layers")
        previous = layer.output
    if model.outputs[0] is not previous:
        raise UnsupportedError(f"model '{model.name}' does not end at its last layer")
    return layers


def _check_layer(layer) -> None:
    if layer.compute_dtype != "float32":
        raise UnsupportedError(f"{_describe(layer)} computes in {layer.compute_dtype}; fast "
                               "clipping supports float32 only (turn off mixed precision)")
    if isinstance(layer, tf.keras.layers.BatchNormalization):
        if layer.trainable:
            raise UnsupportedError(
                f"{_describe(layer)} mixes the examples of a batch in training, so no "
                "per-example gradient exists; DP-SGD needs it frozen (trainable=False, which "
                "runs it in inference mode) or LayerNormalization instead")
        return
    if not layer.trainable_weights:
        if not isinstance(layer, PER_EXAMPLE_LAYERS):
            raise UnsupportedError(
                f"{_describe(layer)} is not known to treat each example on its own, so fast "
                "clipping cannot vouch for per-example gradients through it")
        return
    tap = TAPS.get(type(layer))
    if tap is None:
        raise UnsupportedError(
            f"{_describe(layer)} has no fast per-example clipping path (supported: "
            f"{', '.join(t.__name__ for t in TAPS)})")
    reason = tap.unsupported(layer)
    if reason:
        raise UnsupportedError(f"{_describe(layer)} has {reason}")


class InstrumentedModel:
    """A chain model prepared for single-pass per-example clipping. Raises `UnsupportedError`
    naming the first layer without a fast path."""

    def __init__(self, model: tf.keras.Model):
        self.model = model
        self.layers = _chain(model)
        owners = {}
        for layer in self.layers:
            _check_layer(layer)
            for variable in layer.trainable_variables:
                if owners.setdefault(variable.ref(), layer) is not layer:
                    raise UnsupportedError(f"variable '{variable.name}' is shared by two layers; "
                                           "fast clipping needs each weight in one layer")
        missing = [v.name for v in model.trainable_variables if v.ref() not in owners]
        if missing:
            raise UnsupportedError(f"trainable variables {missing} belong to no layer of the "
                                   "chain; fast clipping cannot compute their gradients")
        self.methods = {layer.name: TAPS[type(layer)].method(layer)
                        for layer in self.layers if layer.trainable_weights}
        if not self.methods:
            raise UnsupportedError(f"model '{model.name}' has no trainable weights to train")

    def _forward(self, x, probes: Probes):
        records, mask = [], None
        for layer in self.layers:
            if layer.name in self.methods:
                tap = TAPS[type(layer)]
                y, record = tap.forward(layer, x, mask, probes, self.methods[layer.name])
                records.append(record)
            else:
                kwargs = {"mask": mask} if mask is not None and _takes_mask(layer) else {}
                y = layer(x, training=True, **kwargs)
            mask = layer.compute_mask(x, mask)
            x = y
        return x, records

    def per_example(self, x, y):
        """One forward and backward pass: (per-example loss, logits, per-example gradient
        norms, per-layer `gradients` objects that give the clipped sum)."""
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            logits, records = self._forward(x, Probes(tape))
            losses = per_example_loss(logits, y)
            total = tf.reduce_sum(losses)
        probe_gradients = tape.gradient(total, [r.probe for r in records],
                                        unconnected_gradients=tf.UnconnectedGradients.ZERO)
        gradients, squares, previous = [], [], []
        # Layer by layer, in the order backprop finishes them: a layer's inputs (im2col patches)
        # are built once the layer before is done with its own, so only one set is alive.
        for record, gradient in reversed(list(zip(records, probe_gradients))):
            with tf.control_dependencies(previous):
                gradients.insert(0, record.per_example(gradient))
                squares.append(gradients[0].squared_norms())
            previous = [squares[-1]]
        squared = tf.add_n(squares)
        # Rounding can push a Gram-form sum of squares a hair below zero.
        norms = tf.sqrt(tf.maximum(squared, 0.0))
        return losses, logits, norms, list(zip(records, gradients))

    def clipped_sum(self, norms, layer_gradients, l2_norm_clip: float) -> list:
        """sum_i min(1, C / ||g_i||) g_i, in the order of `model.trainable_variables`."""
        scale = l2_norm_clip / tf.maximum(norms, l2_norm_clip)
        by_variable = {}
        for record, gradients in layer_gradients:
            for variable, gradient in record.variables_of(gradients.clipped_sum(scale)):
                by_variable[variable.ref()] = gradient
        return [by_variable[v.ref()] for v in self.model.trainable_variables]
