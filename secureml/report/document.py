"""The report document (report.json): runs, their variants' metrics, scorecards, comparison.

Schema version 1 (docs/report.md describes every field). Everything in it comes from run
folders; the scorecard is recomputed from the metrics with the given audit policy.
"""
from __future__ import annotations

import datetime
from functools import partial
from pathlib import Path

from .. import __version__
from .. import status as run_status
from ..audit.records import contains_excerpts
from ..audit.scorecard import (Policy, data_facts, load_policy, lookup, score, summarize,
                               variant_facts)
from ..audit.verdict import run_verdict
from .rundir import read_run

REPORT_SCHEMA = "secureml.report"
REPORT_SCHEMA_VERSION = 1


def build_report(run_dirs: list[str | Path], policy: Policy | str | Path | None = None) -> dict:
    """Read the run folders and rate every finding; the content of report.json."""
    if not isinstance(policy, Policy):
        policy = load_policy(policy)
    runs = [read_run(path) for path in run_dirs]
    for run in runs:
        run["incomplete"] = run_status.incomplete(
            run.get("run_status"), {v["name"]: v.get("run_status") for v in run["variants"]})
        audit = (run["data"] or {}).get("audit")
        run["data_scorecard"] = score(data_facts(audit), policy, "data")
        run["data_status"] = summarize(run["data_scorecard"])
        for variant in run["variants"]:
            variant["scorecard"] = score(facts_of(run, variant), policy, "variant",
                                         partial(run_status.section_status,
                                                 variant.get("run_status")))
            variant["status"] = summarize(variant["scorecard"])
    return {
        "schema": REPORT_SCHEMA,
        "schema_version": REPORT_SCHEMA_VERSION,
        "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"),
        "generator": {"secureml": __version__},
        "policy": {"source": policy.source, "version": policy.version,
                   "rules": {name: {"fact": r.fact, "category": r.category,
                                    "threshold": r.describe()}
                             for name, r in policy.rules.items()}},
        "verdicts": [run_verdict(run) for run in runs],
        "runs": runs,
        "comparison": comparison(runs),
        "raw_examples": raw_examples(runs),
    }


def facts_of(run: dict, variant: dict) -> dict:
    """The facts the rules read for `variant`, compared with its run's baseline variant."""
    baseline = next((v["metrics"] for v in run["variants"] if v["name"] == run.get("baseline")),
                    None)
    return variant_facts(variant["metrics"], baseline, variant["name"] == run.get("baseline"))


def raw_examples(runs: list[dict]) -> list[str]:
    """Where the run folders hold raw training excerpts (audit.include_examples: true)."""
    found = []
    for run in runs:
        if contains_excerpts((run["data"] or {}).get("audit")):
            found.append(f"{run['name']}: data audit")
        found.extend(f"{label(run, v, runs)}: metrics" for v in run["variants"]
                     if contains_excerpts(v["metrics"]))
    return found


def label(run: dict, variant: dict, runs: list[dict]) -> str:
    """How a variant is named in tables: with its run's name when several runs are compared."""
    return f"{run['name']}/{variant['name']}" if len(runs) > 1 else variant["name"]


def comparison(runs: list[dict]) -> list[dict]:
    """One row per variant of every run: what each bought and what it cost."""
    rows = []
    for run in runs:
        for variant in run["variants"]:
            m = variant["metrics"]
            facts = facts_of(run, variant)
            rows.append({
                "variant": label(run, variant, runs),
                "model": lookup(m, "model.name"),
                "defences": ", ".join(m.get("defences") or []) or "none",
                "data": lookup(m, "data.name"),
                "test_accuracy": lookup(m, "test.accuracy"),
                "macro_f1": lookup(m, "test.macro_f1"),
                "accuracy_gap": lookup(facts, "derived.accuracy_gap"),
                "accuracy_drop": lookup(facts, "derived.accuracy_drop"),
                "epsilon": lookup(m, "privacy.epsilon"),
                "empirical_epsilon": lookup(m, "membership.empirical_privacy.epsilon_lower_bound"),
                "canary_epsilon": lookup(m, "membership.canaries.epsilon_lower_bound"),
                "mia_auc": lookup(m, "membership.best.auc"),
                "mia_tpr_at_0.1%_fpr": lookup(m, "membership.best.tpr_at_0.1%_fpr"),
                "robustness": lookup(m, "robustness.headline"),
                "he_agreement": lookup(m, "he.agreement"),
                "train_time_s": lookup(m, "cost.train_time_s"),
                "train_time_ratio": lookup(m, "cost.train_time_ratio"),
                "step_vs_plain": lookup(m, "cost.vs_plain_step.ratio"),
                "status": variant["status"]["status"],
                "fails": variant["status"]["fail"],
                "warns": variant["status"]["warn"],
                "inconclusive": variant["status"]["inconclusive"],
            })
    return rows
