"""The `robustness` evaluation: robust accuracy under attacks, with checks against false
robustness.

```yaml
evaluation:
  robustness:
    examples: 500                       # test examples attacked (a seeded random subset)
    epsilons: [0, 2/255, 4/255, 8/255]  # L-inf budgets (images, pixels in [0, 1])
    attacks: [fgsm, pgd, {name: pgd, norm: l2}, {name: spsa, examples: 20, epsilons: [8/255]}]
```

Images: fgsm, pgd, bim, mim, cw (Carlini-Wagner L2), spsa (gradient-free). Text: embedding_fgm,
embedding_pgd (in embedding space) and token_swap (k real token substitutions). Every run
records the sanity checks of `secureml.attacks.sanity` and flags violations; the worst case over
the attacks at each budget, and over every attack at its largest budget, is reported next to
each attack's own numbers. See docs/adversarial.md.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import tensorflow as tf

from .. import schema
from ..errors import ConfigError, UnsupportedError
from ..evaluation import predict_logits
from ..models.outputs import predicted_classes
from . import images, text
from .budget import (NORM_LABELS, check_epsilon, default_relative_step, epsilon_label,
                     parse_epsilon, parse_norm)
from .sanity import Measurement, run_checks
from .target import attack_target

SECTION = "robustness"

IMAGE_ATTACKS = ("fgsm", "pgd", "bim", "mim", "cw", "spsa")
TEXT_ATTACKS = ("embedding_fgm", "embedding_pgd", "token_swap")
DEFAULT_ATTACKS = {"image": ["fgsm", "pgd"], "text": ["embedding_fgm", "embedding_pgd",
                                                      "token_swap"]}
# The norm each attack works in when the config does not say (None: not a norm budget).
_NORMS = {"fgsm": "linf", "pgd": "linf", "bim": "linf", "mim": "linf", "cw": "l2",
          "spsa": "linf", "embedding_fgm": "l2", "embedding_pgd": "l2", "token_swap": None}
# Slow attacks default to fewer examples and their own steps (per-attack settings override).
_EXAMPLES = {"cw": 100, "spsa": 50}
_STEPS = {"fgsm": 1, "embedding_fgm": 1, "embedding_pgd": 10, "cw": 100, "spsa": 40}
_FIXED_NORM = ("cw", "spsa", "embedding_fgm", "embedding_pgd", "token_swap")
# A fraction of epsilon; cleverhans refuses steps larger than epsilon.
RelativeStep = Annotated[float, schema.Range(0, 1, "(]")]


@dataclass
class AttackConfig:
    """One attack and its settings; unset values come from the robustness section."""

    name: Literal["fgsm", "pgd", "bim", "mim", "cw", "spsa", "embedding_fgm", "embedding_pgd",
                  "token_swap"]
    norm: Any = None
    epsilons: list[Any] | None = None
    steps: schema.PositiveInt | None = None
    restarts: schema.PositiveInt | None = None
    relative_step_size: RelativeStep | None = None
    examples: schema.PositiveInt | None = None
    decay: schema.NonNegativeFloat = 1.0                # mim: momentum decay
    binary_search_steps: schema.PositiveInt = 5         # cw
    initial_const: schema.PositiveFloat = 0.1           # cw
    learning_rate: schema.PositiveFloat | None = None   # cw (default 0.05), spsa (epsilon / 4)
    samples: schema.PositiveInt = 128                   # spsa: model evaluations per step (even)
    budget: schema.NonNegativeInt | None = None         # token_swap: most tokens changed per text
    candidates: schema.PositiveInt = 8                  # token_swap: swaps evaluated per round

    def validate(self):
        if self.norm is None:
            self.norm = _NORMS[self.name]
        elif self.name in _FIXED_NORM:
            fixed = _NORMS[self.name]
            if self.name == "token_swap" or parse_norm(self.norm, "norm") != fixed:
                raise ConfigError(f"norm: {self.name} has no norm setting"
                                  + (f" (it is {fixed})" if fixed else "")
                                  + "; remove the key")
        else:
            self.norm = parse_norm(self.norm, "norm")
        if self.epsilons is not None:
            self.epsilons = [parse_epsilon(e, f"epsilons[{i}]")
                             for i, e in enumerate(self.epsilons)]
        if self.samples % 2:
            raise ConfigError(f"samples must be even (SPSA mirrors each sample), got "
                              f"{self.samples}")


@dataclass
class Config:
    attacks: list[Any] | None = None    # names or mappings (AttackConfig); None: per data kind
    examples: schema.PositiveInt | None = None  # default 500 (images), 200 (text)
    batch_size: schema.PositiveInt = 128
    epsilons: list[Any] = field(default_factory=lambda: [0, "2/255", "4/255", "8/255"])
    l2_epsilons: list[Any] = field(default_factory=lambda: [0, 0.25, 0.5, 1.0])
    embedding_epsilons: list[Any] = field(default_factory=lambda: [0, 0.5, 1.0, 2.0])
    steps: schema.PositiveInt = 20       # pgd, bim, mim iterations
    relative_step_size: RelativeStep | None = None  # default 2.5 / steps
    restarts: schema.PositiveInt = 1
    budget: schema.NonNegativeInt = 5    # token_swap: tokens
    value_range: tuple[float, float] = (0.0, 1.0)
    headline_epsilon: Any = None         # default 8/255 if listed, else the largest
    sanity_checks: bool = True
    chance_epsilon: Any = 0.5            # L-inf budget at which accuracy must reach chance
    chance_embedding_epsilon: schema.PositiveFloat = 50.0
    tolerance: Annotated[float, schema.Range(0, 1, "[)")] = 0.03
    show_examples: schema.NonNegativeInt = 3  # token_swap: adversarial texts kept in the section
    plot: bool = True                    # robustness.png in the variant folder

    def validate(self):
        if self.attacks is not None:
            if not isinstance(self.attacks, list) or not self.attacks:
                raise ConfigError("attacks must be a non-empty list of attack names or mappings,"
                                  " for example [fgsm, pgd, {name: pgd, norm: l2}]")
            self.attacks = [schema.build(AttackConfig, {"name": a} if isinstance(a, str) else a,
                                         f"attacks[{i}]") for i, a in enumerate(self.attacks)]
        for key in ("epsilons", "l2_epsilons", "embedding_epsilons"):
            values = getattr(self, key)
            if not values:
                raise ConfigError(f"{key} must list at least one budget")
            setattr(self, key, [parse_epsilon(e, f"{key}[{i}]") for i, e in enumerate(values)])
        for value in self.epsilons:
            check_epsilon(value, "linf", self.value_range, None, "epsilons")
        if self.headline_epsilon is not None:
            self.headline_epsilon = parse_epsilon(self.headline_epsilon, "headline_epsilon")
        self.chance_epsilon = parse_epsilon(self.chance_epsilon, "chance_epsilon")
        check_epsilon(self.chance_epsilon, "linf", self.value_range, None, "chance_epsilon")
        if self.value_range[0] >= self.value_range[1]:
            raise ConfigError(f"value_range must be [low, high] with low < high, got "
                              f"{list(self.value_range)}")

    def examples_for(self, kind: str) -> int:
        return self.examples or {"image": 500, "text": 200}[kind]

    def attack_configs(self, kind: str) -> list[AttackConfig]:
        """The attacks to run on `kind` data, every setting resolved."""
        attacks = self.attacks or [schema.build(AttackConfig, {"name": n}, "attacks")
                                   for n in DEFAULT_ATTACKS[kind]]
        allowed = IMAGE_ATTACKS if kind == "image" else TEXT_ATTACKS
        wrong = [a.name for a in attacks if a.name not in allowed]
        if wrong:
            raise ConfigError(f"robustness.attacks: {', '.join(wrong)} cannot attack {kind} "
                              f"data; {kind} attacks are {', '.join(allowed)}")
        return [self.resolve(a, kind) for a in attacks]

    def resolve(self, attack: AttackConfig, kind: str) -> AttackConfig:
        """`attack` with every unset setting taken from this section or the attack's default."""
        default_epsilons = {"linf": self.epsilons, "l2": self.l2_epsilons}[attack.norm] \
            if attack.norm else None
        if attack.name.startswith("embedding"):
            default_epsilons = self.embedding_epsilons
        steps = attack.steps or _STEPS.get(attack.name, self.steps)
        examples = self.examples_for(kind)
        return replace(
            attack, steps=steps, restarts=attack.restarts or self.restarts,
            epsilons=attack.epsilons if attack.epsilons is not None else default_epsilons,
            relative_step_size=attack.relative_step_size or self.relative_step_size
            or default_relative_step(steps),
            examples=min(attack.examples or _EXAMPLES.get(attack.name, examples), examples),
            budget=self.budget if attack.budget is None else attack.budget,
            learning_rate=attack.learning_rate or {"cw": 0.05}.get(attack.name))


