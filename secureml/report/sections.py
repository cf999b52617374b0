"""What the report shows, independent of the output format.

`build_sections(document, plots=True)` turns the report document into a tree of `Section`s made
of blocks (paragraphs, tables, key/value lists, plots). The Markdown and HTML writers only
render that tree, so both formats always show the same numbers. Sections this module does not
know (a capability added later) are shown as generic key/value tables.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from .. import status as run_status
from ..audit.records import EXCERPT
from ..audit.scorecard import lookup
from ..audit.verdict import headline
from . import plots as P
from .document import label

KNOWN_SECTIONS = {"schema_version", "run", "variant", "model", "defences", "test", "train",
                  "cost", "training", "data", "environment", "privacy", "membership",
                  "robustness", "he"}
# Stages of a variant (secureml.status) and the report section that shows each one's results.
STAGE_TITLES = {"training": "Training", "test": "Test metrics",
                "robustness": "Adversarial robustness", "membership": "Membership inference",
                "he": "Encrypted inference"}
ATTACK_NAMES = {"loss": "loss threshold", "confidence": "confidence threshold",
                "entropy": "entropy threshold", "shadow": "shadow models (Shokri)",
                "lira_offline": "LiRA offline", "lira_online": "LiRA online"}


@dataclass
class Block:
    kind: str                     # "text", "note", "table", "plot"
    text: str = ""
    columns: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    status_column: int | None = None  # a table column holding pass/warn/fail
    plot_id: str = ""
    png: bytes | None = None


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)
    children: list["Section"] = field(default_factory=list)

    def text(self, text: str, note: bool = False) -> None:
        self.blocks.append(Block("note" if note else "text", text=text))

    def table(self, columns: list[str], rows: list[list], status_column: int | None = None):
        if rows:
            self.blocks.append(Block("table", columns=columns,
                                     rows=[[fmt(v) for v in r] for r in rows],
                                     status_column=status_column))

    def values(self, items: list[tuple[str, Any]]) -> None:
        self.table(["field", "value"], [[k, v] for k, v in items if v is not None])

    def plot(self, plot_id: str, title: str, png: bytes | None) -> None:
        if png is not None:
            self.blocks.append(Block("plot", text=title, plot_id=plot_id, png=png))


def slug(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", "-".join(str(p) for p in parts)).strip("-").lower()


def fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:
            return "nan"
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float, str)) for v in value):
        if all(isinstance(v, float) for v in value) and len(value) == 2:
            return f"[{value[0]:.4g}, {value[1]:.4g}]"
        text = ", ".join(fmt(v) for v in value)
        return text if len(text) < 200 else text[:197] + "..."
    if isinstance(value, (dict, list)):
        text = json.dumps(value, default=str)
        return text if len(text) < 200 else text[:197] + "..."
    return str(value)


def pct(value) -> str | None:
    return None if value is None else f"{100 * value:.2f}%"


def flatten(value, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts as dotted keys, for generic key/value tables."""
    if isinstance(value, dict):
        items = []
        for key, child in value.items():
            items.extend(flatten(child, f"{prefix}.{key}" if prefix else str(key)))
        return items
    return [(prefix, value)]


def build_sections(document: dict, with_plots: bool = True) -> list[Section]:
    runs = document["runs"]
    sections = [_verdict(document), _summary(document, with_plots), _scorecards(document)]
    if document.get("raw_examples"):
        notice = Section("raw-examples", "Not for sharing: raw training examples")
        notice.text("This report contains raw training examples; do not share it. They are in: "
                    + ", ".join(document["raw_examples"]) + " (audit.include_examples: true).",
                    note=True)
        sections.insert(0, notice)
    for run in runs:
        sections.append(_data(run, runs, with_plots))
        for variant in run["variants"]:
            sections.append(_variant(run, variant, runs, with_plots))
    sections.append(_methods(document))
    return sections


