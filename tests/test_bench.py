"""secureml bench: a small digits grid end to end, resuming, ratios, and grid validation."""
import csv
import json
import os
from pathlib import Path

import pytest
import yaml
from PIL import Image

from secureml import cli, registry
from secureml.bench import load_grid, pareto_front, run_grid
from secureml.bench.results import RATIOS
from secureml.errors import ConfigError

ROOT = Path(__file__).parent.parent
SMALL_GRID = ROOT / "experiments" / "bench_digits_small.yaml"


@pytest.fixture(scope="module")
def small_bench(tmp_path_factory):
    """The small grid run once through the CLI; later tests resume from its folder."""
    out = tmp_path_factory.mktemp("bench")
    code = cli.main(["bench", str(SMALL_GRID), "--out", str(out), "--quiet"])
    grid = load_grid(SMALL_GRID)
    return code, grid, out / grid.name


def metrics_of(row: dict) -> dict:
    return json.loads((Path(row["folder"]) / row["setting"] / "metrics.json").read_text())


def test_small_grid_runs_every_setting_and_writes_every_file(small_bench):
    code, grid, bench_dir = small_bench
    assert code == 0
    expected = set(yaml.safe_load(SMALL_GRID.read_text())["settings"])
    assert set(grid.settings) == expected and grid.unavailable == {}

    for name in ("results.csv", "results.json", "results.md", "grid.yaml", "invocations.json",
                 "plots/accuracy_vs_cost.png"):
        assert (bench_dir / name).is_file(), name
    record = json.loads((bench_dir / "results.json").read_text())
    rows = record["cells"]
    assert {r["setting"] for r in rows} == expected
    assert all(r["status"] == "complete" for r in rows)
    with (bench_dir / "results.csv").open() as f:
        assert [r["cell"] for r in csv.DictReader(f)] == [r["cell"] for r in rows]

    plain = next(r for r in rows if r["baseline"])
    assert plain["test_accuracy"] > 0.3  # ten classes: chance is 0.1
    assert plain["inference_latency_ms"] > 0 and plain["inference_throughput_per_s"] > 0
    for row in rows:  # each cell is a normal run folder with its own metrics.json
        assert metrics_of(row)["test"]["accuracy"] == row["test_accuracy"]

    # The machine and libraries are recorded, with the load the measurements ran under.
    (invocation,) = record["invocations"]
    hardware = invocation["hardware"]
    assert hardware["cpu_count"] == os.cpu_count() and hardware["gpus"] == []
    assert hardware["libraries"]["tensorflow"] == "2.15.1"
    assert len(hardware["load_average"]) == 3
    assert invocation["command"].startswith("secureml bench ")

    # Every plot has data here (a plot without any is skipped with the reason, see below).
    for name in ("accuracy_vs_cost", "accuracy_vs_epsilon", "robust_accuracy_vs_epsilon"):
        with Image.open(bench_dir / "plots" / f"{name}.png") as image:
            assert image.size[0] > 300
        assert record["plots"][f"{name}.png"] == str(bench_dir / "plots" / f"{name}.png")
    markdown = (bench_dir / "results.md").read_text()
    assert "![accuracy_vs_epsilon.png](plots/accuracy_vs_epsilon.png)" in markdown
    assert "| digits | cnn | plain | 1/1 |" in markdown and "## What it buys" in markdown


def baselines(rows: list[dict]) -> dict:
    """Each row's baseline row: the baseline setting of the same data set, model and seed."""
    base = {(r["dataset"], r["model"], r["seed"]): r for r in rows if r["baseline"]}
    return {r["cell"]: base[r["dataset"], r["model"], r["seed"]] for r in rows}


def test_ratios_divide_by_the_baseline_measured_in_the_same_invocation(small_bench):
    _, _, bench_dir = small_bench
    rows = json.loads((bench_dir / "results.json").read_text())["cells"]
    base_of = baselines(rows)
    assert len({b["cell"] for b in base_of.values()}) == 2  # one per model
    for row in rows:
        base = base_of[row["cell"]]
        assert base["train_time_ratio"] == 1.0
        assert row["ratio_basis"] == "same invocation" and row["baseline_cell"] == base["cell"]
        assert row["invocation"] == base["invocation"]
        cost, base_cost = metrics_of(row)["cost"], metrics_of(base)["cost"]
        for ratio, column in (("train_time_ratio", "train_time_s"),
                              ("peak_rss_increase_ratio", "peak_rss_increase_mb")):
            assert RATIOS[ratio] == (column, column)
            assert row[ratio] == pytest.approx(cost[column] / base_cost[column], rel=1e-3)
    by_setting = {r["setting"]: r for r in rows}
    # Encrypted inference: one example on ciphertexts against one in plaintext.
    encrypted = by_setting["encrypted"]
    he = metrics_of(encrypted)["he"]
    assert encrypted["he_accuracy"] == he["encrypted_accuracy"] and he["agreement"] >= 0.95
    assert encrypted["he_latency_ratio"] == pytest.approx(
        he["latency_s_per_sample"] * 1000 / base_of["digits/he/encrypted/seed0"]
        ["inference_latency_ms"], rel=1e-3)
    assert encrypted["he_latency_ratio"] > 10  # CKKS costs orders of magnitude more
    # The membership audit with shadow models against one training of the baseline.
    shadow = by_setting["mia_shadow"]
    membership = metrics_of(shadow)["membership"]
    assert {"shadow", "lira_offline"} <= set(membership["attacks"])
    assert membership["cost"]["shadow_training_s"] > 0
    assert shadow["membership_time_ratio"] == pytest.approx(
        membership["cost"]["total_s"] / base_of[shadow["cell"]]["train_time_s"], rel=1e-3)
    # DP-SGD ran on the fast clipping engine and spent its budget.
    dp = by_setting["dp_eps3"]
    assert dp["engine"] == dp["clipping"] == "fast" and 2.5 < dp["epsilon"] <= 3.0


