"""Training objectives: what each example's loss is.

An objective turns a batch into one loss per example. Defences that change *what* is learned
(adversarial training) supply their own objective; defences that change *how* gradients are
aggregated (DP-SGD) supply a gradient engine. Because every objective keeps one loss per example,
and example i's loss depends only on example i and the current model, the two compose: DP-SGD
clips each example's gradient, adversarial or not.
"""
import tensorflow as tf

from ..models.outputs import per_example_loss


class Objective:
    """Cross-entropy on the clean inputs; the base for every other objective.

    `prepare` runs outside the gradient tape (for example, to craft adversarial inputs without
    recording the attack on the parameters' tape); `loss` runs inside it.
    """

    name = "cross_entropy"
    # True when `loss` is exactly per_example_loss(model(prepared), y): one forward pass of the
    # prepared inputs. Fast DP clipping instruments that pass; objectives that combine several
    # passes (clean + adversarial) set False and get the microbatch engine.
    single_pass = True

    def prepare(self, model: tf.keras.Model, x, y):
        return x

    def loss(self, model: tf.keras.Model, prepared, y, training: bool = True):
        """Return (per-example loss of shape (batch,), logits used for training accuracy)."""
        logits = model(prepared, training=training)
        return per_example_loss(logits, y), logits

    def describe(self) -> dict:
        return {"name": self.name}
