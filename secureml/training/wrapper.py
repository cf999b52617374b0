"""A Keras model whose training step is an objective plus a gradient engine."""
import tensorflow as tf

from ..models.outputs import per_example_loss


def _correct(logits, y):
    y = tf.cast(tf.reshape(y, (-1,)), tf.int64)
    if logits.shape[-1] == 1:
        predicted = tf.cast(logits[:, 0] > 0, tf.int64)
    else:
        predicted = tf.argmax(logits, axis=-1)
    return tf.cast(tf.equal(predicted, y), tf.float32)


class HardenedModel(tf.keras.Model):
    """Wraps a logits model so that `fit` trains it with `objective` and `engine`.

    The wrapped model is unchanged and is what secureml saves, attacks and encrypts; this wrapper
    only exists during training. Metrics: `loss` (the objective's mean loss, adversarial loss
    under adversarial training) and `accuracy` (on the inputs the objective trained on).
    """

    def __init__(self, model: tf.keras.Model, objective, engine, **kwargs):
        super().__init__(**kwargs)
        self.model = model
        self.objective = objective
        self.engine = engine
        self.loss_tracker = tf.keras.metrics.Mean(name="loss")
        self.accuracy_tracker = tf.keras.metrics.Mean(name="accuracy")

    def call(self, inputs, training=False):
        return self.model(inputs, training=training)

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy_tracker]

    def train_step(self, data):
        x, y = data
        loss_vector, logits = self.engine.step(self.model, self.objective, self.optimizer, x, y)
        self.loss_tracker.update_state(loss_vector)
        self.accuracy_tracker.update_state(_correct(logits, y))
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        x, y = data
        logits = self.model(x, training=False)
        self.loss_tracker.update_state(per_example_loss(logits, y))
        self.accuracy_tracker.update_state(_correct(logits, y))
        return {m.name: m.result() for m in self.metrics}