def test_rerun_skips_finished_cells_and_remeasures_the_baseline(small_bench):
    _, grid, bench_dir = small_bench
    first = run_grid(grid, out_dir=bench_dir.parent, progress=False)
    assert first.ran == [] and len(first.resumed) == len(grid.cells())

    cells = grid.cells()
    (redo,) = [c for c in cells if c.setting == "plain_xla"]
    (bench_dir / "runs" / redo.folder_name / "bench.json").unlink()
    second = run_grid(grid, out_dir=bench_dir.parent, progress=False)
    base = next(c for c in cells if c.baseline)
    assert second.ran == [base.id, redo.id]  # the baseline first, in the same invocation
    rows = json.loads((bench_dir / "results.json").read_text())["cells"]
    by_cell = {r["cell"]: r for r in rows}
    assert by_cell[redo.id]["invocation"] == by_cell[base.id]["invocation"]
    for row in rows:
        if row["cell"] in second.ran or row["model"] != base.model:
            # Measured in one invocation with its baseline (the other model's group was
            # neither run nor re-measured).
            assert row["ratio_basis"] == "same invocation"
        else:  # kept, and divided by a baseline measured after it
            assert row["ratio_basis"] == "other invocation"
    kept = [r for r in rows if r["model"] == base.model and r["cell"] not in second.ran]
    assert kept
    table = (bench_dir / "results.md").read_text().split("| front |")[1].split("##")[0]
    row_of = {tuple(line.split(" | ")[1:3]): line for line in table.splitlines()
              if line.startswith("| ")}
    assert "*" in row_of["cnn", kept[0]["setting"]] and "*" not in row_of["cnn", "plain_xla"]
    assert "*" not in row_of["he", "encrypted"]


def test_a_failed_cell_is_recorded_with_its_error(tmp_path):
    raw = json.loads(json.dumps(BASE))
    raw["datasets"] = {"missing": {"data": {"path": str(tmp_path / "no_such_folder")},
                                   "models": ["cnn"]}}
    result = run_grid(load_grid(raw), out_dir=tmp_path, progress=False)
    assert result.failed == ["missing/cnn/plain/seed0"] and result.ran == []
    record = json.loads((result.directory / "results.json").read_text())
    (failed,) = record["cells"]
    assert failed["status"] == "failed" and "no_such_folder" in failed["error"]
    assert "Traceback" not in failed["error"]
    assert "missing/cnn/plain/seed0: failed" in (result.directory / "results.md").read_text()
    assert record["plots"]["accuracy_vs_cost.png"].startswith("skipped: ")


def test_pareto_front_keeps_the_undominated_points():
    # (accuracy, cost): the second is dominated by the first, the last has no cost.
    points = [(0.9, 1.0), (0.85, 2.0), (0.95, 3.0), (0.95, 4.0), (0.99, None)]
    assert pareto_front(points) == [True, False, True, False, False]


BASE = {"name": "g", "models": {"cnn": {"name": "image_cnn"}},
        "datasets": {"digits": {"data": {"name": "digits"}, "models": ["cnn"]}},
        "settings": {"plain": {}}}


def grid_error(**changes) -> str:
    raw = json.loads(json.dumps(BASE))
    for path, value in changes.items():
        node = raw
        *parents, last = path.split("__")
        for part in parents:
            node = node[part]
        node[last] = value
    with pytest.raises(ConfigError) as err:
        load_grid(raw)
    return str(err.value)


