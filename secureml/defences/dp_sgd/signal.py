"""Whether a DP-SGD plan leaves a gradient signal to learn from, judged before training.

Every step adds Gaussian noise of standard deviation sigma * C to each of the d coordinates of
the sum of the clipped per-example gradients, then divides by the (expected) batch size B.
Summed over the S steps of training, the clipped gradients contribute a vector of norm at most
S * C (each step's mean clipped gradient has norm at most C), the noise one of norm about
sigma * C * sqrt(d * S) / B. Their ratio

    signal_to_noise = B * sqrt(S) / (sigma * sqrt(d))

is the most training can extract: even if every example's gradient pointed the same way at
every step, the accumulated noise is 1 / signal_to_noise times the signal. Below 1 the noise
outweighs the largest signal there could be and the model learns next to nothing. The bound is
optimistic (real gradients disagree and change direction), so a value of a few is already poor.
With microbatches, B is the number of microbatches: each clipped microbatch counts once.
When the noise is calibrated to a target epsilon and large, larger batches or more epochs raise
it about as much as they add signal: the ratio then depends mostly on the data size, the budget
and the number of parameters.
"""
from __future__ import annotations

import math

# Below this the accumulated noise outweighs the largest possible signal.
BURIED = 1.0


def trainable_parameters(model) -> int:
    return int(sum(math.prod(w.shape) for w in model.trainable_weights))


def signal_to_noise(noise_multiplier: float, batch_size: int, steps: int,
                    parameters: int) -> float:
    """B sqrt(S) / (sigma sqrt(d))."""
    return batch_size * math.sqrt(steps) / (noise_multiplier * math.sqrt(parameters))


def buried_warning(ratio: float, noise_multiplier: float, data_size: int, batch_size: int,
                   steps: int, parameters: int) -> str:
    return (f"dp_sgd: noise multiplier {noise_multiplier:.4g} on {data_size} examples (batch "
            f"{batch_size}, {steps} steps, {parameters:,} trainable parameters): the noise "
            f"added over training is {1 / ratio:.3g} times the largest gradient signal it could "
            f"carry (signal-to-noise {ratio:.3g} < {BURIED:g}), so the model will learn next to "
            f"nothing. Raise target_epsilon or the data size, or use a smaller model (larger "
            f"batches or more epochs raise the calibrated noise about as much)")