def _verdict(document: dict) -> Section:
    s = Section("verdict", "Verdict")
    s.text("Ratings need evidence that tells them apart from noise: a value measured on a "
           "sample is rated by its confidence interval, pass or fail only when the whole "
           "interval is on one side of the policy's threshold, and 'inconclusive' when it "
           "reaches across. A run's verdict is the worse of its data audit and the variant the "
           "policy prefers.")
    for verdict in document.get("verdicts") or []:
        s.text(f"Run {headline(verdict)}.")
        s.text(verdict["why"])
        if verdict["data"]["findings"]:
            s.text("Data audit: " + "; ".join(verdict["data"]["findings"]) + ".")
        s.table(["variant", "verdict", "utility rules", "privacy and robustness ratings",
                 "findings that fail, warn or are inconclusive"],
                [[v["variant"] + (" (baseline)" if v["baseline"] else "")
                  + (" (preferred)" if v["variant"] == verdict["preferred"] else ""),
                  v["status"], "warn or fail" if not v["eligible"] else "no warn or fail",
                  ", ".join(f"{n} {k}" for k, n in v["privacy_robustness"].items()),
                  "; ".join(v["findings"]) or "none"] for v in verdict["variants"]],
                status_column=1)
    return s


def _summary(document: dict, with_plots: bool) -> Section:
    s = Section("summary", "Summary")
    runs = document["runs"]
    count = sum(len(r["variants"]) for r in runs)
    s.text(f"{count} variant(s) from {len(runs)} run folder(s): "
           + ", ".join(f"{r['name']} ({r['directory']})" for r in runs)
           + f". Findings rated with the audit policy: {document['policy']['source']}.")
    for run in runs:
        if run.get("incomplete"):
            s.text(f"INCOMPLETE RUN {run['name']}: " + "; ".join(run["incomplete"])
                   + ". What these stages measure is missing below and rated as such.")
    s.table(["variant", "model", "defences", "test acc", "acc drop vs baseline",
             "train-test gap", "epsilon", "canary eps >=", "indicative eps >=", "MIA AUC",
             "TPR @0.1% FPR", "robustness", "HE agreement", "train s", "x baseline",
             "step x plain", "scorecard"],
            [[r["variant"], r["model"], r["defences"], r["test_accuracy"], r["accuracy_drop"],
              r["accuracy_gap"], r["epsilon"], r["canary_epsilon"], r["empirical_epsilon"],
              r["mia_auc"], pct(r["mia_tpr_at_0.1%_fpr"]), r["robustness"], r["he_agreement"],
              r["train_time_s"], r["train_time_ratio"], r["step_vs_plain"],
              f"{r['status']} ({r['fails']} fail, {r['warns']} warn, "
              f"{r['inconclusive']} inconclusive)"]
             for r in document["comparison"]], status_column=16)
    s.text("Canary eps >=: the epsilon lower bound of the canary audit (a valid test of the DP "
           "guarantee at its stated confidence). Indicative eps >=: the bound from the "
           "membership attacks on the audited examples, indicative only, not a valid "
           "statistical audit.", note=True)
    if with_plots:
        curves = {}
        histories = {}
        for run in runs:
            for variant in run["variants"]:
                name = label(run, variant, runs)
                membership = variant["metrics"].get("membership") or {}
                attack = lookup(membership, "best.tpr_attack")
                if attack:
                    curves[f"{name} ({ATTACK_NAMES.get(attack, attack)})"] = lookup(
                        membership, f"attacks.{attack}.roc")
                histories[name] = variant["history"]
        s.plot("plot-roc-comparison", "Best membership attack of each variant (log-log ROC)",
               P.roc_curves(curves, "Membership inference: strongest attack per variant"))
        s.plot("plot-epsilon-comparison", "Privacy budget spent per epoch",
               P.epsilon_over_epochs(histories))
    for run in runs:
        for problem in run["problems"]:
            s.text(f"{run['name']}: {problem}", note=True)
    return s


def _scorecard_rows(rows: list[dict]) -> list[list]:
    return [[r["title"], r["value"], r["ci"], r["status"], r["threshold"], r["fact"],
             r["advice"] if r["status"] in ("warn", "fail") else r["note"]]
            for r in rows]


_SCORECARD_COLUMNS = ["finding", "value", "interval", "status", "policy", "measured at",
                      "advice or note"]


