"""Verdicts that can be trusted: intervals decide ratings, only valid audits rate the DP
guarantee, utility rules, per-variant and per-run verdicts, a budget that leaves nothing to
learn flagged before training, and a tiny real run end to end."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import yaml

from secureml.audit import load_policy, one_run_epsilon_lower_bound
from secureml.audit.membership import audit_membership
from secureml.audit.metrics import clopper_pearson, difference_interval
from secureml.audit.scorecard import Rule, score, variant_facts
from secureml.config import load_config
from secureml.errors import ConfigError
from secureml.report import build_report, write_report

# An "attack target" whose inputs are its logits: the audited examples' scores are set exactly.
IDENTITY = tf.keras.Sequential([tf.keras.layers.Lambda(lambda t: t, input_shape=(2,))])
THRESHOLD_ATTACKS = ["loss", "confidence", "entropy"]


def membership(members: int, identified: int, non_members: int = 1000) -> dict:
    """A real membership section in which exactly `identified` members score above every
    non-member (so TPR at 0.1% FPR is identified / members for every attack)."""
    inside = np.zeros((members, 2), "float32")
    inside[:identified, 0] = 20.0
    outside = np.tile(np.float32([1.0, 0.0]), (non_members, 1))
    return audit_membership(IDENTITY, (inside, np.zeros(members, int)),
                            (outside, np.zeros(non_members, int)),
                            config={"attacks": THRESHOLD_ATTACKS, "exposed_examples": 0})


def rating(facts: dict, rule: str) -> dict:
    return {r["rule"]: r for r in score(facts, load_policy(), "variant")}[rule]


def test_clopper_pearson_on_the_readme_case():
    # 3 of 500 members at 0.1% FPR: 0.6% measured, but the interval holds the 0.5% threshold.
    low, high = clopper_pearson(3, 500)
    assert (low, high) == pytest.approx((0.001239, 0.017434), abs=2e-6)


@pytest.mark.parametrize("members, identified, expected", [
    (500, 3, "inconclusive"),    # the README's DP variant: one or two examples decide
    (504, 0, "inconclusive"),    # the README's plain variant: 0 of 504 cannot show < 0.5%
    (500, 60, "fail"),           # 12%: clearly above the 2% fail threshold
    (2000, 0, "pass"),           # enough members to show the rate is below 0.5%
])
def test_tpr_at_low_fpr_is_rated_by_its_interval(members, identified, expected):
    section = membership(members, identified)
    best = section["best"]
    assert best["tpr_at_0.1%_fpr"] == pytest.approx(identified / members)
    low, high = best["tpr_at_0.1%_fpr_ci"]
    assert low <= identified / members <= high
    assert best["members"] == members and best["non_members"] == 1000
    # Bonferroni over the three attacks: wider than one attack's 95% interval.
    single = clopper_pearson(identified, members)
    assert low <= single[0] and high >= single[1]
    row = rating({"membership": section}, "membership_low_fpr")
    assert row["status"] == expected, row
    assert row["ci"] == [low, high] and row["confidence"] == 0.95


@pytest.mark.parametrize("interval, expected", [
    ([0.001, 0.004], "pass"), ([0.003, 0.01], "inconclusive"), ([0.006, 0.015], "warn"),
    ([0.01, 0.03], "warn"), ([0.021, 0.05], "fail"), ([0.004, 0.03], "inconclusive"),
])
def test_a_rule_fires_only_when_the_whole_interval_clears_it(interval, expected):
    rule = Rule(fact="x", warn_above=0.005, fail_above=0.02)
    assert rule.rate(sum(interval) / 2, interval) == expected
    below = Rule(fact="x", warn_below=0.995, fail_below=0.99)
    assert below.rate(1.0, [0.9898, 1.0]) == "inconclusive"  # 360 of 360 cannot show 99.5%
    assert below.rate(0.9, [0.85, 0.95]) == "fail"
    # Without an interval (a configuration fact) the value alone decides, as before.
    assert rule.rate(0.006) == "warn" and rule.rate(0.004) == "pass"


def test_difference_interval_reduces_to_the_uncertain_side():
    assert difference_interval(0.9, [0.9, 0.9], 0.6, [0.5, 0.7]) == pytest.approx([0.2, 0.4])
    low, high = difference_interval(0.9, [0.85, 0.94], 0.6, [0.55, 0.65])
    assert low < 0.3 < high and high - low > 0.1


def _test_section(accuracy: float, examples: int) -> dict:
    return {"examples": examples, "accuracy": accuracy, "confidence_level": 0.95,
            "accuracy_ci": list(clopper_pearson(round(accuracy * examples), examples))}


def test_a_large_accuracy_drop_fails_the_utility_rule():
    plain = {"variant": "plain", "test": _test_section(0.98, 540)}
    dp = {"variant": "dp", "test": _test_section(0.65, 540), "defences": ["dp_sgd"]}
    row = rating(variant_facts(dp, plain), "accuracy_drop")
    assert row["value"] == pytest.approx(0.33) and row["status"] == "fail"
    assert row["ci"][0] > 0.15 and row["category"] == "utility"
    # A 6-point drop on 60 test examples cannot be told apart from noise.
    small = rating(variant_facts({"test": _test_section(0.9, 60)},
                                 {"test": _test_section(0.96, 60)}), "accuracy_drop")
    assert small["status"] == "inconclusive"
    # The baseline is not compared with itself; another test set is not comparable.
    assert rating(variant_facts(plain, plain, is_baseline=True), "accuracy_drop")["status"] \
        == "not_rated"
    other = {"variant": "plain", "test": _test_section(0.98, 100)}
    assert rating(variant_facts(dp, other), "accuracy_drop")["status"] == "not_measured"


def _write_run(root: Path, variants: dict, audit: dict | None = None,
               baseline: str | None = None) -> Path:
    root.mkdir(parents=True)
    config = {"name": root.name, "variants": {name: {} for name in variants},
              "audit": {"baseline": baseline}}
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    (root / "data.json").write_text(json.dumps({"summary": {}, "audit": audit}))
    for name, metrics in variants.items():
        (root / name).mkdir()
        (root / name / "metrics.json").write_text(json.dumps({"variant": name, **metrics}))
    return root


def _variant(accuracy: float, identified: int, dp_epsilon: float | None = None) -> dict:
    metrics = {"defences": ["dp_sgd"] if dp_epsilon else [],
               "test": _test_section(accuracy, 3000), "train": {"accuracy": accuracy},
               "membership": membership(504, identified, 504)}
    if dp_epsilon:
        metrics["privacy"] = {"epsilon": dp_epsilon, "guarantee_holds": True,
                              "signal_to_noise": 6.0}
    return metrics


CLEAN_DATA = {"duplicates": {"near": {"within": {"train": {"fraction": 0.0,
                                                           "label_conflicts": 0}},
                                      "across": {"train_test": {"fraction": 0.0}}}},
              "class_balance": {"imbalance_ratio": 1.1}, "outliers": {"fraction": 0.0}}


def test_quickstart_shaped_run_is_inconclusive_not_worse_for_dp(tmp_path):
    """The README's case: plain 0/504, DP 3/504 identified at 0.1% FPR. Neither rating tells
    them apart from noise, so DP is never rated worse than plain on it."""
    run = _write_run(tmp_path / "quickstart", {"plain": _variant(0.98, 0),
                                               "dp": _variant(0.975, 3, dp_epsilon=3.0)},
                     CLEAN_DATA)
    doc = build_report([run])
    rows = {v["name"]: {r["rule"]: r["status"] for r in v["scorecard"]}
            for v in doc["runs"][0]["variants"]}
    assert rows["plain"]["membership_low_fpr"] == rows["dp"]["membership_low_fpr"] == \
        "inconclusive"
    verdict = doc["verdicts"][0]
    by_name = {v["variant"]: v for v in verdict["variants"]}
    assert by_name["plain"]["baseline"] and by_name["dp"]["eligible"]
    # Rated alike on membership; DP's accounted guarantee puts it first.
    assert verdict["preferred"] == "dp", verdict["why"]
    assert verdict["status"] == "inconclusive"
    assert doc["comparison"][0]["inconclusive"] >= 1


def test_evidence_ranks_a_leaky_plain_model_below_dp(tmp_path):
    run = _write_run(tmp_path / "leaky", {"plain": _variant(0.98, 60),
                                          "dp": _variant(0.975, 1, dp_epsilon=8.0)}, CLEAN_DATA)
    verdict = build_report([run])["verdicts"][0]
    by_name = {v["variant"]: v for v in verdict["variants"]}
    assert by_name["plain"]["status"] == "fail"
    assert by_name["plain"]["privacy_robustness"]["fail"] >= 1
    assert by_name["dp"]["privacy_robustness"]["fail"] == 0
    assert verdict["preferred"] == "dp" and "best privacy and robustness" in verdict["why"]


def test_a_dp_variant_that_lost_its_accuracy_is_not_preferred(tmp_path):
    run = _write_run(tmp_path / "costly", {"plain": _variant(0.98, 0),
                                           "dp": _variant(0.65, 0, dp_epsilon=3.0)}, CLEAN_DATA)
    verdict = build_report([run])["verdicts"][0]
    dp = next(v for v in verdict["variants"] if v["variant"] == "dp")
    assert dp["status"] == "fail" and not dp["eligible"]
    assert any("Test accuracy lost" in f for f in dp["blocked_by"])
    assert verdict["preferred"] == "plain" and "dp (Test accuracy lost" in verdict["why"]


def test_run_verdict_reaches_a_data_audit_fail(tmp_path):
    overlap = json.loads(json.dumps(CLEAN_DATA))
    overlap["duplicates"]["near"]["across"]["train_test"]["fraction"] = 0.05
    run = _write_run(tmp_path / "overlap", {"plain": _variant(0.98, 0),
                                            "dp": _variant(0.975, 0, dp_epsilon=3.0)}, overlap)
    doc = build_report([run])
    verdict = doc["verdicts"][0]
    assert verdict["status"] == "fail" and verdict["data"]["status"] == "fail"
    assert any(f.startswith("Test examples also in the training set: fail")
               for f in verdict["data"]["findings"])


def test_verdict_heads_the_report(tmp_path):
    overlap = json.loads(json.dumps(CLEAN_DATA))
    overlap["duplicates"]["near"]["across"]["train_test"]["fraction"] = 0.05
    run = _write_run(tmp_path / "overlap", {"plain": _variant(0.98, 0)}, overlap)
    from test_report import make_run
    real = make_run(tmp_path, "synth")
    paths = write_report([run, real], tmp_path / "out")
    markdown = paths[1].read_text()
    assert markdown.index("## Verdict") < markdown.index("## Summary")
    verdict = markdown[markdown.index("## Verdict"):markdown.index("## Summary")]
    assert "Run overlap: FAIL; preferred variant: plain" in verdict
    assert "Test examples also in the training set: fail" in verdict
    assert "Run synth: " in verdict and "inconclusive" in verdict
    assert "status-inconclusive" in paths[2].read_text()


def test_the_named_baseline_is_the_reference(tmp_path):
    run = _write_run(tmp_path / "named", {"plain": _variant(0.98, 0),
                                          "dp": _variant(0.80, 0, dp_epsilon=3.0)},
                     CLEAN_DATA, baseline="dp")
    doc = build_report([run])
    assert doc["runs"][0]["baseline"] == "dp"
    plain = next(v for v in doc["runs"][0]["variants"] if v["name"] == "plain")
    drop = {r["rule"]: r for r in plain["scorecard"]}["accuracy_drop"]
    assert drop["value"] == pytest.approx(-0.18) and drop["status"] == "pass"
    config = {"name": "x", "data": {"name": "digits"}, "model": {"name": "image_cnn"},
              "variants": {"plain": {}}, "audit": {"baseline": "dpp"}}
    with pytest.raises(ConfigError, match="audit.baseline: 'dpp' is not a variant"):
        load_config(config)


def test_one_run_bound_matches_the_theorem():
    """All r guesses right under pure DP: the bound solves q^r = alpha with q = e^eps/(1+e^eps)
    (Steinke, Nasr & Jagielski 2023); and it is valid: an eps-DP guesser (randomized response)
    exceeds its epsilon in at most about alpha of the audits."""
    q = 0.05 ** (1 / 200)
    assert one_run_epsilon_lower_bound(1000, 200, 200) == pytest.approx(math.log(q / (1 - q)),
                                                                        abs=1e-6)
    rng = np.random.default_rng(0)
    epsilon, guesses = 1.0, 200
    right = rng.binomial(guesses, math.exp(epsilon) / (1 + math.exp(epsilon)), size=300)
    bounds = np.array([one_run_epsilon_lower_bound(1000, guesses, int(c)) for c in right])
    assert np.mean(bounds > epsilon) <= 0.08
    assert np.median(bounds) > 0.4 * epsilon  # and not vacuous


def test_nothing_to_learn_budget_is_flagged_before_training(capsys, digits):
    from secureml.defences.dp_sgd import make
    from secureml.models import build_model
    from secureml.training import TrainingConfig, TrainingSetup

    x, y = digits[0][:270], digits[1][:270]
    model = build_model("image_cnn", x.shape[1:], 10)
    setup = TrainingSetup(model=model, config=TrainingConfig(epochs=30, batch_size=64),
                          num_examples=len(y), strategy=tf.distribute.get_strategy())
    defence = make({"target_epsilon": 0.01}, "image")
    defence.apply(setup)  # the plan, before any training step
    err = capsys.readouterr().err
    assert "secureml: warning: dp_sgd: noise multiplier" in err and "learn next to nothing" in err
    assert defence.signal_to_noise < 0.01
    # A budget that leaves something to learn is not flagged.
    defence = make({"target_epsilon": 8}, "image")
    defence.apply(TrainingSetup(model=build_model("image_cnn", x.shape[1:], 10),
                                config=TrainingConfig(epochs=30, batch_size=64),
                                num_examples=1300, strategy=tf.distribute.get_strategy()))
    assert "warning" not in capsys.readouterr().err and defence.signal_to_noise > 3


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run of the README's shape in seconds: 270 digits, a plain variant and DP-SGD at
    epsilon 0.01, threshold membership attacks; the log is captured."""
    import contextlib
    import io

    from secureml.runner import run_experiment
    config = {"name": "tiny", "seed": 0, "data": {"name": "digits", "limit": 300},
              "model": {"name": "image_cnn"}, "training": {"epochs": 3, "batch_size": 64},
              "evaluation": {"membership": {"attacks": THRESHOLD_ATTACKS,
                                            "target_examples": 100}},
              "variants": {"plain": {}, "dp": {"defences": {"dp_sgd": {"target_epsilon": 0.01}},
                                               "training": {"epochs": 1}}},
              "output": {"timestamp": False}}
    log = io.StringIO()
    with contextlib.redirect_stderr(log):
        run = run_experiment(load_config(config), out_dir=tmp_path_factory.mktemp("runs"),
                             progress=True).directory
    return run, log.getvalue()


