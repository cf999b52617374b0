"""The vocabulary of DP-SGD on text: released with differential privacy, or taken from public data.

A text model's vocabulary is itself a release of the training texts: fitted on them, it lists
their words, rare ones included (a name that occurs in one review), and it is saved next to the
model. `dp_sgd.vocabulary.source` says where it comes from:

- `dp` (the default): DP set union, or partition selection (Korolova et al. 2009; Gopi et al.
  2020, "Differentially Private Set Union"; the Gaussian partition selection of Google's
  differential-privacy library). Each document counts each distinct token once, and at most
  k = `max_tokens_per_document` distinct tokens (its first ones), so adding or removing one
  document changes at most k counts, each by 1: L2 sensitivity sqrt(k). Every count gets
  Gaussian noise of standard deviation sigma = z sqrt(k) (z, the noise multiplier), drawn from
  the operating system's CSPRNG, and a token is released when its noisy count exceeds

      tau = 1 + sigma * Phi^-1(1 - p),   p = 1 - (1 - threshold_delta)^(1/k),

  so that the tokens no other document has (count 1) of any one document are released with
  probability at most `threshold_delta` together. Of the released tokens the `vocab_size - 2`
  with the largest noisy counts are kept, in that order. The noisy counts of the tokens that
  the smaller of two neighbouring data sets holds are the Gaussian mechanism
  `GaussianDpEvent(z)`, which the accountant composes with training's steps; the one output the
  Gaussian does not cover, a token of the added document alone, has probability at most
  `threshold_delta`. By joint convexity of the hockey-stick divergence the whole run is then
  (epsilon, delta_accountant + threshold_delta)-DP, epsilon from the composed events.
- `public`: a vocabulary file, or a corpus to fit one on, that the user declares public. Free.
- `private`: fitted on the training texts, as plain training does; the guarantee is stated as
  not holding.
"""
from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np

from ...data.texts import read_corpus
from ...data.vectorize import TextVectorizer, read_vocabulary, tokenize
from ...errors import ConfigError, DataError
from .accounting import calibrate_gaussian, compute_epsilon, resolve_delta
from .config import DEFAULT_EPSILON_SHARE, Config

# The threshold's share of the guarantee's delta; the accountant gets the rest (an even split,
# as Google's Gaussian partition selection makes it).
THRESHOLD_DELTA_SHARE = 0.5
PRIVATE_REASON = "vocabulary fitted on the private training texts outside the accounting"


@dataclass(frozen=True)
class VocabularyPlan:
    """How a vocabulary is built and what it costs, decided before the texts are read.

    Identical plans (on the same data) make the same kind of vocabulary; a run builds each once.
    """

    source: str = "private"
    vocabulary_file: str | None = None
    corpus: str | None = None
    # dp only. epsilon: the vocabulary's own, at accountant_delta.
    noise_multiplier: float = 0.0
    max_tokens_per_document: int = 0
    threshold_delta: float = 0.0
    accountant_delta: float = 0.0
    epsilon: float = 0.0
    epsilon_share: float | None = None
    accountant: str = "rdp"

    @property
    def noise_std(self) -> float:
        return self.noise_multiplier * math.sqrt(self.max_tokens_per_document)

    @property
    def threshold(self) -> float:
        k = self.max_tokens_per_document
        per_token = -math.expm1(math.log1p(-self.threshold_delta) / k)
        return 1.0 + self.noise_std * -NormalDist().inv_cdf(per_token)


@dataclass(frozen=True)
class Vocabulary:
    """A built vocabulary: its plan and how many tokens it has (padding and OOV not counted)."""

    plan: VocabularyPlan
    size: int

    def describe(self) -> dict:
        """The `vocabulary` record of metrics.json (also in the privacy section)."""
        plan, record = self.plan, {"source": self.plan.source, "size": self.size}
        if plan.source == "dp":
            k = plan.max_tokens_per_document
            record.update({
                "epsilon": plan.epsilon, "delta": plan.accountant_delta + plan.threshold_delta,
                "threshold_delta": plan.threshold_delta, "accountant": plan.accountant,
                "epsilon_share": plan.epsilon_share, "noise_multiplier": plan.noise_multiplier,
                "max_tokens_per_document": k, "l2_sensitivity": math.sqrt(k),
                "noise_std": plan.noise_std, "threshold": plan.threshold,
                "noise_source": "os.urandom"})
        elif plan.source == "public":
            record.update({"vocabulary_file": plan.vocabulary_file, "corpus": plan.corpus})
        else:
            record["reason"] = PRIVATE_REASON
        return record


