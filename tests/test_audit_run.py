"""End to end: `secureml run` with the membership evaluation (plain and DP-SGD variants),
then `secureml audit` on the run folder, then the report rendered in headless Chromium."""
import json

import pytest

from secureml import registry
from secureml.cli import main as cli_main
from secureml.config import load_config
from secureml.errors import ConfigError
from secureml.runner import run_experiment
from test_report import assert_renders


def _available(kind: str, name: str) -> bool:
    try:
        (registry.defence_module if kind == "defence" else registry.evaluation_module)(name)
        return True
    except ConfigError:
        return False


DP = _available("defence", "dp_sgd")
ROBUSTNESS = _available("evaluation", "robustness")
DP_EPSILON = 1.0


def _config() -> dict:
    variants = {"plain": {}}
    if ROBUSTNESS:
        variants["plain"]["evaluation"] = {"robustness": {
            "examples": 40, "attacks": ["fgsm", "pgd"], "epsilons": [0, 0.1], "steps": 5}}
    if DP:
        variants["dp"] = {
            "defences": {"dp_sgd": {"target_epsilon": DP_EPSILON}},
            # DP shadow models each calibrate their own noise: slow; thresholds suffice here.
            "evaluation": {"membership": {"attacks": ["loss", "confidence", "entropy"],
                                          "canaries": 200}}}
    return {
        "name": "audit-e2e", "seed": 0, "data": {"name": "digits"},
        "model": {"name": "image_cnn"},
        "training": {"epochs": 4, "batch_size": 64, "learning_rate": 0.003},
        "evaluation": {"membership": {
            "attacks": ["loss", "confidence", "entropy", "shadow", "lira_offline"],
            "shadow_models": 2, "shadow_epochs": 2, "target_examples": 150}},
        "variants": variants,
        "output": {"timestamp": False},
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    result = run_experiment(load_config(_config()), out_dir=out, progress=False)
    return result.directory


def test_run_writes_the_membership_section_and_the_report(run):
    plain = json.loads((run / "plain" / "metrics.json").read_text())["membership"]
    assert set(plain["attacks"]) == {"loss", "confidence", "entropy", "shadow", "lira_offline"}
    settings = plain["settings"]
    assert settings["shadow_design"] == "offline" and settings["members"] == 150
    assert settings["shadow_train_size"] < settings["target_train_size"]
    assert plain["cost"]["shadow_training_s"] > 0
    assert 0 <= plain["best"]["auc"] <= 1
    data = json.loads((run / "data.json").read_text())
    assert data["audit"]["duplicates"]["exact"]["total_all"] == 1797
    doc = json.loads((run / "report.json").read_text())
    assert [r["variant"] for r in doc["comparison"]] == ["plain"] + (["dp"] if DP else [])


@pytest.mark.skipif(not DP, reason="the dp_sgd defence is not in this secureml version yet")
def test_dp_run_empirical_epsilon_stays_below_the_accounted_one(run):
    metrics = json.loads((run / "dp" / "metrics.json").read_text())
    accounted = metrics["privacy"]["epsilon"]
    assert 0 < accounted <= DP_EPSILON + 1e-6
    empirical = metrics["membership"]["empirical_privacy"]
    assert empirical["accounted_epsilon"] == accounted
    assert empirical["epsilon_lower_bound"] < accounted
    assert empirical["above_accounted"] is False and empirical["indicative"] is True
    canaries = metrics["membership"]["canaries"]
    assert canaries["canaries"] == 200 and canaries["guesses"] == 40
    assert canaries["epsilon_lower_bound"] < accounted and canaries["guarantee_broken"] is False


def test_report_html_renders(run, tmp_path):
    sections = ["summary", "scorecard", "data-audit-e2e", "variant-audit-e2e-plain-membership",
                "variant-audit-e2e-plain-empirical-privacy"]
    plots = ["plot-roc-comparison", "variant-audit-e2e-plain-plot-roc",
             "variant-audit-e2e-plain-plot-training", "variant-audit-e2e-plain-plot-confusion",
             "plot-balance-audit-e2e"]
    if ROBUSTNESS:
        sections.append("variant-audit-e2e-plain-robustness")
        plots.append("variant-audit-e2e-plain-plot-robustness")
    if DP:
        sections.append("variant-audit-e2e-dp-privacy")
        plots += ["variant-audit-e2e-dp-plot-epsilon", "plot-epsilon-comparison"]
    assert_renders(run / "report.html", tmp_path, sections, plots)


def test_audit_command_reruns_membership_on_the_saved_model(run, capsys):
    code = cli_main(["audit", str(run), "--variant", "plain", "--quiet",
                     "--set", "attacks=[loss, lira_online]", "--set", "shadow_models=2",
                     "--set", "shadow_epochs=1", "--set", "target_examples=100"])
    assert code == 0
    assert str(run / "report.html") in capsys.readouterr().out
    membership = json.loads((run / "plain" / "metrics.json").read_text())["membership"]
    assert membership["settings"]["attacks"] == ["loss", "lira_online"]
    assert membership["settings"]["shadow_design"] == "online"
    assert membership["settings"]["members"] == 100
    doc = json.loads((run / "report.json").read_text())
    assert doc["comparison"][0]["mia_auc"] == membership["best"]["auc"]


def test_audit_command_refuses_changed_data(run, capsys):
    record = json.loads((run / "data.json").read_text())
    record["summary"]["sizes"]["train"] += 1
    (run / "data.json").write_text(json.dumps(record))
    try:
        assert cli_main(["audit", str(run), "--quiet", "--data"]) == 2
        assert "differs from the run's" in capsys.readouterr().err
    finally:
        record["summary"]["sizes"]["train"] -= 1
        (run / "data.json").write_text(json.dumps(record))
    assert cli_main(["audit", str(run), "--quiet", "--set", "shadow_models=3",
                     "--set", "attacks=[lira_online]"]) == 2
    assert "even number" in capsys.readouterr().err


def test_text_run_audit_and_report(tmp_path, capsys):
    """A text run: personal data and duplicates in the data audit, a membership audit on the
    saved LSTM with its saved vocabulary, masked excerpts of the exposed reviews."""
    import numpy as np
    rng = np.random.default_rng(0)
    good, bad = ["great", "fun", "moving", "superb"], ["dull", "awful", "boring", "weak"]
    rows = []
    for i in range(400):
        label = i % 2
        words = rng.choice(good if label else bad, 6).tolist() + rng.choice(
            ["movie", "plot", "actor", "scene", "film"], 6).tolist()
        rows.append({"text": " ".join(rng.permutation(words)), "label": label})
    rows[10]["text"] += " mail me at fan@example.com"
    rows[11] = dict(rows[12])
    path = tmp_path / "reviews.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    config = {"name": "text-audit", "data": {"path": str(path), "vocab_size": 50,
                                             "sequence_length": 16},
              "model": {"name": "text_lstm", "lstm_units": 16},
              "training": {"epochs": 2, "batch_size": 32},
              "evaluation": {"membership": {"attacks": ["loss", "entropy"],
                                            "target_examples": 40}},
              "output": {"timestamp": False}}
    run = run_experiment(load_config(config), out_dir=tmp_path / "runs", progress=False).directory
    audit = json.loads((run / "data.json").read_text())["audit"]
    assert audit["personal_data"]["train"]["by_type"]["email"]["matches"] + \
        audit["personal_data"]["test"]["by_type"]["email"]["matches"] == 1
    assert audit["duplicates"]["exact"]["distinct_all"] == 399
    assert cli_main(["audit", str(run), "--quiet", "--set", "attacks=[loss]",
                     "--set", "target_examples=30"]) == 0
    membership = json.loads((run / "main" / "metrics.json").read_text())["membership"]
    assert membership["settings"]["members"] == 30 and list(membership["attacks"]) == ["loss"]
    exposed = membership["exposed_examples"][0]
    assert len(exposed["hash"]) == 16 and "excerpt" not in exposed
    assert "Personal data in text" in (run / "report.md").read_text()


