"""Membership inference audit: how much a trained model reveals about who was in its training set.

As an evaluation stage (`evaluation: {membership: {...}}` in a run config) it audits the
variant's model: `target_examples` training examples (members) against as many held-out test
or validation examples (non-members), with the attacks of `secureml.audit.attacks`. Shadow
models are trained with the variant's exact recipe, defences included (`context.retrain`), so
a DP or adversarially trained target is attacked with shadows trained the same way.

Shadow data. Offline attacks (`shadow`, `lira_offline`) train every shadow model on a random
half of held-out data that the target never saw: the attacker knows nothing of the target's
training set. `lira_online` needs shadow models that did train on each audited example: then
each audited example (member or not) is in exactly half of the shadow models, whose other data
come from the whole data set (target training examples included), as in Carlini et al. 2022.

From Python, without a run: `audit_membership(model, (x_in, y_in), (x_out, y_out), ...)`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable, Literal

import numpy as np
from tqdm.auto import tqdm

from .. import schema
from ..errors import ConfigError, DataError
from ..evaluation import predict_logits
from . import attacks as A
from . import records
from .canaries import canary_audit
from .empirical import epsilon_lower_bound
from .metrics import attack_metrics, auc_interval, clopper_pearson, null_auc_std

SECTION = "membership"
AttackName = Literal["loss", "confidence", "entropy", "shadow", "lira_offline", "lira_online"]
# The fewest members (and non-members) an audit may use: below this the rates mean little.
MIN_EXAMPLES = 20


@dataclass
class Config:
    """Parameters of the membership audit (`evaluation: {membership: {...}}`)."""

    attacks: list[AttackName] = field(default_factory=lambda: [
        "loss", "confidence", "entropy", "shadow", "lira_offline"])
    shadow_models: schema.NonNegativeInt = 8
    # Members audited, and as many non-members; fewer when the data has fewer.
    target_examples: Annotated[int, schema.Range(MIN_EXAMPLES)] = 1000
    # Epochs of each shadow model; null trains them exactly like the target.
    shadow_epochs: schema.PositiveInt | None = None
    # LiRA: one variance shared by all examples (recommended below 64 shadow models).
    fixed_variance: bool = True
    # Images: also query the mirrored image (LiRA then averages over the two queries).
    mirror_queries: bool = False
    confidence_level: Annotated[float, schema.Range(0.5, 1, "()")] = 0.95
    exposed_examples: schema.NonNegativeInt = 10
    # Canary audit: this many canaries, each trained on with probability 1/2 (0 = off).
    canaries: schema.NonNegativeInt = 0
    seed: schema.Seed | None = None

    def validate(self) -> None:
        if not self.attacks:
            schema.fail("attacks", f"list at least one attack of {', '.join(A.ATTACKS)}")
        if len(set(self.attacks)) != len(self.attacks):
            schema.fail("attacks", f"lists an attack twice: {self.attacks}")
        if self.needs_shadows and self.shadow_models < 2:
            schema.fail("shadow_models", f"attacks {self.shadow_attacks} need at least 2 shadow "
                                         f"models, got {self.shadow_models}; raise it or keep "
                                         f"only {', '.join(A.THRESHOLD_ATTACKS)}")
        if "lira_online" in self.attacks and self.shadow_models % 2:
            schema.fail("shadow_models", f"lira_online puts every audited example into exactly "
                                         f"half of the shadow models, so it needs an even number; "
                                         f"got {self.shadow_models}")
        if self.canaries and self.canaries < MIN_EXAMPLES:
            schema.fail("canaries", f"must be 0 (off) or at least {MIN_EXAMPLES}, got "
                                    f"{self.canaries}")

    @property
    def shadow_attacks(self) -> list[str]:
        return [a for a in self.attacks if a in A.SHADOW_ATTACKS]

    @property
    def needs_shadows(self) -> bool:
        return bool(self.shadow_attacks)

    @property
    def online(self) -> bool:
        return "lira_online" in self.attacks


Trainer = Callable[[np.ndarray, np.ndarray, int], Any]


def evaluate(context, config: Config) -> dict:
    """The `membership` section of a variant's metrics.json (see docs/audit.md)."""
    config = schema.build(Config, config, "evaluation.membership")
    seed = context.seed if config.seed is None else config.seed
    rng = np.random.default_rng(seed)
    inputs = context.inputs
    parts = [inputs.x_train, inputs.x_test, inputs.x_val]
    labels = np.concatenate([inputs.y_train, inputs.y_test, inputs.y_val])
    n_train, n_heldout = len(inputs.y_train), len(inputs.y_test) + len(inputs.y_val)
    m = _audit_size(config, n_train, n_heldout)
    members = rng.choice(n_train, m, replace=False)
    non_members = n_train + rng.choice(n_heldout, m, replace=False)

    population = np.setdiff1d(np.arange(n_train, n_train + n_heldout), non_members)
    if config.online:
        population = np.concatenate([np.setdiff1d(np.arange(n_train), members), population])
    population = rng.permutation(population)[:_population_room(n_train, 2 * m, config.online)]

    def train(x, y, shadow_seed):
        return context.retrain(x, y, seed=shadow_seed, epochs=config.shadow_epochs).model

    privacy = context.metrics.get("privacy") or {}
    result = audit_membership(
        context.model, (_gather(parts, members), labels[members]),
        (_gather(parts, non_members), labels[non_members]), config=config,
        population=(_gather(parts, population), labels[population]) if config.needs_shadows
        else None,
        train=train, class_names=context.data.class_names, delta=privacy.get("delta") or 0.0,
        accounted_epsilon=privacy.get("epsilon"), progress=context.progress,
        batch_size=context.variant.training.eval_batch_size, seed=seed,
        target_train_size=n_train)
    result["settings"]["non_member_source"] = "test and validation splits"
    # The variant's folder sits in the run folder, which holds the run's record key.
    key = records.run_key(context.directory.parent)
    include = context.experiment.audit.include_examples
    result["exposed_examples"] = [
        _describe_exposed(e, members, context.data.x_train, key, include)
        for e in result["exposed_examples"]]
    if config.canaries:
        started = time.perf_counter()

        def train_with_canaries(x, y):
            trained = context.retrain(x, y, seed=seed + 7919)
            return trained.model, trained.sections.get("privacy")

        result["canaries"] = canary_audit(
            train_with_canaries, inputs.x_train, inputs.y_train, config.canaries,
            context.data.num_classes, vocab_size=inputs.vocab_size,
            confidence=config.confidence_level, seed=seed,
            batch_size=context.variant.training.eval_batch_size)
        result["cost"]["canary_s"] = round(time.perf_counter() - started, 2)
        result["cost"]["total_s"] = round(result["cost"]["total_s"]
                                          + result["cost"]["canary_s"], 2)
    return result