def attack_label(attack: AttackConfig) -> str:
    """Display name: 'FGSM', 'PGD-20', 'PGD-20x3' (restarts), 'embedding PGD-10', ..."""
    restarts = f"x{attack.restarts}" if attack.name == "pgd" and attack.restarts > 1 else ""
    return {"fgsm": "FGSM", "pgd": f"PGD-{attack.steps}{restarts}", "bim": f"BIM-{attack.steps}",
            "mim": f"MIM-{attack.steps}", "cw": "CW-L2", "spsa": f"SPSA-{attack.steps}",
            "embedding_fgm": "embedding FGM", "embedding_pgd": f"embedding PGD-{attack.steps}",
            "token_swap": "token swap"}[attack.name]


def evaluate(context, config: Config) -> dict:
    """The robustness section of one trained variant (see `secureml.runner.VariantContext`)."""
    section = evaluate_robustness(
        context.model, context.inputs.x_test, context.inputs.y_test, config,
        kind=context.data.kind, vectorizer=context.inputs.vectorizer, seed=context.seed,
        progress=context.progress, directory=context.directory)
    section["training_cost"] = _training_cost(context)
    return section


def evaluate_robustness(model, x, y, config: Config | dict | None = None, *,
                        kind: Literal["image", "text"] = "image", vectorizer=None, seed: int = 0,
                        progress: bool = True, directory: str | Path | None = None) -> dict:
    """Attack `model` on a seeded subset of (x, y) and return the robustness section.

    `x` are images in `config.value_range` or, for `kind='text'`, token ids (pass the
    `vectorizer` to record decoded adversarial texts). With `directory`, the robustness curve
    is saved there as robustness.png.
    """
    config = schema.build(Config, config, "robustness")
    attacks = config.attack_configs(kind)
    start = time.perf_counter()
    tf.random.set_seed(seed)
    target = attack_target(model)
    x, y = np.asarray(x), np.asarray(y).reshape(-1).astype(np.int64)
    subset = np.sort(np.random.default_rng(seed).permutation(len(y))[:config.examples_for(kind)])
    x, y = x[subset], y[subset]
    clean_logits = predict_logits(target.logits_model, x, config.batch_size)
    _refuse_probabilities(clean_logits, target.note)
    clean_correct = predicted_classes(clean_logits) == y
    runner = _ImageRuns(target, x, y, clean_correct, config, progress) if kind == "image" else \
        _TextRuns(target, x, y, config, progress, vectorizer)
    for attack in attacks:
        runner.run(attack)
    if config.sanity_checks:
        runner.sanity_runs(attacks)
    checks = run_checks(runner.measurements, clean_correct, target.num_classes,
                        config.tolerance, runner.stronger_of) if config.sanity_checks else []
    section = {
        "headline": "",
        "data_kind": kind,
        "examples": int(len(y)),
        "clean_accuracy": float(clean_correct.mean()),
        "model_output": target.note,
        "value_range": list(config.value_range) if kind == "image" else None,
        "attacks": _attack_records(attacks, runner.measurements),
        "robust_accuracy": _accuracy_table(runner.measurements),
        "worst_case": _worst_case(runner.measurements, clean_correct),
        "worst_case_all_attacks": _worst_case_all_attacks(runner.measurements, clean_correct),
        "sanity_checks": checks,
        "violations": [f"{c['name']}: {c['detail']}" for c in checks if c["passed"] is False],
        "sanity_passed": all(c["passed"] is not False for c in checks) if checks else None,
        "extra_runs": [_measurement_record(m) for m in runner.measurements if m.role != "main"],
        **runner.extra,
        "config": schema.to_dict(config),
    }
    section["headline"] = _headline(runner.measurements, section, config, kind)
    if directory is not None and config.plot:
        section["curve_plot"] = _plot(runner.measurements, Path(directory))
    section["seconds"] = round(time.perf_counter() - start, 2)
    return section


