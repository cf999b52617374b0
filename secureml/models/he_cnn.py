"""The HE-friendly image classifier (CryptoNets-style): Conv2D, x**2, Dense, x**2, Dense.

Every layer is a polynomial, so the whole network runs on CKKS ciphertexts. The one
convolution comes first (the client lays out its input for it), average pooling may follow
the first activation, and the default sizes are CryptoNets' (5 filters of 5x5 at stride 2,
100 hidden units).
"""
from dataclasses import dataclass
from typing import Annotated, Literal

import tensorflow as tf

from .. import schema
from ..errors import ConfigError
from .he_layers import poly_activation
from .outputs import num_logits


@dataclass
class HECNNOptions:
    filters: schema.PositiveInt = 5
    kernel_size: schema.PositiveInt = 5
    strides: schema.PositiveInt = 2
    padding: Literal["valid", "same"] = "valid"
    pool_size: Annotated[int, schema.Range(2)] | None = None
    dense_units: schema.PositiveInt = 100
    activation: Literal["square", "poly"] = "square"


def build_he_cnn(options: HECNNOptions, input_shape: tuple, num_classes: int,
                 **_) -> tf.keras.Model:
    if len(input_shape) != 3:
        raise ConfigError(f"he_cnn needs images of shape (height, width, channels); got input "
                          f"shape {tuple(input_shape)}. For text, use model 'he_text'.")
    height, width = input_shape[:2]
    if options.padding == "valid" and min(height, width) < options.kernel_size:
        raise ConfigError(f"he_cnn: kernel_size {options.kernel_size} is larger than the "
                          f"{height}x{width} input; lower model.kernel_size or use "
                          f"padding: same")
    inputs = tf.keras.Input(shape=input_shape, name="image")
    x = tf.keras.layers.Conv2D(options.filters, options.kernel_size, strides=options.strides,
                               padding=options.padding, name="conv")(inputs)
    x = poly_activation(options.activation, "act1")(x)
    if options.pool_size:
        if min(x.shape[1], x.shape[2]) < options.pool_size:
            raise ConfigError(f"he_cnn: pool_size {options.pool_size} is larger than the "
                              f"{x.shape[1]}x{x.shape[2]} feature map; lower it or set null")
        x = tf.keras.layers.AveragePooling2D(options.pool_size, name="pool")(x)
    x = tf.keras.layers.Flatten(name="flatten")(x)
    x = tf.keras.layers.Dense(options.dense_units, name="dense")(x)
    x = poly_activation(options.activation, "act2")(x)
    logits = tf.keras.layers.Dense(num_logits(num_classes), dtype="float32", name="logits")(x)
    return tf.keras.Model(inputs, logits, name="he_cnn")
