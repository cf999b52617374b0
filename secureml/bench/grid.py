"""Benchmark grids: which runs a benchmark is made of.

```yaml
name: digits_small
seeds: [0, 1]
baseline: plain                      # the undefended setting every cost is divided by
training: {epochs: 5, batch_size: 64}
runtime: {mixed_precision: false, xla: false}
evaluation: {}                       # evaluations run on every cell
models:                              # label -> model config (name plus the model's options)
  cnn: {name: image_cnn}
datasets:                            # label -> data config, the models it trains, overrides
  digits: {data: {name: digits, limit: 1000}, models: [cnn], training: {epochs: 8}}
settings:                            # label -> what the cell adds to the plain recipe
  plain: {}
  dp_eps3: {defences: {dp_sgd: {target_epsilon: 3}}}
  fast_at: {models: [image_cnn], defences: {adversarial_training: {method: fast}}}
  dp_microbatch: {datasets: [digits], defences: {dp_sgd: {target_epsilon: 3,
                                                           clipping: microbatch}}}
output: {dir: runs/bench}
```

A cell is one data set x one of its models x one setting (unless the setting's `models` or
`datasets` leave it out) x one seed, and is one ordinary run (`secureml run`). Training,
runtime and evaluation are merged in the order grid < data set < setting; in `evaluation`,
`name: null` removes an entry.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_type_hints


from .. import registry, schema
from ..config import _resolve_model, resolve
from ..data.config import DataConfig
from ..errors import ConfigError
from ..training import RuntimeConfig, TrainingConfig

LABEL = re.compile(r"[A-Za-z0-9_.]+")


@dataclass
class DatasetEntry:
    data: dict
    models: list[str]
    training: dict = field(default_factory=dict)
    evaluation: dict = field(default_factory=dict)
    description: str = ""


@dataclass
class SettingEntry:
    description: str = ""
    defences: dict = field(default_factory=dict)
    evaluation: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    runtime: dict = field(default_factory=dict)
    # Model labels or architecture names (image_cnn, text_lstm) this setting applies to.
    models: list[str] | None = None
    # Data set labels this setting applies to (a slow defence on the small data sets only).
    datasets: list[str] | None = None


@dataclass
class GridOutput:
    dir: str = "runs/bench"
    # Time single-example and batched plaintext inference of every trained model.
    inference_timing: bool = True


@dataclass
class Grid:
    name: str
    models: dict[str, dict]
    datasets: dict[str, DatasetEntry]
    settings: dict[str, SettingEntry]
    seeds: list[int] = field(default_factory=lambda: [0])
    baseline: str | None = None
    training: dict = field(default_factory=dict)
    runtime: dict = field(default_factory=dict)
    evaluation: dict = field(default_factory=dict)
    output: GridOutput = field(default_factory=GridOutput)
    description: str = ""
    source: str | None = None
    # What was left out because it is not installed: grid path -> reason.
    unavailable: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return schema.to_dict({f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                               if f.name not in ("source", "unavailable")})

    def cells(self) -> list["Cell"]:
        """Every cell, in grid order: data set, model, seed, setting."""
        cells = []
        for data_label, entry in self.datasets.items():
            for model_label in entry.models:
                for seed in self.seeds:
                    for setting_label, setting in self.settings.items():
                        if applies(setting, data_label, model_label, self.models[model_label]):
                            cells.append(self._cell(data_label, model_label, setting_label, seed))
        return cells

    def _cell(self, data_label: str, model_label: str, setting_label: str, seed: int) -> "Cell":
        entry, setting = self.datasets[data_label], self.settings[setting_label]
        raw = {
            "name": "cell",
            "seed": seed,
            "data": copy.deepcopy(entry.data),
            "model": copy.deepcopy(self.models[model_label]),
            "training": {**self.training, **entry.training, **setting.training},
            "runtime": {**self.runtime, **setting.runtime},
            "defences": copy.deepcopy(setting.defences),
            "evaluation": merge_named(self.evaluation, entry.evaluation, setting.evaluation),
            "variants": {setting_label: {}},
            # The grid's evaluations are the cell's only ones: no automatic membership audit,
            # data audit or report (their cost would blur the comparison).
            "audit": {"data": False, "membership": False, "report": False},
            "output": {"timestamp": False, "save_model": True},
        }
        cell = Cell(data_label, model_label, setting_label, seed, raw,
                    baseline=setting_label == self.baseline)
        where = (f"{self.source or 'grid'}: cell {cell.id} (from datasets.{data_label}, "
                 f"models.{model_label}, settings.{setting_label})")
        if raw["runtime"].get("xla") and raw["runtime"].get("deterministic", True):
            # TensorFlow fails deep in the first step otherwise (no deterministic XLA MaxPool
            # gradient); say so before anything runs.
            raise ConfigError(f"{where}: runtime.xla needs runtime.deterministic: false "
                              "(XLA has no deterministic implementation of some gradients, "
                              "MaxPool's among them); add deterministic: false next to xla: true")
        try:
            resolved = resolve(raw, where="run config").to_dict()
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None
        cell.config_hash = config_hash(resolved)
        cell.config["name"] = cell.folder_name
        return cell


@dataclass
class Cell:
    dataset: str
    model: str
    setting: str
    seed: int
    config: dict  # the run config, ready for `load_config`
    baseline: bool = False
    config_hash: str = ""

    @property
    def id(self) -> str:
        return f"{self.dataset}/{self.model}/{self.setting}/seed{self.seed}"

    @property
    def group(self) -> tuple:
        """Cells that share data, model and seed; their costs are divided by the baseline's."""
        return (self.dataset, self.model, self.seed)

    @property
    def folder_name(self) -> str:
        return f"{self.dataset}-{self.model}-{self.setting}-s{self.seed}-{self.config_hash[:10]}"