def _scorecards(document: dict) -> Section:
    s = Section("scorecard", "Risk scorecard")
    s.text("Each finding is rated against the audit policy "
           f"({document['policy']['source']}). A value measured on a sample is rated by its "
           "confidence interval (the 'interval' column, at the confidence its section states): "
           "fail or warn only if the whole interval is beyond the threshold, pass only if it "
           "is wholly within, 'inconclusive' otherwise. 'not measured' means the run did not "
           "measure it (enable the evaluation to rate it); 'not rated' means the measurement "
           "cannot be trusted enough to rate (see the note); 'interrupted', 'failed' and "
           "'running' mean the stage that measures it was configured but did not finish (see "
           "the variant's section).")
    runs = document["runs"]
    for run in runs:
        child = Section(slug("scorecard-data", run["name"]), f"Data: {run['name']}")
        child.table(_SCORECARD_COLUMNS, _scorecard_rows(run["data_scorecard"]), status_column=3)
        s.children.append(child)
        for variant in run["variants"]:
            name = label(run, variant, runs)
            child = Section(slug("scorecard", run["name"], variant["name"]),
                            f"Variant: {name} ({variant['status']['status']})")
            child.table(_SCORECARD_COLUMNS, _scorecard_rows(variant["scorecard"]),
                        status_column=3)
            s.children.append(child)
    return s


def _data(run: dict, runs: list[dict], with_plots: bool) -> Section:
    s = Section(slug("data", run["name"]), f"Data: {run['name']}")
    data = run["data"] or {}
    summary, audit = data.get("summary") or {}, data.get("audit")
    sizes = summary.get("sizes") or {}
    s.values([("data set", summary.get("name")), ("kind", summary.get("kind")),
              ("classes", summary.get("class_names")),
              ("train / validation / test", "/".join(str(sizes.get(k, "–")) for k in
                                                     ("train", "validation", "test"))),
              *[(f"source.{k}", v) for k, v in flatten(summary.get("source") or {})],
              *[(f"notes.{k}", v) for k, v in flatten(summary.get("notes") or {})]])
    if not isinstance(audit, dict) or "duplicates" not in audit:
        s.text("No data audit in this run folder (audit.data was off, or the audit did not "
               "run): `secureml audit RUN_DIR` adds it.", note=True)
        return s
    balance = audit.get("class_balance") or {}
    child = Section(slug("data", run["name"], "balance"), "Class balance")
    child.values([("largest / smallest training class", balance.get("imbalance_ratio")),
                  ("train vs test class mix (total variation)",
                   balance.get("train_test_distance")),
                  ("classes missing in train", balance.get("missing_in_train") or None)])
    if with_plots:
        child.plot(slug("plot-balance", run["name"]), "Examples per class and split",
                   P.class_balance(balance.get("counts") or {}, "Class balance"))
    s.children.append(child)
    s.children.append(_duplicates(run, audit["duplicates"]))
    s.children.append(_labels(run, audit.get("labels") or {}))
    s.children.append(_outliers(run, audit.get("outliers") or {}))
    if audit.get("personal_data"):
        s.children.append(_personal_data(run, audit["personal_data"]))
    s.text(f"Audit time: {fmt(lookup(audit, 'cost.total_s'))} s "
           f"({fmt(lookup(audit, 'cost.seconds'))}).", note=True)
    return s


