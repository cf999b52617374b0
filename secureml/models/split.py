"""Split a text model at its embedding: token ids -> vectors -> logits.

Gradients cannot flow through token ids, so text attacks, adversarial training in embedding
space and split encrypted inference all work on the embedding output. `embedding_split` returns
the two halves of a model whose first layer after the input is an `Embedding`, carrying the
padding mask the way Keras' functional model would.
"""
import inspect

import tensorflow as tf

from ..errors import UnsupportedError


def _takes_mask(layer) -> bool:
    return "mask" in inspect.signature(layer.call).parameters


class EmbeddingSplit:
    """`embed(ids) -> (vectors, mask)` and `head(vectors, mask) -> logits` of one model."""

    def __init__(self, model: tf.keras.Model):
        layers = [layer for layer in model.layers
                  if not isinstance(layer, tf.keras.layers.InputLayer)]
        if not layers or not isinstance(layers[0], tf.keras.layers.Embedding):
            raise UnsupportedError(
                f"model '{model.name}' does not start with an Embedding layer; attacks and "
                "training in embedding space need a text model such as text_lstm")
        for layer in layers:
            if len(getattr(layer, "_inbound_nodes", [])) > 1:
                raise UnsupportedError(f"layer '{layer.name}' is used more than once; only "
                                       "chains of layers can be split at the embedding")
        self.model = model
        self.embedding = layers[0]
        self.rest = layers[1:]

    def embed(self, ids):
        vectors = self.embedding(ids)
        return vectors, self.embedding.compute_mask(ids)

    def head(self, vectors, mask=None, training=False):
        x = vectors
        for layer in self.rest:
            kwargs = {"training": training}
            if mask is not None and _takes_mask(layer):
                kwargs["mask"] = mask
            y = layer(x, **kwargs)
            mask = layer.compute_mask(x, mask) if mask is not None else None
            x = y
        return x

    def __call__(self, ids, training=False):
        vectors, mask = self.embed(ids)
        return self.head(vectors, mask, training=training)


def embedding_split(model: tf.keras.Model) -> EmbeddingSplit:
    return EmbeddingSplit(model)
