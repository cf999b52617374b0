"""Gradient engines: how per-example losses become a parameter update.

`PlainEngine` is ordinary mini-batch training. DP-SGD supplies engines that clip each example's
gradient and add noise. An engine owns the whole update so that it can choose how to get
per-example information (microbatches, or a single instrumented backward pass).
"""
import tensorflow as tf


class PlainEngine:
    """Ordinary training. Every engine has this shape: `step` computes and applies one update
    and returns (per-example loss, logits) for the progress metrics; `describe` says what it did.
    """

    name = "plain"

    def step(self, model: tf.keras.Model, objective, optimizer, x, y):
        prepared = objective.prepare(model, x, y)
        with tf.GradientTape() as tape:
            loss_vector, logits = objective.loss(model, prepared, y, training=True)
            loss = tf.reduce_mean(loss_vector)
            regularization = model.losses  # kernel_regularizer, add_loss: as Keras adds them
            if regularization:
                loss += tf.add_n(regularization)
            # Each replica's loss is scaled so that the optimizer's cross-replica sum is the
            # global one, as Keras' own train_step does.
            loss /= tf.distribute.get_strategy().num_replicas_in_sync
        variables = model.trainable_variables
        gradients = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(gradients, variables))
        return loss_vector, logits

    def describe(self) -> dict:
        return {"name": self.name}