def plan_vocabulary(config: Config | None, data_size: int) -> VocabularyPlan:
    """The vocabulary of a variant trained on `data_size` texts, with `dp_sgd` settings
    `config` (None: no DP-SGD, the vocabulary is fitted on the training texts)."""
    if config is None or config.vocabulary.source == "private":
        return VocabularyPlan()
    settings = config.vocabulary
    if settings.source == "public":
        return VocabularyPlan("public", _expand(settings.vocabulary_file),
                              _expand(settings.corpus))
    delta = resolve_delta(config.delta, data_size)
    threshold_delta = delta * THRESHOLD_DELTA_SHARE
    accountant_delta = delta - threshold_delta
    budget, share = config.budget, None
    if settings.noise_multiplier is not None:
        noise = settings.noise_multiplier
    elif budget is None:
        raise ConfigError("dp_sgd.vocabulary: with noise_multiplier and no epsilon_budget there "
                          "is no budget to take the DP vocabulary's share of; set "
                          "vocabulary.noise_multiplier (the counts' noise, e.g. 5), an "
                          "epsilon_budget, or vocabulary.source: public")
    else:
        share = settings.epsilon_share or DEFAULT_EPSILON_SHARE
        try:
            noise = calibrate_gaussian(share * budget, accountant_delta, config.accountant)
        except ConfigError as err:
            raise ConfigError(f"dp_sgd.vocabulary: epsilon_share {share:g} of the budget "
                              f"{budget:g}: {err}; choose another share or set "
                              f"vocabulary.noise_multiplier") from None
    epsilon = compute_epsilon(0.0, 0.0, 0, accountant_delta, config.accountant, noise)
    if budget is not None and epsilon >= budget:
        raise ConfigError(f"dp_sgd.vocabulary: noise_multiplier {noise:g} alone spends epsilon "
                          f"{epsilon:.3g}, the whole budget of {budget:g}; raise it, or use "
                          f"epsilon_share instead")
    return VocabularyPlan("dp", noise_multiplier=noise,
                          max_tokens_per_document=settings.max_tokens_per_document,
                          threshold_delta=threshold_delta, accountant_delta=accountant_delta,
                          epsilon=epsilon, epsilon_share=share, accountant=config.accountant)


def build_vocabulary(plan: VocabularyPlan, texts, vocab_size: int,
                     sequence_length: int) -> tuple[TextVectorizer, Vocabulary]:
    """The vectorizer `plan` calls for, from the training `texts` or public data."""
    if plan.source == "private":
        vectorizer = TextVectorizer(vocab_size, sequence_length).fit(texts)
    elif plan.vocabulary_file is not None:
        vectorizer = TextVectorizer.from_vocabulary(
            read_vocabulary(_existing(plan.vocabulary_file, "vocabulary_file"), vocab_size - 2),
            sequence_length)
    elif plan.corpus is not None:
        vectorizer = TextVectorizer(vocab_size, sequence_length).fit(
            read_corpus(_existing(plan.corpus, "corpus")))
    else:
        tokens = select_tokens(document_counts(texts, plan.max_tokens_per_document),
                               plan.noise_std, plan.threshold, vocab_size - 2)
        if not tokens:
            raise DataError(
                f"the DP vocabulary is empty: no token's noisy document count passed the "
                f"threshold {plan.threshold:.0f} (noise std {plan.noise_std:.3g}) in "
                f"{len(texts)} training texts. Use more texts, a larger "
                f"dp_sgd.vocabulary.epsilon_share or a smaller max_tokens_per_document, or "
                f"source: public")
        vectorizer = TextVectorizer.from_vocabulary(tokens, sequence_length)
    return vectorizer, Vocabulary(plan, len(vectorizer.vocabulary) - 2)


def document_counts(texts, max_tokens_per_document: int) -> Counter:
    """For each token, how many texts have it among their first `max_tokens_per_document`
    distinct tokens: one text adds at most 1 to at most that many counts."""
    counts = Counter()
    for tokens in tokenize(texts):
        counts.update(list(dict.fromkeys(tokens))[:max_tokens_per_document])
    return counts


def select_tokens(counts: Counter, noise_std: float, threshold: float,
                  max_tokens: int) -> list[str]:
    """The tokens whose `counts` plus N(0, noise_std^2) exceed `threshold`, at most
    `max_tokens` of them, largest noisy count first."""
    candidates = list(counts)
    noisy = np.fromiter(counts.values(), float, len(candidates)) \
        + noise_std * secure_normal(len(candidates))
    kept = np.flatnonzero(noisy > threshold)
    kept = kept[np.argsort(-noisy[kept], kind="stable")][:max_tokens]
    return [candidates[i] for i in kept]


def secure_normal(n: int) -> np.ndarray:
    """`n` standard normal draws from os.urandom (Box-Muller on 53-bit uniforms): no seed
    regenerates them. Tails past 8.5 standard deviations (probability below 1e-16, far below
    any delta) are cut."""
    bits = np.frombuffer(os.urandom(16 * n), dtype=np.uint64).reshape(2, n) >> np.uint64(11)
    radius = np.sqrt(-2.0 * np.log((bits[0] + 1.0) * 2.0 ** -53))  # uniform in (0, 1]
    return radius * np.cos(2.0 * np.pi * bits[1] * 2.0 ** -53)


def _expand(path: str | None) -> str | None:
    # As data.path: configs may say $SECUREML_DATA_DIR/... so one file works on every machine.
    return None if path is None else str(Path(os.path.expandvars(path)).expanduser())


def _existing(path: str, key: str) -> Path:
    if not Path(path).exists():
        raise DataError(f"dp_sgd.vocabulary.{key} {path} does not exist"
                        + (" (an environment variable in it is not set)" if "$" in path else "")
                        + "; give the public file or folder, or use source: dp")
    return Path(path)