def _duplicates(run: dict, dup: dict) -> Section:
    s = Section(slug("data", run["name"], "duplicates"), "Duplicates and train/test overlap")
    method = dup.get("method") or {}
    s.text(f"Exact: {method.get('exact', '?')}. Near: {method.get('near', '?')}.")
    rows = []
    for level in ("exact", "near"):
        for split, w in ((dup.get(level) or {}).get("within") or {}).items():
            rows.append([level, f"within {split}", w.get("redundant_copies"), w.get("fraction"),
                         w.get("groups"), w.get("label_conflicts")])
        for pair, a in ((dup.get(level) or {}).get("across") or {}).items():
            first, _, second = pair.partition("_")
            rows.append([level, f"{a.get('of')} examples also in {first}", a.get("examples"),
                         a.get("fraction"), None, None])
    s.table(["level", "where", "examples", "fraction", "groups", "groups with label conflicts"],
            rows)
    for pair, a in ((dup.get("near") or {}).get("across") or {}).items():
        if a.get("hash_neighbours", 0) > a.get("examples", 0):
            s.text(f"{a['hash_neighbours']} {a.get('of')} examples have an image of similar hash "
                   f"in {pair.partition('_')[0]}, {a.get('examples')} of them confirmed by the "
                   "pixel check. The others are not rated: crops and recolourings of one photo, "
                   "or different images that look alike (the data audit option "
                   "near_duplicate_threshold, raised, counts crops as copies).", note=True)
    exact, near = dup.get("exact") or {}, dup.get("near") or {}
    s.values([("distinct examples in all splits (exact)", exact.get("distinct_all")),
              ("distinct examples in all splits (near)", near.get("distinct_all")),
              ("examples in all splits", exact.get("total_all"))])
    groups = [(level, split, g) for level, report in (("exact", exact), ("near", near))
              for split, w in (report.get("within") or {}).items()
              for g in w.get("example_groups", [])]
    columns = [c for c in ("max_distance", "hashes", EXCERPT)
               if any(c in g for _, _, g in groups)]
    s.table(["level", "split", "indices of one group of copies", *columns],
            [[level, split, g.get("indices"), *[g.get(c) for c in columns]]
             for level, split, g in groups])
    pairs = [(level, a.get("of"), pair.partition("_")[0], row)
             for level, report in (("exact", exact), ("near", near))
             for pair, a in (report.get("across") or {}).items()
             for row in a.get("example_pairs", [])]
    columns = [c for c in ("distance", "hash", EXCERPT) if any(c in r for *_, r in pairs)]
    s.table(["level", "split", "index", "copy in", "its index", *columns],
            [[level, of, row.get("index"), first, row.get("match"), *[row.get(c) for c in columns]]
             for level, of, first, row in pairs])
    return s


def _labels(run: dict, labels: dict) -> Section:
    s = Section(slug("data", run["name"], "labels"), "Suspicious labels")
    if not labels.get("checked"):
        s.text(f"Not checked: {labels.get('reason', 'no result')}.", note=True)
        return s
    s.values([("method", labels.get("method")), ("examples checked", labels.get("checked")),
              ("checker accuracy (cross-validated)", labels.get("checker_accuracy")),
              ("suspicious", labels.get("suspicious")), ("fraction", labels.get("fraction")),
              ("per class", labels.get("by_class"))])
    if not labels.get("trusted"):
        s.text("The checker is too weak on this data for the count to be rated; the examples "
               "are its most confident disagreements.", note=True)
    s.table(["train index", "label", "checker suggests", "p(label)", "p(suggested)",
             *_record_columns(labels.get("examples", []))],
            [[e["index"], e["label"], e["suggested"], e["label_probability"],
              e["suggested_probability"], *_record_fields(e)]
             for e in labels.get("examples", [])])
    return s


def _record_columns(rows: list[dict]) -> list[str]:
    """The columns naming listed records: their keyed hash, and an excerpt only if present."""
    return [c for c in ("hash", EXCERPT) if any(c in r for r in rows)]


def _record_fields(row: dict) -> list:
    return [row[c] for c in ("hash", EXCERPT) if c in row]


def _outliers(run: dict, outliers: dict) -> Section:
    s = Section(slug("data", run["name"], "outliers"), "Outliers")
    s.values([("method", outliers.get("method")), ("outliers", outliers.get("outliers")),
              ("fraction", outliers.get("fraction")), ("by reason", outliers.get("by_reason")),
              ("median words", outliers.get("words_median")),
              ("most words", outliers.get("words_max"))])
    shown = outliers.get("examples", [])
    s.table(["train index", "reasons", "robust z", *_record_columns(shown)],
            [[e["index"], e["reasons"], e["score"], *_record_fields(e)] for e in shown])
    return s


def _personal_data(run: dict, found: dict) -> Section:
    s = Section(slug("data", run["name"], "personal-data"), "Personal data in text")
    rows, shown = [], []
    for split, scan in found.items():
        kinds = list((scan.get("by_type") or {}).items())
        if isinstance(scan.get("links"), dict):
            kinds.append(("links (not personal data)", scan["links"]))
        for kind, entry in kinds:
            rows.append([split, kind, entry.get("matches"), entry.get("texts")])
            shown.extend((split, kind, e) for e in entry.get("examples", []))
        rows.append([split, "any personal data", None,
                     f"{scan.get('texts_with_personal_data')} of {scan.get('texts')} "
                     f"({pct(scan.get('fraction'))})"])
    s.table(["split", "type", "matches", "texts"], rows)
    columns = _record_columns([e for *_, e in shown])
    s.table(["split", "type", "index", "masked value", *columns],
            [[split, kind, e["index"], e["masked"], *_record_fields(e)]
             for split, kind, e in shown])
    s.text("Patterns find e-mail addresses, phone numbers, IP addresses and card numbers that "
           "pass the Luhn check (personal data), and URLs (links, counted apart); names and "
           "street addresses are not detected. The data option `anonymize` replaces all of them "
           "with typed placeholders before training.", note=True)
    return s