def _refuse_probabilities(logits: np.ndarray, note: str) -> None:
    """A model whose outputs already are probabilities, without a recognizable final
    activation (a subclassed model, say), would be attacked through saturated outputs."""
    if note == "logits" and logits.shape[-1] > 1 and len(logits) and logits.min() >= 0 \
            and np.allclose(logits.sum(axis=-1), 1.0, atol=1e-3):
        raise UnsupportedError(
            "the model's outputs are non-negative and sum to 1: they look like probabilities, "
            "but no final softmax layer was found to remove. Attacks need logits (gradients "
            "through saturated probabilities vanish and overstate robustness); pass a model "
            "that returns logits")


class _ImageRuns:
    """Runs image attacks and keeps their per-example measurements."""

    stronger_of = {"fgsm": "pgd", "bim": "pgd"}

    def __init__(self, target, x, y, clean_correct: np.ndarray, config: Config, progress: bool):
        self.target, self.x, self.y, self.config, self.progress = target, x, y, config, progress
        self.clean_correct = clean_correct
        self.measurements: list[Measurement] = []
        self.extra: dict = {}
        self.input_size = int(np.prod(x.shape[1:]))

    def adversarial(self, attack: AttackConfig, epsilon: float, x, y) -> np.ndarray:
        common = {"value_range": self.config.value_range, "progress": self.progress}
        batched = {**common, "batch_size": self.config.batch_size}
        step = attack.relative_step_size * epsilon
        if attack.name == "fgsm":
            return images.fgsm(self.target, x, y, epsilon, norm=attack.norm, **batched)
        if attack.name == "pgd":
            return images.pgd(self.target, x, y, epsilon, norm=attack.norm, steps=attack.steps,
                              step_size=step, restarts=attack.restarts, **batched)
        if attack.name == "bim":
            return images.bim(self.target, x, y, epsilon, norm=attack.norm, steps=attack.steps,
                              step_size=step, **batched)
        if attack.name == "mim":
            return images.mim(self.target, x, y, epsilon, norm=attack.norm, steps=attack.steps,
                              step_size=step, decay=attack.decay, **batched)
        return images.spsa(self.target, x, y, epsilon, steps=attack.steps,
                           samples=attack.samples, learning_rate=attack.learning_rate, **common)

    def run(self, attack: AttackConfig, role: str = "main") -> None:
        indices = np.arange(min(attack.examples, len(self.y)))
        x, y = self.x[indices], self.y[indices]
        for epsilon in attack.epsilons:
            check_epsilon(epsilon, attack.norm, self.config.value_range, self.input_size,
                          f"robustness.attacks.{attack.name}.epsilons")
        if attack.name == "cw":
            return self._run_cw(attack, indices)
        for epsilon in attack.epsilons:
            start = time.perf_counter()
            x_adv = self.adversarial(attack, epsilon, x, y)
            correct = predicted_classes(predict_logits(self.target.logits_model, x_adv,
                                                       self.config.batch_size)) == y
            self.measurements.append(Measurement(
                attack.name, attack_label(attack), attack.norm, epsilon, indices, correct, role,
                _settings(attack), _largest_change(x_adv - x, attack.norm, x_adv,
                                                   self.config.value_range),
                time.perf_counter() - start))

    def _run_cw(self, attack: AttackConfig, indices: np.ndarray) -> None:
        """One minimum-norm run; an example falls at every budget its smallest change fits."""
        start = time.perf_counter()
        x, y = self.x[indices], self.y[indices]
        x_adv = images.carlini_wagner_l2(
            self.target, x, y, steps=attack.steps, binary_search_steps=attack.binary_search_steps,
            learning_rate=attack.learning_rate, initial_const=attack.initial_const,
            value_range=self.config.value_range, progress=self.progress)
        correct_adv = predicted_classes(predict_logits(self.target.logits_model, x_adv)) == y
        distance = np.sqrt(((x_adv - x).reshape(len(x), -1) ** 2).sum(axis=1))
        correct_clean = self.clean_correct[indices]
        seconds = time.perf_counter() - start
        for epsilon in attack.epsilons:
            fooled = ~correct_adv & (distance <= epsilon + 1e-6)
            self.measurements.append(Measurement(
                "cw", attack_label(attack), "l2", epsilon, indices, correct_clean & ~fooled,
                "main", _settings(attack), None, seconds))
        found = ~correct_adv & correct_clean
        self.extra.setdefault("cw", {})["median_l2_of_successes"] = \
            float(np.median(distance[found])) if found.any() else None
        self.extra["cw"]["success_rate"] = float(found.sum() / max(correct_clean.sum(), 1))

    def sanity_runs(self, attacks: list[AttackConfig]) -> None:
        """A PGD at an epsilon that must reach chance, and a stronger PGD at the headline
        epsilon (twice the steps, one more restart)."""
        pgd = next((a for a in attacks if a.name == "pgd" and a.norm == "linf"), None)
        pgd = pgd or self.config.resolve(schema.build(AttackConfig, {"name": "pgd"}, "pgd"),
                                          "image")
        chance = replace(pgd, epsilons=[self.config.chance_epsilon], restarts=1)
        self.run(chance, role="chance")
        requested = [m for m in self.measurements
                     if m.attack == "pgd" and m.norm == "linf" and m.role == "main"]
        headline = _headline_epsilon(self.config, requested)
        if requested and headline is not None:
            steps = 2 * pgd.steps
            stronger = replace(pgd, epsilons=[headline], steps=steps, restarts=pgd.restarts + 1,
                               relative_step_size=default_relative_step(steps))
            self.run(stronger, role="stronger")


