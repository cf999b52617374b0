"""report.html: one self-contained file (inline CSS, plots as base64 PNG, no scripts)."""
from __future__ import annotations

import base64

import jinja2

from ..audit.scorecard import STATUSES
from .sections import Section


def _status_class(value: str) -> str:
    word = value.split(" ")[0] if value else ""
    return f"status status-{word}" if word in (*STATUSES, "incomplete") else ""


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("secureml.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]),
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["b64"] = lambda data: base64.b64encode(data).decode("ascii")
    env.filters["status_class"] = _status_class
    return env


def render_html(title: str, subtitle: str, sections: list[Section]) -> str:
    template = _environment().get_template("report.html.j2")
    return template.render(title=title, subtitle=subtitle, sections=sections)
