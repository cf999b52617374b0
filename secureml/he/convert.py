"""Turn a trained ReLU model into its polynomial twin, then fine-tune it.

Each non-polynomial activation becomes a trainable `PolyActivation` whose starting
coefficients are the least-squares fit of that activation on the values it actually sees
(measured on calibration inputs, layer by layer through the twin built so far); max pooling
becomes average pooling; weights are copied. The twin then trains a few epochs with
`secureml.training.train` so the network adapts to its new activations.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from ..errors import UnsupportedError
from ..models.he_layers import PolyActivation
from ..training import train
from .plan import _chain, _is_linear

_WEIGHTED = (tf.keras.layers.Dense, tf.keras.layers.Conv2D)
_POOLING = {tf.keras.layers.MaxPooling2D: tf.keras.layers.AveragePooling2D,
            tf.keras.layers.GlobalMaxPooling2D: tf.keras.layers.GlobalAveragePooling2D}


def convert_to_polynomial(model: tf.keras.Model, calibration_inputs, *, fine_tune=None,
                          training=None, progress: bool = False) -> tf.keras.Model:
    """The polynomial twin of `model`, fine-tuned on `fine_tune = (x, y)` when given.

    `training` is a `TrainingConfig` or dict for the fine-tuning (default: 3 epochs, Adam
    1e-3). Text models with recurrent layers have no polynomial twin: use split mode.
    """
    calibration = np.asarray(calibration_inputs)
    inputs = tf.keras.Input(shape=model.inputs[0].shape[1:], dtype=model.inputs[0].dtype,
                            name=model.inputs[0].name.split(":")[0])
    x = inputs
    for layer in _chain(model):  # without its InputLayer
        if type(layer) in _POOLING:
            config = {k: v for k, v in layer.get_config().items() if k != "name"}
            x = _POOLING[type(layer)].from_config({**config, "name": f"{layer.name}_avg"})(x)
        elif isinstance(layer, _WEIGHTED) and not _is_linear(layer.activation):
            x = _copy(layer, x, activation="linear")
            x = _fitted_poly(layer.activation, inputs, x, calibration, layer.name)
        elif isinstance(layer, (tf.keras.layers.Activation, tf.keras.layers.ReLU)):
            activation = getattr(layer, "activation", tf.keras.activations.relu)
            x = _fitted_poly(activation, inputs, x, calibration, layer.name)
        elif isinstance(layer, (tf.keras.layers.LSTM, tf.keras.layers.GRU,
                                tf.keras.layers.SimpleRNN)):
            raise UnsupportedError(f"layer '{layer.name}' ({type(layer).__name__}) has no "
                                   f"polynomial twin; serve text_lstm in split mode "
                                   f"(encrypted_inference: {{mode: split}})")
        else:
            x = _copy(layer, x)
    twin = tf.keras.Model(inputs, x, name=f"{model.name}_poly")
    if fine_tune is not None:
        twin = train(twin, *fine_tune, config=training or {"epochs": 3},
                     progress=progress, label="[polynomial twin] ").model
    return twin


def _copy(layer, x, **overrides):
    config = {**layer.get_config(), **overrides}
    clone = type(layer).from_config(config)
    y = clone(x)
    clone.set_weights(layer.get_weights())
    return y


def _fitted_poly(activation, inputs, x, calibration, name):
    """A trainable quadratic fitted to `activation` where the twin's values actually fall."""
    values = tf.keras.Model(inputs, x).predict(calibration, verbose=0, batch_size=256).ravel()
    low, high = np.percentile(values, [0.5, 99.5])
    if high - low < 1e-6:
        low, high = low - 1.0, high + 1.0
    z = np.linspace(low, high, 512)
    target = activation(tf.constant(z, tf.float32)).numpy()
    c2, c1, c0 = np.polyfit(z, target, 2)
    return PolyActivation((c0, c1, c2), learnable=True, name=f"{name}_poly")(x)
