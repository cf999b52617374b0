"""Run an experiment: data, then each variant's training and evaluations, into a run folder.

```
runs/<name>-<time>/
  config.yaml           the resolved config, every default filled in
  status.json           whether the run finished: stages data and report (secureml.status)
  data.json             data summary (sizes, source, classes) and the data audit
  <variant>/
    status.json         whether each stage finished: training, test, each evaluation
    model/model.keras   the trained logits model
    vectorizer/         text only: the vocabulary this variant used (dp_sgd.vocabulary)
    history.json        per-epoch values (loss, accuracy, validation, epsilon, ...)
    metrics.json        sections: test, train, cost, training, data, environment, vocabulary
                        (text), and one per defence or evaluation (privacy, robustness,
                        membership, he)
```
Every stage writes what it measured into the folder and reads only what came before, so reports
and benchmarks can be rebuilt from the folder alone. See docs/metrics.md for every field.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf
import yaml

from . import registry, schema
from .config import ExperimentConfig, VariantConfig, load_config
from .data import Dataset, DataConfig, TextVectorizer, load_dataset
from .defences.dp_sgd.vocabulary import Vocabulary, VocabularyPlan, build_vocabulary, \
    plan_vocabulary
from .errors import ConfigError, SecureMLError
from .evaluation import classification_metrics
from .models import build_model, check_memory, model_spec
from .training import TrainResult, configure_runtime, make_strategy, train
from .training.resources import library_versions
from .console import log as _log
from .report.rundir import baseline_variant, ratio, write_json as _write_json
from .status import Status

METRICS_SCHEMA_VERSION = 1


@dataclass
class PreparedInputs:
    """The data as the model takes it: images as they are, texts as token ids."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    vectorizer: TextVectorizer | None = None
    vocabulary: Vocabulary | None = None  # text: where the vectorizer's tokens came from

    @property
    def input_shape(self) -> tuple:
        return tuple(self.x_train.shape[1:])

    @property
    def vocab_size(self) -> int | None:
        return len(self.vectorizer.vocabulary) if self.vectorizer else None


def prepare_inputs(data: Dataset, vocab_size: int, sequence_length: int,
                   vocabulary: VocabularyPlan | None = None) -> PreparedInputs:
    """Vectorize texts with the vocabulary `vocabulary` plans (default: fitted on the training
    split only, no test leakage)."""
    if data.kind != "text":
        return PreparedInputs(data.x_train, data.y_train, data.x_val, data.y_val,
                              data.x_test, data.y_test)
    vectorizer, built = build_vocabulary(vocabulary or VocabularyPlan(), data.x_train,
                                         vocab_size, sequence_length)
    return PreparedInputs(vectorizer(data.x_train), data.y_train, vectorizer(data.x_val),
                          data.y_val, vectorizer(data.x_test), data.y_test, vectorizer, built)


class VariantInputs:
    """Each variant's inputs: texts get the vocabulary of the variant's `dp_sgd.vocabulary`
    (DP by default) or, without DP-SGD, the one fitted on the training texts. Every plan is
    made up front, so a bad setting fails before any training; variants whose vocabularies are
    planned alike share one build (one release of the vocabulary)."""

    def __init__(self, data: Dataset, config: DataConfig, variants: list[VariantConfig]):
        self.data, self.config = data, config
        self._plans = {v.name: plan_vocabulary(v.defences.get("dp_sgd"), len(data.y_train))
                       if data.kind == "text" else None for v in variants}
        self._built: dict[VocabularyPlan | None, PreparedInputs] = {}

    def __call__(self, variant: VariantConfig) -> PreparedInputs:
        plan = self._plans[variant.name]
        if plan not in self._built:
            self._built[plan] = prepare_inputs(self.data, self.config.vocab_size,
                                               self.config.sequence_length, plan)
        return self._built[plan]


