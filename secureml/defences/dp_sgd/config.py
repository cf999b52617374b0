"""The `dp_sgd` config section. Batch size, epochs, learning rate and optimizer come from
`training`; this section holds what DP-SGD adds."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from ... import schema
from ...errors import ConfigError

# Noise multipliers outside this range are not searched: above it no model learns, below it
# the noise protects little (and PLD accounting becomes very slow). A given noise may be
# smaller, but not larger (the accountant fails on huge ones).
MIN_NOISE, MAX_NOISE = 0.3, 1000.0
Epsilon = schema.PositiveFloat
Delta = schema.OpenProbability
NoiseMultiplier = Annotated[float, schema.Range(
    0, MAX_NOISE, "(]", f"0 means no privacy: epsilon is infinite; above {MAX_NOISE:g} no "
                        f"model learns")]
# Per-example gradient norms are far below this, so nothing would be clipped, and the noise
# (l2_norm_clip x noise_multiplier) would drown every gradient and overflow float32.
ClipNorm = Annotated[float, schema.Range(0, 1e6, "(]")]


@dataclass
class Config:
    # Exactly one: the budget (noise is calibrated to spend it over the planned epochs), or
    # the noise (epsilon follows from it).
    target_epsilon: Epsilon | None = None
    noise_multiplier: NoiseMultiplier | None = None
    # None: min(1e-5, 1 / (10 N)), resolved when N is known. Must be below 1/N.
    delta: Delta | None = None
    l2_norm_clip: ClipNorm = 1.0
    accountant: Literal["rdp", "pld"] = "rdp"
    sampling: Literal["poisson", "shuffle"] = "poisson"
    clipping: Literal["auto", "fast", "microbatch", "vectorized"] = "auto"
    # None: every example is clipped on its own. k: the batch is split into k microbatches
    # whose mean gradients are clipped (faster, noisier per example).
    num_microbatches: schema.PositiveInt | None = None
    # Stop before an epoch would take the spent epsilon over the budget.
    stop_at_budget: bool = True
    # The budget when noise_multiplier is given (with target_epsilon, the target is the budget).
    epsilon_budget: Epsilon | None = None

    def validate(self):
        if (self.target_epsilon is None) == (self.noise_multiplier is None):
            raise ConfigError("set exactly one of target_epsilon (the budget, e.g. 3; the noise "
                              "is calibrated to it) or noise_multiplier (e.g. 1.1; epsilon "
                              "follows)")
        if self.epsilon_budget is not None and self.target_epsilon is not None:
            raise ConfigError("epsilon_budget goes with noise_multiplier; with "
                              "target_epsilon the target is the budget. Remove one")
        if self.num_microbatches is not None:
            if self.clipping == "fast":
                raise ConfigError("clipping 'fast' clips every example on its own; remove "
                                  "num_microbatches or use clipping: microbatch")
            if self.sampling == "poisson":
                raise ConfigError("num_microbatches needs fixed-size batches, but Poisson "
                                  "batches vary in size; remove num_microbatches or set "
                                  "sampling: shuffle (the accounting then assumes Poisson)")

    @property
    def budget(self) -> float | None:
        return self.target_epsilon if self.target_epsilon is not None else self.epsilon_budget
