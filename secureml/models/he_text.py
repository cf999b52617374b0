"""The HE-friendly text classifier: Embedding, masked mean, Dense, polynomial, Dense.

The mean of the token embeddings is linear in the text's bag of words, so the server computes
it from an encrypted (normalized) word-count vector: the client never sends token ids. Layer
names follow the text convention (`embedding`, `logits`).
"""
from dataclasses import dataclass
from typing import Literal

import tensorflow as tf

from .. import schema
from .he_layers import poly_activation
from .outputs import num_logits
from .text_lstm import embedded_tokens


@dataclass
class HETextOptions:
    embedding_dim: schema.PositiveInt = 16
    dense_units: schema.PositiveInt = 16
    activation: Literal["square", "poly"] = "square"


def build_he_text(options: HETextOptions, input_shape: tuple, num_classes: int,
                  vocab_size: int | None = None, **_) -> tf.keras.Model:
    inputs, x = embedded_tokens("he_text", "he_cnn", input_shape, vocab_size,
                                options.embedding_dim)
    x = tf.keras.layers.GlobalAveragePooling1D(name="mean")(x)
    x = tf.keras.layers.Dense(options.dense_units, name="dense")(x)
    x = poly_activation(options.activation, "act")(x)
    logits = tf.keras.layers.Dense(num_logits(num_classes), dtype="float32", name="logits")(x)
    return tf.keras.Model(inputs, logits, name="he_text")