def test_tiny_run_end_to_end(tiny_run):
    run, log = tiny_run
    warning = log.index("secureml: warning: dp_sgd: noise multiplier")
    assert log.index("variant 'dp': training") < warning < log.index("[dp] epoch 1/1")
    assert "verdict: tiny: " in log
    plain = json.loads((run / "plain" / "metrics.json").read_text())
    low, high = plain["test"]["accuracy_ci"]
    assert low < plain["test"]["accuracy"] < high and plain["test"]["confidence_level"] == 0.95
    best = plain["membership"]["best"]
    assert best["auc_ci"][0] <= best["auc"] <= best["auc_ci"][1]
    assert best["members"] == 100 and "Bonferroni" in best["ci_method"]
    dp = json.loads((run / "dp" / "metrics.json").read_text())
    assert dp["privacy"]["signal_to_noise"] < 1
    assert any(n.startswith("NOTHING TO LEARN") for n in dp["privacy"]["notes"])
    doc = json.loads((run / "report.json").read_text())
    rows = {v["name"]: {r["rule"]: r for r in v["scorecard"]} for v in doc["runs"][0]["variants"]}
    assert rows["dp"]["dp_signal_to_noise"]["status"] == "fail"
    assert rows["dp"]["accuracy_drop"]["value"] == pytest.approx(
        plain["test"]["accuracy"] - dp["test"]["accuracy"])
    # 100 members cannot show a TPR below 0.5% at 0.1% FPR.
    assert rows["plain"]["membership_low_fpr"]["status"] in ("inconclusive", "fail")
    verdict = doc["verdicts"][0]
    assert verdict["baseline"] == "plain" and verdict["preferred"] == "plain"
    assert not next(v for v in verdict["variants"] if v["variant"] == "dp")["eligible"]
    assert (run / "report.md").read_text().index("## Verdict") < \
        (run / "report.md").read_text().index("## Summary")


def test_version_1_policies_stay_valid(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("version: 1\nrules:\n  membership_auc: {fact: membership.best.auc, "
                    "warn_above: 0.6}\n  floor: {fact: test.accuracy, fail_below: 0.9}\n")
    policy = load_policy(path)
    assert policy.rules["membership_auc"].category == "privacy"  # kept from the default
    assert policy.rules["floor"].category == "other"
    assert policy.rules["outliers"].category == "data"
    # Its rules are rated by interval too: 0.85 measured on 100 examples may be above 0.9.
    rows = {r["rule"]: r["status"] for r in score(
        {"test": _test_section(0.85, 100)}, policy, "variant")}
    assert rows["floor"] == "inconclusive"
    path.write_text("version: 2\nrules:\n  r: {fact: test.accuracy, fail_below: 0.9, "
                    "category: data}\n")
    with pytest.raises(ConfigError, match="'data' is for data_audit facts"):
        load_policy(path)