@dataclass
class VariantContext:
    """What an evaluation stage gets: the trained variant and everything it came from."""

    experiment: ExperimentConfig
    variant: VariantConfig
    data: Dataset
    inputs: PreparedInputs
    model: tf.keras.Model
    result: TrainResult
    metrics: dict
    directory: Path
    strategy: tf.distribute.Strategy
    progress: bool = True

    @property
    def seed(self) -> int:
        return self.experiment.seed

    def build_model(self) -> tf.keras.Model:
        """A fresh, untrained model of this variant's architecture."""
        return build_model(self.variant.model_name, self.inputs.input_shape,
                           self.data.num_classes, vocab_size=self.inputs.vocab_size,
                           **self.variant.model_options)

    def retrain(self, x, y, *, seed: int, epochs: int | None = None,
                progress: bool = False) -> TrainResult:
        """Train a new model on (x, y) with this variant's exact recipe, defences included.

        Shadow models for membership inference must be trained the way the target was.
        """
        return _train_variant(self.experiment, self.variant, self.data.kind, self.build_model,
                              x, y, None, self.strategy, seed, progress, epochs=epochs,
                              vocabulary=self.inputs.vocabulary)


@dataclass
class RunResult:
    directory: Path
    metrics: dict[str, dict] = field(default_factory=dict)


def run_experiment(config: ExperimentConfig | str | Path, *, out_dir: str | Path | None = None,
                   variants: list[str] | None = None, progress: bool = True) -> RunResult:
    """Run every variant of an experiment and write the run folder; returns its path and metrics."""
    if not isinstance(config, ExperimentConfig):
        config = load_config(config)
    selected = select_variants(config, variants)
    configure_runtime(config.runtime)
    strategy = make_strategy(config.runtime)
    run_dir = _make_run_dir(config, out_dir)
    _write_yaml(run_dir / "config.yaml", config.to_dict())
    _log(progress, f"run folder: {run_dir}")

    # The baseline (audit.baseline, else the first variant without defences) trains first, so
    # every other variant's cost is compared with it as soon as that variant is measured.
    named = baseline_variant([(v.name, v.defences) for v in selected], config.audit.baseline)
    baseline = next((v for v in selected if v.name == named), None)
    order = ([baseline] if baseline else []) + [v for v in selected if v is not baseline]
    result = RunResult(run_dir)
    stages = ["data"] + (["report"] if config.audit.report else [])
    with Status(run_dir, stages, variants=[v.name for v in order]) as status:
        with status.stage("data"):
            data = load_dataset(config.data, seed=config.seed, progress=progress)
            inputs = VariantInputs(data, config.data, selected)
            _check_memory(selected, data, inputs)
            data_record = {"summary": data.summary(),
                           "audit": _data_audit(config, data, run_dir, progress)}
            _write_json(run_dir / "data.json", data_record)
        _log(progress, f"data: {data.name} ({data.kind}), {data.num_classes} classes, "
                       f"train/val/test = {len(data.y_train)}/{len(data.y_val)}/"
                       f"{len(data.y_test)}")
        for variant in order:
            base_cost = result.metrics[baseline.name]["cost"] \
                if baseline and variant is not baseline else None
            result.metrics[variant.name] = _run_variant(config, variant, data, inputs(variant),
                                                        run_dir, strategy, progress, baseline,
                                                        base_cost)
        result.metrics = {v.name: result.metrics[v.name] for v in selected}
        if config.audit.report:
            with status.stage("report"):
                _write_report(run_dir, progress)
    _log(progress, summary_table(result.metrics))
    return result


def _run_variant(config: ExperimentConfig, variant: VariantConfig, data: Dataset,
                 inputs: PreparedInputs, run_dir: Path, strategy, progress: bool,
                 baseline: VariantConfig | None, baseline_cost: dict | None) -> dict:
    directory = run_dir / variant.name
    directory.mkdir(parents=True, exist_ok=True)
    evaluations = {name: registry.evaluation_module(name) for name in registry.EVALUATIONS
                   if name in variant.evaluation}
    stages = ["training", "test", *[module.SECTION for module in evaluations.values()]]
    with Status(directory, stages) as status:
        with status.stage("training"):
            trained = _train_and_save(config, variant, data, inputs, directory, strategy,
                                      progress)
        with status.stage("test"):
            metrics = _variant_metrics(config, variant, data, inputs, trained)
            if baseline is not None:
                _add_baseline_ratios(metrics["cost"], baseline.name,
                                     baseline_cost or metrics["cost"])
            _write_json(directory / "metrics.json", metrics)
        _log(progress, f"variant '{variant.name}': test accuracy "
                       f"{metrics['test']['accuracy']:.4f} in {trained.cost['train_time_s']:.1f}s"
                       + _engine_note(metrics))

        context = VariantContext(config, variant, data, inputs, trained.model, trained, metrics,
                                 directory, strategy, progress)
        for name, module in evaluations.items():
            with status.stage(module.SECTION):
                _log(progress, f"variant '{variant.name}': {name}")
                metrics[module.SECTION] = module.evaluate(context, variant.evaluation[name])
                _write_json(directory / "metrics.json", metrics)
    return metrics


