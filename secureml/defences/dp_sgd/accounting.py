"""Privacy accounting for DP-SGD through dp-accounting: epsilon from noise, noise from epsilon.

DP-SGD's privacy loss is `steps` compositions of the Gaussian mechanism (noise multiplier
sigma, sensitivity 1 after clipping) on a Poisson subsample with rate q = batch_size / N:
`SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(sigma)), steps)`. dp-accounting
bounds that event's epsilon from above with Renyi DP ('rdp') or privacy loss distributions
('pld', tighter and slower; see `PLD_DISCRETIZATION`): every epsilon here is such an upper bound,
not the exact value. Neighbouring data sets differ by adding or removing one example.

A vocabulary released with DP before training (secureml.defences.dp_sgd.vocabulary) is one more
Gaussian mechanism, `GaussianDpEvent(vocabulary_noise)`, composed with training's events; its
threshold adds `threshold_delta` to the delta of the guarantee.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace


import dp_accounting

from ... import schema
from ...errors import ConfigError
from ...training.trainer import steps_per_epoch as batches_per_pass
from .config import MAX_NOISE, MIN_NOISE, Delta, Epsilon, NoiseMultiplier

ACCOUNTANTS = ("rdp", "pld")

# Calibrated noise is within this of the smallest noise that meets the target.
NOISE_TOLERANCE = 1e-4
_BRACKET_STEP = 1.25
# Noise multipliers searched for a single Gaussian mechanism (epsilon about 30 down to 1e-5).
_GAUSSIAN_RANGE = (0.2, 1e6)
# PLD's loss grid. Its estimate is pessimistic (a valid upper bound) at any spacing; 1e-3 is
# much faster than dp-accounting's default 1e-4 at a slightly larger bound (docs/dp-sgd.md).
PLD_DISCRETIZATION = 1e-3


def default_delta(data_size: int) -> float:
    """min(1e-5, 1 / (10 N)): well below 1/N, the level at which a mechanism could publish one
    whole example and still claim (epsilon, delta)-DP."""
    return min(1e-5, 1.0 / (10 * data_size))


def dp_sgd_event(noise_multiplier: float, sampling_rate: float, steps: int):
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(
            sampling_rate, dp_accounting.GaussianDpEvent(noise_multiplier)), steps)


def _events(noise_multiplier: float, sampling_rate: float, steps: int,
            vocabulary_noise: float):
    """The DP vocabulary's Gaussian (when there is one) followed by the training steps."""
    events = [dp_accounting.GaussianDpEvent(vocabulary_noise)] if vocabulary_noise else []
    if steps:
        events.append(dp_sgd_event(noise_multiplier, sampling_rate, steps))
    return dp_accounting.ComposedDpEvent(events)


def _accountant(name: str):
    if name == "rdp":
        return dp_accounting.rdp.RdpAccountant()
    if name == "pld":
        return dp_accounting.pld.PLDAccountant(
            value_discretization_interval=PLD_DISCRETIZATION)
    raise ConfigError(f"unknown accountant {name!r}; choose one of {', '.join(ACCOUNTANTS)}")


@functools.lru_cache(maxsize=1024)  # the report and the per-epoch callback ask again
def compute_epsilon(noise_multiplier: float, sampling_rate: float, steps: int, delta: float,
                    accountant: str = "rdp", vocabulary_noise: float = 0.0) -> float:
    """An upper bound on epsilon at `delta` after `steps` DP-SGD steps, from `accountant`,
    composed after a DP vocabulary's Gaussian of noise multiplier `vocabulary_noise` (0: none).
    0 before anything, inf without noise."""
    if steps == 0 and not vocabulary_noise:
        return 0.0
    if steps and noise_multiplier == 0:
        return math.inf
    event = _events(noise_multiplier, sampling_rate, steps, vocabulary_noise)
    return float(_accountant(accountant).compose(event).get_epsilon(delta))


def calibrate_gaussian(target_epsilon: float, delta: float, accountant: str = "rdp") -> float:
    """The smallest noise multiplier (within `NOISE_TOLERANCE`) of one Gaussian
    mechanism whose epsilon at `delta` is at most the target (a DP vocabulary's share)."""
    def epsilon(noise):
        return compute_epsilon(0.0, 0.0, 0, delta, accountant, noise)

    low, high = _GAUSSIAN_RANGE
    if not epsilon(low) > target_epsilon >= epsilon(high):
        raise ConfigError(f"epsilon {target_epsilon:g} for one Gaussian mechanism must lie "
                          f"between {epsilon(high):.3g} and {epsilon(low):.3g}")
    return float(dp_accounting.calibrate_dp_mechanism(
        lambda: _accountant(accountant), dp_accounting.GaussianDpEvent, target_epsilon, delta,
        dp_accounting.ExplicitBracketInterval(low, high), tol=NOISE_TOLERANCE))