def _variant(run: dict, variant: dict, runs: list[dict], with_plots: bool) -> Section:
    m = variant["metrics"]
    name = label(run, variant, runs)
    vid = slug("variant", run["name"], variant["name"])
    s = Section(vid, f"Variant: {name}")
    record = variant.get("run_status")
    s.values([("model", m.get("model")), ("defences", m.get("defences") or "none"),
              ("run", record and record.get("status")),
              ("scorecard", f"{variant['status']['status']} ({variant['status']['fail']} fail, "
                            f"{variant['status']['warn']} warn, "
                            f"{variant['status']['inconclusive']} inconclusive)"),
              ("folder", variant["directory"])])
    s.children.append(_test(vid, name, m, with_plots))
    s.children.append(_training(vid, name, m, variant["history"], with_plots))
    s.children.append(_generic(vid, "cost", "Cost", m.get("cost")))
    if "privacy" in m:
        s.children.append(_privacy(vid, m["privacy"], variant["history"], with_plots))
    if "membership" in m:
        s.children.append(_membership(vid, name, m["membership"], with_plots))
    if "robustness" in m:
        s.children.append(_robustness(vid, name, m["robustness"], with_plots))
    if "he" in m:
        s.children.append(_encrypted(vid, m["he"]))
    _stage_notes(s, vid, m, record)
    for key in m:
        if key not in KNOWN_SECTIONS:
            s.children.append(_generic(vid, key, f"Section '{key}'", m[key]))
    s.children.append(_generic(vid, "environment", "Environment", m.get("environment")))
    return s


def _stage_notes(s: Section, vid: str, m: dict, record: dict | None) -> None:
    """Say, in the section of each stage that did not finish, what happened to it; a stage
    whose section is missing gets a section holding only that."""
    children = {child.id: child for child in s.children}
    for stage, entry in run_status.unfinished(record).items():
        text = f"{STAGE_TITLES.get(stage, stage)}: {run_status.describe(entry, record)}."
        child = children.get(slug(vid, stage))
        if child is None:
            child = Section(slug(vid, stage), STAGE_TITLES.get(stage, f"Stage '{stage}'"))
            s.children.append(child)
        elif stage in m:
            text += " The results shown are from an earlier run of this stage that finished."
        child.blocks.insert(0, Block("text", text=text))


def _generic(vid: str, key: str, title: str, value) -> Section:
    s = Section(slug(vid, key), title)
    if isinstance(value, dict):
        s.values(flatten(value))
    elif value is None:
        s.text("Not recorded in this run folder.", note=True)
    else:
        s.values([(key, value)])
    return s


def _test(vid: str, name: str, m: dict, with_plots: bool) -> Section:
    s = Section(slug(vid, "test"), "Test metrics")
    test, train = m.get("test") or {}, m.get("train") or {}
    if not test:
        s.text("No test metrics recorded.", note=True)
        return s
    s.values([("test examples", test.get("examples")), ("test accuracy", test.get("accuracy")),
              ("test loss", test.get("loss")), ("macro F1", test.get("macro_f1")),
              ("train accuracy", train.get("accuracy")), ("train loss", train.get("loss"))])
    s.table(["class", "precision", "recall", "F1", "support"],
            [[c, v.get("precision"), v.get("recall"), v.get("f1"), v.get("support")]
             for c, v in (test.get("per_class") or {}).items()])
    if with_plots:
        s.plot(slug(vid, "plot-confusion"), "Confusion matrix (test)",
               P.confusion_matrix(test.get("confusion_matrix"),
                                  list((test.get("per_class") or {}).keys()),
                                  f"{name}: confusion matrix (test)"))
    return s


