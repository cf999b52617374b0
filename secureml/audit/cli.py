"""`secureml audit RUN_DIR`: audit a finished run folder and re-render its report.

Reloads the data exactly as the run did (same config, same seed; refused if the files changed),
runs the data audit if the folder has none (or with --data), runs the membership audit on each
variant's saved model (settings from the variant's `evaluation.membership`, or the defaults,
with --set overrides), writes the results into the folder and renders report.json/md/html.
Each of these is a stage in the folder's status.json files (secureml.status). With no variant
to audit (no saved model: an empty, wrong or unfinished folder) it writes nothing and exits 2.
"""
from __future__ import annotations

from pathlib import Path

from ..console import log as _log
from ..errors import ConfigError, DataError
from ..report.rundir import write_json as _write_json
from ..status import Status


def add_arguments(parser) -> None:
    parser.add_argument("run_dir", help="a run folder written by `secureml run` (or one "
                                        "variant's folder inside it)")
    parser.add_argument("--variant", dest="variants", action="append", metavar="NAME",
                        help="audit only this variant (repeatable; default: all)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="membership audit setting, e.g. --set shadow_models=16 "
                             "--set attacks=[loss,lira_online] (values in YAML syntax)")
    parser.add_argument("--no-membership", action="store_true",
                        help="skip the membership audit (data audit and report only)")
    parser.add_argument("--data", action="store_true",
                        help="run the data audit again even if data.json has one")
    parser.add_argument("--policy", help="audit policy YAML for the scorecard (default: the "
                                         "run's audit.policy, else the shipped default)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def main(args) -> int:
    from ..report import write_report
    from ..report.rundir import run_folder
    from ..runner import select_variants

    run_dir, only = run_folder(args.run_dir)
    progress = not args.quiet
    overrides = _parse_overrides(args.overrides)
    config = _load_run_config(run_dir)
    selected = select_variants(config, args.variants or only)
    audited = [] if args.no_membership else [v for v in selected if _trained(run_dir / v.name)]
    if not args.no_membership and not audited:
        # Nothing is written then: a report of nothing would read like a clean audit.
        raise ConfigError(f"nothing to audit in {run_dir}: no variant has a saved model and "
                          f"metrics.json (the run stopped before any variant was trained, or "
                          f"ran with output.save_model off); see its status.json, or pass "
                          f"--no-membership for the data audit alone")
    for variant in selected:
        if variant not in audited and not args.no_membership:
            _log(True, f"variant '{variant.name}': no saved model or metrics.json "
                       f"(output.save_model off, or the run stopped before it); skipped")
    with Status(run_dir, resume=True) as status:
        data = None
        data_record = _read_json(run_dir / "data.json") or {}
        if args.data or not isinstance(data_record.get("audit"), dict) \
                or "duplicates" not in data_record["audit"]:
            with status.stage("data"):
                data = _load_data(config, run_dir, data_record, progress)
                from .data_audit import audit_dataset
                from .records import run_key
                _log(progress, "data audit")
                data_record["audit"] = audit_dataset(
                    data, options={"include_examples": config.audit.include_examples},
                    record_key=run_key(run_dir), progress=progress)
                data_record.setdefault("summary", data.summary())
                _write_json(run_dir / "data.json", data_record)
        if audited:
            data = data or _load_data(config, run_dir, data_record, progress)
        for variant in audited:
            _audit_variant(config, variant, data, run_dir, overrides, progress)
        with status.stage("report"):
            paths = write_report([run_dir], run_dir, args.policy)
    for path in paths:
        print(path)
    return 0


def _trained(directory: Path) -> bool:
    return (directory / "model" / "model.keras").is_file() and \
        isinstance(_read_json(directory / "metrics.json"), dict)


def _parse_overrides(items: list[str]) -> dict:
    """--set values for the membership Config (a `membership.` prefix is allowed)."""
    from ..config import apply_override

    values: dict = {}
    for item in items:
        apply_override(values, item)
    nested = values.pop("membership", None)
    return {**values, **nested} if isinstance(nested, dict) else values


def _load_run_config(run_dir: Path):
    """The run's resolved config.yaml as an ExperimentConfig."""
    from ..config import load_config

    path = run_dir / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir} has no config.yaml; pass a folder written by "
                          f"`secureml run`")
    return load_config(path)


def _load_data(config, run_dir: Path, record: dict, progress: bool):
    """The run's data, refused if it no longer matches what the run trained on."""
    from ..data import load_dataset

    data = load_dataset(config.data, seed=config.seed, progress=progress)
    then = record.get("summary") or {}
    now = data.summary()
    for key in ("sizes", "class_names"):
        if then.get(key) is not None and then[key] != now[key]:
            raise DataError(f"the data loaded now differs from the run's ({key}: "
                            f"{then[key]} then, {now[key]} now); audit with the data the run "
                            f"used (data.path, SECUREML_DATA_DIR)")
    old, new = (then.get("source") or {}).get("fingerprint"), now["source"].get("fingerprint")
    if old and new and old != new:
        raise DataError(f"the data files changed since the run (fingerprint {old} then, {new} "
                        f"now); a membership audit needs the exact training data")
    return data


def _audit_variant(config, variant, data, run_dir: Path, overrides: dict,
                   progress: bool) -> None:
    from .. import schema
    from ..data import TextVectorizer
    from ..runner import PreparedInputs, VariantContext
    from ..security.loading import load_model
    from ..training import configure_runtime, make_strategy
    from . import membership

    directory = run_dir / variant.name
    model_path = directory / "model" / "model.keras"
    metrics = _read_json(directory / "metrics.json")
    base = variant.evaluation.get("membership")
    settings = {**(schema.to_dict(base) if base is not None else {}), **overrides}
    member_config = schema.build(membership.Config, settings, "membership")
    configure_runtime(config.runtime)
    model = load_model(model_path, what=f"saved model of variant '{variant.name}'")
    vectorizer = TextVectorizer.load(directory / "vectorizer") if data.kind == "text" else None
    prepare = vectorizer if vectorizer is not None else (lambda x: x)
    inputs = PreparedInputs(prepare(data.x_train), data.y_train, prepare(data.x_val), data.y_val,
                            prepare(data.x_test), data.y_test, vectorizer)
    context = VariantContext(config, variant, data, inputs, model, None, metrics, directory,
                             make_strategy(config.runtime), progress)
    _log(progress, f"variant '{variant.name}': membership audit")
    with Status(directory, resume=True) as status, status.stage(membership.SECTION):
        metrics[membership.SECTION] = membership.evaluate(context, member_config)
        _write_json(directory / "metrics.json", metrics)
    best = metrics[membership.SECTION]["best"]
    _log(progress, f"variant '{variant.name}': best AUC {best['auc']:.3f} "
                   f"({best['auc_attack']}), TPR at 0.1% FPR {best['tpr_at_0.1%_fpr']:.2%} "
                   f"({best['tpr_attack']})")


def _read_json(path: Path):
    from ..report.rundir import read_json

    return read_json(path, [])