def _train_and_save(config: ExperimentConfig, variant: VariantConfig, data: Dataset,
                    inputs: PreparedInputs, directory: Path, strategy, progress: bool):
    spec = model_spec(variant.model_name)
    if spec.kind != data.kind:
        raise ConfigError(f"variant '{variant.name}': model '{variant.model_name}' takes "
                          f"{spec.kind} data but data set '{data.name}' is {data.kind}; "
                          f"choose a {data.kind} model")

    def builder():
        return build_model(variant.model_name, inputs.input_shape, data.num_classes,
                           vocab_size=inputs.vocab_size, **variant.model_options)

    _log(progress, f"variant '{variant.name}': training {variant.model_name}"
                   + (f" with {', '.join(variant.defences)}" if variant.defences else ""))
    trained = _train_variant(config, variant, data.kind, builder, inputs.x_train, inputs.y_train,
                             (inputs.x_val, inputs.y_val), strategy, config.seed, progress,
                             label=f"[{variant.name}] ", vocabulary=inputs.vocabulary)
    _save_artifacts(directory, trained, inputs, config.output.save_model)
    _write_json(directory / "history.json", trained.history)
    return trained


def _variant_metrics(config: ExperimentConfig, variant: VariantConfig, data: Dataset,
                     inputs: PreparedInputs, trained: TrainResult) -> dict:
    return {
        "schema_version": METRICS_SCHEMA_VERSION,
        "run": config.name,
        "variant": variant.name,
        "model": variant.model,
        "defences": sorted(variant.defences),
        "test": classification_metrics(trained.model, inputs.x_test, inputs.y_test,
                                       data.class_names, variant.training.eval_batch_size),
        "train": _accuracy_and_loss(trained.model, inputs.x_train, inputs.y_train, data,
                                    variant.training.eval_batch_size),
        "cost": trained.cost,
        "training": {**_training_record(variant), **trained.setup.describe()},
        "data": data.summary() | {"vocab_size": inputs.vocab_size,
                                  "sequence_length": inputs.x_train.shape[1]
                                  if data.kind == "text" else None},
        **({"vocabulary": inputs.vocabulary.describe()} if inputs.vocabulary else {}),
        "environment": {"seed": config.seed, "libraries": library_versions(),
                        "device": trained.cost["device"]},
        **trained.sections,
    }


def _train_variant(config: ExperimentConfig, variant: VariantConfig, data_kind: str, builder, x,
                   y, validation, strategy, seed: int, progress: bool, label: str = "",
                   epochs: int | None = None, vocabulary: Vocabulary | None = None):
    tf.keras.utils.set_random_seed(seed)
    defences = [registry.defence_module(name).make(cfg, data_kind)
                for name, cfg in variant.defences.items()]
    training = variant.training
    if epochs is not None:
        training = dataclasses.replace(training, epochs=epochs)
    return train(builder, x, y, config=training, defences=defences, validation_data=validation,
                 strategy=strategy, seed=seed, progress=progress, label=label,
                 jit_compile=config.runtime.xla, vocabulary=vocabulary)


def _training_record(variant: VariantConfig) -> dict:
    return {"config": schema.to_dict(variant.training),
            "defences": schema.to_dict(variant.defences)}


def _accuracy_and_loss(model, x, y, data: Dataset, batch_size: int) -> dict:
    full = classification_metrics(model, x, y, data.class_names, batch_size)
    return {k: full[k] for k in ("examples", "accuracy", "accuracy_ci", "confidence_level",
                                 "loss")}


def _save_artifacts(directory: Path, trained: TrainResult, inputs: PreparedInputs,
                    save_model: bool) -> None:
    if save_model:
        (directory / "model").mkdir(exist_ok=True)
        trained.model.save(directory / "model" / "model.keras")
    if inputs.vectorizer is not None:
        inputs.vectorizer.save(directory / "vectorizer")


