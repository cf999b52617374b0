"""The `dp_sgd` config section. Batch size, epochs, learning rate and optimizer come from
`training`; this section holds what DP-SGD adds."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ...errors import ConfigError


@dataclass
class Config:
    # Exactly one: the budget (noise is calibrated to spend it over the planned epochs), or
    # the noise (epsilon follows from it).
    target_epsilon: float | None = None
    noise_multiplier: float | None = None
    # None: min(1e-5, 1 / (10 N)), resolved when N is known. Must be below 1/N.
    delta: float | None = None
    l2_norm_clip: float = 1.0
    accountant: Literal["rdp", "pld"] = "rdp"
    sampling: Literal["poisson", "shuffle"] = "poisson"
    clipping: Literal["auto", "fast", "microbatch", "vectorized"] = "auto"
    # None: every example is clipped on its own. k: the batch is split into k microbatches
    # whose mean gradients are clipped (faster, noisier per example).
    num_microbatches: int | None = None
    # Stop before an epoch would take the spent epsilon over the budget.
    stop_at_budget: bool = True
    # The budget when noise_multiplier is given (with target_epsilon, the target is the budget).
    epsilon_budget: float | None = None
    # True: noise and sampling come from the run's seed instead of the operating system's
    # secure generator, so a run replays exactly (tests, debugging), and so can anyone who
    # knows the seed: the guarantee does not hold.
    reproducible: bool = False
    # How the hyperparameters (learning rate, batch size, epochs, clip norm, model) were chosen:
    # 'default' (secureml's defaults, chosen without this data), 'public' (on public data or
    # from a published recipe), 'private_unaccounted' (on this private data: the choice leaks
    # privacy that the epsilon does not count). Unset: not stated, and no guarantee is claimed.
    hyperparameters: Literal["default", "public", "private_unaccounted"] | None = None

    def validate(self):
        if (self.target_epsilon is None) == (self.noise_multiplier is None):
            raise ConfigError("set exactly one of target_epsilon (the budget, e.g. 3; the noise "
                              "is calibrated to it) or noise_multiplier (e.g. 1.1; epsilon "
                              "follows)")
        if self.target_epsilon is not None and not self.target_epsilon > 0:
            raise ConfigError(f"target_epsilon must be positive, got {self.target_epsilon}")
        if self.noise_multiplier is not None and not self.noise_multiplier > 0:
            raise ConfigError(f"noise_multiplier must be positive (0 means no privacy: epsilon "
                              f"is infinite), got {self.noise_multiplier}")
        if self.delta is not None and not 0 < self.delta < 1:
            raise ConfigError(f"delta must be in (0, 1) and below 1/N, got {self.delta}; leave "
                              "it unset for min(1e-5, 1/(10 N))")
        if not self.l2_norm_clip > 0:
            raise ConfigError(f"l2_norm_clip must be positive, got {self.l2_norm_clip}")
        if self.epsilon_budget is not None:
            if self.target_epsilon is not None:
                raise ConfigError("epsilon_budget goes with noise_multiplier; with "
                                  "target_epsilon the target is the budget. Remove one")
            if not self.epsilon_budget > 0:
                raise ConfigError(f"epsilon_budget must be positive, got {self.epsilon_budget}")
        if self.num_microbatches is not None:
            if self.num_microbatches < 1:
                raise ConfigError(f"num_microbatches must be at least 1 (or null: one per "
                                  f"example), got {self.num_microbatches}")
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
