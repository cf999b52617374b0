"""Runs say when they are incomplete: status.json per run and variant, interrupted and failed
stages in the report and scorecard, audit of nothing refused, bench invocations and reruns
that die, and training that stops at a non-finite loss instead of writing NaN."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from secureml import cli
from secureml.bench import load_grid, run_grid
from secureml.bench.execute import finished_cell, read_invocations
from secureml.config import load_config
from secureml.errors import DataError, TrainingError
from secureml.models import build_model
from secureml.report import write_report
from secureml.report.rundir import read_json, write_json
from secureml.runner import run_experiment
from secureml.status import read_status
from secureml.training import train

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
TINY = {"data": {"name": "digits", "limit": 400},
        "model": {"name": "image_cnn", "filters": [8, 16], "dense_units": 16},
        "training": {"epochs": 1, "batch_size": 64, "plain_step_pairs": 0},
        "output": {"timestamp": False}}


def strict(path: Path):
    """Parse JSON refusing NaN and Infinity tokens."""
    def refuse(token):
        raise AssertionError(f"{path} holds {token}")
    return json.loads(path.read_text(), parse_constant=refuse)


def config_file(tmp_path: Path, name: str, **changes) -> Path:
    raw = {"name": name, "seed": 0, **json.loads(json.dumps(TINY)), **changes}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def start(args: list[str], tmp_path: Path) -> subprocess.Popen:
    """The CLI in its own process group, its output in a file (a full pipe would block it)."""
    log = open(tmp_path / "child.log", "w")
    return subprocess.Popen([sys.executable, "-m", "secureml.cli", *args], env=ENV, cwd=ROOT,
                            stdout=log, stderr=log, start_new_session=True)


def wait_until(predicate, proc: subprocess.Popen, tmp_path: Path, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (FileNotFoundError, KeyError, TypeError):
            pass
        assert proc.poll() is None, (tmp_path / "child.log").read_text()[-3000:]
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError("timed out: " + (tmp_path / "child.log").read_text()[-3000:])


def stage(folder: Path, name: str) -> str:
    return strict(folder / "status.json")["stages"][name]["status"]


def test_a_run_killed_mid_evaluation_reports_interrupted(tmp_path):
    config = config_file(tmp_path, "killed", evaluation={
        # Far more PGD steps than the test waits for: it is killed while they run.
        "robustness": {"examples": 60, "attacks": ["pgd"], "steps": 20000,
                       "epsilons": [0, 0.1]},
        "membership": {"attacks": ["loss"], "target_examples": 50}},
        audit={"data": False})
    proc = start(["run", str(config), "--out", str(tmp_path / "runs"), "--quiet"], tmp_path)
    variant = tmp_path / "runs" / "killed" / "main"
    wait_until(lambda: stage(variant, "robustness") == "running", proc, tmp_path)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    raw = strict(variant / "status.json")  # valid JSON although the writer was killed
    assert raw["status"] == "running" and raw["pid"] == proc.pid
    status = read_status(variant)  # its process is gone: read as interrupted
    assert status["status"] == "interrupted"
    assert {k: v["status"] for k, v in status["stages"].items()} == {
        "training": "complete", "test": "complete", "robustness": "interrupted",
        "membership": "not_run"}
    metrics = strict(variant / "metrics.json")
    assert "test" in metrics and "robustness" not in metrics
    assert read_status(variant.parent)["status"] == "interrupted"

    doc = json.loads(write_report([variant.parent], tmp_path / "report")[0].read_text())
    rows = {r["rule"]: r["status"] for r in doc["runs"][0]["variants"][0]["scorecard"]}
    assert rows["robustness_sanity"] == "interrupted"
    assert rows["membership_auc"] == "interrupted"
    assert rows["generalization_gap"] in ("pass", "warn", "fail", "inconclusive")  # measured before the kill
    assert doc["runs"][0]["variants"][0]["status"]["status"] == "incomplete"
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "INCOMPLETE RUN killed" in markdown
    section = markdown.split("### Adversarial robustness")[1].split("###")[0]
    assert "interrupted: the process ended while this stage ran" in section

    # `secureml audit` measures membership again; robustness stays shown as interrupted.
    assert cli.main(["audit", str(variant.parent), "--quiet"]) == 0
    status = read_status(variant)
    assert status["stages"]["membership"]["status"] == "complete"
    assert status["stages"]["robustness"]["status"] == "interrupted"
    doc = strict(variant.parent / "report.json")
    rows = {r["rule"]: r["status"] for r in doc["runs"][0]["variants"][0]["scorecard"]}
    assert rows["robustness_sanity"] == "interrupted"
    assert rows["membership_auc"] in ("pass", "warn", "fail", "inconclusive")
    assert "not measured" not in (variant.parent / "report.md").read_text().split(
        "### Adversarial robustness")[1].split("###")[0]


def test_sigterm_records_the_interruption_itself(tmp_path):
    config = config_file(tmp_path, "term", training={"epochs": 500, "batch_size": 16},
                         audit={"data": False, "membership": False, "report": False})
    proc = start(["run", str(config), "--out", str(tmp_path / "runs"), "--quiet"], tmp_path)
    variant = tmp_path / "runs" / "term" / "main"
    wait_until(lambda: stage(variant, "training") == "running", proc, tmp_path)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=120) == 130
    raw = strict(variant / "status.json")
    assert raw["status"] == "interrupted" and raw["stages"]["training"]["status"] == "interrupted"
    assert strict(variant.parent / "status.json")["status"] == "interrupted"


def test_a_stage_that_raises_is_failed_with_its_error(tmp_path, monkeypatch):
    from secureml.attacks import robustness

    def explode(context, config):
        raise RuntimeError("attack exploded\nsecond line of detail")

    monkeypatch.setattr(robustness, "evaluate", explode)
    raw = {"name": "boom", "seed": 0, **TINY,
           "evaluation": {"robustness": {"examples": 20}},
           "audit": {"data": False, "membership": True, "report": True}}
    with pytest.raises(RuntimeError, match="attack exploded"):
        run_experiment(load_config(raw), out_dir=tmp_path, progress=False)
    variant = tmp_path / "boom" / "main"
    status = read_status(variant)
    assert status["status"] == "failed"
    assert status["stages"]["robustness"]["status"] == "failed"
    assert status["stages"]["robustness"]["error"] == {"type": "RuntimeError",
                                                       "message": "attack exploded"}
    assert status["stages"]["membership"]["status"] == "not_run"
    run = read_status(variant.parent)
    assert run["status"] == "failed" and run["stages"]["report"]["status"] == "not_run"
    assert run["error"]["type"] == "RuntimeError"

    paths = write_report([variant.parent], tmp_path / "report")
    rows = {r["rule"]: r["status"]
            for r in strict(paths[0])["runs"][0]["variants"][0]["scorecard"]}
    assert rows["robustness_sanity"] == "failed" and rows["membership_auc"] == "failed"
    markdown = paths[1].read_text()
    assert "failed: RuntimeError: attack exploded" in markdown
    assert "INCOMPLETE RUN boom" in markdown


@pytest.mark.parametrize("defence", ["plain", "dp_sgd", "adversarial_training"])
def test_a_diverging_loss_stops_training_with_the_fix(digits, defence):
    from secureml import registry
    x, y = digits[0][:256], digits[1][:256]
    defences = [] if defence == "plain" else [registry.defence_module(defence).make(
        {"noise_multiplier": 1.0} if defence == "dp_sgd" else {"method": "fast", "epsilon": 0.1},
        "image")]
    with pytest.raises(TrainingError) as err:
        train(lambda: build_model("image_cnn", x.shape[1:], 10, filters=[8, 16], dense_units=16),
              x, y, config={"epochs": 3, "batch_size": 32, "learning_rate": 1e6,
                            "plain_step_pairs": 0}, defences=defences, progress=False)
    message = str(err.value)
    assert "loss is nan at epoch 1, step" in message and "\n" not in message
    assert "Lower learning_rate (now 1e+06)" in message and "NaN or infinite" in message


def test_a_nan_pixel_is_refused_before_training(digits):
    x, y = digits[0][:200].copy(), digits[1][:200]
    x[37, 4, 4, 0] = np.nan
    with pytest.raises(DataError, match="1 example.* NaN or infinite values .*example 37"):
        train(lambda: build_model("image_cnn", x.shape[1:], 10, filters=[8, 16], dense_units=16),
              x, y, config={"epochs": 1}, progress=False)


def test_cli_run_with_a_diverging_loss_exits_2_and_leaves_nothing_to_audit(tmp_path, capsys):
    config = config_file(tmp_path, "nan", training={"epochs": 2, "learning_rate": 1e6},
                         audit={"data": False, "membership": False})
    assert cli.main(["run", str(config), "--out", str(tmp_path / "runs"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("secureml: error: training stopped: the training loss is nan")
    run = tmp_path / "runs" / "nan"
    status = read_status(run / "main")
    assert status["status"] == "failed"
    assert status["stages"]["training"]["error"]["type"] == "TrainingError"
    assert status["stages"]["test"]["status"] == "not_run"
    assert not (run / "main" / "metrics.json").exists()
    assert not (run / "main" / "history.json").exists()
    for path in run.rglob("*.json"):
        strict(path)

    # The failed variant still shows in a report, as failed.
    doc = json.loads(write_report([run], tmp_path / "report")[0].read_text())
    (variant,) = doc["runs"][0]["variants"]
    # Every rule on what training would have measured is failed; the baseline's own accuracy
    # drop is never rated.
    statuses = {r["rule"]: r["status"] for r in variant["scorecard"]}
    assert statuses.pop("accuracy_drop") == "not_rated"
    assert set(statuses.values()) == {"failed"}

    before = sorted(p.name for p in run.iterdir())
    assert cli.main(["audit", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("secureml: error: nothing to audit in")
    assert sorted(p.name for p in run.iterdir()) == before  # no report, no data audit


@pytest.mark.parametrize("layout", ["empty", "config only", "not a run folder"])
def test_audit_of_nothing_exits_2_and_writes_nothing(tmp_path, capsys, layout):
    folder = tmp_path / "folder"
    folder.mkdir()
    if layout == "config only":
        raw = {"name": "x", **TINY}
        (folder / "config.yaml").write_text(yaml.safe_dump(load_config(raw).to_dict()))
    elif layout == "not a run folder":
        (folder / "notes.txt").write_text("hello")
        (folder / "sub").mkdir()
    before = sorted(p.name for p in folder.rglob("*"))
    assert cli.main(["audit", str(folder), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("secureml: error: ")
    assert sorted(p.name for p in folder.rglob("*")) == before


def test_json_writer_refuses_non_finite_numbers_and_reader_drops_them(tmp_path):
    path = tmp_path / "metrics.json"
    with pytest.raises(ValueError, match=r"test\.per_class\.1 is nan"):
        write_json(path, {"test": {"per_class": [0.5, float("nan")]}})
    with pytest.raises(ValueError, match=r"cost\.ratio is inf"):
        write_json(path, {"cost": {"ratio": np.float32("inf")}})
    assert not path.exists() and list(tmp_path.iterdir()) == []
    write_json(path, {"loss": np.float32(0.25), "undefined": None})
    assert strict(path) == {"loss": 0.25, "undefined": None}
    path.write_text('{"auc": NaN, "gap": -Infinity, "ok": 1}')  # as older versions wrote
    problems = []
    assert read_json(path, problems) == {"auc": None, "gap": None, "ok": 1}
    assert any("NaN" in p for p in problems)


GRID = {"name": "status", "seeds": [0], "baseline": "plain",
        "training": {"epochs": 1, "batch_size": 64, "plain_step_pairs": 0},
        "models": {"cnn": {"name": "image_cnn", "filters": [8, 16], "dense_units": 16}},
        "datasets": {"digits": {"data": {"name": "digits", "limit": 300}, "models": ["cnn"]}},
        "settings": {"plain": {}}, "output": {"inference_timing": False}}


def test_a_killed_bench_rerun_is_recorded_and_keeps_the_old_result(tmp_path):
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(yaml.safe_dump(GRID))
    grid = load_grid(grid_file)
    (cell,) = grid.cells()
    first = run_grid(grid, out_dir=tmp_path, progress=False)
    assert first.ran == [cell.id]
    bench_dir = first.directory
    old_state, old_metrics = finished_cell(bench_dir, cell)

    proc = start(["bench", str(grid_file), "--out", str(tmp_path), "--rerun", "--quiet"],
                 tmp_path)
    staged = bench_dir / ".staging" / cell.folder_name / cell.setting
    wait_until(lambda: stage(staged, "training") == "running", proc, tmp_path)
    os.killpg(proc.pid, signal.SIGKILL)  # the bench and the cell's own process
    proc.wait()

    raw = strict(bench_dir / "invocations.json")
    assert len(raw) == 2 and raw[1]["status"] == "running" and raw[1]["pid"] == proc.pid
    invocations = read_invocations(bench_dir)
    assert [i["status"] for i in invocations] == ["complete", "interrupted"]
    assert invocations[1]["current_cell"] == cell.id
    state, metrics = finished_cell(bench_dir, cell)
    assert state == old_state and metrics == old_metrics  # the earlier result stands

    again = run_grid(grid, out_dir=tmp_path, progress=False)
    assert again.resumed == [cell.id] and again.ran == []
    strict(bench_dir / "results.json")
