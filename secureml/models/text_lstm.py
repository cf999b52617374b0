"""The reference text classifier: Embedding-LSTM-Dense over token ids."""
from dataclasses import dataclass

import tensorflow as tf

from .. import schema
from ..errors import ConfigError
from .outputs import num_logits


@dataclass
class TextLSTMOptions:
    embedding_dim: schema.PositiveInt = 16
    lstm_units: schema.PositiveInt = 128


def build_text_lstm(options: TextLSTMOptions, input_shape: tuple, num_classes: int,
                    vocab_size: int | None = None, **_) -> tf.keras.Model:
    """Embedding then LSTM then one Dense layer of logits (1 for binary, K for K classes).

    Token id 0 is padding and masked, so padded positions do not reach the LSTM. The layers are
    named `embedding`, `lstm` and `logits`: attacks in embedding space split the model there.
    """
    inputs, x = embedded_tokens("text_lstm", "image_cnn", input_shape, vocab_size,
                                options.embedding_dim)
    x = tf.keras.layers.LSTM(options.lstm_units, name="lstm")(x)
    # float32 logits keep losses stable under a mixed-precision policy.
    logits = tf.keras.layers.Dense(num_logits(num_classes), dtype="float32", name="logits")(x)
    return tf.keras.Model(inputs, logits, name="text_lstm")


def embedded_tokens(model: str, image_model: str, input_shape: tuple, vocab_size: int | None,
                    embedding_dim: int) -> tuple[tf.Tensor, tf.Tensor]:
    """The token-id input of a text model and its masked embedding (id 0 is padding)."""
    if len(input_shape) != 1:
        raise ConfigError(f"{model} needs token-id sequences of shape (length,); got input "
                          f"shape {tuple(input_shape)}. For images, use model '{image_model}'.")
    if not vocab_size:
        raise ConfigError(f"{model} needs the vocabulary size of the fitted text vectorizer")
    inputs = tf.keras.Input(shape=input_shape, dtype="int32", name="tokens")
    embedded = tf.keras.layers.Embedding(vocab_size, embedding_dim, mask_zero=True,
                                         name="embedding")(inputs)
    return inputs, embedded