def calibrate_noise(target_epsilon: float, sampling_rate: float, steps: int, delta: float,
                    accountant: str = "rdp", vocabulary_noise: float = 0.0) -> float:
    """The smallest noise multiplier (within `NOISE_TOLERANCE`) whose epsilon, composed after a
    DP vocabulary's Gaussian (`vocabulary_noise`, 0: none), is at most the target. Raises
    `ConfigError` naming the nearest reachable setting when none in [MIN_NOISE, MAX_NOISE] is."""
    def epsilon(noise):
        return compute_epsilon(noise, sampling_rate, steps, delta, accountant, vocabulary_noise)

    # Bracket the answer by stepping from a guess: epsilon falls as noise grows. PLD is slow
    # (a fraction of a second per evaluation), so it starts from the RDP answer, which is a
    # little larger (RDP's bound is looser).
    guess = 1.0 if accountant == "rdp" else \
        calibrate_noise(target_epsilon, sampling_rate, steps, delta, "rdp", vocabulary_noise)
    low = high = guess
    while epsilon(high) > target_epsilon:
        if high >= MAX_NOISE:
            reachable = _most_steps(target_epsilon, MAX_NOISE, sampling_rate, steps, delta,
                                    accountant, vocabulary_noise)
            vocabulary = (f" after the DP vocabulary's epsilon "
                          f"{compute_epsilon(0.0, 0.0, 0, delta, accountant, vocabulary_noise):.3g}"
                          if vocabulary_noise else "")
            raise ConfigError(
                f"target_epsilon {target_epsilon:g} is out of reach: even noise multiplier "
                f"{MAX_NOISE:g} gives epsilon {epsilon(MAX_NOISE):.4g} over {steps} steps at "
                f"sampling rate {sampling_rate:.4g} and delta {delta:g}{vocabulary}, and meets "
                f"the target for at most {reachable} steps ({reachable * sampling_rate:.3g} "
                f"epochs). Train fewer epochs, use a larger data set or a smaller batch, or "
                f"accept a target_epsilon of at least {epsilon(MAX_NOISE):.3g}")
        low, high = high, min(high * _BRACKET_STEP, MAX_NOISE)
    while epsilon(low) <= target_epsilon:
        if low <= MIN_NOISE:
            raise ConfigError(
                f"target_epsilon {target_epsilon:g} is so large that noise multiplier "
                f"{MIN_NOISE:g} already meets it (epsilon {epsilon(MIN_NOISE):.4g}); below "
                f"that, noise protects little. Choose a smaller target (1 to 10 is usual)")
        low, high = max(low / _BRACKET_STEP, MIN_NOISE), low
    # epsilon(low) > target >= epsilon(high); dp-accounting's Brent search returns a noise
    # within the tolerance of the smallest one that meets the target, never one that exceeds it.
    return float(dp_accounting.calibrate_dp_mechanism(
        lambda: _accountant(accountant),
        lambda noise: _events(noise, sampling_rate, steps, vocabulary_noise),
        target_epsilon, delta, dp_accounting.ExplicitBracketInterval(low, high),
        tol=NOISE_TOLERANCE))


def _most_steps(target_epsilon: float, noise_multiplier: float, sampling_rate: float,
                upper: int, delta: float, accountant: str, vocabulary_noise: float = 0.0) -> int:
    """The most steps (below `upper`, which exceeds the target) within the target epsilon."""
    low, high = 0, upper  # epsilon(low) <= target < epsilon(high); epsilon grows with steps
    while high - low > 1:
        middle = (low + high) // 2
        if compute_epsilon(noise_multiplier, sampling_rate, middle, delta,
                           accountant, vocabulary_noise) <= target_epsilon:
            low = middle
        else:
            high = middle
    return low


def steps_per_epoch(data_size: int, batch_size: int, sampling: str,
                    drop_remainder: bool = False) -> int:
    """Training steps per epoch: one pass over N examples in batches of `batch_size` (expected
    size under Poisson sampling, where an 'epoch' is ceil(N / batch_size) steps)."""
    return batches_per_pass(data_size, batch_size, drop_remainder and sampling == "shuffle")