def _audit_size(config: Config, n_train: int, n_heldout: int) -> int:
    """Members audited (= non-members): offline shadows need held-out data left over."""
    available = n_heldout // 2 if config.needs_shadows and not config.online else n_heldout
    m = min(config.target_examples, n_train, available)
    if m < MIN_EXAMPLES:
        raise DataError(f"the membership audit needs at least {MIN_EXAMPLES} training and "
                        f"{MIN_EXAMPLES if available == n_heldout else 2 * MIN_EXAMPLES} "
                        f"held-out (test + validation) examples, but has {n_train} and "
                        f"{n_heldout}; use more data (data.limit, data.test_limit)")
    return m


def _gather(parts: list[np.ndarray], index: np.ndarray) -> np.ndarray:
    """Rows of the concatenation of `parts` without building the concatenation."""
    offsets = np.cumsum([0] + [len(p) for p in parts])
    out = np.empty((len(index),) + parts[0].shape[1:], dtype=parts[0].dtype)
    for k, part in enumerate(parts):
        mask = (index >= offsets[k]) & (index < offsets[k + 1])
        out[mask] = part[index[mask] - offsets[k]]
    return out


def _describe_exposed(exposed: dict, members: np.ndarray, x_train, key: bytes,
                      include: bool) -> dict:
    index = int(members[exposed.pop("position")])
    return {"train_index": index, **exposed, **records.describe(x_train, index, key, include)}