def _largest_change(delta: np.ndarray, norm: str, x_adv: np.ndarray,
                    value_range: tuple[float, float]) -> float:
    """The largest perturbation norm, or infinity if an input left the value range."""
    if x_adv.min() < value_range[0] - 1e-6 or x_adv.max() > value_range[1] + 1e-6:
        return float("inf")
    flat = delta.reshape(len(delta), -1)
    if not len(flat):
        return 0.0
    norms = np.abs(flat).max(axis=1) if norm == "linf" else np.sqrt((flat ** 2).sum(axis=1))
    return float(norms.max())


class _TextRuns:
    """Runs text attacks (embedding space and token swaps) on token ids."""

    stronger_of = {"embedding_fgm": "embedding_pgd"}

    def __init__(self, target, x, y, config: Config, progress: bool, vectorizer):
        self.target, self.x, self.y, self.config = target, x, y, config
        self.progress, self.vectorizer = progress, vectorizer
        self.measurements: list[Measurement] = []
        self.extra: dict = {}

    def run(self, attack: AttackConfig, role: str = "main") -> None:
        indices = np.arange(min(attack.examples, len(self.y)))
        ids, y = self.x[indices], self.y[indices]
        if attack.name == "token_swap":
            return self._run_token_swap(attack, indices)
        split = text.split_target(self.target)[1]
        scale = text.embedding_scale(split).numpy()
        for epsilon in attack.epsilons:
            start = time.perf_counter()
            delta = text.embedding_pgd(
                self.target, ids, y, epsilon, steps=attack.steps,
                step_size=None if attack.steps == 1 else attack.relative_step_size * epsilon,
                batch_size=self.config.batch_size, progress=self.progress)
            logits = text.perturbed_logits(self.target, ids, delta, self.config.batch_size)
            standardized = np.sqrt(((delta / scale) ** 2).reshape(len(delta), -1).sum(axis=1))
            self.measurements.append(Measurement(
                attack.name, attack_label(attack), "l2", epsilon, indices,
                predicted_classes(logits) == y, role, _settings(attack),
                float(standardized.max()) if len(standardized) else 0.0,
                time.perf_counter() - start))

    def _run_token_swap(self, attack: AttackConfig, indices: np.ndarray) -> None:
        start = time.perf_counter()
        ids, y = self.x[indices], self.y[indices]
        result = text.token_swap(self.target, ids, y, attack.budget,
                                 candidates=attack.candidates, progress=self.progress)
        changed = result.tokens_changed
        seconds = time.perf_counter() - start
        for k in range(attack.budget + 1):
            self.measurements.append(Measurement(
                "token_swap", attack_label(attack), None, float(k), indices,
                result.correct_within(k), "main", _settings(attack),
                None, seconds))
        correct_clean = result.flipped_at != 0
        flipped = result.flipped_at > 0
        self.extra["token_swap"] = {
            "budget": attack.budget,
            "success_rate": float(flipped.sum() / max(correct_clean.sum(), 1)),
            "robust_accuracy": float(result.correct_within(attack.budget).mean()),
            "tokens_changed_mean": float(changed[flipped].mean()) if flipped.any() else None,
            "tokens_changed_max": int(changed.max()) if len(changed) else 0,
            "examples": self._examples(ids, result, y),
        }

    def _examples(self, ids, result, y) -> list[dict]:
        """A few successful adversarial texts, swapped words marked [old -> new]."""
        if self.vectorizer is None:
            return []
        vocabulary = self.vectorizer.vocabulary
        shown = []
        for i in np.flatnonzero(result.flipped_at > 0)[:self.config.show_examples]:
            words = []
            for old, new in zip(ids[i].tolist(), result.ids[i].tolist()):
                if old == 0:
                    continue
                words.append(vocabulary[new] if old == new else
                             f"[{vocabulary[old]} -> {vocabulary[new]}]")
            shown.append({"label": int(y[i]), "tokens_changed": int(result.tokens_changed[i]),
                          "original": self.vectorizer.decode(ids[i])[0],
                          "adversarial": " ".join(words)})
        return shown

    def sanity_runs(self, attacks: list[AttackConfig]) -> None:
        pgd = next((a for a in attacks if a.name == "embedding_pgd"), None)
        pgd = pgd or self.config.resolve(schema.build(AttackConfig, {"name": "embedding_pgd"},
                                                       "embedding_pgd"), "text")
        self.run(replace(pgd, epsilons=[self.config.chance_embedding_epsilon]), role="chance")
        largest = max(pgd.epsilons)
        if largest > 0:
            steps = 2 * pgd.steps
            self.run(replace(pgd, epsilons=[largest], steps=steps,
                             relative_step_size=default_relative_step(steps)), role="stronger")


