"""End to end: `secureml run` writes a complete run folder; bad input fails cleanly."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from secureml.config import load_config
from secureml.runner import run_experiment

ROOT = Path(__file__).resolve().parent.parent


def cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "secureml.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def two_variant_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    raw = {"name": "e2e", "seed": 1, "data": {"name": "digits", "limit": 600},
           "model": {"name": "image_cnn"}, "training": {"epochs": 4, "batch_size": 32},
           "variants": {"plain": {}, "wide": {"model": {"dense_units": 128},
                                              "training": {"epochs": 2}}},
           "audit": {"report": False}}
    result = run_experiment(load_config(raw), out_dir=out, progress=False)
    return result


def test_run_folder_holds_config_models_history_and_metrics(two_variant_run):
    run_dir = two_variant_run.directory
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["variants"]["wide"]["model"]["dense_units"] == 128
    assert config["variants"]["wide"]["training"]["batch_size"] == 32  # inherited, resolved
    data = json.loads((run_dir / "data.json").read_text())
    assert data["summary"]["sizes"]["train"] + data["summary"]["sizes"]["validation"] == 600
    for name, epochs in (("plain", 4), ("wide", 2)):
        folder = run_dir / name
        history = json.loads((folder / "history.json").read_text())
        assert [row["epoch"] for row in history] == list(range(1, epochs + 1))
        assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history[0])
        metrics = json.loads((folder / "metrics.json").read_text())
        test = metrics["test"]
        assert 0.5 < test["accuracy"] <= 1  # chance is 0.1
        assert sum(map(sum, test["confusion_matrix"])) == test["examples"]
        assert set(test["per_class"]) == {str(i) for i in range(10)}
        assert metrics["cost"]["examples_per_s"] > 0 and metrics["cost"]["peak_rss_mb"] > 0
        assert metrics["environment"]["libraries"]["tensorflow"].startswith("2.15")
        assert metrics["environment"]["seed"] == 1
        assert (folder / "model" / "model.keras").is_file()
    assert two_variant_run.metrics["wide"]["cost"]["baseline_variant"] == "plain"
    assert two_variant_run.metrics["plain"]["cost"]["train_time_ratio"] == 1.0


def test_saved_model_reproduces_test_metrics(two_variant_run):
    import tensorflow as tf
    from secureml.data import load_dataset
    from secureml.evaluation import classification_metrics
    run_dir = two_variant_run.directory
    config = load_config(yaml.safe_load((run_dir / "config.yaml").read_text()))
    data = load_dataset(config.data, seed=config.seed, progress=False)
    model = tf.keras.models.load_model(run_dir / "plain" / "model" / "model.keras")
    again = classification_metrics(model, data.x_test, data.y_test, data.class_names)
    assert again["accuracy"] == two_variant_run.metrics["plain"]["test"]["accuracy"]


def test_same_config_and_seed_give_the_same_metrics(tmp_path, two_variant_run):
    raw = yaml.safe_load((two_variant_run.directory / "config.yaml").read_text())
    again = run_experiment(load_config(raw), out_dir=tmp_path, variants=["plain"], progress=False)
    first = two_variant_run.metrics["plain"]
    assert again.metrics["plain"]["test"] == first["test"]
    assert again.metrics["plain"]["train"] == first["train"]


def test_text_run_saves_the_vectorizer(tmp_path):
    rows = [{"text": f"{'great fine' if i % 2 else 'awful bad'} film number {i}",
             "label": "pos" if i % 2 else "neg"} for i in range(200)]
    (tmp_path / "reviews.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    raw = {"name": "text", "data": {"path": str(tmp_path / "reviews.jsonl"), "vocab_size": 50,
                                    "sequence_length": 8},
           "model": {"name": "text_lstm", "lstm_units": 8}, "training": {"epochs": 3},
           "audit": {"report": False, "data": False}}
    result = run_experiment(load_config(raw), out_dir=tmp_path / "runs", progress=False)
    folder = result.directory / "main"
    assert (folder / "vectorizer").is_dir()
    metrics = result.metrics["main"]
    assert metrics["data"]["vocab_size"] <= 50 and metrics["data"]["sequence_length"] == 8
    assert metrics["model"]["name"] == "text_lstm"
    assert set(metrics["test"]["per_class"]) == {"neg", "pos"}


def test_cli_run_prints_the_run_folder(tmp_path):
    out = cli("run", "experiments/quickstart.yaml", "--set", "training.epochs=1",
              "--set", "data.limit=300", "--set", "audit.report=false", "--out", str(tmp_path),
              "--quiet")
    assert out.returncode == 0, out.stderr[-2000:]
    run_dir = Path(out.stdout.strip().splitlines()[-1])
    assert run_dir.parent == tmp_path and (run_dir / "config.yaml").is_file()


@pytest.mark.parametrize("args,message", [
    (("run", "experiments/nope.yaml"), "does not exist"),
    (("run", "experiments/quickstart.yaml", "--set", "training.epochz=3"),
     "did you mean 'epochs'"),
    (("run", "experiments/quickstart.yaml", "--set", "model.name=image_cnn",
      "--set", "data.name=imdb", "--set", "data.path=/no/such/folder"), "does not exist"),
    (("run", "experiments/quickstart.yaml", "--variant", "nosuch"), "no variant 'nosuch'"),
])
def test_cli_errors_are_one_line_without_traceback(args, message, tmp_path):
    out = cli(*args, "--out", str(tmp_path))
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("secureml: error:")


def test_image_model_on_text_data_is_refused(tmp_path):
    (tmp_path / "t.csv").write_text("text,label\n" + "\n".join(f"w{i},{i % 2}" for i in range(20)))
    raw = {"name": "mismatch", "data": {"path": str(tmp_path / "t.csv")},
           "model": {"name": "image_cnn"}, "audit": {"report": False, "data": False}}
    from secureml.errors import ConfigError
    with pytest.raises(ConfigError, match="takes image data but data set .* is text"):
        run_experiment(load_config(raw), out_dir=tmp_path / "runs", progress=False)


def test_a_missing_report_dependency_fails_naming_the_package(tmp_path, monkeypatch):
    import sys
    from secureml import runner
    from secureml.errors import SecureMLError
    # A fresh import of secureml.report, as in an environment without jinja2.
    for name in [n for n in sys.modules if n.startswith("secureml.report")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "jinja2", None)
    with pytest.raises(SecureMLError, match=r"needs the Python package 'jinja2'.*secureml "
                                            r"report .*audit\.report: false"):
        runner._write_report(tmp_path, progress=False)
