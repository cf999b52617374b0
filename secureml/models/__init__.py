"""The classifiers secureml hardens. All return logits (see `outputs`)."""
from dataclasses import dataclass
from typing import Callable

import numpy as np
import tensorflow as tf

from .. import memory, schema
from ..errors import ConfigError
from .he_cnn import HECNNOptions, build_he_cnn
from .he_text import HETextOptions, build_he_text
from .image_cnn import ImageCNNOptions, build_image_cnn
from .outputs import log_probabilities, per_example_loss, predicted_classes
from .text_lstm import TextLSTMOptions, build_text_lstm


@dataclass(frozen=True)
class ModelSpec:
    options: type
    builder: Callable[..., tf.keras.Model]
    kind: str  # the data kind it takes: "image" or "text"


MODELS: dict[str, ModelSpec] = {
    "image_cnn": ModelSpec(ImageCNNOptions, build_image_cnn, "image"),
    "text_lstm": ModelSpec(TextLSTMOptions, build_text_lstm, "text"),
    "he_cnn": ModelSpec(HECNNOptions, build_he_cnn, "image"),
    "he_text": ModelSpec(HETextOptions, build_he_text, "text"),
}


def model_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ConfigError(f"unknown model '{name}'; available models: {', '.join(MODELS)}")
    return MODELS[name]


def build_model(name: str, input_shape: tuple, num_classes: int, *, vocab_size: int | None = None,
                **options) -> tf.keras.Model:
    """Build model `name` for inputs of `input_shape` and `num_classes` classes.

    `options` are the model's own settings (for `image_cnn`: filters, kernel_size, dense_units,
    activation; for `text_lstm`: embedding_dim, lstm_units). Text models take token ids, so they
    need the vectorizer's `vocab_size`.
    """
    spec = model_spec(name)
    if num_classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, got {num_classes}")
    opts = schema.build(spec.options, options, f"model ({name})")
    return spec.builder(opts, tuple(input_shape), num_classes, vocab_size=vocab_size)


def check_memory(name: str, input_shape: tuple, num_classes: int, batch_size: int, *,
                 vocab_size: int | None = None, where: str = "", **options) -> None:
    """Refuse a model whose weights, gradients and one training batch of activations cannot
    fit in memory, before any of it is allocated.

    The model is built in a throwaway graph, where its variables have shapes but no storage,
    so the counts are exact for every architecture and cost a fraction of a second.
    """
    with tf.Graph().as_default():
        model = build_model(name, input_shape, num_classes, vocab_size=vocab_size, **options)
        parameters = model.count_params()
        activations = sum(int(np.prod(t.shape[1:], dtype=np.float64))
                          for layer in model.layers for t in tf.nest.flatten(layer.output))
        classes = {type(module) for module in (model, *model.submodules)}
    _restore_v2_classes(classes)
    what = (f"{where}{name} on inputs of shape {tuple(input_shape)}: {parameters:,} parameters "
            f"(weights and gradients) and {activations:,} activation values per example in "
            f"batches of {batch_size}, as float32,")
    memory.require(4 * (2 * parameters + batch_size * activations), what,
                   "use smaller inputs (data.image_size, data.sequence_length, data.vocab_size), "
                   "a smaller model or a smaller training.batch_size")


def _restore_v2_classes(classes) -> None:
    """Keras 2 builds a layer in a v1 graph by swapping its class's base to the v1 Layer (or
    Model) for the whole process, so every model made before then fails ("invalid state").
    Constructing a layer eagerly swaps the base back; this does the same without constructing
    one. Keras 3 has no v1 classes."""
    try:
        from keras.src.engine import base_layer, base_layer_v1, training, training_v1
        from keras.src.utils.version_utils import swap_class
    except ImportError:
        return
    for cls in classes:
        swap_class(cls, training.Model, training_v1.Model, True)
        swap_class(cls, base_layer.Layer, base_layer_v1.Layer, True)


__all__ = ["MODELS", "ModelSpec", "build_model", "check_memory", "model_spec", "per_example_loss",
           "log_probabilities", "predicted_classes"]