def _settings(attack: AttackConfig) -> dict:
    keys = {"fgsm": (), "pgd": ("steps", "restarts", "relative_step_size"),
            "bim": ("steps", "relative_step_size"),
            "mim": ("steps", "relative_step_size", "decay"),
            "cw": ("steps", "binary_search_steps", "learning_rate", "initial_const"),
            "spsa": ("steps", "samples", "learning_rate"),
            "embedding_fgm": (), "embedding_pgd": ("steps", "relative_step_size"),
            "token_swap": ("budget", "candidates")}[attack.name]
    return {key: getattr(attack, key) for key in keys}


def _measurement_record(m: Measurement) -> dict:
    return {"attack": m.attack, "label": m.label, "norm": m.norm, "epsilon": m.epsilon,
            "epsilon_label": m.budget_label, "role": m.role, "examples": int(len(m.indices)),
            "robust_accuracy": m.accuracy, "max_perturbation": m.max_perturbation,
            "seconds": round(m.seconds, 3), **m.settings}


def _attack_records(attacks: list[AttackConfig], measurements: list[Measurement]) -> list[dict]:
    records = []
    for attack in attacks:
        label = attack_label(attack)
        runs = [m for m in measurements if m.role == "main" and m.label == label
                and m.norm == attack.norm]
        records.append({
            "name": attack.name, "label": label, "norm": attack.norm,
            "examples": int(len(runs[0].indices)) if runs else 0, **_settings(attack),
            "results": [{"epsilon": m.epsilon, "epsilon_label": m.budget_label,
                         "robust_accuracy": m.accuracy,
                         "max_perturbation": m.max_perturbation,
                         "seconds": round(m.seconds, 3)} for m in runs]})
    return records