def audit_membership(model, members: tuple, non_members: tuple, *, config: Config | dict = None,
                     population: tuple | None = None, train: Trainer | None = None,
                     target_train_size: int | None = None, class_names: list[str] | None = None,
                     delta: float = 0.0, accounted_epsilon: float | None = None,
                     progress: bool = False, batch_size: int = 512, seed: int = 0) -> dict:
    """Attack `model` on known members and non-members; return every attack's metrics.

    `members` and `non_members` are (x, y) in the model's input form. Shadow attacks also need
    `train(x, y, seed) -> model`, which must train a fresh model exactly as the target was
    trained, and `population`: (x, y) labelled data for the shadow models that excludes the
    audited examples. `target_train_size` (the target's training-set size) caps each shadow
    model's training set at the same size. `delta` and `accounted_epsilon` come from a DP run:
    the empirical epsilon bound is set beside the accounted one. Without `config`, the attacks
    are the threshold ones, plus the shadow attacks when `train` and `population` are given.
    """
    if config is None and (train is None or population is None):
        config = {"attacks": list(A.THRESHOLD_ATTACKS)}
    config = schema.build(Config, config, "membership")
    if config.needs_shadows and (train is None or population is None):
        raise ConfigError(f"attacks {config.shadow_attacks} need shadow models: pass "
                          f"train=(x, y, seed) -> model and population=(x, y), or keep only "
                          f"{', '.join(A.THRESHOLD_ATTACKS)}")
    started = time.perf_counter()
    x_in, y_in = members
    x_out, y_out = non_members
    x = np.concatenate([x_in, x_out])
    y = np.concatenate([y_in, y_out]).astype(np.int64)
    is_member = np.r_[np.ones(len(y_in), bool), np.zeros(len(y_out), bool)]
    queries = _queries(x, config.mirror_queries)
    target_logits = [predict_logits(model, q, batch_size) for q in queries]
    scores = {name: s for name, s in A.threshold_scores(target_logits[0], y).items()
              if name in config.attacks}

    settings = {"attacks": list(config.attacks), "members": int(len(y_in)),
                "non_members": int(len(y_out)), "queries": len(queries),
                "confidence_level": config.confidence_level, "seed": seed}
    shadow_time = 0.0
    if config.needs_shadows:
        shadow_start = time.perf_counter()
        shadow = _shadow_attacks(config, x, y, queries, target_logits, population, train,
                                 target_train_size or len(population[1]), progress,
                                 batch_size, seed)
        shadow_time = time.perf_counter() - shadow_start
        scores.update(shadow.pop("scores"))
        settings.update(shadow)

    n_attacks = len(scores)
    # Bonferroni: the reported maximum over attacks holds at the stated confidence.
    per_attack_confidence = 1 - (1 - config.confidence_level) / n_attacks
    results = {}
    for name in config.attacks:
        metrics = attack_metrics(scores[name], is_member, y, class_names,
                                 config.confidence_level)
        metrics["empirical_epsilon"] = epsilon_lower_bound(
            scores[name], is_member, delta, per_attack_confidence, seed)
        results[name] = metrics
    best = _best(results, len(y_in), len(y_out), config.confidence_level)
    section = {
        "settings": settings,
        "attacks": results,
        "null_auc_std": null_auc_std(len(y_in), len(y_out)),
        "best": best,
        "empirical_privacy": _empirical_privacy(results, delta, accounted_epsilon,
                                                config.confidence_level),
        "exposed_examples": _exposed(scores, results, best["tpr_attack"], is_member, y,
                                     class_names, config.exposed_examples),
    }
    total = time.perf_counter() - started
    section["cost"] = {"shadow_training_s": round(shadow_time, 2),
                       "attack_s": round(total - shadow_time, 2), "total_s": round(total, 2)}
    return section


