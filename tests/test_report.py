"""Reports: scorecard policy, report.json/md/html from (partial) run folders, HTML rendered in
headless Chromium."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import yaml

from secureml.audit import load_policy
from secureml.audit.membership import audit_membership
from secureml.audit.metrics import clopper_pearson
from secureml.audit.scorecard import lookup, score, variant_facts
from secureml.cli import main as cli_main
from secureml.errors import ConfigError
from secureml.report import REPORT_SCHEMA_VERSION, write_report

CLASSES = ["cat", "dog", "bird"]

# Injected into a copy of report.html before rendering: records what the browser shows.
_CHECK = """<script>
window.addEventListener("load", function () {
  var plots = Array.prototype.map.call(document.querySelectorAll("figure.plot"), function (f) {
    var img = f.querySelector("img");
    return {id: f.id, loaded: img.complete && img.naturalWidth > 0, width: img.naturalWidth,
            shown: f.getBoundingClientRect().height > 0};
  });
  var sections = Array.prototype.map.call(document.querySelectorAll("section[id]"), function (s) {
    return {id: s.id, shown: s.getBoundingClientRect().height > 0};
  });
  var out = document.createElement("pre");
  out.id = "render-check";
  out.textContent = JSON.stringify({plots: plots, sections: sections,
    images: document.images.length, text: document.body.innerText.length});
  document.body.appendChild(out);
});
window.addEventListener("error", function (e) {
  document.body.setAttribute("data-render-error", String(e.message || "resource failed"));
}, true);
</script>"""


def render_in_chromium(html: Path, tmp_path: Path) -> dict:
    """What headless Chromium shows of `html`: sections, plots, errors. Skips without it."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium); "
                    "the HTML report was written but not rendered")
    page = tmp_path / "render-check.html"
    page.write_text(html.read_text(encoding="utf-8").replace("</body>", _CHECK + "</body>"),
                    encoding="utf-8")
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=10000",
         "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    match = re.search(r'<pre id="render-check">(.*?)</pre>', done.stdout, re.S)
    assert match, "the page did not finish loading in Chromium:\n" + done.stdout[:2000]
    found = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    found["error"] = re.search(r'data-render-error="([^"]*)"', done.stdout)
    return found


def assert_renders(html: Path, tmp_path: Path, sections: list[str], plots: list[str]) -> dict:
    text = html.read_text(encoding="utf-8")
    external = re.findall(r'(?:src|href)="(?!data:|#)([^"]*)"', text)
    assert not external, f"report.html must be self-contained, loads {external[:3]}"
    found = render_in_chromium(html, tmp_path)
    assert found["error"] is None, found["error"].group(1)
    hidden = [s["id"] for s in found["sections"] if not s["shown"]]
    assert not hidden, f"sections rendered without size: {hidden}"
    shown_sections = {s["id"] for s in found["sections"]}
    for section in sections:
        assert section in shown_sections, (section, sorted(shown_sections))
    loaded = {p["id"] for p in found["plots"] if p["loaded"] and p["shown"]}
    assert len(loaded) == len(found["plots"]) == found["images"], found["plots"]
    for plot in plots:
        assert plot in loaded, (plot, sorted(loaded))
    return found