def _accuracy_table(measurements: list[Measurement]) -> dict:
    """{"PGD-20 linf": {"8/255": 0.41, ...}, ...} for the requested runs."""
    table: dict[str, dict[str, float]] = {}
    for m in measurements:
        if m.role == "main":
            key = f"{m.label} {m.norm}" if m.norm else m.label
            table.setdefault(key, {})[m.budget_label] = m.accuracy
    return table


def _worst_case(measurements: list[Measurement], clean_correct: np.ndarray) -> dict:
    """Per norm and budget (token swaps under "tokens", per number of tokens): the fraction of
    examples that every attack run at that budget failed against (requested runs and the
    stronger sanity run; not the chance run)."""
    table: dict[str, dict[str, float]] = {}
    for norm in ("linf", "l2", None):
        runs = [m for m in measurements if m.norm == norm and m.role != "chance"]
        for epsilon in sorted({m.epsilon for m in runs}):
            robust = clean_correct.copy()
            at = [m for m in runs if m.epsilon == epsilon]
            for m in at:
                robust[m.indices] &= m.correct
            table.setdefault(norm or "tokens", {})[at[0].budget_label] = float(robust.mean())
    return table


def _worst_case_all_attacks(measurements: list[Measurement], clean_correct: np.ndarray) -> dict:
    """The fraction of examples that withstand every attack run, each at its largest budget
    (budgets of different norms and token swaps together; the chance run left out), and the
    runs it covers."""
    largest: dict[tuple, Measurement] = {}
    for m in measurements:
        key = (m.label, m.norm, m.role)
        if m.role != "chance" and (key not in largest or m.epsilon > largest[key].epsilon):
            largest[key] = m
    robust = clean_correct.copy()
    for m in largest.values():
        robust[m.indices] &= m.correct
    return {"robust_accuracy": float(robust.mean()), "examples": int(len(robust)),
            "covers": [" ".join(filter(None, (m.label, NORM_LABELS.get(m.norm), m.budget_label)))
                       + (f" ({m.role} run)" if m.role != "main" else "")
                       for m in largest.values()]}