@pytest.mark.parametrize("changes, expected", [
    ({"setings": {}}, ["unknown key 'setings'", "did you mean 'settings'"]),
    ({"settings": {}}, ["settings: missing or empty"]),
    ({"seeds": [0, 0]}, ["seeds: expected a non-empty list of distinct integers"]),
    ({"seeds": ["a"]}, ["seeds[0] must be an integer in [0, 4294967295], got 'a'"]),
    ({"models__cnn": {"name": "resnet"}}, ["unknown model 'resnet'"]),
    ({"models__cnn": {"name": "image_cnn", "filterz": [8]}},
     ["models.cnn", "unknown key 'filterz'", "did you mean 'filters'"]),
    ({"datasets__digits__models": ["cnm"]},
     ["datasets.digits.models[0]", "'cnm' is not allowed", "did you mean 'cnn'"]),
    ({"datasets__digits__data": {"name": "digitz"}}, ["datasets.digits.data", "'digitz'"]),
    ({"datasets__digits__training": {"epochz": 1}},
     ["datasets.digits.training", "did you mean 'epochs'"]),
    ({"settings__dp": {"defences": {"dpsgd": {}}}}, ["unknown defence 'dpsgd'"]),
    ({"settings__big": {"training": {"batch_size": 0}}},
     ["cell digits/cnn/big/seed0", "settings.big", "batch_size"]),
    ({"settings__bad name": {}}, ["settings.bad name", "must be letters"]),
    ({"settings__fast": {"runtime": {"xla": True}}},
     ["settings.fast", "runtime.xla needs runtime.deterministic: false"]),
    ({"settings__fast": {"runtime": {"mixed_precison": True}}},
     ["settings.fast.runtime", "did you mean 'mixed_precision'"]),
    ({"settings__half": {"models": ["cnn"]}, "baseline": "half"},
     ["baseline", "limited to some models or data sets"]),
    ({"baseline": "plainn"}, ["baseline", "did you mean 'plain'"]),
    ({"settings__dp": {"models": ["text_lstm"]}}, ["settings.dp.models[0]", "'text_lstm'"]),
    ({"settings__dp": {"datasets": ["digit"]}},
     ["settings.dp.datasets[0]", "did you mean 'digits'"]),
    ({"settings": {"big": {"training": {"epochs": 3}}}}, ["no undefended setting"]),
    ({"output": {"dir": 3}}, ["output.dir", "expected a string"]),
])
def test_malformed_grids_name_the_bad_entry(changes, expected):
    message = grid_error(**changes)
    for text in expected:
        assert text in message, message


@pytest.mark.parametrize("text, expected", [
    (None, "grid file .*grid.yaml does not exist"),
    ("name: [unclosed", "not valid YAML"),
    ("- 1\n", "must contain a mapping of name, "),
])
def test_grid_file_errors(tmp_path, text, expected):
    path = tmp_path / "grid.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_grid(path)


def test_cells_merge_the_levels_and_settings_apply_where_they_are_meant_to():
    raw = json.loads(json.dumps(BASE))
    raw["models"]["wide"] = {"name": "image_cnn", "dense_units": 128}
    raw["datasets"]["small"] = {"data": {"name": "digits", "limit": 300}, "models": ["cnn"],
                                "training": {"epochs": 2}}
    raw["datasets"]["digits"]["models"] = ["cnn", "wide"]
    raw["training"] = {"epochs": 5, "batch_size": 32}
    raw["runtime"] = {"mixed_precision": True}
    raw["settings"]["xla"] = {"runtime": {"xla": True, "deterministic": False},
                              "training": {"batch_size": 64}, "datasets": ["small"]}
    raw["settings"]["wide_only"] = {"models": ["wide"]}
    cells = {c.id: c for c in load_grid(raw, ["seeds=[1,2]"]).cells()}
    assert sorted(cells) == sorted(
        f"{d}/{m}/{s}/seed{seed}" for seed in (1, 2) for d, m, s in [
            ("digits", "cnn", "plain"), ("digits", "wide", "plain"),
            ("digits", "wide", "wide_only"), ("small", "cnn", "plain"), ("small", "cnn", "xla")])
    xla = cells["small/cnn/xla/seed2"].config
    assert xla["runtime"] == {"mixed_precision": True, "xla": True, "deterministic": False}
    assert xla["training"] == {"epochs": 2, "batch_size": 64} and xla["seed"] == 2
    assert xla["data"] == {"name": "digits", "limit": 300}
    plain = cells["digits/wide/plain/seed1"]
    assert plain.baseline and plain.config["model"] == {"name": "image_cnn", "dense_units": 128}
    assert plain.config["training"] == {"epochs": 5, "batch_size": 32}
    assert len({c.config_hash for c in cells.values()}) == len(cells)


def test_shipped_grids_are_valid():
    grids = sorted((ROOT / "experiments").glob("bench*.yaml"))
    assert {g.name for g in grids} >= {"bench_default.yaml", "bench_digits_small.yaml"}
    for path in grids:
        grid = load_grid(path)
        assert grid.cells() and not grid.unavailable, path


def test_capabilities_not_installed_are_refused_or_skipped(monkeypatch):
    monkeypatch.setitem(registry.EVALUATIONS, "phantom", "secureml.phantom_stage")
    raw = json.loads(json.dumps(BASE))
    raw["settings"]["ghost"] = {"evaluation": {"phantom": {}}}
    with pytest.raises(ConfigError) as err:
        load_grid(raw)
    assert "settings.ghost.evaluation.phantom" in str(err.value)
    assert "--skip-unavailable" in str(err.value)
    raw["datasets"]["digits"]["evaluation"] = {"phantom": {}}
    grid = load_grid(raw, skip_unavailable=True)
    assert set(grid.unavailable) == {"settings.ghost", "datasets.digits.evaluation.phantom"}
    (cell,) = grid.cells()
    assert cell.setting == "plain" and cell.config["evaluation"] == {}