def _queries(x: np.ndarray, mirror: bool) -> list[np.ndarray]:
    if mirror and x.ndim == 4:
        return [x, x[:, :, ::-1, :]]
    return [x]


def _population_room(target_train_size: int, n_audit: int, online: bool) -> int:
    """Population examples the shadow pool takes: each shadow model, trained on half of the
    pool, then sees about as many examples as the target did."""
    pool = max(2 * target_train_size, n_audit)
    return pool - n_audit if online else pool


def _balanced_keep(models: int, examples: int, rng) -> np.ndarray:
    """(models, examples) membership: every example in exactly half of the models."""
    order = rng.random((models, examples)).argsort(axis=0)
    return order < models // 2


def _shadow_attacks(config: Config, x, y, queries, target_logits, population, train,
                    target_train_size: int, progress: bool, batch_size: int, seed: int) -> dict:
    """Train the shadow models, then score the audited examples with each shadow attack."""
    rng = np.random.default_rng(seed + 1)
    n_audit, k = len(y), config.shadow_models
    chosen = rng.permutation(len(population[1]))[:_population_room(target_train_size, n_audit,
                                                                    config.online)]
    x_pop, y_pop = population[0][chosen], population[1][chosen]
    if config.online:
        pool_x, pool_y = np.concatenate([x, x_pop]), np.concatenate([y, y_pop])
        audited = np.arange(n_audit)
    else:
        pool_x, pool_y, audited = x_pop, y_pop, None
    if len(pool_y) < 2 * MIN_EXAMPLES:
        raise DataError(f"shadow models need at least {2 * MIN_EXAMPLES} examples to train on, "
                        f"but only {len(pool_y)} are left after choosing the audited examples; "
                        f"use more data or fewer target_examples")
    keep = _balanced_keep(k, len(pool_y), rng)
    # Shokri's attack classifier learns from shadow outputs on examples that are not audited,
    # or, when the pool has too few of those, on the audited ones: the attacker knows which
    # shadow models trained on them, never whether the target did.
    others = np.arange(len(pool_y))
    if audited is not None and len(pool_y) - n_audit >= n_audit // 2:
        others = others[n_audit:]
    sample = rng.choice(others, min(len(others), 2 * n_audit), replace=False)

    statistics = np.zeros((k, n_audit, len(queries)))
    features, labels = [], []
    bar = tqdm(total=k, desc="membership: shadow models", unit="model", leave=False,
               disable=not progress)
    for i in range(k):
        shadow = train(pool_x[keep[i]], pool_y[keep[i]], seed + 1000 + i)
        for q, batch in enumerate(queries):
            statistics[i, :, q] = A.scaled_confidence(predict_logits(shadow, batch, batch_size), y)
        if "shadow" in config.attacks:
            logits = predict_logits(shadow, pool_x[sample], batch_size)
            features.append(A.shadow_features(logits, pool_y[sample]))
            labels.append(keep[i, sample])
        del shadow
        bar.update(1)
    bar.close()

    target = np.stack([A.scaled_confidence(lg, y) for lg in target_logits], axis=1)
    in_mask = keep[:, audited] if audited is not None else np.zeros((k, n_audit), bool)
    scores = {}
    if "lira_offline" in config.attacks:
        scores["lira_offline"] = A.lira_offline(target, statistics, ~in_mask,
                                                config.fixed_variance)
    if "lira_online" in config.attacks:
        scores["lira_online"] = A.lira_online(target, statistics, in_mask, config.fixed_variance)
    if "shadow" in config.attacks:
        scores["shadow"] = A.shadow_attack(np.concatenate(features), np.concatenate(labels),
                                           A.shadow_features(target_logits[0], y), seed)
    return {
        "scores": scores,
        "shadow_models": k,
        "shadow_design": "online" if config.online else "offline",
        "shadow_data": ("each audited example in half of the shadow models; other shadow data "
                        "from the whole data set" if config.online else
                        "held-out data only, disjoint from the target's training set"),
        "shadow_train_size": int(keep.sum(axis=1).mean()),
        "target_train_size": int(target_train_size),
        "shadow_epochs": config.shadow_epochs,
        "fixed_variance": config.fixed_variance,
    }