def _training(vid: str, name: str, m: dict, history: list[dict], with_plots: bool) -> Section:
    s = Section(slug(vid, "training"), "Training")
    s.values(flatten(m.get("training") or {}))
    if with_plots:
        s.plot(slug(vid, "plot-training"), "Training curves",
               P.training_curves(history, f"{name}: training curves"))
    keys = [k for k in ("loss", "accuracy", "val_loss", "val_accuracy", "epsilon",
                        "epoch_time_s") if any(k in row for row in history)]
    s.table(["epoch", *keys], [[row.get("epoch"), *[row.get(k) for k in keys]]
                               for row in history])
    return s


def _privacy(vid: str, privacy: dict, history: list[dict], with_plots: bool) -> Section:
    s = Section(slug(vid, "privacy"), "Differential privacy (DP-SGD)")
    if privacy.get("guarantee"):
        holds = privacy.get("guarantee_holds")
        s.text(f"Accounted guarantee: {privacy['guarantee']}."
               + ("" if holds is None else " It holds as stated." if holds else
                  " It does NOT hold as stated (see the notes)."))
    notes = privacy.get("notes") or []
    for note in [notes] if isinstance(notes, str) else notes:
        s.text(str(note), note=True)
    s.values([(k, v) for k, v in flatten(privacy) if k not in ("guarantee", "notes")])
    if with_plots:
        s.plot(slug(vid, "plot-epsilon"), "Epsilon spent per epoch",
               P.epsilon_over_epochs({"epsilon": history}))
    return s


def _membership(vid: str, name: str, mi: dict, with_plots: bool) -> Section:
    s = Section(slug(vid, "membership"), "Membership inference")
    settings = mi.get("settings") or {}
    s.text(f"{settings.get('members', '?')} training examples (members) against "
           f"{settings.get('non_members', '?')} examples the model never trained on "
           f"({settings.get('non_member_source', 'held out')}). An attack that cannot tell "
           f"them apart has AUC 0.5 +- {fmt(mi.get('null_auc_std'))} (one standard deviation "
           f"at this sample size) and TPR equal to its FPR.")
    attacks = mi.get("attacks") or {}
    rows = []
    for attack, r in attacks.items():
        low = {round(t["fpr"], 6): t for t in r.get("tpr_at_fpr", [])}
        at1, at10 = low.get(0.001, {}), low.get(0.01, {})
        rows.append([ATTACK_NAMES.get(attack, attack), r.get("auc"), r.get("auc_ci"),
                     r.get("advantage"), pct(at1.get("tpr")),
                     f"[{pct(at1['tpr_ci'][0])}, {pct(at1['tpr_ci'][1])}]" if at1 else None,
                     pct(at10.get("tpr")),
                     f"[{pct(at10['tpr_ci'][0])}, {pct(at10['tpr_ci'][1])}]" if at10 else None,
                     lookup(r, "empirical_epsilon.epsilon_lower_bound")])
    s.table(["attack", "AUC", "AUC 95% CI", "advantage", "TPR @0.1% FPR", "CI",
             "TPR @1% FPR", "CI", "epsilon >="], rows)
    limited = [a for a, r in attacks.items()
               if any(t.get("resolution_limited") for t in r.get("tpr_at_fpr", []))]
    if limited:
        s.text(f"With {settings.get('non_members')} non-members the smallest measurable FPR is "
               f"{pct(1 / settings['non_members']) if settings.get('non_members') else '?'}: "
               "TPR at 0.1% FPR is then the TPR at zero false positives.", note=True)
    if with_plots:
        s.plot(slug(vid, "plot-roc"), "ROC curves of every attack (log-log)",
               P.roc_curves({ATTACK_NAMES.get(a, a): r.get("roc") for a, r in attacks.items()},
                            f"{name}: membership inference ROC"))
    s.children.append(_empirical(vid, mi))
    best = lookup(mi, "best.tpr_attack")
    per_class = lookup(attacks, f"{best}.per_class") if best else None
    if per_class:
        child = Section(slug(vid, "membership-classes"),
                        f"Per class ({ATTACK_NAMES.get(best, best)})")
        child.table(["class", "members", "non-members", "AUC", "advantage"],
                    [[c, v["members"], v["non_members"], v["auc"], v["advantage"]]
                     for c, v in per_class.items()])
        s.children.append(child)
    exposed = mi.get("exposed_examples") or []
    if exposed:
        child = Section(slug(vid, "membership-exposed"), "Most exposed training examples")
        keys = [k for k in ("train_index", "class", "attack", "score",
                            "above_0.1%_fpr_threshold", "hash", EXCERPT)
                if any(k in e for e in exposed)]
        child.table(keys, [[e.get(k) for k in keys] for e in exposed])
        s.children.append(child)
    child = Section(slug(vid, "membership-settings"), "Settings and cost")
    child.values(flatten(settings) + [(f"cost.{k}", v) for k, v in flatten(mi.get("cost"))])
    s.children.append(child)
    return s