def _headline_epsilon(config: Config, pgd_runs: list[Measurement]) -> float | None:
    budgets = sorted({m.epsilon for m in pgd_runs if m.epsilon > 0})
    if config.headline_epsilon is not None:
        return config.headline_epsilon
    if not budgets:
        return None
    eight = next((e for e in budgets if abs(e - 8 / 255) < 1e-9), None)
    return eight if eight is not None else budgets[-1]


def _headline(measurements: list[Measurement], section: dict, config: Config, kind: str) -> str:
    main = [m for m in measurements if m.role == "main"]
    violations = len(section["violations"])
    suffix = f"; {violations} sanity violation(s)" if violations else ""
    if kind == "text":
        swaps = [m for m in main if m.attack == "token_swap"]
        runs = [m for m in main if m.attack.startswith("embedding")]
        if not swaps and not runs:
            return "no attack ran" + suffix
        if swaps:
            last = max(swaps, key=lambda m: m.epsilon)
            text = f"token swap k={int(last.epsilon)}: {last.accuracy:.1%} robust"
        else:
            last = min(runs, key=lambda m: (-m.epsilon, m.accuracy))
            text = f"{last.label} eps={last.budget_label}: {last.accuracy:.1%} robust"
        every = section["worst_case_all_attacks"]["robust_accuracy"]
        if every < last.accuracy - 1e-9:
            text += f" (worst case over every attack {every:.1%})"
        return text + suffix
    pgd_runs = [m for m in main if m.attack == "pgd" and m.norm == "linf"]
    epsilon = _headline_epsilon(config, pgd_runs)
    at = [m for m in main if m.epsilon == epsilon and m.norm == "linf"]
    if epsilon is None or not at:
        runs = [m for m in main if m.epsilon > 0]
        if not runs:
            return "no attack ran at a positive epsilon" + suffix
        weakest = min(runs, key=lambda m: m.accuracy)
        return (f"{weakest.label} {NORM_LABELS.get(weakest.norm, weakest.norm)} "
                f"{weakest.budget_label}: {weakest.accuracy:.1%} robust{suffix}")
    shown = next((m for m in at if m.attack == "pgd"), min(at, key=lambda m: m.accuracy))
    label = epsilon_label(epsilon, "linf")
    worst = section["worst_case"].get("linf", {}).get(label)
    worst_text = f" (worst case {worst:.1%})" if worst is not None and \
        worst < shown.accuracy - 1e-9 else ""
    return f"{shown.label} L-inf {label}: {shown.accuracy:.1%} robust{worst_text}{suffix}"


def _plot(measurements: list[Measurement], directory: Path) -> str:
    """Robust accuracy against the budget, one panel per norm (and one for token swaps)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = [m for m in measurements if m.role == "main"]
    panels = sorted({m.norm or "tokens" for m in main})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        runs = [m for m in main if (m.norm or "tokens") == panel]
        for label in dict.fromkeys(m.label for m in runs):
            curve = sorted((m.epsilon, m.accuracy) for m in runs if m.label == label)
            ax.plot(*zip(*curve), marker="o", label=label)
        ax.set_xlabel({"linf": "L-inf epsilon", "l2": "L2 epsilon",
                       "tokens": "tokens swapped (k)"}[panel])
        ax.set_ylabel("robust accuracy")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = directory / "robustness.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


def _training_cost(context) -> dict:
    """Training cost against the run's baseline variant (the runner measures it first), and the
    training step against a plain step measured after training."""
    cost = context.metrics["cost"]
    out = {key: cost.get(key) for key in ("baseline_variant", "train_time_s",
                                          "train_time_ratio")}
    out["step_vs_plain_step"] = (cost.get("vs_plain_step") or {}).get("ratio")
    return out
