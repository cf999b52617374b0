"""Tables of measured figures, generated from run folders, for docs and notes.

    secureml report runs/quickstart-... --table "accuracy=test.accuracy:.3f,epsilon=privacy.epsilon"

prints one Markdown row per variant. A page in docs/ holds such a table between two markers that
name the command, so the figures can be traced to the run folders they came from and re-made:

    <!-- generated: secureml report docs/evidence/quickstart --table "accuracy=test.accuracy" -->
    | variant | accuracy |
    ...
    <!-- end generated -->

`secureml report --docs docs/*.md` rewrites every such block from its run folders and
`--check` fails when one is stale, so no figure in the docs is typed by hand.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from ..audit.scorecard import lookup, variant_facts
from ..errors import ConfigError
from .markdown import table_markdown
from .rundir import read_run
from .sections import fmt

_BLOCK = re.compile(r"(<!-- generated: (?P<command>.+?) -->\n)(?P<body>.*?)(<!-- end generated -->)",
                    re.DOTALL)
# Columns that name the row rather than read metrics.json.
_NAMES = {"run": lambda run, variant: run["name"], "variant": lambda run, variant: variant["name"]}


@dataclass(frozen=True)
class Column:
    label: str
    path: str
    spec: str = ""

    def value(self, run: dict, variant: dict) -> str:
        if self.path in _NAMES:
            return _NAMES[self.path](run, variant)
        found = lookup(variant_facts(variant["metrics"]), self.path)
        if found is None or not self.spec or isinstance(found, (bool, str, list, dict)):
            return fmt(found)
        try:
            return format(found, self.spec)
        except (TypeError, ValueError):
            raise ConfigError(f"--table: format '{self.spec}' does not apply to "
                              f"{self.path} = {found!r}; use e.g. .3f or .1%") from None


def parse_columns(text: str) -> list[Column]:
    """'label=path:spec,path,...' into columns; `variant` is added first when not named."""
    columns = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        label, _, rest = item.rpartition("=") if "=" in item else ("", "", item)
        # A format spec follows the last colon; paths themselves hold no colon.
        path, _, spec = rest.partition(":")
        if not path:
            raise ConfigError(f"--table: column '{item}' names no metrics path; write "
                              f"label=section.key[:format], e.g. accuracy=test.accuracy:.3f")
        columns.append(Column(label or path, path, spec))
    if not columns:
        raise ConfigError("--table needs at least one column, e.g. --table test.accuracy")
    if not any(c.path in _NAMES for c in columns):
        columns.insert(0, Column("variant", "variant"))
    return columns


def render_table(run_dirs: list[str | Path], columns: str | list[Column]) -> str:
    """A Markdown table: one row per variant of every run folder, one column per metric."""
    if isinstance(columns, str):
        columns = parse_columns(columns)
    runs = [read_run(path) for path in run_dirs]
    if not any(run["variants"] for run in runs):
        raise ConfigError(f"no variant with a metrics.json in {', '.join(map(str, run_dirs))}; "
                          f"pass run folders written by `secureml run`")
    rows = [[c.value(run, variant) for c in columns] for run in runs for variant in run["variants"]]
    return table_markdown([c.label for c in columns], rows)


def _command_table(command: str, where: str) -> str:
    words = shlex.split(command)
    if words[:2] != ["secureml", "report"] or "--table" not in words:
        raise ConfigError(f"{where}: a generated block must name a command "
                          f"'secureml report RUN_DIR... --table COLUMNS', got '{command}'")
    at = words.index("--table")
    if at + 1 >= len(words):
        raise ConfigError(f"{where}: --table has no columns in '{command}'")
    runs = words[2:at] + words[at + 2:]
    if not runs:
        raise ConfigError(f"{where}: '{command}' names no run folder")
    return render_table(runs, words[at + 1])


def update_docs(paths: list[str | Path], check: bool = False) -> list[Path]:
    """Re-make every generated block in the Markdown files; the files that changed (or, with
    `check`, would change; nothing is written then)."""
    changed = []
    for path in map(Path, paths):
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"cannot read {path}: {err.strerror}") from None

        def remake(match, path=path):
            line = text.count("\n", 0, match.start()) + 1
            table = _command_table(match["command"], f"{path}:{line}")
            return f"{match.group(1)}{table}\n{match.group(4)}"

        new = _BLOCK.sub(remake, text)
        if new != text:
            changed.append(path)
            if not check:
                path.write_text(new, encoding="utf-8")
    return changed
