"""`secureml report RUN_DIR [RUN_DIR ...]`: one report comparing several run folders."""
from __future__ import annotations

import time
from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="run folders written by `secureml run` (or variant folders "
                             "inside them), compared side by side")
    parser.add_argument("--out", help="folder for report.json, report.md and report.html "
                                      "(default: the folder given when there is one, "
                                      "else report-<time> in the current folder)")
    parser.add_argument("--policy", help="audit policy YAML for the scorecard (default: the "
                                         "first run's audit.policy, else the shipped default)")


def main(args) -> int:
    from . import write_report

    out = args.out
    if out is None:
        out = Path(args.run_dirs[0]) if len(args.run_dirs) == 1 else \
            Path(f"report-{time.strftime('%Y%m%d-%H%M%S')}")
    for path in write_report(args.run_dirs, out, args.policy):
        print(path)
    return 0
