"""Regularization losses under DP-SGD: weight penalties added after the noise, example-dependent
losses refused.

A weight penalty (`kernel_regularizer`, `bias_regularizer`, `add_loss(lambda: ...)` on weights)
depends on the weights alone, never on an example. Its gradient is computed once per batch and
added to the noised, clipped mean gradient: post-processing of weights that are already private,
so it costs no privacy and is not clipped. A loss that depends on the examples (an
`activity_regularizer`, `add_loss` of a tensor computed from the inputs) would have to be
clipped with each example's own loss; no engine does that, so such models are refused.
"""
from __future__ import annotations

import tensorflow as tf

from ...errors import UnsupportedError


def _layers(model: tf.keras.Model):
    return model._flatten_layers(include_self=True)


def weight_penalty(model: tf.keras.Model):
    """The sum of the model's weight regularization losses, or None without any."""
    losses = [loss for layer in _layers(model) for penalty in layer._callable_losses
              if (loss := penalty()) is not None]
    return tf.add_n(losses) if losses else None


def add_weight_penalty(model: tf.keras.Model, gradients: list) -> list:
    """`gradients` (in the order of `model.trainable_variables`) plus this replica's share of
    the weight penalty's gradient: the optimizer sums the replicas, so each adds 1/R of it."""
    variables = model.trainable_variables
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(variables)
        penalty = weight_penalty(model)
        if penalty is None:
            return gradients
        share = penalty / replicas
    extra = tape.gradient(share, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return [g + e for g, e in zip(gradients, extra)]


def check_example_independent(model: tf.keras.Model) -> None:
    """Refuse losses that depend on the examples: DP-SGD would have to clip them per example.

    Finds activity regularizers, and losses of tensors that Keras recorded when the model was
    built on its `Input` or, inside a training step, during the forward pass.
    """
    for layer in _layers(model):
        if getattr(layer, "activity_regularizer", None) is not None:
            raise UnsupportedError(
                f"layer '{layer.name}' has an activity_regularizer: it penalizes the layer's "
                "outputs, so it depends on each example and DP-SGD would have to clip it per "
                "example. Remove it, or regularize the weights (kernel_regularizer)")
        example_losses = list(layer._losses) + list(layer._eager_losses)
        if example_losses:
            raise UnsupportedError(
                f"layer '{layer.name}' adds a loss computed from its inputs (add_loss of a "
                "tensor): it depends on the examples, and DP-SGD would have to clip it per "
                "example. Fold it into the model's output, or add a weight-only loss with "
                "add_loss(lambda: ...)")
