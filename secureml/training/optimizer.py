"""The optimizer a training config names."""
import tensorflow as tf


def make_optimizer(config) -> tf.keras.optimizers.Optimizer:
    """A Keras 2 'legacy' optimizer for a `TrainingConfig`: tensorflow-privacy's DP optimizers
    derive from these, so plain and private runs use the same update rule."""
    if config.optimizer == "adam":
        return tf.keras.optimizers.legacy.Adam(config.learning_rate)
    return tf.keras.optimizers.legacy.SGD(config.learning_rate, momentum=config.momentum)