def _add_baseline_ratios(cost: dict, baseline: str, base_cost: dict) -> None:
    """Cost relative to the run's baseline variant, measured in the same run.

    Ratios, unlike seconds, compare across machines.
    """
    cost["baseline_variant"] = baseline
    cost["train_time_ratio"] = ratio(cost["train_time_s"], base_cost["train_time_s"])
    cost["peak_rss_increase_ratio"] = ratio(cost["peak_rss_increase_mb"],
                                            base_cost["peak_rss_increase_mb"])


def _check_memory(selected: list[VariantConfig], data: Dataset, inputs) -> None:
    """Refuse, before any training, a variant whose model would not fit in memory."""
    for variant in selected:
        if model_spec(variant.model_name).kind == data.kind:  # else _run_variant says so
            prepared = inputs(variant)
            check_memory(variant.model_name, prepared.input_shape, data.num_classes,
                         variant.training.batch_size, vocab_size=prepared.vocab_size,
                         where=f"variant '{variant.name}': ", **variant.model_options)


def _data_audit(config: ExperimentConfig, data: Dataset, run_dir: Path,
                progress: bool) -> dict | None:
    if not config.audit.data:
        return None
    from .audit.data_audit import audit_dataset
    from .audit.records import run_key
    _log(progress, "data audit")
    return audit_dataset(data, options={"include_examples": config.audit.include_examples},
                         record_key=run_key(run_dir))


def _write_report(run_dir: Path, progress: bool) -> None:
    try:
        from .report import write_report
    except ModuleNotFoundError as err:
        raise SecureMLError(
            f"the report needs the Python package '{err.name}', which is not installed: install "
            f"it and run `secureml report {run_dir}`, or set audit.report: false") from None
    from .audit.verdict import headline
    paths = write_report([run_dir], run_dir)
    _log(progress, "report: " + ", ".join(str(p) for p in paths))
    _log(progress, "verdict: " + headline(json.loads(paths[0].read_text())["verdicts"][0]))


def summary_table(metrics: dict[str, dict]) -> str:
    rows = [("variant", "test acc", "train time (s)", "x baseline", "extra")]
    for name, m in metrics.items():
        extra = []
        if "privacy" in m:
            extra.append(f"epsilon={m['privacy'].get('epsilon', float('nan')):.3g}")
        if "robustness" in m and m["robustness"].get("headline"):
            extra.append(m["robustness"]["headline"])
        if "he" in m and "encrypted_accuracy" in m["he"]:
            extra.append(f"encrypted acc={m['he']['encrypted_accuracy']:.4f}")
        ratio = m["cost"].get("train_time_ratio")
        rows.append((name, f"{m['test']['accuracy']:.4f}", f"{m['cost']['train_time_s']:.1f}",
                     f"{ratio:.2f}" if ratio else "-", " ".join(extra)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def select_variants(config: ExperimentConfig, names: list[str] | None) -> list[VariantConfig]:
    if not names:
        return config.variants
    known = {v.name: v for v in config.variants}
    for name in names:
        if name not in known:
            raise ConfigError(f"no variant '{name}' in {config.source or 'the config'}; "
                              f"variants: {', '.join(known)}")
    return [known[n] for n in names]


def _make_run_dir(config: ExperimentConfig, out_dir) -> Path:
    base = Path(out_dir or config.output.dir)
    name = config.name
    if config.output.timestamp:
        name += "-" + time.strftime("%Y%m%d-%H%M%S")
    path = base / name
    suffix = 1
    while path.exists():
        suffix += 1
        path = base / f"{name}-{suffix}"
    path.mkdir(parents=True)
    return path


def _write_yaml(path: Path, value) -> None:
    path.write_text(yaml.safe_dump(value, sort_keys=False))


def _engine_note(metrics: dict) -> str:
    """Which gradient engine trained a DP variant, and each layer's per-example norm method."""
    engine = dict(metrics["training"].get("engine") or {})
    if "privacy" not in metrics or not engine:
        return ""
    name = engine.pop("name")
    layers = ", ".join(f"{layer} {method}" for layer, method in engine.items()
                       if isinstance(method, str))
    return f"; DP-SGD clipping: {name}" + (f" ({layers})" if name == "fast" and layers else "")