@dataclass(frozen=True)
class PrivacyPlan:
    """A DP-SGD training schedule and its noise: everything the accountant needs.

    `delta` is the delta epsilon is computed at; a DP vocabulary's threshold adds
    `threshold_delta`, so the guarantee is (epsilon, `total_delta`)-DP.
    """

    data_size: int
    batch_size: int
    epochs: int
    delta: float
    noise_multiplier: float
    accountant: str = "rdp"
    sampling: str = "poisson"
    drop_remainder: bool = False
    vocabulary_noise: float = 0.0
    threshold_delta: float = 0.0

    @property
    def total_delta(self) -> float:
        return self.delta + self.threshold_delta

    @property
    def sampling_rate(self) -> float:
        return self.batch_size / self.data_size

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(self.data_size, self.batch_size, self.sampling,
                               self.drop_remainder)

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def epsilon(self, steps: int | None = None, accountant: str | None = None) -> float:
        """Epsilon after `steps` steps (default: the whole plan), the DP vocabulary's included."""
        return compute_epsilon(self.noise_multiplier, self.sampling_rate,
                               self.steps if steps is None else steps, self.delta,
                               accountant or self.accountant, self.vocabulary_noise)

    def describe(self) -> dict:
        return {"data_size": self.data_size, "batch_size": self.batch_size,
                "sampling": self.sampling, "sampling_rate": self.sampling_rate,
                "epochs": self.epochs, "steps": self.steps, "delta": self.delta,
                "noise_multiplier": self.noise_multiplier, "accountant": self.accountant}


def resolve_delta(delta: float | None, data_size: int) -> float:
    """The delta of the guarantee: `default_delta(data_size)` when unset; must be below 1/N."""
    data_size = schema.coerce(schema.PositiveInt, data_size, "data_size")
    delta = default_delta(data_size) if delta is None else schema.coerce(Delta, delta, "delta")
    if not 0 < delta < 1.0 / data_size:
        raise ConfigError(
            f"delta {delta:g} must be positive and below 1/N = {1.0 / data_size:.3g} (N = "
            f"{data_size}): a mechanism that publishes one random example outright satisfies "
            f"delta = 1/N. Use a delta well below 1/N, or leave it unset for "
            f"{default_delta(data_size):.2g}")
    return delta


def make_plan(*, data_size: int, batch_size: int, epochs: int,
              target_epsilon: float | None = None, noise_multiplier: float | None = None,
              delta: float | None = None, accountant: str = "rdp", sampling: str = "poisson",
              drop_remainder: bool = False, vocabulary_noise: float = 0.0,
              threshold_delta: float = 0.0) -> PrivacyPlan:
    """Check a schedule and resolve its noise: given, or calibrated to `target_epsilon`.

    `delta` (the guarantee's, `resolve_delta`) defaults to `default_delta(data_size)` and must
    be below 1/N. Give exactly one of `target_epsilon` and `noise_multiplier` (`Config`
    validates that for configs). A DP vocabulary released before training (its Gaussian's
    `vocabulary_noise`, its threshold's `threshold_delta`, which is part of `delta`) is
    composed with the steps, so `target_epsilon` is the total.
    """
    delta = resolve_delta(delta, data_size)
    batch_size = schema.coerce(schema.PositiveInt, batch_size, "batch_size")
    epochs = schema.coerce(schema.PositiveInt, epochs, "epochs")
    if batch_size > data_size:
        raise ConfigError(f"batch_size must be between 1 and the data size {data_size}, got "
                          f"{batch_size}")
    if target_epsilon is not None:
        target_epsilon = schema.coerce(Epsilon, target_epsilon, "target_epsilon")
    if noise_multiplier is not None:
        noise_multiplier = schema.coerce(NoiseMultiplier, noise_multiplier, "noise_multiplier")
    if not 0 <= threshold_delta < delta:
        raise ConfigError(f"the DP vocabulary's threshold delta {threshold_delta:g} must be "
                          f"below the guarantee's delta {delta:g}")
    plan = PrivacyPlan(data_size, batch_size, epochs, delta - threshold_delta,
                       noise_multiplier or 0.0, accountant, sampling, drop_remainder,
                       vocabulary_noise, threshold_delta)
    if plan.steps < 1:
        raise ConfigError(f"no training steps: {data_size} examples make no full batch of "
                          f"{batch_size}; lower batch_size")
    if target_epsilon is not None:
        noise = calibrate_noise(target_epsilon, plan.sampling_rate, plan.steps, plan.delta,
                                accountant, vocabulary_noise)
        plan = replace(plan, noise_multiplier=noise)
    return plan
