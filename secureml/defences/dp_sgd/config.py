"""The `dp_sgd` config section. Batch size, epochs, learning rate and optimizer come from
`training`; this section holds what DP-SGD adds."""
from __future__ import annotations

from dataclasses import dataclass, field
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

# Defaults of the DP vocabulary (docs/dp-sgd.md, "The text vocabulary", has the measurements).
# Gaussians compose far below additively, so the vocabulary's share costs training little
# noise, while the vocabulary's threshold falls with its noise. 64 distinct tokens cover most
# of what a reference text model reads of a review (its first 100 tokens); a larger cap adds
# noise to every count.
DEFAULT_EPSILON_SHARE = 0.3
DEFAULT_TOKENS_PER_DOCUMENT = 64


@dataclass
class VocabularyConfig:
    """`dp_sgd.vocabulary`: where a text model's vocabulary comes from (text data only).

    dp: chosen from the training texts by noisy document counts over a threshold, its cost in
    the guarantee. public: a vocabulary file or a corpus the user declares public, free.
    private: fitted on the training texts outside the accounting (the guarantee does not hold).
    """

    source: Literal["dp", "public", "private"] = "dp"
    # dp: the counts' noise as a multiple of their L2 sensitivity sqrt(max_tokens_per_document),
    # or the share of the budget (target_epsilon or epsilon_budget) that the vocabulary spends
    # on its own; at most one (default: epsilon_share 0.3).
    noise_multiplier: NoiseMultiplier | None = None
    epsilon_share: Annotated[float, schema.Range(0, 1, "()", "a share of the budget")] | None = None
    # dp: each document counts each distinct token once and at most this many distinct tokens
    # (its first ones).
    max_tokens_per_document: schema.PositiveInt = DEFAULT_TOKENS_PER_DOCUMENT
    # public, exactly one: tokens one a line, a JSON list (vocabulary.json as TextVectorizer
    # saves it) or a saved vectorizer folder; or a text corpus (.txt file, a document a line,
    # or a folder of .txt files, a document each) to fit the vocabulary on.
    vocabulary_file: str | None = None
    corpus: str | None = None

    def validate(self):
        public = [key for key in ("vocabulary_file", "corpus") if getattr(self, key) is not None]
        dp = [key for key in ("noise_multiplier", "epsilon_share")
              if getattr(self, key) is not None]
        if self.source == "dp":
            if len(dp) > 1:
                raise ConfigError("set at most one of noise_multiplier (the counts' noise) and "
                                  "epsilon_share (the vocabulary's share of the budget)")
            if public:
                raise ConfigError(f"{public[0]} goes with source: public; remove it or set "
                                  f"source: public")
        elif dp:
            raise ConfigError(f"{dp[0]} goes with source: dp; remove it")
        if self.source == "public" and len(public) != 1:
            raise ConfigError("source: public needs exactly one of vocabulary_file (a token a "
                              "line, or vocabulary.json) and corpus (public texts to fit it "
                              "on)")
        if self.source == "private" and public:
            raise ConfigError(f"{public[0]} goes with source: public; remove it")


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
    # Text data: the vocabulary's source and, when it is DP, its noise.
    vocabulary: VocabularyConfig = field(default_factory=VocabularyConfig)
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