def config_hash(resolved: dict) -> str:
    """Hash of what determines a cell's result: the resolved config without name and output."""
    relevant = {k: v for k, v in resolved.items() if k not in ("name", "output", "description")}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def applies(setting: SettingEntry, data_label: str, model_label: str, model: dict) -> bool:
    return (setting.datasets is None or data_label in setting.datasets) and \
        (setting.models is None or model_label in setting.models or model["name"] in setting.models)


def merge_named(*levels: dict) -> dict:
    """name -> parameters tables merged in order; `name: null` removes an earlier entry."""
    merged: dict[str, dict] = {}
    for level in levels:
        for name, params in (level or {}).items():
            if params is None:
                merged.pop(name, None)
            else:
                merged[name] = {**merged.get(name, {}), **params}
    return merged


TOP_LEVEL_KEYS = [f.name for f in dataclasses.fields(Grid)
                  if f.name not in ("source", "unavailable")]


def load_grid(source: str | Path | dict, overrides: list[str] = (),
              skip_unavailable: bool = False) -> Grid:
    """Read and validate a grid; every error names the grid entry at fault.

    `overrides` are `key.path=value` as in `secureml run --set`. With `skip_unavailable`, a
    setting that names a defence or evaluation this installation lacks is left out, and such an
    evaluation of the grid or a data set is dropped from its cells (all listed in
    `Grid.unavailable`) instead of refused.
    """
    from ..config import apply_override

    raw, path = schema.read_mapping(source, "grid", TOP_LEVEL_KEYS,
                                    "; the default grid is experiments/bench_default.yaml")
    where = str(path) if path else "grid"
    for override in overrides:
        apply_override(raw, override)
    return _build(raw, where, skip_unavailable)


def _build(raw: dict, where: str, skip_unavailable: bool) -> Grid:
    schema.check_keys(raw, TOP_LEVEL_KEYS, where)
    name = raw.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        schema.fail(f"{where}: name", f"{name!r} must be letters, digits, '_', '.' or '-' "
                                      "(it names the benchmark folder)")
    for key in ("models", "datasets", "settings"):
        if not isinstance(raw.get(key), dict) or not raw[key]:
            schema.fail(f"{where}: {key}", "missing or empty; expected a mapping of label to "
                                           "entry (see docs/benchmarks.md)")
    # Evaluations of the grid or a data set that are not installed are dropped from the cells;
    # a setting that names one is dropped whole (without it the setting is another setting).
    skipped: dict[str, str] | None = {} if skip_unavailable else None
    try:
        grid = Grid(
            name=name,
            description=str(raw.get("description") or ""),
            seeds=_seeds(raw.get("seeds", [0]), f"{where}: seeds"),
            baseline=raw.get("baseline"),
            training=_partial(TrainingConfig, raw.get("training"), f"{where}: training"),
            runtime=_partial(RuntimeConfig, raw.get("runtime"), f"{where}: runtime"),
            evaluation=_named(raw.get("evaluation"), "evaluation", f"{where}: evaluation",
                              skipped),
            output=schema.build(GridOutput, raw.get("output"), f"{where}: output"),
            models={label: _model(label, entry, f"{where}: models.{label}")
                    for label, entry in raw["models"].items()},
            datasets={}, settings={}, source=where if where != "grid" else None)
        for label, entry in raw["datasets"].items():
            grid.datasets[label] = _dataset(label, entry, grid, f"{where}: datasets.{label}",
                                            skipped)
        for label, entry in raw["settings"].items():
            try:
                grid.settings[label] = _setting(label, entry, grid,
                                                f"{where}: settings.{label}")
            except _Unavailable as err:
                if skipped is None:
                    raise
                skipped[f"settings.{label}"] = str(err)
    except _Unavailable as err:
        raise ConfigError(f"{err}; install it, remove it from the grid, or run with "
                          "--skip-unavailable to benchmark the rest") from None
    grid.unavailable = skipped or {}
    grid.baseline = _baseline(grid, where)
    grid.cells()  # validates every cell's run config, naming the entries it came from
    return grid


