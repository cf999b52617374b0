"""The `dp_sgd` defence: DP-SGD training with its privacy accounted and reported.

`apply` checks the model, resolves delta and the noise (calibrated to `target_epsilon` over the
planned steps, or given), installs the secret randomness (`randomness`), the batching (Poisson
by default), the clipping engine and its optimizer, and the accounting callback. A text run's
vocabulary (`setup.vocabulary`, see secureml.defences.dp_sgd.vocabulary) is part of the
guarantee: a DP vocabulary's cost is composed with training's, a private one voids it.
`report` (the `privacy` section of metrics.json) states the epsilon actually spent over every
fit and whether the guarantee holds as stated.
"""
from __future__ import annotations

import math

import tensorflow as tf

from ...console import log
from ...errors import ConfigError, UnsupportedError
from .accounting import make_plan
from .callback import PrivacyAccounting
from .config import Config
from .engines import EngineChoice
from .randomness import DPRandomness
from .regularization import check_example_independent
from .sampling import PoissonBatches, SecretShuffledBatches
from .signal import BURIED, buried_warning, signal_to_noise, trainable_parameters
from .vocabulary import PRIVATE_REASON

# Layers whose output for one example depends on the other examples of the batch.
EXAMPLE_MIXING_LAYERS = (tf.keras.layers.BatchNormalization,)

# `hyperparameters` settings under which the reported epsilon is not the whole privacy cost.
UNACCOUNTED_HYPERPARAMETERS = {
    "private_unaccounted": (
        "the hyperparameters were chosen on this private data, outside the accounting: every "
        "trial spent privacy that the reported epsilon does not count, so the true epsilon is "
        "larger. Choose them on public data, or account for the search"),
    None: (
        "how the hyperparameters (learning rate, batch size, epochs, clip norm, model) were "
        "chosen is not stated, and a choice made on this data is not accounted. Set "
        "dp_sgd.hyperparameters: default, public or private_unaccounted"),
}


def check_model(model: tf.keras.Model) -> None:
    """Refuse layers that mix examples in training (per-example gradients would not exist, so
    clipping would not bound any one example's influence) and losses that depend on the
    examples (they would have to be clipped too)."""
    check_example_independent(model)
    for layer in model.submodules:
        if isinstance(layer, EXAMPLE_MIXING_LAYERS) and layer.trainable:
            raise UnsupportedError(
                f"layer '{layer.name}' ({type(layer).__name__}) normalizes with statistics of "
                "the whole batch, so each example's output depends on the others and no "
                "per-example gradient exists to clip: DP-SGD's guarantee would not hold. Use "
                "LayerNormalization or GroupNormalization, or freeze it (layer.trainable = False)")


