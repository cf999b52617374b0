"""The reference image classifier: Conv2D-MaxPool-Conv2D-MaxPool-Flatten-Dense-Dense."""
from dataclasses import dataclass, field
from typing import Literal

import tensorflow as tf

from .. import schema
from ..errors import ConfigError
from .outputs import num_logits


@dataclass
class ImageCNNOptions:
    filters: list[schema.PositiveInt] = field(default_factory=lambda: [32, 64])
    kernel_size: schema.PositiveInt = 3
    dense_units: schema.PositiveInt = 64
    activation: Literal["relu", "tanh", "elu", "gelu", "sigmoid"] = "relu"

    def validate(self):
        if not self.filters:
            raise ConfigError("filters must be a non-empty list of positive integers, "
                              f"got {self.filters}")


def build_image_cnn(options: ImageCNNOptions, input_shape: tuple, num_classes: int,
                    **_) -> tf.keras.Model:
    """Conv blocks (Conv2D + 2x2 MaxPool) then Dense; adapts to the input size.

    Small inputs such as 8x8 digits cannot take two 'valid' 3x3 convolutions and two pools,
    so a block whose 'valid' output would be under 2 pixels uses 'same' padding, and pooling is
    skipped once the feature map is 1 pixel wide. For 32x32 input this is exactly the reference
    network (valid 3x3 convolutions, 2x2 pooling).
    """
    if len(input_shape) != 3:
        raise ConfigError(f"image_cnn needs images of shape (height, width, channels); got "
                          f"input shape {tuple(input_shape)}. For text, use model 'text_lstm'.")
    height, width = input_shape[:2]
    inputs = tf.keras.Input(shape=input_shape, name="image")
    x = inputs
    for i, filters in enumerate(options.filters):
        valid = min(height, width) - options.kernel_size + 1 >= 2
        x = tf.keras.layers.Conv2D(filters, options.kernel_size, activation=options.activation,
                                   padding="valid" if valid else "same", name=f"conv{i + 1}")(x)
        if valid:
            height, width = height - options.kernel_size + 1, width - options.kernel_size + 1
        if min(height, width) >= 2:
            x = tf.keras.layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
            height, width = height // 2, width // 2
    x = tf.keras.layers.Flatten(name="flatten")(x)
    x = tf.keras.layers.Dense(options.dense_units, activation=options.activation, name="dense")(x)
    # float32 logits keep losses stable under a mixed-precision policy.
    logits = tf.keras.layers.Dense(num_logits(num_classes), dtype="float32", name="logits")(x)
    return tf.keras.Model(inputs, logits, name="image_cnn")
