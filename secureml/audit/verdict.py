"""Verdicts: what the scorecards of a run add up to, per variant and for the run.

A variant's verdict is the worst of its ratings (fail > warn > inconclusive > pass) with the
findings behind it. The run's verdict joins the data audit's verdict to the variant the policy
prefers: among the variants none of whose utility rules warn or fail, the one with the fewest
privacy and robustness ratings that fail, then that warn, then that are inconclusive, then the
most that pass, then the smallest accounted epsilon (a DP guarantee that holds as stated).
Only ratings enter the ranking, never raw point estimates: variants still tied after it are
named as tied, and the first in the run's order is the one preferred.
"""
from __future__ import annotations

import math

from .scorecard import worst

RANKED_CATEGORIES = ("privacy", "robustness")
FLAGGED = ("fail", "warn", "inconclusive")
BLOCKING = ("fail", "warn")


def describe_finding(row: dict) -> str:
    """One rating in words, e.g. 'Title: inconclusive (0.006, 95% interval [0.0012, 0.017];
    warn above 0.005, fail above 0.02)'."""
    detail = []
    if row.get("value") is not None and not isinstance(row["value"], bool):
        value = f"{row['value']:.4g}"
        if row.get("ci"):
            level = row.get("confidence")
            value += (f", {100 * level:g}% interval" if level else ", interval") + \
                f" [{row['ci'][0]:.4g}, {row['ci'][1]:.4g}]"
        detail.append(value)
    elif row.get("value") is not None:
        detail.append(str(row["value"]).lower())
    if row.get("threshold"):
        detail.append(row["threshold"])
    return f"{row['title']}: {row['status']}" + (f" ({'; '.join(detail)})" if detail else "")


def variant_verdict(variant: dict, baseline: str | None) -> dict:
    """The verdict of one variant of a report document (its `scorecard` and `metrics`)."""
    rows = variant["scorecard"]
    ranked = [r for r in rows if r["category"] in RANKED_CATEGORIES]
    blocking = [r for r in rows if r["category"] == "utility" and r["status"] in BLOCKING]
    privacy = variant["metrics"].get("privacy") or {}
    epsilon = privacy.get("epsilon") if privacy.get("guarantee_holds") else None
    return {
        "variant": variant["name"],
        "status": worst(r["status"] for r in rows),
        "baseline": variant["name"] == baseline,
        "eligible": not blocking,
        "blocked_by": [describe_finding(r) for r in blocking],
        "findings": [describe_finding(r) for r in rows if r["status"] in FLAGGED],
        "privacy_robustness": {s: sum(r["status"] == s for r in ranked)
                               for s in ("fail", "warn", "inconclusive", "pass")},
        "accounted_epsilon": epsilon,
    }


def _rank(verdict: dict) -> tuple:
    c = verdict["privacy_robustness"]
    epsilon = verdict["accounted_epsilon"]
    return (c["fail"], c["warn"], c["inconclusive"], -c["pass"],
            math.inf if epsilon is None else epsilon)


def run_verdict(run: dict) -> dict:
    """The verdict of one run of a report document: data, every variant, the preferred one."""
    variants = [variant_verdict(v, run.get("baseline")) for v in run["variants"]]
    data_rows = run.get("data_scorecard") or []
    data = {"status": worst(r["status"] for r in data_rows),
            "findings": [describe_finding(r) for r in data_rows if r["status"] in FLAGGED]}
    eligible = sorted((v for v in variants if v["eligible"]), key=_rank)
    preferred = eligible[0] if eligible else None
    tied = [v["variant"] for v in eligible[1:] if _rank(v) == _rank(preferred)]
    if preferred is not None:
        status = worst([data["status"], preferred["status"]])
    else:
        status = "fail" if variants else worst([data["status"]])
    return {"run": run["name"], "status": status, "data": data,
            "baseline": run.get("baseline"),
            "preferred": preferred["variant"] if preferred else None, "tied_with": tied,
            "why": _why(preferred, eligible, tied, variants), "variants": variants}


def _why(preferred: dict | None, eligible: list[dict], tied: list[str],
         variants: list[dict]) -> str:
    excluded = "; ".join(f"{v['variant']} ({', '.join(v['blocked_by'])})"
                         for v in variants if not v["eligible"])
    if preferred is None:
        return ("No variant to prefer: " + (f"every variant has a utility rule that warns or "
                                            f"fails: {excluded}." if variants else
                                            "the run has no variant with results."))
    c = preferred["privacy_robustness"]
    counts = f"{c['fail']} fail, {c['warn']} warn, {c['inconclusive']} inconclusive, " \
             f"{c['pass']} pass"
    if len(eligible) == 1:
        text = (f"{preferred['variant']} is the only variant none of whose utility rules warn "
                f"or fail; its privacy and robustness ratings: {counts}.")
    else:
        text = (f"Of the {len(eligible)} variants none of whose utility rules warn or fail, "
                f"{preferred['variant']} has the best privacy and robustness ratings "
                f"({counts})")
        epsilon = preferred["accounted_epsilon"]
        rival = next((v for v in eligible[1:] if _rank(v)[:4] == _rank(preferred)[:4]), None)
        if rival is not None and epsilon is not None and rival["variant"] not in tied:
            text += f" and, among those rated alike, the smallest accounted epsilon ({epsilon:.3g})"
        text += "."
    if tied:
        text += (f" Tied on every rating with {', '.join(tied)}: the ratings do not tell them "
                 f"apart, and the first in the run is named.")
    if excluded:
        text += f" Not preferred because a utility rule warns or fails: {excluded}."
    return text


def headline(verdict: dict) -> str:
    """The run verdict in one line, e.g. 'quickstart: WARN; preferred variant: dp (warn);
    data audit: pass'."""
    preferred = next((v for v in verdict["variants"] if v["variant"] == verdict["preferred"]),
                     None)
    text = f"{verdict['run']}: {verdict['status'].upper()}; preferred variant: " + \
        (f"{preferred['variant']} ({preferred['status']})" if preferred else "none")
    data = verdict["data"]
    text += f"; data audit: {data['status'].replace('_', ' ')}"
    if data["findings"]:
        text += f" ({len(data['findings'])} finding(s) fail, warn or are inconclusive)"
    return text