class DPSGD:
    """DP-SGD for one training run (see the module docstring)."""

    name = "dp_sgd"

    def __init__(self, config: Config, data_kind: str):
        self.config = config
        self.data_kind = data_kind
        self.plan = None
        self.engine = None
        self.accounting = None
        self.randomness = None
        self.replicas = 1
        self.vocabulary = None
        self.parameters = 0
        self.signal_to_noise = None
        self.signal_warning = None

    def apply(self, setup) -> None:
        config, training = self.config, setup.config
        check_model(setup.model)
        self.replicas = setup.strategy.num_replicas_in_sync
        if self.replicas > 1 or config.num_microbatches is not None:
            # Replicas each take an equal share of a full batch; microbatches split it evenly.
            setup.drop_remainder = True
        self.vocabulary = setup.vocabulary if self.data_kind == "text" else None
        dp_vocabulary = self.vocabulary.plan if self.vocabulary is not None \
            and self.vocabulary.plan.source == "dp" else None
        self.plan = make_plan(
            data_size=setup.num_examples, batch_size=training.batch_size, epochs=training.epochs,
            target_epsilon=config.target_epsilon, noise_multiplier=config.noise_multiplier,
            delta=config.delta, accountant=config.accountant, sampling=config.sampling,
            drop_remainder=setup.drop_remainder,
            vocabulary_noise=dp_vocabulary.noise_multiplier if dp_vocabulary else 0.0,
            threshold_delta=dp_vocabulary.threshold_delta if dp_vocabulary else 0.0)
        self._check_microbatches(training.batch_size)
        self._check_budget()
        self._check_signal(setup)
        poisson = config.sampling == "poisson"
        # Not the seed that initializes the model: see `randomness`.
        self.randomness = DPRandomness(config.reproducible, setup.seed)
        self.engine = EngineChoice(
            setup, config.clipping, l2_norm_clip=config.l2_norm_clip,
            noise_multiplier=self.plan.noise_multiplier, num_microbatches=config.num_microbatches,
            expected_batch_size=training.batch_size if poisson else None, replicas=self.replicas,
            randomness=self.randomness)
        setup.engine = self.engine
        setup.make_optimizer = self.engine.make_optimizer
        setup.batching = (PoissonBatches if poisson else SecretShuffledBatches)(self.randomness)
        self.accounting = PrivacyAccounting(self.plan, config.budget, config.stop_at_budget)
        # Accounting first: a fit it refuses (budget spent) draws no randomness.
        setup.callbacks += [self.accounting, self.randomness]

    def _check_signal(self, setup) -> None:
        """Before training: warn when the planned noise buries any signal (see `signal`)."""
        plan = self.plan
        self.parameters = trainable_parameters(setup.model)
        batch = self.config.num_microbatches or plan.batch_size
        self.signal_to_noise = signal_to_noise(plan.noise_multiplier, batch, plan.steps,
                                               self.parameters)
        if self.signal_to_noise < BURIED:
            self.signal_warning = buried_warning(self.signal_to_noise, plan.noise_multiplier,
                                                 plan.data_size, batch, plan.steps,
                                                 self.parameters)
            log(setup.progress, f"secureml: warning: {self.signal_warning}")

    def _check_microbatches(self, batch_size: int) -> None:
        k = self.config.num_microbatches
        if k is None:
            return
        if batch_size % k:
            raise ConfigError(f"dp_sgd.num_microbatches {k} must divide training.batch_size "
                              f"{batch_size}; choose a divisor of {batch_size} or remove it")
        if k % self.replicas:
            raise ConfigError(f"dp_sgd.num_microbatches {k} must be a multiple of the "
                              f"{self.replicas} replicas, which share each batch equally")

    def _check_budget(self) -> None:
        budget, plan = self.config.budget, self.plan
        if budget is None or not self.config.stop_at_budget:
            return
        first_epoch = plan.epsilon(plan.steps_per_epoch)
        if first_epoch > budget:
            raise ConfigError(
                f"dp_sgd: with noise_multiplier {plan.noise_multiplier:g} a single epoch already "
                f"spends epsilon {first_epoch:.4g} > epsilon_budget {budget:g}. Set "
                f"target_epsilon: {budget:g} instead to calibrate the noise, or raise the noise")

    def report(self) -> dict:
        """The `privacy` section of metrics.json, for the steps of every fit so far."""
        plan, config, accounting = self.plan, self.config, self.accounting
        epsilon = plan.epsilon(accounting.steps)
        holds, notes = self._guarantee_notes(epsilon)
        vocabulary = self.vocabulary.describe() if self.vocabulary is not None else None
        covered = "the vocabulary and the trained weights" \
            if vocabulary and vocabulary["source"] == "dp" else "the trained weights"
        return {
            "epsilon": epsilon,
            "delta": plan.total_delta,
            "accountant": plan.accountant,
            # RDP is cheap to evaluate; next to a PLD epsilon it shows how much PLD gains.
            "epsilon_rdp": plan.epsilon(accounting.steps, "rdp"),
            "noise_multiplier": plan.noise_multiplier,
            "l2_norm_clip": config.l2_norm_clip,
            "target_epsilon": config.target_epsilon,
            "epsilon_budget": config.budget,
            "within_budget": None if config.budget is None else epsilon <= config.budget,
            "planned_epsilon": plan.epsilon(),
            "planned_steps": plan.steps,
            "steps": accounting.steps,
            "epochs": accounting.epochs,
            "fits": self.randomness.fits,
            "stopped_at_budget": accounting.stopped_at_budget,
            "sampling": plan.sampling,
            "sampling_rate": plan.sampling_rate,
            "batch_size": plan.batch_size,
            "data_size": plan.data_size,
            "clipping": self.engine.name,
            "num_microbatches": config.num_microbatches,
            "replicas": self.replicas,
            "noise_multiplier_per_replica": plan.noise_multiplier / math.sqrt(self.replicas),
            "vocabulary": vocabulary,
            "trainable_parameters": self.parameters,
            "signal_to_noise": self.signal_to_noise,
            "randomness": "seed" if config.reproducible else "os.urandom",
            "hyperparameters": config.hyperparameters,
            "guarantee_holds": holds,
            "guarantee": (f"({epsilon:.3g}, {plan.total_delta:.2g})-differential privacy of "
                          f"{covered} with respect to adding or removing any one training "
                          f"example (an upper bound from the {plan.accountant.upper()} "
                          f"accountant)"),
            "notes": notes,
        }

    def _guarantee_notes(self, epsilon: float) -> tuple[bool, list[str]]:
        """(whether the stated epsilon holds for the training that ran, what qualifies it)."""
        plan, config = self.plan, self.config
        broken = []
        if plan.sampling != "poisson":
            broken.append(
                "batches were shuffled fixed-size batches, but epsilon is computed for Poisson "
                "sampling (each example in each batch independently with probability "
                f"{plan.sampling_rate:.4g}); for shuffled batches the true epsilon can be "
                "larger. Use sampling: poisson for a guarantee that holds as stated")
        if config.reproducible:
            broken.append(
                "noise and sampling derived from the recorded seed: replayable. Anyone with the "
                "code, the seed and the data minus one example can regenerate the noise and "
                "subtract it, so the effective epsilon is infinite. Remove reproducible: true "
                "(the default draws them from the operating system's secure generator)")
        if config.hyperparameters in UNACCOUNTED_HYPERPARAMETERS:
            broken.append(UNACCOUNTED_HYPERPARAMETERS[config.hyperparameters])
        notes = [f"NOT AS STATED: {reason}" for reason in broken]
        if config.budget is not None and epsilon > config.budget:
            notes.append(f"OVER BUDGET: epsilon {epsilon:.4g} exceeds the budget "
                         f"{config.budget:g} (stop_at_budget is off)")
        if self.randomness.fits > 1:
            notes.append(f"{self.randomness.fits} fits, each with fresh sampling and noise: "
                         f"epsilon composes all {self.accounting.steps} steps of all of them")
        if self.config.num_microbatches is not None:
            notes.append(f"microbatches of {plan.batch_size // self.config.num_microbatches} "
                         "examples are clipped together; one example still moves the sum by at "
                         "most the clip norm, so the accounting is unchanged")
        if self.replicas > 1:
            notes.append(f"{self.replicas} replicas each add independent noise with multiplier "
                         f"{plan.noise_multiplier / math.sqrt(self.replicas):.4g}; their sum "
                         "has the standard deviation the accountant assumes")
        source = self.vocabulary.plan.source if self.vocabulary is not None else None
        if source == "private":
            reason = (f"{PRIVATE_REASON}; its tokens (rare words of single texts among them) "
                      "are saved next to the model with no guarantee. Use "
                      "dp_sgd.vocabulary.source: dp (the default) or public")
            broken.append(reason)
            notes.append(f"NOT AS STATED: {reason}")
        elif source == "dp":
            vocabulary = self.vocabulary.plan
            notes.append(f"the vocabulary was released with differential privacy: document "
                         f"counts (each text counts a token once, at most "
                         f"{vocabulary.max_tokens_per_document} tokens) with Gaussian noise of "
                         f"std {vocabulary.noise_std:.3g}, tokens over the threshold "
                         f"{vocabulary.threshold:.1f}; its epsilon is composed into epsilon and "
                         f"its threshold's {vocabulary.threshold_delta:.2g} is part of delta")
        elif source == "public":
            notes.append("the vocabulary comes from data declared public (dp_sgd.vocabulary); "
                         "it costs no privacy only if none of the training texts went into it")
        elif self.data_kind == "text":
            notes.append("the text vocabulary was not built by secureml, so its privacy is not "
                         "accounted: the guarantee covers the weights given that vocabulary, "
                         "not the vocabulary itself (fitted on the training texts it holds "
                         "their words)")
        if self.signal_warning:
            notes.append(f"NOTHING TO LEARN: {self.signal_warning}")
        if config.hyperparameters not in UNACCOUNTED_HYPERPARAMETERS:
            notes.append(f"hyperparameters: {config.hyperparameters}, chosen without this data, "
                         "so choosing them spent none of its privacy")
        notes.append("covers the model weights only: training loss and accuracy (history.json, "
                     "the train section) are computed on the training data without noise")
        if not config.reproducible:
            notes.append("sampling and noise were drawn from the operating system's secure "
                         "generator (os.urandom), fresh for every fit; the run's seed does not "
                         "determine them and may be published")
        return not broken, notes

    def sections(self, result) -> dict[str, dict]:
        return {"privacy": self.report()}
