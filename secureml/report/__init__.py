"""Reports from run folders: report.json (versioned schema), report.md and report.html.

    from secureml.report import write_report
    write_report(["runs/plain-...", "runs/dp-..."], "reports/compare")

Reports read run folders only (config.yaml, data.json, each variant's metrics.json and
history.json), so a report can be rebuilt from the folders years later. See docs/report.md.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..audit.scorecard import Policy, load_policy
from ..errors import ConfigError
from .document import REPORT_SCHEMA_VERSION, build_report
from .html import render_html
from .markdown import render_markdown
from .rundir import write_json
from .sections import build_sections

__all__ = ["REPORT_SCHEMA_VERSION", "build_report", "write_report"]


def write_report(run_dirs: list[str | Path], out_dir: str | Path,
                 policy: Policy | str | Path | None = None) -> list[Path]:
    """Write report.json, report.md and report.html for the run folders into `out_dir`.

    `policy` is an audit policy file (see docs/audit.md); without one, the first run's
    `audit.policy` applies, else the default policy.
    """
    run_dirs = [Path(p) for p in run_dirs]
    if not run_dirs:
        raise ConfigError("no run folder given; pass at least one folder written by "
                          "`secureml run`")
    notes = []
    if policy is None:
        policy, notes = _policy_of_run(run_dirs[0])
    document = build_report(run_dirs, policy)
    if notes:
        document["runs"][0]["problems"].extend(notes)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    title = "secureml audit report"
    subtitle = " · ".join([", ".join(r["name"] for r in document["runs"]),
                           f"generated {document['generated_at']}",
                           f"policy {document['policy']['source']}"])
    paths = [out_dir / "report.json", out_dir / "report.md", out_dir / "report.html"]
    write_json(paths[0], document)
    paths[1].write_text(render_markdown(title, build_sections(document, with_plots=False)),
                        encoding="utf-8")
    paths[2].write_text(render_html(title, subtitle, build_sections(document)),
                        encoding="utf-8")
    return paths


def _policy_of_run(run_dir: Path) -> tuple[Policy, list[str]]:
    """The policy named in the run's config (audit.policy), else the default."""
    import yaml

    from .rundir import run_folder

    run_dir = run_folder(run_dir)[0]
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        config = {}
    path = ((config.get("audit") or {}) if isinstance(config, dict) else {}).get("policy")
    if not path:
        return load_policy(None), []
    for candidate in (Path(path), run_dir / path):
        if candidate.is_file():
            return load_policy(candidate), []
    note = (f"audit.policy {path} from config.yaml was not found (relative to the working "
            f"folder or the run folder); the default policy was used")
    print(f"secureml: warning: {note}", file=sys.stderr)
    return load_policy(None), [note]

