"""Experiment configs: a YAML file fully describes a run.

```yaml
name: quickstart
seed: 0
data: {name: digits}                   # secureml.data.DataConfig
model: {name: image_cnn}               # plus the model's own options
training: {epochs: 10, batch_size: 64} # secureml.training.TrainingConfig
runtime: {strategy: auto}              # devices, mixed precision, XLA, determinism
defences: {}                           # name -> parameters, applied to every variant
evaluation: {}                         # name -> parameters, run on every variant
variants:                              # optional; each overrides model/training/defences/evaluation
  plain: {}
  dp: {defences: {dp_sgd: {target_epsilon: 3}}}
audit: {}                              # data audit and report options
output: {dir: runs}
```

`load_config` validates everything up front, so a typo fails before any data is loaded, and
returns an `ExperimentConfig` whose `to_dict()` is the resolved config written to the run folder.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import registry, schema
from .audit.attacks import THRESHOLD_ATTACKS
from .data.config import DataConfig
from .errors import ConfigError
from .models import model_spec
from .training import RuntimeConfig, TrainingConfig

TOP_LEVEL_KEYS = ("name", "seed", "data", "model", "training", "runtime", "defences",
                  "evaluation", "variants", "audit", "output", "description")
VARIANT_KEYS = ("model", "training", "defences", "evaluation", "description")


@dataclass
class OutputConfig:
    dir: str = "runs"
    timestamp: bool = True
    save_model: bool = True


@dataclass
class AuditConfig:
    data: bool = True
    # Variants without an `evaluation.membership` entry still get the cheap threshold attacks
    # (loss, confidence, entropy); shadow models and LiRA run only when configured.
    membership: bool = True
    report: bool = True
    policy: str | None = None
    # The variant others are compared with (cost ratios, accuracy drop); null: the first
    # variant without defences.
    baseline: str | None = None
    # Raw training excerpts in data.json, metrics.json and the report (then not shareable);
    # off, records are listed by index and keyed hash (secureml.audit.records).
    include_examples: bool = False


@dataclass
class VariantConfig:
    name: str
    model: dict
    training: TrainingConfig
    defences: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def model_name(self) -> str:
        return self.model["name"]

    @property
    def model_options(self) -> dict:
        return {k: v for k, v in self.model.items() if k != "name"}

    def to_dict(self) -> dict:
        return {"description": self.description, "model": self.model,
                "training": schema.to_dict(self.training),
                "defences": schema.to_dict(self.defences),
                "evaluation": schema.to_dict(self.evaluation)}


@dataclass
class ExperimentConfig:
    name: str
    seed: int
    data: DataConfig
    runtime: RuntimeConfig
    variants: list[VariantConfig]
    audit: AuditConfig
    output: OutputConfig
    description: str = ""
    source: str | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "seed": self.seed,
                "data": schema.to_dict(self.data), "runtime": schema.to_dict(self.runtime),
                "variants": {v.name: v.to_dict() for v in self.variants},
                "audit": schema.to_dict(self.audit), "output": schema.to_dict(self.output)}


def load_config(source: str | Path | dict, overrides: list[str] = ()) -> ExperimentConfig:
    """Read, override (`key.path=value`, value in YAML syntax) and validate an experiment."""
    hint = ""
    if not isinstance(source, dict) and not Path(source).suffix:
        candidate = Path("experiments") / f"{source}.yaml"
        hint = f" (did you mean {candidate}?)" if candidate.is_file() else ""
    raw, path = schema.read_mapping(source, "config", TOP_LEVEL_KEYS, hint)
    for override in overrides:
        apply_override(raw, override)
    config = resolve(raw, where=str(path) if path else "config")
    config.source = str(path) if path else None
    return config


def apply_override(raw: dict, override: str) -> None:
    if "=" not in override:
        raise ConfigError(f"--set {override!r}: expected key.path=value, for example "
                          "training.epochs=3")
    key, text = override.split("=", 1)
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {override!r}: '{part}' is {child!r}, not a mapping")
        node = child
    node[parts[-1]] = value


def resolve(raw: dict, where: str = "config") -> ExperimentConfig:
    schema.check_keys(raw, list(TOP_LEVEL_KEYS), where)
    name = raw.get("name") or "experiment"
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ConfigError(f"{where}: name {name!r} must be letters, digits, '_', '.' or '-' "
                          "(it names the run folder)")
    seed = schema.coerce(schema.Seed, raw.get("seed", 0), f"{where}: seed")
    data = schema.build(DataConfig, raw.get("data"), f"{where}: data")
    base = {key: raw.get(key) or {} for key in ("model", "training", "defences", "evaluation")}
    variants_raw = raw.get("variants") or {"main": {}}
    if not isinstance(variants_raw, dict):
        raise ConfigError(f"{where}: variants: expected a mapping of variant name to overrides, "
                          "for example {plain: {}, dp: {defences: {dp_sgd: {target_epsilon: 3}}}}")
    variants = [_resolve_variant(vname, base, overrides or {}, f"{where}: variants.{vname}")
                for vname, overrides in variants_raw.items()]
    audit = schema.build(AuditConfig, raw.get("audit"), f"{where}: audit")
    names = [v.name for v in variants]
    if audit.baseline is not None and audit.baseline not in names:
        raise ConfigError(f"{where}.audit.baseline: '{audit.baseline}' is not a variant; "
                          f"name one of {', '.join(names)} or remove it (the first variant "
                          f"without defences is the baseline)")
    if audit.membership:
        for variant, overrides in zip(variants, variants_raw.values()):
            # A variant's `membership: null` opts out; only variants silent on it get the default.
            said = {**base["evaluation"], **((overrides or {}).get("evaluation") or {})}
            if "membership" not in said:
                module = registry.evaluation_module("membership")
                variant.evaluation["membership"] = schema.build(
                    module.Config, {"attacks": list(THRESHOLD_ATTACKS)},
                    f"{where}: variants.{variant.name}.evaluation.membership")
    return ExperimentConfig(
        name=name, seed=seed, data=data, variants=variants,
        runtime=schema.build(RuntimeConfig, raw.get("runtime"), f"{where}: runtime"),
        audit=audit,
        output=schema.build(OutputConfig, raw.get("output"), f"{where}: output"),
        description=str(raw.get("description") or ""))


def _resolve_variant(name, base: dict, overrides: dict, where: str) -> VariantConfig:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(name)):
        raise ConfigError(f"{where}: variant name {name!r} must be letters, digits, '_', '.' "
                          "or '-' (it names a folder)")
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}: expected a mapping with any of {', '.join(VARIANT_KEYS)}")
    schema.check_keys(overrides, list(VARIANT_KEYS), where)
    model_raw = overrides.get("model") or {}
    if not base["model"] and not model_raw:
        raise ConfigError(f"{where}: no model; set model.name (image_cnn or text_lstm) at the "
                          "top level or in every variant")
    if model_raw.get("name", base["model"].get("name")) != base["model"].get("name"):
        model = dict(model_raw)  # another architecture: the base model's options don't apply
    else:
        model = {**base["model"], **model_raw}
    model = _resolve_model(model, f"{where}.model")
    training = schema.build(TrainingConfig, {**base["training"], **(overrides.get("training") or {})},
                            f"{where}.training")
    defences = _resolve_named(base["defences"], overrides.get("defences"), registry.defence_module,
                              f"{where}.defences")
    evaluation = _resolve_named(base["evaluation"], overrides.get("evaluation"),
                                registry.evaluation_module, f"{where}.evaluation")
    return VariantConfig(name=str(name), model=model, training=training, defences=defences,
                         evaluation=evaluation, description=str(overrides.get("description") or ""))


def _resolve_model(model: dict, where: str) -> dict:
    if not isinstance(model, dict) or "name" not in model:
        raise ConfigError(f"{where}: set model.name (image_cnn or text_lstm)")
    spec = model_spec(model["name"])
    options = schema.build(spec.options, {k: v for k, v in model.items() if k != "name"}, where)
    return {"name": model["name"], **schema.to_dict(options)}


def _resolve_named(base: dict, override: dict | None, load_module, where: str) -> dict:
    """Merge name -> parameters tables; `name: null` in a variant removes a base entry."""
    if not isinstance(base, dict) or not isinstance(override or {}, dict):
        raise ConfigError(f"{where}: expected a mapping of name to parameters")
    merged = {name: dict(params or {}) for name, params in base.items()}
    for name, params in (override or {}).items():
        if params is None:
            merged.pop(name, None)
        else:
            merged[name] = {**merged.get(name, {}), **(params or {})}
    resolved = {}
    for name, params in merged.items():
        module = load_module(name)
        resolved[name] = schema.build(module.Config, params, f"{where}.{name}")
    return resolved


