"""Adversarial training objectives: each example's loss on inputs crafted against the model.

`prepare` crafts the adversarial inputs outside the parameter tape (their gradients are
stopped); `loss` evaluates the model on them inside it. The attack runs with the model in
inference mode and differentiates the sum of per-example losses, so example i's adversarial
input, and therefore its loss, depends only on example i and the current weights: DP-SGD can
still clip each example's gradient and bound its influence.
"""
from __future__ import annotations

import tensorflow as tf
from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method
from cleverhans.tf2.utils import clip_eta, random_lp_vector

from ...attacks.budget import NORMS
from ...attacks.text import embedding_perturbation
from ...models.outputs import log_probabilities, per_example_loss
from ...models.split import embedding_split
from ...training import Objective


def perturb(class_logits, x, y, epsilon, step_size, steps: int, norm: str,
            value_range: tuple[float, float], random_radius=None, loss_fn=None) -> tf.Tensor:
    """x_adv within `epsilon` of x and inside `value_range`: a random start in the ball of
    radius `random_radius`, then `steps` cleverhans FGM steps, each projected back.

    This is cleverhans' `projected_gradient_descent` loop, written out because that function
    asserts step <= epsilon in Python: it can take neither an epsilon schedule (a tf.Variable
    read in the compiled training step) nor fast AT's 1.25 * epsilon step.
    """
    order, (low, high) = NORMS[norm], value_range
    eta = tf.zeros_like(x) if random_radius is None else \
        random_lp_vector(tf.shape(x), order, random_radius, dtype=x.dtype)
    x_adv = tf.clip_by_value(x + clip_eta(eta, order, epsilon), low, high)
    for _ in range(steps):
        x_adv = fast_gradient_method(class_logits, x_adv, step_size, order, loss_fn,
                                     clip_min=low, clip_max=high, y=y)
        x_adv = tf.clip_by_value(x + clip_eta(x_adv - x, order, epsilon), low, high)
    return tf.stop_gradient(x_adv)


def _kl_from_probabilities(labels, logits):
    """KL(labels || softmax(logits)) per example: TRADES' inner loss (labels = clean
    probabilities)."""
    return tf.reduce_sum(labels * (tf.math.log(labels + 1e-12) - tf.nn.log_softmax(logits)), -1)


def _mixed(clean_weight: float, clean_loss, adversarial_loss):
    return clean_weight * clean_loss + (1.0 - clean_weight) * adversarial_loss


class _AdversarialObjective(Objective):
    """Records whether the objective is one forward pass (what fast DP clipping needs)."""

    def describe(self) -> dict:
        return {"name": self.name, "single_pass": self.single_pass}


class ImageAdversarialObjective(_AdversarialObjective):
    """PGD-AT (Madry et al. 2018), fast AT (Wong et al. 2020) and TRADES (Zhang et al. 2019).

    pgd, fast: loss = (1 - w) * CE(x_adv) + w * CE(x), with w = `clean_weight`.
    trades: loss = CE(x) + beta * KL(p(x) || p(x_adv)), x_adv maximizing that KL.
    """

    def __init__(self, method: str, epsilon: tf.Variable, norm: str, steps: int,
                 relative_step_size: float, clean_weight: float, trades_beta: float,
                 value_range: tuple[float, float]):
        self.method, self.epsilon, self.norm, self.steps = method, epsilon, norm, steps
        self.relative_step_size, self.clean_weight = relative_step_size, clean_weight
        self.trades_beta, self.value_range = trades_beta, value_range
        self.name = f"{method}_adversarial"
        # Pure PGD/fast AT is exactly per_example_loss(model(x_adv), y).
        self.single_pass = method in ("pgd", "fast") and clean_weight == 0

    def prepare(self, model, x, y):
        def class_logits(v):
            return log_probabilities(model(v, training=False))

        x = tf.convert_to_tensor(x, tf.float32)
        epsilon = tf.cast(tf.convert_to_tensor(self.epsilon), x.dtype)
        step = self.relative_step_size * epsilon
        if self.method == "trades":
            clean = tf.stop_gradient(tf.exp(class_logits(x)))
            x_adv = perturb(class_logits, x, clean, epsilon, step, self.steps, self.norm,
                            self.value_range, random_radius=0.001,
                            loss_fn=_kl_from_probabilities)
        else:
            x_adv = perturb(class_logits, x, y, epsilon, step, self.steps, self.norm,
                            self.value_range, random_radius=epsilon)
        return x_adv if self.single_pass else (x, x_adv)

    def loss(self, model, prepared, y, training=True):
        if self.single_pass:
            logits = model(prepared, training=training)
            return per_example_loss(logits, y), logits
        x, x_adv = prepared
        clean_logits = model(x, training=training)
        logits = model(x_adv, training=training)
        if self.method == "trades":
            clean_log_p = log_probabilities(clean_logits)
            kl = tf.reduce_sum(tf.exp(clean_log_p) * (clean_log_p - log_probabilities(logits)),
                               -1)
            return per_example_loss(clean_logits, y) + self.trades_beta * kl, logits
        return _mixed(self.clean_weight, per_example_loss(clean_logits, y),
                      per_example_loss(logits, y)), logits


class EmbeddingAdversarialObjective(_AdversarialObjective):
    """Adversarial training in embedding space for text (Miyato et al. 2017).

    loss = w * CE(ids) + (1 - w) * CE(embedding(ids) + r_adv); Miyato et al.'s
    CE + CE_adv is w = 0.5 (up to a factor 2).
    """

    name = "embedding_adversarial"
    single_pass = False

    def __init__(self, epsilon: tf.Variable, steps: int, relative_step_size: float,
                 clean_weight: float):
        self.epsilon, self.steps = epsilon, steps
        self.relative_step_size, self.clean_weight = relative_step_size, clean_weight
        self._splits: dict = {}

    def _split(self, model):
        if id(model) not in self._splits:
            self._splits[id(model)] = embedding_split(model)
        return self._splits[id(model)]

    def prepare(self, model, x, y):
        epsilon = tf.convert_to_tensor(self.epsilon)
        return x, embedding_perturbation(self._split(model), x, y, epsilon, self.steps,
                                         self.relative_step_size * epsilon)

    def loss(self, model, prepared, y, training=True):
        ids, perturbation = prepared
        split = self._split(model)
        vectors, mask = split.embed(ids)
        logits = split.head(vectors + perturbation, mask, training=training)
        adversarial_loss = per_example_loss(logits, y)
        if self.clean_weight == 0:
            return adversarial_loss, logits
        clean_loss = per_example_loss(split.head(vectors, mask, training=training), y)
        return _mixed(self.clean_weight, clean_loss, adversarial_loss), logits


__all__ = ["EmbeddingAdversarialObjective", "ImageAdversarialObjective", "perturb"]