def _empirical(vid: str, mi: dict) -> Section:
    s = Section(slug(vid, "empirical-privacy"), "Empirical privacy")
    emp = mi.get("empirical_privacy") or {}
    bound, accounted = emp.get("epsilon_lower_bound"), emp.get("accounted_epsilon")
    if bound is not None:
        above = emp.get("above_accounted", emp.get("guarantee_broken"))
        verdict = (f"Indicative, not a valid statistical audit: the membership attacks give "
                   f"epsilon >= {fmt(bound)} at a nominal {pct(emp.get('confidence'))} "
                   f"(delta {fmt(emp.get('delta'))}; at most {fmt(emp.get('max_provable'))} "
                   f"with these examples), but the audited examples of one trained model are "
                   f"not independent trials, so the figure is not rated.")
        if accounted is not None:
            verdict += (f" It is above the accounted epsilon {fmt(accounted)}: run the canary "
                        f"audit (canaries: m) to test the guarantee." if above else
                        f" It is below the accounted epsilon {fmt(accounted)}.")
        s.text(verdict)
        s.values(flatten(emp))
    canaries = mi.get("canaries")
    if canaries:
        s.text(f"Canary audit (Steinke, Nasr & Jagielski 2023, one training run): "
               f"{canaries.get('canaries')} {canaries.get('kind')}, each trained on with "
               f"probability 1/2; {canaries.get('correct')} of {canaries.get('guesses')} "
               f"guesses right; with {pct(canaries.get('confidence'))} confidence epsilon >= "
               f"{fmt(canaries.get('epsilon_lower_bound'))}"
               + (" (GUARANTEE BROKEN: above the accounted epsilon)"
                  if canaries.get("guarantee_broken") else "") + ".")
        s.values([(k, v) for k, v in flatten(canaries) if not k.startswith("tpr_at_fpr")])
    return s


def _robustness(vid: str, name: str, rob: dict, with_plots: bool) -> Section:
    s = Section(slug(vid, "robustness"), "Adversarial robustness")
    if rob.get("headline"):
        s.text(f"Headline: {rob['headline']}.")
    table = rob.get("robust_accuracy") or {}
    budgets = list(dict.fromkeys(b for row in table.values() for b in row))
    s.table(["attack", *budgets], [[a, *[row.get(b) for b in budgets]]
                                   for a, row in table.items()])
    worst = rob.get("worst_case") or {}
    s.table(["budgets", "budget", "worst case over the attacks run at that budget"],
            [[norm, budget, accuracy] for norm, row in worst.items()
             for budget, accuracy in row.items()])
    every = rob.get("worst_case_all_attacks")
    if every:
        s.text(f"Worst case over every attack at its largest budget: "
               f"{pct(every.get('robust_accuracy'))} of {every.get('examples')} examples "
               f"withstand all of {', '.join(every.get('covers') or [])}.")
    if with_plots:
        s.plot(slug(vid, "plot-robustness"), "Robust accuracy against epsilon",
               P.robust_accuracy(rob.get("attacks"), rob.get("clean_accuracy"),
                                 f"{name}: robust accuracy"))
    checks = rob.get("sanity_checks") or []
    if checks:
        child = Section(slug(vid, "robustness-sanity"), "Sanity checks")
        child.table(["check", "status", "detail"],
                    [[c.get("name"), {True: "pass", False: "fail", None: "not_measured"}[
                        c.get("passed")], c.get("detail")] for c in checks], status_column=1)
        s.children.append(child)
    rest = {k: v for k, v in rob.items() if k not in ("headline", "robust_accuracy", "worst_case",
                                                     "worst_case_all_attacks", "attacks",
                                                     "sanity_checks")}
    child = Section(slug(vid, "robustness-settings"), "Settings and cost")
    child.values(flatten(rest))
    s.children.append(child)
    return s