NAMED = {"defence": (registry.DEFENCES, registry.defence_module),
         "evaluation": (registry.EVALUATIONS, registry.evaluation_module)}


class _Unavailable(Exception):
    """A setting names a capability that this installation does not have."""


def _label(label, where: str) -> None:
    if not isinstance(label, str) or not LABEL.fullmatch(label):
        schema.fail(where, f"label {label!r} must be letters, digits, '_' or '.' (it names "
                           "folders and table rows)")


def _one_of(value, allowed: list[str], where: str) -> None:
    schema.coerce(Literal[tuple(allowed)], value, where)


def _seeds(value, where: str) -> list[int]:
    seeds = schema.coerce(list[schema.Seed], value if isinstance(value, list) else [value], where)
    if not seeds or len(set(seeds)) != len(seeds):
        schema.fail(where, f"expected a non-empty list of distinct integers, got {value!r}")
    return seeds


def _partial(cls, mapping, where: str) -> dict:
    """A mapping of some of `cls`'s keys (the rest come from other levels), type-checked."""
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        schema.fail(where, f"expected a mapping, got {mapping!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    schema.check_keys(mapping, list(fields), where)
    hints = get_type_hints(cls)
    return {k: schema.coerce(hints[k], v, f"{where}.{k}") for k, v in mapping.items()}


def _named(mapping, kind: str, where: str, skipped: dict[str, str] | None = None) -> dict:
    """A name -> parameters table of defences or evaluations, keys checked against each Config.

    A name the registry lists but this installation cannot import raises `_Unavailable`, or,
    with a `skipped` record, is left out and recorded there.
    """
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        schema.fail(where, f"expected a mapping of name to parameters, got {mapping!r}")
    table, load_module = NAMED[kind]
    checked = {}
    for name, params in mapping.items():
        if name not in table:
            load_module(name)  # raises the registry's "unknown ...; available: ..." error
        try:
            module = load_module(name)
        except ConfigError as err:  # listed in the registry but not importable here
            if skipped is None:
                raise _Unavailable(f"{where}.{name}: {err}") from None
            skipped[f"{where.split(': ', 1)[-1]}.{name}"] = str(err)
            continue
        checked[name] = None if params is None else _partial(module.Config, params,
                                                             f"{where}.{name}")
    return checked


def _model(label, entry, where: str) -> dict:
    _label(label, where)
    _resolve_model(entry, where)  # the checks of a run config's model section
    return dict(entry)


def _dataset(label, entry, grid: Grid, where: str, skipped: dict | None) -> DatasetEntry:
    _label(label, where)
    built = schema.build(DatasetEntry, entry, where)
    schema.build(DataConfig, built.data, f"{where}.data")
    for i, model_label in enumerate(built.models):
        _one_of(model_label, list(grid.models), f"{where}.models[{i}]")
    built.training = _partial(TrainingConfig, built.training, f"{where}.training")
    built.evaluation = _named(built.evaluation, "evaluation", f"{where}.evaluation", skipped)
    return built


def _setting(label, entry, grid: Grid, where: str) -> SettingEntry:
    _label(label, where)
    built = schema.build(SettingEntry, entry, where)
    if built.models is not None:
        known = list(grid.models) + sorted({m["name"] for m in grid.models.values()})
        for i, name in enumerate(built.models):
            _one_of(name, known, f"{where}.models[{i}]")
    for i, name in enumerate(built.datasets or []):
        _one_of(name, list(grid.datasets), f"{where}.datasets[{i}]")
    built.training = _partial(TrainingConfig, built.training, f"{where}.training")
    built.runtime = _partial(RuntimeConfig, built.runtime, f"{where}.runtime")
    built.defences = _named(built.defences, "defence", f"{where}.defences")
    built.evaluation = _named(built.evaluation, "evaluation", f"{where}.evaluation")
    if any(params is None for params in built.defences.values()):
        schema.fail(f"{where}.defences", "a defence needs parameters ({} for its defaults), "
                                         "not null")
    return built


def _baseline(grid: Grid, where: str) -> str:
    if grid.baseline is None:
        plain = [label for label, s in grid.settings.items()
                 if not s.defences and not s.runtime and not s.training]
        if not plain:
            schema.fail(f"{where}: settings", "no undefended setting to measure costs against; "
                                              "add one, for example plain: {}")
        return plain[0]
    _one_of(grid.baseline, list(grid.settings), f"{where}: baseline")
    setting = grid.settings[grid.baseline]
    if setting.defences:
        schema.fail(f"{where}: baseline", f"setting '{grid.baseline}' has defences "
                                          f"({', '.join(setting.defences)}); the baseline must be "
                                          "undefended")
    if setting.models is not None or setting.datasets is not None:
        schema.fail(f"{where}: baseline", f"setting '{grid.baseline}' is limited to some models "
                                          "or data sets; the baseline must apply to every cell")
    return grid.baseline
