"""`secureml report RUN_DIR [RUN_DIR ...]`: one report comparing several run folders.

`--table COLUMNS` prints a Markdown table of chosen metrics instead, and `--docs FILE...`
re-makes the generated tables in documentation pages (see secureml/report/tables.py).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from ..errors import ConfigError


def add_arguments(parser) -> None:
    parser.add_argument("run_dirs", nargs="*", metavar="RUN_DIR",
                        help="run folders written by `secureml run` (or variant folders "
                             "inside them), compared side by side")
    parser.add_argument("--out", help="folder for report.json, report.md and report.html "
                                      "(default: the folder given when there is one, "
                                      "else report-<time> in the current folder)")
    parser.add_argument("--policy", help="audit policy YAML for the scorecard (default: the "
                                         "first run's audit.policy, else the shipped default)")
    parser.add_argument("--table", metavar="COLUMNS",
                        help="print a Markdown table, one row per variant, instead of writing "
                             "a report: comma-separated label=metrics.path[:format], e.g. "
                             "'accuracy=test.accuracy:.3f,epsilon=privacy.epsilon:.2f'")
    parser.add_argument("--docs", nargs="+", metavar="FILE",
                        help="re-make the generated tables (<!-- generated: ... --> blocks) "
                             "of these Markdown files from the run folders they name")
    parser.add_argument("--check", action="store_true",
                        help="with --docs: write nothing, exit 1 if a table is stale")


def main(args) -> int:
    from . import tables

    if args.docs:
        if args.run_dirs or args.table:
            raise ConfigError("--docs takes its run folders from the files; give no RUN_DIR "
                              "or --table with it")
        changed = tables.update_docs(args.docs, check=args.check)
        for path in changed:
            print(f"{'stale' if args.check else 'updated'}: {path}")
        return 1 if args.check and changed else 0
    if args.check:
        raise ConfigError("--check goes with --docs FILE...")
    if not args.run_dirs:
        raise ConfigError("no run folder given; pass at least one folder written by "
                          "`secureml run` (or --docs FILE...)")
    if args.table:
        sys.stdout.write(tables.render_table(args.run_dirs, args.table) + "\n")
        return 0
    from . import write_report

    out = args.out
    if out is None:
        out = Path(args.run_dirs[0]) if len(args.run_dirs) == 1 else \
            Path(f"report-{time.strftime('%Y%m%d-%H%M%S')}")
    for path in write_report(args.run_dirs, out, args.policy):
        print(path)
    return 0