def _written(run) -> dict[str, str]:
    """What a run folder holds besides the model and its vocabulary (model artefacts)."""
    return {str(p.relative_to(run)): p.read_text(encoding="utf-8") for p in run.rglob("*")
            if p.suffix in (".json", ".md", ".html", ".yaml")
            and not {"model", "vectorizer"} & set(p.relative_to(run).parts)}


def test_shareable_report_holds_no_training_text(tmp_path):
    """Every training text carries a unique marker; by default no written file holds a marker
    or the planted e-mail address; with audit.include_examples the excerpts do, and the report
    says in its header that it must not be shared. The e-mail address is masked either way."""
    import re
    import stat

    import numpy as np
    import yaml
    rng = np.random.default_rng(0)
    rows = [{"text": f"zqmark{i:04d}x " + " ".join(rng.choice(
        ["great", "fun", "dull", "awful"] if i % 2 else ["movie", "plot", "scene"], 8)),
        "label": i % 2} for i in range(200)]
    rows[3]["text"] += " write to jane.private@example.com now"
    rows[5] = dict(rows[4])                        # a duplicate: listed with its group
    path = tmp_path / "reviews.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    config = {"name": "private", "data": {"path": str(path), "vocab_size": 30,
                                          "sequence_length": 12, "test_fraction": 0.5},
              "model": {"name": "text_lstm", "lstm_units": 8},
              "training": {"epochs": 1, "batch_size": 32},
              "evaluation": {"membership": {"attacks": ["loss"], "target_examples": 40}},
              "output": {"timestamp": False}}
    run = run_experiment(load_config(config), out_dir=tmp_path / "runs", progress=False).directory

    def markers(written):
        return {name: re.findall(r"zqmark\d{4}x", text) for name, text in written.items()}

    written = _written(run)
    assert {"data.json", "main/metrics.json", "report.json", "report.md", "report.html"} <= \
        set(written)
    assert not any(markers(written).values()), markers(written)
    assert all("jane.private" not in text and "example.com" not in text
               for text in written.values())
    assert "do not share it" not in written["report.md"]
    audit = json.loads(written["data.json"])["audit"]
    assert len(audit["personal_data"]["train"]["by_type"]["email"]["examples"][0]["hash"]) == 16
    assert oct(stat.S_IMODE((run / "record_key").stat().st_mode)) == "0o600"
    key = (run / "record_key").read_text()

    # Asked for: the audit command adds excerpts (the run's key stays the same).
    raw = yaml.safe_load((run / "config.yaml").read_text())
    raw["audit"]["include_examples"] = True
    (run / "config.yaml").write_text(yaml.safe_dump(raw))
    assert cli_main(["audit", str(run), "--data", "--quiet"]) == 0
    written = _written(run)
    found = markers(written)
    assert found["data.json"] and found["main/metrics.json"] and found["report.md"]
    assert all("jane.private" not in text and "example.com" not in text
               for text in written.values())
    assert "this report contains raw training examples; do not share it" in \
        written["report.md"].lower()
    assert "do not share it" in written["report.html"]
    assert json.loads(written["report.json"])["raw_examples"]
    assert (run / "record_key").read_text() == key