def _encrypted(vid: str, he: dict) -> Section:
    s = Section(slug(vid, "he"), "Encrypted inference")
    if he.get("encrypted_accuracy") is not None:
        s.text(f"On {he.get('samples')} test examples the decrypted predictions agree with the "
               f"plaintext model on {pct(he.get('agreement'))} (largest logit error "
               f"{fmt(he.get('max_abs_error'))}); encrypted accuracy "
               f"{fmt(he.get('encrypted_accuracy'))}, plaintext "
               f"{fmt(he.get('plaintext_accuracy'))}.")
    packings = he.get("packings") or {}
    if isinstance(packings, dict) and packings:
        fields = list(dict.fromkeys(k for run in packings.values() for k in run))
        s.table(["packing", *packings], [[f, *[run.get(f) for run in packings.values()]]
                                         for f in fields])
    s.values([(k, v) for k, v in flatten(he) if not k.startswith("packings.")])
    return s


_METHODS = [
    ("Test metrics", "Accuracy, loss (cross-entropy from logits), macro F1, per-class "
     "precision/recall/F1 and the confusion matrix on the test split (secureml.evaluation)."),
    ("Membership inference", "Loss, confidence and entropy thresholds score each example from "
     "the target model alone; the shadow-model attack (Shokri et al. 2017) and LiRA (Carlini et "
     "al. 2022) train shadow models with the variant's own recipe. ROC AUC intervals: Hanley & "
     "McNeil; TPR intervals: Clopper-Pearson. The 0.1% FPR threshold is read off the same "
     "examples it is applied to."),
    ("Empirical epsilon", "Canary audit (rated): canaries each trained on with probability "
     "1/2 in one training run; the count of right guesses bounds epsilon at the stated "
     "confidence (Steinke, Nasr & Jagielski 2023, delta included). Membership-based figure "
     "(indicative, not rated): FPR and FNR at a threshold chosen on a separate half of the "
     "examples, each bounded above by Clopper-Pearson, through TPR <= e^eps FPR + delta; it "
     "treats the audited examples of one model as independent trials, which they are not."),
    ("Intervals", "Accuracies and agreement rates: Clopper-Pearson. Train-test gap: the train "
     "accuracy minus the test accuracy's interval. Accuracy drop against the baseline: MOVER "
     "combination of both test intervals (Zou & Donner 2008; treats them as independent, "
     "which errs towards inconclusive). Strongest membership attack: each attack's interval "
     "at a Bonferroni-corrected confidence, maximized over attacks."),
    ("Data audit", "Duplicates by hashing (raw/normalized text, 8-bit pixels); near-duplicate "
     "images: candidates from 64-bit DCT perceptual hashes (banded search), each verified by "
     "the distance of standardized 16x16 thumbnails, groups only of mutually verified "
     "copies; records named by index and keyed hash; suspicious labels by cross-validated "
     "disagreement with a linear model (low self-confidence); outliers by robust z-scores; "
     "personal data by patterns with a Luhn check for card numbers."),
    ("Scorecard", "Each rule of the audit policy compares one value of the run folder (its path "
     "is listed as 'measured at') with the policy's thresholds: by its interval where one was "
     "measured (pass, warn or fail only when the whole interval is on one side, else "
     "inconclusive), by its value otherwise."),
    ("Verdicts", "A variant's verdict is its worst rating (fail > warn > inconclusive > pass). "
     "The preferred variant: among those none of whose utility rules warn or fail, the fewest "
     "privacy and robustness ratings that fail, then warn, then are inconclusive, then the most "
     "that pass, then the smallest accounted epsilon; ties are named. The run's verdict is the "
     "worse of the data audit's and the preferred variant's."),
]


def _methods(document: dict) -> Section:
    s = Section("methods", "How the numbers were measured")
    s.table(["what", "how"], [list(row) for row in _METHODS])
    s.table(["policy rule", "category", "value at", "thresholds"],
            [[name, r["category"], r["fact"], r["threshold"]]
             for name, r in document["policy"]["rules"].items()])
    s.values([("report schema", f"{document['schema']} v{document['schema_version']}"),
              ("generated", document["generated_at"]),
              ("secureml", document["generator"]["secureml"]),
              *[(f"run folder {r['name']}", r["directory"]) for r in document["runs"]]])
    return s
