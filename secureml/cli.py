"""The `secureml` command. Thin: parses arguments and calls the library.

`run` and `datasets` live here; each capability brings its other subcommands from a module
exposing `add_arguments(parser)` and `main(args) -> int`, listed in `COMMANDS`; only the module
of the command being run is imported, so `secureml privacy ...` does not wait for TensorFlow.
Every error a user can fix (a `SecureMLError`, a bad argument) is printed as one line,
`secureml: error: ...`, without a traceback, and exits with status 2.
"""
import argparse
import importlib
import os
import sys
from pathlib import Path

from .errors import ConfigError, SecureMLError


class _ArgumentError(SecureMLError):
    """A command line argparse refused."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors raised as one line instead of usage text and sys.exit."""

    def error(self, message):
        command = self.prog.removeprefix("secureml").strip()
        raise _ArgumentError(f"{command + ': ' if command else ''}{message} "
                             f"(see {self.prog} --help)")


COMMANDS: dict[str, tuple[str, str]] = {
    "privacy": ("secureml.defences.dp_sgd.cli", "plan a DP-SGD privacy budget (epsilon, noise)"),
    "he": ("secureml.he.cli", "encrypted inference: keygen, encrypt, infer, decrypt, demo"),
    "audit": ("secureml.audit.cli", "audit a run folder: membership, privacy, data, scorecard"),
    "report": ("secureml.report.cli", "render one report comparing several run folders"),
    "bench": ("secureml.bench.cli", "benchmark defences: accuracy against cost over a grid"),
}


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="train and evaluate the variants of an experiment config",
                       description="Train and evaluate every variant of an experiment config "
                                   "and write a run folder (config, models, metrics, report).")
    p.add_argument("config", help="experiment YAML, e.g. experiments/quickstart.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set training.epochs=3 "
                        "--set data.limit=1000 (repeatable; values in YAML syntax)")
    p.add_argument("--out", help="parent folder of the run folder (default: output.dir, 'runs')")
    p.add_argument("--variant", dest="variants", action="append", metavar="NAME",
                   help="run only this variant (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(handler=_run)


def _run(args) -> int:
    from .config import load_config
    from .runner import run_experiment
    config = load_config(args.config, args.overrides)
    _check_parent_folder(Path(args.out or config.output.dir),
                         "--out" if args.out else "output.dir")
    result = run_experiment(config, out_dir=args.out, variants=args.variants,
                            progress=not args.quiet)
    print(result.directory)
    return 0


def _check_parent_folder(path: Path, option: str) -> None:
    """Refuse a run folder's parent that cannot be a folder or cannot be written, before
    anything runs."""
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"{option} {path}: {existing} is a file, not a folder; choose a "
                          f"folder for the run folders")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: cannot create folders in {existing} (permission "
                          f"denied); choose a folder you can write to")


def _add_datasets(sub) -> None:
    p = sub.add_parser("datasets", help="list the named data sets and where each would load from",
                       description="List the named data sets and where each would load from "
                                   "now (a config's data.path, $SECUREML_DATA_DIR, the Keras "
                                   "cache, a download), without loading or downloading.")
    p.add_argument("config", nargs="?",
                   help="an experiment YAML: its data.path counts for its data set")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set data.path=~/data/cifar10")
    p.set_defaults(handler=_datasets)


def _datasets(args) -> int:
    from .data import list_sources
    config_paths = {}
    if args.config:
        from .config import load_config
        data = load_config(args.config, args.overrides).data
        if data.name and data.path is not None:
            config_paths[data.name] = data.path
    elif args.overrides:
        print("secureml: error: --set needs a config (secureml datasets CONFIG --set ...)",
              file=sys.stderr)
        return 2
    sources = list_sources(config_paths)
    rows = [("name", "kind", "status", "loads from")]
    rows += [(s["name"], s["kind"], s["status"], s["location"] or "-") for s in sources]
    widths = [max(len(str(r[i])) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row[:3], widths)), row[3])
    for source in sources:
        if source["status"] not in ("found", "bundled") and source["hint"]:
            print(f"\n{source['name']}: {source['hint']}")
    return 0


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="secureml",
        description="Privacy and security hardening for TensorFlow/Keras classifiers.")
    parser.add_argument("--version", action="store_true", help="print versions and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_run(sub)
    _add_datasets(sub)
    chosen = next((a for a in (sys.argv[1:] if argv is None else argv)
                   if not a.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(command)
            command.set_defaults(handler=module.main)
    return parser


def main(argv=None) -> int:
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        if args.version:
            from .training.resources import library_versions
            for name, version in library_versions().items():
                print(f"{name} {version}")
            return 0
        if not getattr(args, "handler", None):
            raise _ArgumentError(f"no command given; choose one of run, datasets, "
                                 f"{', '.join(COMMANDS)} (see secureml --help)")
        return args.handler(args) or 0
    except SecureMLError as err:
        _error(str(err))
        return 2
    except OSError as err:
        # The environment refused an operation on a named file that no check before it could
        # foresee (permissions, a full disk, a path that changed meanwhile). Anything else is a
        # bug and keeps its traceback.
        if err.filename is None:
            raise
        _error(f"{err.filename}: {err.strerror or err}"
               + (f" (and {err.filename2})" if err.filename2 else ""))
        return 2
    except KeyboardInterrupt:
        print("secureml: interrupted", file=sys.stderr)
        return 130


def _error(message: str) -> None:
    # One line, whatever the message holds (YAML errors and file names may span lines).
    print(f"secureml: error: {' '.join(message.split())}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