def _membership_section(gap: float, accounted_epsilon: float | None = None) -> dict:
    """A real membership section: threshold attacks on a tiny model whose members have
    systematically higher confidence (by `gap`); 1,000 members, enough for the AUC interval of
    a useless attack to lie within the policy's pass range."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 3)).astype("float32")
    model = tf.keras.Sequential([tf.keras.layers.Dense(3, input_shape=(3,), use_bias=False)])
    model.layers[0].set_weights([np.eye(3, dtype="float32") * 3])
    y = x.argmax(axis=1)
    x[:1000] += gap * np.eye(3, dtype="float32")[y[:1000]]
    return audit_membership(model, (x[:1000], y[:1000]), (x[1000:], y[1000:]),
                            config={"attacks": ["loss", "confidence", "entropy"]},
                            class_names=CLASSES, accounted_epsilon=accounted_epsilon,
                            delta=1e-5 if accounted_epsilon else 0.0)


def _history(epochs: int, dp: bool = False) -> list[dict]:
    rows = []
    for e in range(1, epochs + 1):
        row = {"epoch": e, "loss": 1.0 / e, "accuracy": 1 - 0.5 / e, "val_loss": 1.1 / e,
               "val_accuracy": 0.9 - 0.5 / e, "epoch_time_s": 0.5}
        if dp:
            row["epsilon"] = 0.4 * e
        rows.append(row)
    return rows


def _metrics(variant: str, defences=(), accuracy: float = 0.8, **sections) -> dict:
    """A variant's metrics.json; the test accuracy is measured on 900 examples."""
    per_class = {c: {"precision": 0.9, "recall": 0.8, "f1": 0.85, "support": 300} for c in CLASSES}
    return {
        "schema_version": 1, "run": "synth", "variant": variant,
        "model": {"name": "image_cnn", "filters": [32, 64]}, "defences": list(defences),
        "test": {"examples": 900, "accuracy": accuracy,
                 "accuracy_ci": list(clopper_pearson(round(900 * accuracy), 900)),
                 "confidence_level": 0.95, "loss": 0.5, "macro_f1": 0.79,
                 "per_class": per_class,
                 "confusion_matrix": [[250, 30, 20], [40, 240, 20], [10, 20, 270]]},
        "train": {"examples": 300, "accuracy": 0.99, "loss": 0.05},
        "cost": {"train_time_s": 3.0, "epochs": 3, "examples_per_s": 300.0,
                 "device": {"cpu": "x86", "replicas": 1}, "train_time_ratio": 1.0},
        "training": {"config": {"epochs": 3, "batch_size": 32}, "engine": {"name": "plain"}},
        "data": {"name": "synth", "kind": "image"},
        "environment": {"seed": 0, "libraries": {"tensorflow": "2.15.1"}},
        **sections,
    }


ROBUSTNESS = {
    "headline": "PGD-20 L-inf 8/255: 31.0% robust", "data_kind": "image", "examples": 100,
    "clean_accuracy": 0.8,
    "attacks": [{"name": "fgsm", "label": "FGSM", "norm": "linf",
                 "results": [{"epsilon": 0.0, "epsilon_label": "0", "robust_accuracy": 0.8},
                             {"epsilon": 8 / 255, "epsilon_label": "8/255",
                              "robust_accuracy": 0.4}]},
                {"name": "pgd", "label": "PGD-20", "norm": "linf",
                 "results": [{"epsilon": 0.0, "epsilon_label": "0", "robust_accuracy": 0.8},
                             {"epsilon": 8 / 255, "epsilon_label": "8/255",
                              "robust_accuracy": 0.31}]}],
    "robust_accuracy": {"FGSM linf": {"0": 0.8, "8/255": 0.4},
                        "PGD-20 linf": {"0": 0.8, "8/255": 0.31}},
    "worst_case": {"linf": {"0": 0.8, "8/255": 0.3}},
    "sanity_checks": [{"name": "pgd_not_weaker_than_fgsm", "passed": True, "detail": "ok"},
                      {"name": "large_epsilon_reaches_chance", "passed": False,
                       "detail": "PGD at 0.5: 60% (chance 33%)"}],
    "violations": ["large_epsilon_reaches_chance: PGD at 0.5: 60% (chance 33%)"],
    "sanity_passed": False,
}
PRIVACY = {"epsilon": 1.2, "delta": 1e-5, "noise_multiplier": 1.1, "l2_norm_clip": 1.0,
           "sampling": "shuffle", "guarantee_holds": False,
           "guarantee": "(1.2, 1e-05)-differential privacy of the trained weights",
           "notes": ["NOT AS STATED: batches were shuffled fixed-size batches"]}


