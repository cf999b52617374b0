"""The risk scorecard: every measured finding rated pass, warn or fail by an audit policy.

The policy is a YAML file of rules (the default ships as `secureml/audit/policy.yaml`, which
documents the format). A user policy lists only the rules it changes. `score(facts, policy)`
rates every rule whose fact is in `facts`; `variant_facts` and `data_facts` build those from a
run folder's files.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from .. import schema
from ..errors import ConfigError

POLICY_VERSION = 1
STATUSES = ("pass", "warn", "fail", "not_measured", "not_rated")
# The fact roots that describe the data set rather than a trained variant.
DATA_ROOT = "data_audit"


@dataclass
class Rule:
    fact: str
    title: str = ""
    advice: str = ""
    warn_above: float | None = None
    fail_above: float | None = None
    warn_below: float | None = None
    fail_below: float | None = None
    warn_if: bool | None = None
    fail_if: bool | None = None
    only_if: str | None = None

    def validate(self):
        limits = (self.warn_above, self.fail_above, self.warn_below, self.fail_below,
                  self.warn_if, self.fail_if)
        if all(v is None for v in limits):
            schema.fail("rule", f"'{self.fact}' has no threshold: set warn_above, fail_above, "
                                "warn_below, fail_below, warn_if or fail_if")
        if None not in (self.warn_above, self.fail_above) and self.warn_above > self.fail_above:
            schema.fail("warn_above", f"{self.warn_above} is above fail_above "
                                      f"{self.fail_above}; warn must come first")
        if None not in (self.warn_below, self.fail_below) and self.warn_below < self.fail_below:
            schema.fail("warn_below", f"{self.warn_below} is below fail_below "
                                      f"{self.fail_below}; warn must come first")

    @property
    def scope(self) -> str:
        return "data" if self.fact.split(".")[0] == DATA_ROOT else "variant"

    def describe(self) -> str:
        parts = []
        for word, value in (("warn above", self.warn_above), ("fail above", self.fail_above),
                            ("warn below", self.warn_below), ("fail below", self.fail_below),
                            ("warn if", self.warn_if), ("fail if", self.fail_if)):
            if value is not None:
                parts.append(f"{word} {str(value).lower() if isinstance(value, bool) else value}")
        return ", ".join(parts)

    def rate(self, value) -> str:
        if isinstance(value, bool) or self.fail_if is not None or self.warn_if is not None:
            if self.fail_if is not None and value == self.fail_if:
                return "fail"
            if self.warn_if is not None and value == self.warn_if:
                return "warn"
            return "pass"
        if (self.fail_above is not None and value > self.fail_above) or \
                (self.fail_below is not None and value < self.fail_below):
            return "fail"
        if (self.warn_above is not None and value > self.warn_above) or \
                (self.warn_below is not None and value < self.warn_below):
            return "warn"
        return "pass"


@dataclass
class Policy:
    version: int = POLICY_VERSION
    rules: dict[str, Rule] = field(default_factory=dict)
    source: str = "default"

    def validate(self):
        if self.version != POLICY_VERSION:
            schema.fail("version", f"this secureml reads audit policy version {POLICY_VERSION}, "
                                   f"got {self.version}")


def _read(path: Path | str, where: str) -> dict:
    try:
        raw = yaml.safe_load(Path(path).read_text()) if isinstance(path, Path) else \
            yaml.safe_load(path)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{where}: cannot read the audit policy ({err})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: an audit policy is a mapping with 'version' and 'rules'")
    schema.check_keys(raw, ["version", "rules"], where)
    if not isinstance(raw.get("rules") or {}, dict):
        raise ConfigError(f"{where}.rules: expected a mapping of rule name to rule")
    return raw


def default_policy_text() -> str:
    return resources.files("secureml.audit").joinpath("policy.yaml").read_text()


def load_policy(path: str | Path | None = None) -> Policy:
    """The default policy, with the rules of the YAML file at `path` (if any) on top."""
    raw = _read(default_policy_text(), "default audit policy")
    rules = copy.deepcopy(raw["rules"])
    source = "default"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"audit policy {path} does not exist; pass a YAML file (see "
                              f"docs/audit.md) or leave it out for the default")
        user = _read(path, str(path))
        if user.get("version", POLICY_VERSION) != POLICY_VERSION:
            raise ConfigError(f"{path}: this secureml reads audit policy version "
                              f"{POLICY_VERSION}, got {user.get('version')}")
        for name, rule in (user.get("rules") or {}).items():
            if rule is None:
                rules.pop(name, None)
            else:
                rules[name] = rule
        source = str(path)
    built = {name: schema.build(Rule, rule, f"{source}: rules.{name}")
             for name, rule in rules.items()}
    return schema.build(Policy, {"version": raw["version"], "rules": built, "source": source},
                        "audit policy")


def lookup(document, path: str):
    """The value at a dotted path; keys may themselves contain dots (tpr_at_0.1%_fpr)."""
    if path == "":
        return document
    if not isinstance(document, dict):
        return None
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        key = ".".join(parts[:cut])
        if key in document:
            found = lookup(document[key], ".".join(parts[cut:]))
            if found is not None:
                return found
    return None


def variant_facts(metrics: dict) -> dict:
    """What rules about a trained variant read: its metrics.json plus derived values."""
    train, test = metrics.get("train") or {}, metrics.get("test") or {}
    derived = {}
    if train.get("accuracy") is not None and test.get("accuracy") is not None:
        derived["accuracy_gap"] = train["accuracy"] - test["accuracy"]
    return {**metrics, "derived": derived}


def data_facts(audit: dict | None) -> dict:
    return {DATA_ROOT: audit or {}}


def score(facts: dict, policy: Policy, scope: str) -> list[dict]:
    """Rate every rule of `scope` ("variant" or "data") against `facts`."""
    rows = []
    for name, rule in policy.rules.items():
        if rule.scope != scope:
            continue
        value = lookup(facts, rule.fact)
        if value is None:
            status = "not_measured"
        elif rule.only_if is not None and not lookup(facts, rule.only_if):
            status = "not_rated"
        elif not isinstance(value, (int, float, bool)):
            status = "not_rated"
        else:
            status = rule.rate(value)
        rows.append({"rule": name, "title": rule.title or name, "fact": rule.fact,
                     "value": value if isinstance(value, (int, float, bool)) else None,
                     "status": status, "threshold": rule.describe(), "advice": rule.advice})
    return rows


def summarize(rows: list[dict]) -> dict:
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    worst = "fail" if counts["fail"] else "warn" if counts["warn"] else \
        "pass" if counts["pass"] else "not_measured"
    return {"status": worst, **counts}
