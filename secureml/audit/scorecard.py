"""The risk scorecard: every measured finding rated by an audit policy.

The policy is a YAML file of rules (the default ships as `secureml/audit/policy.yaml`, which
documents the format). A user policy lists only the rules it changes. `score(facts, policy)`
rates every rule whose fact is in `facts`; `variant_facts` and `data_facts` build those from a
run folder's files.

A value measured on a sample carries its confidence interval beside it (`<key>_ci`), and the
rule rates the interval: fail or warn only when the whole interval is beyond the threshold,
pass only when it is wholly within, otherwise `inconclusive`. Values without an interval
(true/false facts, configuration, counts over the whole data set) are rated by their value.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml

from .. import schema
from ..errors import ConfigError
from .metrics import difference_interval

# Version 2 added rule categories and interval ratings; version 1 files are read unchanged
# (their rules are rated by interval too, and a rule that replaces a default one keeps its
# category).
POLICY_VERSION = 2
READABLE_VERSIONS = (1, 2)
# running / interrupted / failed: the stage that measures the fact was meant to run but did
# not finish (secureml.status), which is neither a pass nor "not measured".
UNFINISHED = ("running", "interrupted", "failed")
STATUSES = ("pass", "warn", "fail", "inconclusive", "not_measured", "not_rated", *UNFINISHED)
# From worst to best: what a summary of several ratings shows ("incomplete": any unfinished).
SEVERITY = ("fail", "incomplete", "warn", "inconclusive", "pass")
# The fact roots that describe the data set rather than a trained variant.
DATA_ROOT = "data_audit"
# Facts shown in the report but never rated, and why.
INDICATIVE = {
    "membership.empirical_privacy": (
        "indicative, not a valid statistical audit: the audited examples of one trained model "
        "are not independent trials; the canary audit (canaries: m) tests the guarantee"),
}


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
    # What the rule is about; the run verdict prefers variants by their privacy and
    # robustness ratings among those whose utility rules pass. Data rules are always "data".
    category: Literal["privacy", "robustness", "utility", "data", "other"] | None = None

    def validate(self):
        if self.scope == "data":
            self.category = "data"
        elif self.category == "data":
            schema.fail("category", f"'data' is for data_audit facts, not '{self.fact}'; use "
                                    "privacy, robustness, utility or other")
        self.category = self.category or "other"
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

    def rate(self, value, interval: list[float] | None = None) -> str:
        """pass, warn, fail or inconclusive; a numeric value is judged by its whole interval."""
        if isinstance(value, bool) or self.fail_if is not None or self.warn_if is not None:
            if self.fail_if is not None and value == self.fail_if:
                return "fail"
            if self.warn_if is not None and value == self.warn_if:
                return "warn"
            return "pass"
        low, high = interval if interval is not None else (value, value)
        if (self.fail_above is not None and low > self.fail_above) or \
                (self.fail_below is not None and high < self.fail_below):
            return "fail"
        if (self.warn_above is not None and low > self.warn_above) or \
                (self.warn_below is not None and high < self.warn_below):
            return "warn"
        if all(high <= t for t in (self.warn_above, self.fail_above) if t is not None) and \
                all(low >= t for t in (self.warn_below, self.fail_below) if t is not None):
            return "pass"
        return "inconclusive"


@dataclass
class Policy:
    version: int = POLICY_VERSION
    rules: dict[str, Rule] = field(default_factory=dict)
    source: str = "default"

    def validate(self):
        if self.version != POLICY_VERSION:
            schema.fail("version", f"the default policy must be version {POLICY_VERSION}, "
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
        if user.get("version", POLICY_VERSION) not in READABLE_VERSIONS:
            raise ConfigError(f"{path}: this secureml reads audit policy versions "
                              f"{', '.join(map(str, READABLE_VERSIONS))}, got "
                              f"{user.get('version')}; a newer secureml wrote it, or set "
                              f"version: {POLICY_VERSION}")
        for name, rule in (user.get("rules") or {}).items():
            if rule is None:
                rules.pop(name, None)
            elif isinstance(rule, dict) and "category" not in rule and name in rules:
                rules[name] = {**rule, "category": rules[name].get("category")}
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


def _parent(document: dict, path: str) -> dict:
    """The mapping that holds the value at `path` (keys may contain dots)."""
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        parent = lookup(document, ".".join(parts[:cut]))
        if isinstance(parent, dict) and ".".join(parts[cut:]) in parent:
            return parent
    return document


def variant_facts(metrics: dict, baseline: dict | None = None,
                  is_baseline: bool = False) -> dict:
    """What rules about a trained variant read: its metrics.json plus `derived` values.

    `baseline` is the metrics.json of the run's baseline variant (`is_baseline` for the
    baseline itself). Derived intervals: the train-test gap takes the test accuracy's interval
    (the train accuracy is measured on the whole training set, not sampled); the accuracy
    drop combines both variants' test intervals (`metrics.difference_interval`).
    """
    train, test = metrics.get("train") or {}, metrics.get("test") or {}
    derived = {}
    if train.get("accuracy") is not None and test.get("accuracy") is not None:
        derived["accuracy_gap"] = train["accuracy"] - test["accuracy"]
        if test.get("accuracy_ci"):
            low, high = test["accuracy_ci"]
            derived["accuracy_gap_ci"] = [train["accuracy"] - high, train["accuracy"] - low]
            derived["confidence_level"] = test.get("confidence_level")
    base = (baseline or {}).get("test") or {}
    if is_baseline:
        derived.update(accuracy_drop=0.0, compared_with_baseline=False)
    elif base.get("accuracy") is not None and test.get("accuracy") is not None and \
            base.get("examples") == test.get("examples"):
        derived.update(accuracy_drop=base["accuracy"] - test["accuracy"],
                       compared_with_baseline=True, baseline_variant=baseline.get("variant"))
        if base.get("accuracy_ci") and test.get("accuracy_ci"):
            derived["accuracy_drop_ci"] = difference_interval(
                base["accuracy"], base["accuracy_ci"], test["accuracy"], test["accuracy_ci"])
            derived["confidence_level"] = test.get("confidence_level")
    return {**metrics, "derived": derived}


def data_facts(audit: dict | None) -> dict:
    return {DATA_ROOT: audit or {}}


def _interval(value) -> list[float] | None:
    if isinstance(value, (list, tuple)) and len(value) == 2 and \
            all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value) and \
            value[0] <= value[1]:
        return [float(value[0]), float(value[1])]
    return None


def score(facts: dict, policy: Policy, scope: str, unfinished=None) -> list[dict]:
    """Rate every rule of `scope` ("variant" or "data") against `facts`.

    `unfinished(section)` says why a section is missing when its stage did not finish
    (one of UNFINISHED, else None); a rule on such a section is rated with that.
    """
    rows = []
    for name, rule in policy.rules.items():
        if rule.scope != scope:
            continue
        value = lookup(facts, rule.fact)
        numeric = isinstance(value, (int, float, bool))
        interval = _interval(lookup(facts, rule.fact + "_ci")) if numeric else None
        confidence = _parent(facts, rule.fact).get("confidence_level") if interval else None
        indicative = next((why for prefix, why in INDICATIVE.items()
                           if rule.fact == prefix or rule.fact.startswith(prefix + ".")), None)
        note = ""
        if value is None:
            status = (unfinished and unfinished(rule.fact.split(".")[0])) or "not_measured"
        elif indicative:
            status, note = "not_rated", indicative
        elif rule.only_if is not None and not lookup(facts, rule.only_if):
            status, note = "not_rated", f"rated only where {rule.only_if} is true"
        elif not numeric:
            status = "not_rated"
        else:
            status = rule.rate(value, interval)
            if status == "inconclusive":
                note = (f"the {_level(confidence)}interval [{interval[0]:.4g}, "
                        f"{interval[1]:.4g}] reaches across the threshold ({rule.describe()}): "
                        f"the evidence does not decide; measure on more examples")
        rows.append({"rule": name, "title": rule.title or name, "category": rule.category,
                     "fact": rule.fact, "value": value if numeric else None, "ci": interval,
                     "confidence": confidence, "status": status, "threshold": rule.describe(),
                     "advice": rule.advice, "note": note})
    return rows


def _level(confidence) -> str:
    return f"{100 * confidence:g}% " if isinstance(confidence, (int, float)) else ""


def worst(statuses) -> str:
    """The summary of several ratings: the worst rating given, else not_measured."""
    present = {"incomplete" if s in UNFINISHED else s for s in statuses}
    return next((s for s in SEVERITY if s in present), "not_measured")


def summarize(rows: list[dict]) -> dict:
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    return {"status": worst(r["status"] for r in rows), **counts}