def make_run(root: Path, name: str, with_audit: bool = True) -> Path:
    """A run folder as `secureml run` writes it, including a partial (interrupted) variant."""
    run = root / name
    variants = {
        "plain": _metrics("plain", membership=_membership_section(gap=3.0),
                          fairness={"demographic_parity": 0.04, "groups": ["a", "b"]}),
        "dp": _metrics("dp", ["dp_sgd"], privacy=PRIVACY,
                       membership=_membership_section(gap=0.0, accounted_epsilon=1.2)),
        "adv": _metrics("adv", ["adversarial_training"], robustness=ROBUSTNESS,
                        he={"samples": 50, "encrypted_accuracy": 0.8, "plaintext_accuracy": 0.8,
                            "agreement": 0.98, "max_abs_error": 0.01,
                            "packings": {"single": {"samples": 10, "latency_s_per_sample": 1.5},
                                         "batched": {"samples": 50, "slots": 4096}}}),
    }
    config = {"name": name, "seed": 0, "data": {"name": "synth"},
              "variants": {v: {"model": {"name": "image_cnn"}} for v in [*variants, "broken"]},
              "audit": {"data": True, "report": True, "policy": None}}
    (run / "broken").mkdir(parents=True)
    (run / "broken" / "history.json").write_text(json.dumps(_history(1)))
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    for variant, metrics in variants.items():
        (run / variant).mkdir()
        (run / variant / "metrics.json").write_text(json.dumps(metrics))
        (run / variant / "history.json").write_text(json.dumps(_history(3, dp=variant == "dp")))
    summary = {"name": "synth", "kind": "image", "num_classes": 3, "class_names": CLASSES,
               "sizes": {"train": 300, "validation": 0, "test": 90}, "source": {"origin": "test"}}
    audit = None
    if with_audit:
        from secureml.audit import audit_dataset
        from secureml.data import Dataset
        rng = np.random.default_rng(0)
        x = rng.random((390, 8, 8, 1)).astype("float32")
        y = rng.integers(0, 3, 390)
        x[299] = x[0]
        audit = audit_dataset(Dataset("synth", "image", x[:300], y[:300], x[:0], y[:0],
                                      x[300:], y[300:], CLASSES))
    (run / "data.json").write_text(json.dumps({"summary": summary, "audit": audit}))
    return run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs"), "synth")


def test_default_policy_rates_findings(run_dir):
    policy = load_policy()
    metrics = json.loads((run_dir / "plain" / "metrics.json").read_text())
    rows = {r["rule"]: r for r in score(variant_facts(metrics), policy, "variant")}
    assert rows["membership_auc"]["status"] == "fail"       # members are far more confident
    assert rows["generalization_gap"]["value"] == pytest.approx(0.19)
    assert rows["generalization_gap"]["status"] == "fail"
    assert rows["privacy_budget"]["status"] == "not_measured"
    dp = json.loads((run_dir / "dp" / "metrics.json").read_text())
    rows = {r["rule"]: r for r in score(variant_facts(dp), policy, "variant")}
    assert rows["membership_auc"]["status"] == "pass"
    assert rows["privacy_budget"]["status"] == "pass"
    assert rows["privacy_guarantee_holds"]["status"] == "warn"
    # The membership-based epsilon bound is indicative only: no rule rates it.
    assert not any(r["fact"].startswith("membership.empirical_privacy") for r in rows.values())