def _best(results: dict, members: int, non_members: int, confidence: float) -> dict:
    """The strongest attack's AUC and TPRs, each with an interval for the strongest attack.

    Each attack's interval is taken at confidence 1 - (1 - confidence) / attacks (Bonferroni):
    all of them then hold together, so the largest value over attacks lies between the largest
    lower end and the largest upper end with the stated confidence. The rules rate these.
    """
    by_auc = max(results, key=lambda a: results[a]["auc"])
    by_tpr = max(results, key=lambda a: (results[a]["tpr_at_fpr"][0]["tpr"], results[a]["auc"]))
    level = 1 - (1 - confidence) / len(results)

    def strongest(intervals):
        return [max(i[0] for i in intervals), max(i[1] for i in intervals)]

    tpr_ci = [strongest([clopper_pearson(r["tpr_at_fpr"][k]["true_positives"], members, level)
                         for r in results.values()]) for k in (0, 1)]
    return {"auc": results[by_auc]["auc"], "auc_attack": by_auc,
            "auc_ci": strongest([auc_interval(r["auc"], members, non_members, level)
                                 for r in results.values()]),
            "advantage": max(r["advantage"] for r in results.values()),
            "tpr_at_0.1%_fpr": results[by_tpr]["tpr_at_fpr"][0]["tpr"],
            "tpr_at_0.1%_fpr_ci": tpr_ci[0],
            "tpr_at_1%_fpr": max(r["tpr_at_fpr"][1]["tpr"] for r in results.values()),
            "tpr_at_1%_fpr_ci": tpr_ci[1],
            "tpr_attack": by_tpr,
            "confidence_level": confidence, "members": members, "non_members": non_members,
            "ci_method": f"Hanley & McNeil (AUC) and Clopper-Pearson (TPR) intervals of each of "
                         f"the {len(results)} attacks at confidence {level:.4g} (Bonferroni), "
                         f"maximized over attacks"}


def _empirical_privacy(results: dict, delta: float, accounted: float | None,
                       confidence: float) -> dict:
    """The largest lower bound over attacks: indicative only.

    The bound counts the audited examples as independent trials, but they are fixed examples
    of one trained model, not examples whose membership was randomized before training. Only
    the canary audit (Steinke et al. 2023) makes that a valid test of the guarantee.
    """
    attack = max(results, key=lambda a: results[a]["empirical_epsilon"]["epsilon_lower_bound"])
    bound = results[attack]["empirical_epsilon"]
    return {
        "epsilon_lower_bound": bound["epsilon_lower_bound"],
        "attack": attack,
        "confidence": confidence,
        "delta": delta,
        "max_provable": bound["max_provable"],
        "accounted_epsilon": accounted,
        "above_accounted": (bool(bound["epsilon_lower_bound"] > accounted)
                            if accounted is not None else None),
        "indicative": True,
        "method": "Clopper-Pearson bounds on FPR and FNR, threshold chosen on a separate half, "
                  "Bonferroni over attacks; indicative, not a valid statistical audit (the "
                  "audited examples of one model are not independent trials)",
    }


def _exposed(scores: dict, results: dict, attack: str, is_member, labels, class_names,
             count: int) -> list:
    """The members the strongest low-FPR attack (`attack`) is most sure about."""
    if count == 0:
        return []
    threshold = results[attack]["tpr_at_fpr"][0]["threshold"]
    positions = np.flatnonzero(is_member)
    ranked = positions[np.argsort(-scores[attack][positions], kind="stable")][:count]
    return [{"position": int(p), "attack": attack, "score": float(scores[attack][p]),
             "class": class_names[labels[p]] if class_names else int(labels[p]),
             "above_0.1%_fpr_threshold": bool(scores[attack][p] > threshold)} for p in ranked]
