"""Where each named defence and evaluation lives.

A run config names defences (`defences: {dp_sgd: {...}}`) and evaluations
(`evaluation: {robustness: {...}}`); this table maps each name to the module that implements
it. Modules are imported only when a config uses them, so `import secureml` stays light and
an unused capability's dependencies (TenSEAL, say) are never loaded.

A defence module exposes `Config` (a dataclass of its parameters) and
`make(config, data_kind) -> Defence` (see `secureml.training.Defence`).
An evaluation module exposes `Config`, `SECTION` (its metrics.json section name) and
`evaluate(context, config) -> dict` (see `secureml.runner.VariantContext`).
Evaluations run in the order listed here: deployment (encrypted inference) last.
"""
import importlib
from types import ModuleType

from .errors import ConfigError

DEFENCES = {
    "adversarial_training": "secureml.defences.adversarial",
    "dp_sgd": "secureml.defences.dp_sgd",
}

EVALUATIONS = {
    "robustness": "secureml.attacks.robustness",
    "membership": "secureml.audit.membership",
    "encrypted_inference": "secureml.he.stage",
}


def _load(table: dict, kind: str, name: str) -> ModuleType:
    if name not in table:
        raise ConfigError(f"unknown {kind} '{name}'; available: {', '.join(table)}")
    try:
        return importlib.import_module(table[name])
    except ModuleNotFoundError as err:
        if err.name and err.name.startswith(table[name]):
            raise ConfigError(f"{kind} '{name}' is not available in this secureml version") \
                from None
        raise


def defence_module(name: str) -> ModuleType:
    return _load(DEFENCES, "defence", name)


def evaluation_module(name: str) -> ModuleType:
    return _load(EVALUATIONS, "evaluation", name)