def test_user_policy_overrides_and_removes_rules(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("version: 1\nrules:\n  membership_auc: {fact: membership.best.auc, "
                    "warn_above: 0.99}\n  generalization_gap: null\n"
                    "  accuracy_floor: {fact: test.accuracy, fail_below: 0.95}\n")
    policy = load_policy(path)
    assert "generalization_gap" not in policy.rules and policy.source == str(path)
    rows = {r["rule"]: r["status"] for r in score({"membership": {"best": {"auc": 0.9}},
                                                   "test": {"accuracy": 0.8}}, policy, "variant")}
    assert rows["membership_auc"] == "pass" and rows["accuracy_floor"] == "fail"


@pytest.mark.parametrize("text, message", [
    ("version: 3\nrules: {}\n", "versions 1, 2, got 3"),
    ("version: 1\nrules:\n  r: {fact: test.accuracy}\n", "no threshold"),
    ("version: 1\nrules:\n  r: {fact: a, warn_abov: 1}\n", "did you mean 'warn_above'"),
    ("version: 1\nrule: {}\n", "did you mean 'rules'"),
])
def test_bad_policy_is_refused_with_a_fix(tmp_path, text, message):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_policy(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_policy(tmp_path / "missing.yaml")


def test_lookup_handles_keys_with_dots():
    doc = {"membership": {"best": {"tpr_at_0.1%_fpr": 0.3}}, "a": {"b.c": {"d": 1}}}
    assert lookup(doc, "membership.best.tpr_at_0.1%_fpr") == 0.3
    assert lookup(doc, "a.b.c.d") == 1
    assert lookup(doc, "a.x") is None


def test_report_files_from_a_partial_run(run_dir, tmp_path):
    paths = write_report([run_dir], tmp_path / "out")
    assert [p.name for p in paths] == ["report.json", "report.md", "report.html"]
    doc = json.loads(paths[0].read_text())
    assert doc["schema"] == "secureml.report" and doc["schema_version"] == REPORT_SCHEMA_VERSION
    run = doc["runs"][0]
    assert [v["name"] for v in run["variants"]] == ["plain", "dp", "adv"]
    assert any("broken" in p and "metrics.json" in p for p in run["problems"])
    rows = {r["variant"]: r for r in doc["comparison"]}
    assert rows["dp"]["epsilon"] == 1.2 and rows["plain"]["mia_auc"] > 0.9
    assert rows["adv"]["robustness"].startswith("PGD-20") and rows["adv"]["he_agreement"] == 0.98
    assert rows["adv"]["status"] == "fail"  # failed sanity check, he agreement 0.98
    data_rows = {r["rule"]: r["status"] for r in run["data_scorecard"]}
    assert data_rows["train_test_overlap"] == "pass"
    assert data_rows["duplicate_training_examples"] == "warn"  # x[299] = x[0]
    markdown = paths[1].read_text()
    for title in ("## Summary", "## Risk scorecard", "## Data: synth", "## Variant: plain",
                  "### Membership inference", "### Differential privacy (DP-SGD)",
                  "### Adversarial robustness", "### Encrypted inference",
                  "| packing | single | batched |", "agree with the plaintext model on 98.00%",
                  "### Section 'fairness'", "demographic_parity", "NOT AS STATED",
                  "## How the numbers were measured"):
        assert title in markdown, title


def test_html_report_renders_every_section_and_plot(run_dir, tmp_path):
    html = write_report([run_dir], tmp_path / "out")[2]
    found = assert_renders(
        html, tmp_path,
        sections=["verdict", "summary", "scorecard", "data-synth", "data-synth-duplicates",
                  "variant-synth-plain", "variant-synth-plain-membership",
                  "variant-synth-plain-fairness", "variant-synth-dp-privacy",
                  "variant-synth-adv-robustness", "variant-synth-adv-he", "methods"],
        plots=["plot-roc-comparison", "plot-epsilon-comparison", "plot-balance-synth",
               "variant-synth-plain-plot-roc", "variant-synth-plain-plot-confusion",
               "variant-synth-plain-plot-training", "variant-synth-dp-plot-epsilon",
               "variant-synth-adv-plot-robustness"])
    assert found["text"] > 5000
    text = html.read_text()
    assert "status-fail" in text and "status-pass" in text and "not_measured" in text
    assert "status-inconclusive" in text


def test_only_the_canary_audit_can_break_the_guarantee(tmp_path):
    """A membership-based bound above the accounted epsilon (even one written by an older
    secureml as `guarantee_broken`, even rated by a user's rule) is indicative: never a FAIL.
    The canary audit's broken guarantee is."""
    run = make_run(tmp_path, "broken-dp", with_audit=False)
    metrics = json.loads((run / "dp" / "metrics.json").read_text())
    metrics["membership"]["empirical_privacy"].update(epsilon_lower_bound=2.0,
                                                      accounted_epsilon=1.2,
                                                      above_accounted=True,
                                                      guarantee_broken=True)
    (run / "dp" / "metrics.json").write_text(json.dumps(metrics))
    old_rule = tmp_path / "old.yaml"
    old_rule.write_text("version: 1\nrules:\n  empirical_epsilon_consistent: {fact: "
                        "membership.empirical_privacy.guarantee_broken, fail_if: true}\n")
    paths = write_report([run], run, policy=old_rule)
    doc = json.loads(paths[0].read_text())
    dp = next(v for v in doc["runs"][0]["variants"] if v["name"] == "dp")
    rows = {r["rule"]: r for r in dp["scorecard"]}
    assert rows["empirical_epsilon_consistent"]["status"] == "not_rated"
    assert "not a valid statistical audit" in rows["empirical_epsilon_consistent"]["note"]
    assert not [r for r in dp["scorecard"] if r["fact"].startswith("membership")
                and r["status"] == "fail"]
    markdown = paths[1].read_text()
    assert "Indicative, not a valid statistical audit" in markdown
    assert "GUARANTEE BROKEN" not in markdown
    # No data audit in this folder: the report says so instead of failing.
    assert "No data audit in this run folder" in markdown
    assert all(r["status"] == "not_measured" for r in doc["runs"][0]["data_scorecard"])

    metrics["membership"]["canaries"] = {
        "canaries": 500, "guesses": 100, "correct": 100, "epsilon_lower_bound": 3.5,
        "confidence": 0.95, "accounted_epsilon": 1.2, "guarantee_broken": True}
    (run / "dp" / "metrics.json").write_text(json.dumps(metrics))
    paths = write_report([run], run)
    dp = next(v for v in json.loads(paths[0].read_text())["runs"][0]["variants"]
              if v["name"] == "dp")
    assert {r["rule"]: r["status"] for r in dp["scorecard"]}["canary_epsilon_consistent"] == \
        "fail"
    assert "GUARANTEE BROKEN" in paths[1].read_text()


def test_report_survives_empty_and_odd_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    odd = tmp_path / "odd"
    (odd / "v").mkdir(parents=True)
    (odd / "config.yaml").write_text("name: odd\nvariants: {v: {}}\n")
    (odd / "data.json").write_text("{not json")
    (odd / "v" / "metrics.json").write_text(json.dumps({"test": {"accuracy": 0.5}}))
    paths = write_report([empty, odd], tmp_path / "out")
    doc = json.loads(paths[0].read_text())
    assert any("no config.yaml" in p for p in doc["runs"][0]["problems"])
    assert any("data.json" in p for p in doc["runs"][1]["problems"])
    assert doc["comparison"][0]["variant"] == "odd/v"
    assert "odd/v" in paths[2].read_text()
    with pytest.raises(ConfigError, match="not a folder"):
        write_report([tmp_path / "nowhere"], tmp_path / "out")


def test_report_command_compares_runs(tmp_path, run_dir, capsys):
    second = make_run(tmp_path, "second", with_audit=False)
    out = tmp_path / "compare"
    assert cli_main(["report", str(run_dir), str(second / "dp"), "--out", str(out)]) == 0
    assert capsys.readouterr().out.split() == [str(out / n) for n in
                                               ("report.json", "report.md", "report.html")]
    doc = json.loads((out / "report.json").read_text())
    assert [r["variant"] for r in doc["comparison"]] == ["synth/plain", "synth/dp", "synth/adv",
                                                        "second/dp"]
    assert cli_main(["report", str(tmp_path / "nowhere")]) == 2


EVIL = "<script>alert(1)</script>"


def test_markdown_shows_data_and_user_text_literally(tmp_path):
    """Class names, texts, run names and notes reach report.md as text: no HTML, no links,
    no code spans, no extra table columns."""
    markdown = pytest.importorskip("markdown")
    run = make_run(tmp_path, "evil", with_audit=False)
    names = [EVIL, "a|b", "x\n# heading `code` [link](javascript:alert(1))"]
    for variant in ("plain", "dp", "adv"):
        path = run / variant / "metrics.json"
        metrics = json.loads(path.read_text())
        test = metrics["test"]
        test["per_class"] = dict(zip(names, test["per_class"].values()))
        if variant == "adv":
            metrics["robustness"]["headline"] = f"{EVIL} a|b"
        if variant == "dp":
            metrics["privacy"]["notes"] = [f"- {EVIL}", "1. <img src=x onerror=alert(1)>"]
        path.write_text(json.dumps(metrics))
    paths = write_report([run], tmp_path / "out")
    md = paths[1].read_text()
    assert "<script" not in md and "<img" not in md and "a|b" not in md
    assert not re.search(r"(?<!\\)\]\(javascript", md) and "\n# heading" not in md
    assert "&lt;script>alert(1)&lt;/script>" in md and "a\\|b" in md
    # Every row of a table has the header's number of cells.
    for block in md.split("\n\n"):
        rows = [line for line in block.splitlines() if line.startswith("|")]
        cells = {len(re.findall(r"(?<!\\)\|", row)) for row in rows}
        assert len(cells) <= 1, block
    html = markdown.markdown(md, extensions=["tables"])
    assert "<script" not in html and "<img" not in html and "<a " not in html
    assert "<code>" not in html and "<li>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<td>a|b</td>" in html
    assert EVIL not in paths[2].read_text()  # the HTML report escapes too
