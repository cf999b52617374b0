"""Evasion attacks on image classifiers, batched over cleverhans' TF2 attack functions.

Each attack is a plain function of a Keras classifier and arrays (cleverhans style) that returns
the adversarial images as a NumPy array:

    x_adv = pgd(model, x_test, y_test, epsilon=8/255, steps=20)

Labels are required and always passed to cleverhans: its default attacks the model's own
predictions, which overstates robustness (docs/adversarial.md shows by how much). Images must lie
in `value_range` (default [0, 1]); adversarial images stay in it and within `epsilon` of x.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Callable

import numpy as np
import tensorflow as tf
from cleverhans.tf2.attacks.basic_iterative_method import basic_iterative_method
from cleverhans.tf2.attacks.carlini_wagner_l2 import CarliniWagnerL2
from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method
from cleverhans.tf2.attacks.momentum_iterative_method import momentum_iterative_method
from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent
from cleverhans.tf2.attacks.spsa import SPSAAdam, margin_logit_loss, projected_optimization

from ..errors import UnsupportedError
from ..models.outputs import per_example_loss
from .budget import (NORMS, check_epsilon, default_relative_step, parse_epsilon,
                     parse_norm)
from .target import (AttackTarget, attack_target, batch_starts, check_gradient_path,
                     check_value_range)

ValueRange = tuple[float, float]


def _step_size(epsilon: float, steps: int, step_size: float | None) -> float:
    """`step_size` capped at epsilon (cleverhans refuses larger steps), else the default."""
    return epsilon * default_relative_step(steps) if step_size is None else min(step_size, epsilon)


def _prepare(model, x, y, epsilon, norm, value_range, gradient: bool = True):
    target = attack_target(model)
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y).reshape(-1).astype(np.int64)
    if x.ndim < 2 or len(x) != len(y):
        raise UnsupportedError(f"expected images of shape (N, ...) with N labels, got inputs "
                               f"{x.shape} and {len(y)} labels")
    check_value_range(x, value_range)
    norm = parse_norm(norm, "norm")
    if epsilon is not None:
        epsilon = parse_epsilon(epsilon, "epsilon")
        check_epsilon(epsilon, norm, value_range, int(np.prod(x.shape[1:])), "epsilon")
    if gradient and len(x):
        _check_input_gradient(target, x[:32], y[:32])
    return target, x, y, epsilon, norm


def _check_input_gradient(target: AttackTarget, x, y) -> None:
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = per_example_loss(target(x), tf.constant(y))
    check_gradient_path(tape.gradient(loss, x), "input images")


def _batched(attack: Callable, x, y, batch_size: int, desc: str, progress: bool) -> np.ndarray:
    out = np.empty_like(x)
    for start in batch_starts(len(x), batch_size, desc, progress):
        stop = start + batch_size
        out[start:stop] = np.asarray(attack(tf.constant(x[start:stop]),
                                            tf.constant(y[start:stop])))
    return out


def fgsm(model, x, y, epsilon, *, norm="linf", value_range: ValueRange = (0.0, 1.0),
         batch_size: int = 256, progress: bool = True) -> np.ndarray:
    """Fast gradient (sign) method, Goodfellow et al. 2015: one step of size epsilon."""
    target, x, y, epsilon, norm = _prepare(model, x, y, epsilon, norm, value_range)
    return _batched(lambda xb, yb: fast_gradient_method(
        target, xb, epsilon, NORMS[norm], clip_min=value_range[0], clip_max=value_range[1],
        y=yb), x, y, batch_size, f"FGSM {norm}", progress)


def pgd(model, x, y, epsilon, *, norm="linf", steps: int = 20, step_size: float | None = None,
        restarts: int = 1, random_start: bool = True, value_range: ValueRange = (0.0, 1.0),
        batch_size: int = 256, progress: bool = True) -> np.ndarray:
    """Projected gradient descent, Madry et al. 2018, with random starts and restarts.

    With several restarts each example keeps, of the restarts' results that fool the model (or
    of all, if none does), the one with the highest loss. `step_size` defaults to
    2.5 * epsilon / steps.
    """
    target, x, y, epsilon, norm = _prepare(model, x, y, epsilon, norm, value_range)
    step = _step_size(epsilon, steps, step_size)

    def one(xb, yb):
        return projected_gradient_descent(
            target, xb, epsilon, step, steps, NORMS[norm], clip_min=value_range[0],
            clip_max=value_range[1], y=yb, rand_init=random_start, sanity_checks=False)

    def attack(xb, yb):
        best = one(xb, yb)
        best_logits = target(best) if restarts > 1 else None
        for _ in range(restarts - 1):
            candidate = one(xb, yb)
            best, best_logits = _stronger(best, best_logits, candidate, target(candidate), yb)
        return best

    return _batched(attack, x, y, batch_size, f"PGD-{steps} {norm} x{restarts}", progress)


def _stronger(a, logits_a, b, logits_b, y):
    """Per example, (`b`, its logits) where it fools the model and `a` does not, or where both
    agree on fooling and `b` has the higher loss; `a` and its logits elsewhere."""
    fooled_a = tf.not_equal(tf.argmax(logits_a, -1), y)
    fooled_b = tf.not_equal(tf.argmax(logits_b, -1), y)
    higher = per_example_loss(logits_b, y) > per_example_loss(logits_a, y)
    take_b = (fooled_b & ~fooled_a) | (tf.equal(fooled_a, fooled_b) & higher)
    shape = [-1] + [1] * (len(a.shape) - 1)
    return (tf.where(tf.reshape(take_b, shape), b, a),
            tf.where(take_b[:, None], logits_b, logits_a))


def bim(model, x, y, epsilon, *, norm="linf", steps: int = 20, step_size: float | None = None,
        value_range: ValueRange = (0.0, 1.0), batch_size: int = 256,
        progress: bool = True) -> np.ndarray:
    """Basic iterative method, Kurakin et al. 2016: PGD without the random start."""
    target, x, y, epsilon, norm = _prepare(model, x, y, epsilon, norm, value_range)
    step = _step_size(epsilon, steps, step_size)
    return _batched(lambda xb, yb: basic_iterative_method(
        target, xb, epsilon, step, steps, NORMS[norm], clip_min=value_range[0],
        clip_max=value_range[1], y=yb, sanity_checks=False), x, y, batch_size,
        f"BIM-{steps} {norm}", progress)


def mim(model, x, y, epsilon, *, norm="linf", steps: int = 20, step_size: float | None = None,
        decay: float = 1.0, value_range: ValueRange = (0.0, 1.0), batch_size: int = 256,
        progress: bool = True) -> np.ndarray:
    """Momentum iterative method, Dong et al. 2018."""
    target, x, y, epsilon, norm = _prepare(model, x, y, epsilon, norm, value_range)
    step = _step_size(epsilon, steps, step_size)
    return _batched(lambda xb, yb: momentum_iterative_method(
        target, xb, epsilon, step, steps, NORMS[norm], clip_min=value_range[0],
        clip_max=value_range[1], y=yb, decay_factor=decay, sanity_checks=False), x, y,
        batch_size, f"MIM-{steps} {norm}", progress)


def carlini_wagner_l2(model, x, y, *, steps: int = 100, binary_search_steps: int = 5,
                      learning_rate: float = 0.05, initial_const: float = 0.1,
                      confidence: float = 0.0, value_range: ValueRange = (0.0, 1.0),
                      batch_size: int = 16, progress: bool = True) -> np.ndarray:
    """Carlini-Wagner L2, a minimum-norm attack: the smallest L2 change found that fools the
    model, or the unchanged image where none was found. Robust accuracy at an L2 budget
    counts an attack as successful only if its change is within the budget.

    cleverhans' defaults (1,000 iterations, learning rate 0.005) take minutes per batch on a
    CPU; these defaults find adversarial examples in 100 iterations on small CNNs.
    """
    target, x, y, _, _ = _prepare(model, x, y, None, "l2", value_range)
    if x.ndim != 4:
        raise UnsupportedError(f"cleverhans' Carlini-Wagner attack needs images of shape "
                               f"(N, H, W, C), got {x.shape}")

    cw = CarliniWagnerL2(target, batch_size=1, clip_min=value_range[0],
                         clip_max=value_range[1], binary_search_steps=binary_search_steps,
                         max_iterations=steps, learning_rate=learning_rate,
                         initial_const=initial_const, confidence=confidence)
    # cleverhans treats any given labels as targets; these are the true labels, and the attack
    # must move away from them.
    cw.targeted = False

    def attack(xb, yb):
        # cleverhans 4.0.0 keeps the binary-search constant image-shaped but its bounds one per
        # example, so in a batch the search mixes examples (and fails on RGB images, cleverhans
        # #1205). One example at a time the shapes agree, and the traced gradient is reused; each
        # example gets a fresh optimizer because a built Keras 2.11+ optimizer refuses the new
        # perturbation variable that every attack call creates.
        out = []
        for i in range(len(xb)):
            cw.y = yb[i:i + 1]
            cw.optimizer = tf.keras.optimizers.legacy.Adam(learning_rate)
            out.append(cw.attack(xb[i:i + 1].numpy()))
        return np.concatenate(out)

    return _batched(attack, x, y, batch_size, "Carlini-Wagner L2", progress)


def spsa(model, x, y, epsilon, *, steps: int = 40, samples: int = 128,
         learning_rate: float | None = None, delta: float = 0.01,
         value_range: ValueRange = (0.0, 1.0), progress: bool = True) -> np.ndarray:
    """SPSA, Uesato et al. 2018: L-inf attack from loss values only, no gradients.

    Gradient masking (shattered, vanishing or noisy gradients) fools gradient attacks but not
    SPSA, so SPSA finding far more adversarial examples than PGD is a red flag. One example at
    a time, `samples` model evaluations per Adam step of size `learning_rate` (default
    epsilon / 4); minimizes the margin of the true class and stops at the first success.
    """
    target, x, y, epsilon, _ = _prepare(model, x, y, epsilon, "linf", value_range,
                                        gradient=False)
    if samples % 2:
        raise UnsupportedError(f"SPSA samples must be even (they are mirrored), got {samples}")
    rate = epsilon / 4 if learning_rate is None else learning_rate
    with _quiet("absl"):  # the `lr=` deprecation warning, handled on the next line
        optimizer = SPSAAdam(lr=rate, delta=delta, num_samples=samples)
    # cleverhans passes `lr=`, which Keras 2.11+ optimizers ignore with a warning: the rate
    # would silently stay 0.001 and SPSA would barely move, hiding gradient masking.
    optimizer.learning_rate = rate

    def margin(v, label):
        logits = target(v)
        return -margin_logit_loss(logits, label, nb_classes=logits.shape[-1])

    # Compiled: cleverhans' optimization loop is a tf.while_loop, slow step by step in eager.
    @tf.function(reduce_retracing=True)
    def attack(xb, yb):
        return projected_optimization(margin, xb, yb, epsilon, steps, optimizer,
                                      clip_min=value_range[0], clip_max=value_range[1],
                                      early_stop_loss_threshold=0.0)

    with _quiet("tensorflow"):  # cleverhans' deprecated tf.while_loop(back_prop=False)
        return _batched(attack, x, y, 1, f"SPSA-{steps}", progress)


@contextlib.contextmanager
def _quiet(logger: str):
    """Silence a library logger's warnings about cleverhans' own deprecated calls."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)
