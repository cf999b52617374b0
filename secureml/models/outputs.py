"""How secureml reads a classifier's logits.

Every secureml model returns logits: one logit for a binary task, K logits for K classes.
Losses use `from_logits=True` (attacks and DP-SGD need the unsquashed values). These helpers
are the one place that knows about the binary one-logit convention.
"""
import numpy as np
import tensorflow as tf


def per_example_loss(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Cross-entropy of each example, shape (batch,); never reduced, so DP-SGD can clip it."""
    if logits.shape[-1] == 1:
        labels = tf.cast(tf.reshape(labels, (-1, 1)), logits.dtype)
        return tf.reshape(tf.nn.sigmoid_cross_entropy_with_logits(labels, logits), (-1,))
    labels = tf.cast(tf.reshape(labels, (-1,)), tf.int32)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)


def log_probabilities(logits: tf.Tensor) -> tf.Tensor:
    """Log-probabilities of all classes, shape (batch, num_classes), also for one-logit models."""
    if logits.shape[-1] == 1:
        return tf.concat([tf.math.log_sigmoid(-logits), tf.math.log_sigmoid(logits)], axis=-1)
    return tf.nn.log_softmax(logits, axis=-1)


def predicted_classes(logits) -> np.ndarray:
    logits = np.asarray(logits)
    if logits.shape[-1] == 1:
        return (logits[:, 0] > 0).astype(np.int64)
    return np.argmax(logits, axis=-1).astype(np.int64)


def num_logits(num_classes: int) -> int:
    return 1 if num_classes == 2 else num_classes
