"""report.md: the report's sections as Markdown (plots are in report.html).

Class names, texts, variant names, paths and error messages come from data and users, so
every value is written through `escape`: it renders as the literal text, never as HTML, a
link, an image, emphasis, a code span or a broken table.
"""
from __future__ import annotations

import re

from .sections import Block, Section

# '<' opens HTML and autolinks; '&' an entity only where one follows ('A & B' stays).
_ENTITY = re.compile(r"&(?=#?\w+;)")
# Backslash-escaped wherever they occur: inline markup, links and images, table cells.
_MARKUP = re.compile(r"([\\`*\[\]|~])")
# '_' opens emphasis only next to a non-alphanumeric character (CommonMark); 'dp_eps3' stays.
_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
# At the start of a line these begin headings, quotes, lists or thematic breaks.
_LINE_START = re.compile(r"^(?:([#>+=-])|(\d+)([.)]))")


def escape(value, line_start: bool = False) -> str:
    """`value` as Markdown that shows exactly its text, on one line. `line_start`: the text
    begins a line (a paragraph or heading), where '#', '-', '1.' and the like are markup."""
    text = " ".join(str(value).split())
    text = _ENTITY.sub("&amp;", text).replace("<", "&lt;")
    text = _UNDERSCORE.sub(r"\\_", _MARKUP.sub(r"\\\1", text))
    if line_start:
        text = _LINE_START.sub(lambda m: "\\" + m.group(1) if m.group(1)
                               else m.group(2) + "\\" + m.group(3), text)
    return text


def table_markdown(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(escape(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(escape(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _block(block: Block) -> str:
    if block.kind == "table":
        return table_markdown(block.columns, block.rows)
    if block.kind == "plot":
        return f"*Plot: {escape(block.text)} (in report.html).*"
    if block.kind == "note":
        return f"> {escape(block.text, line_start=True)}"
    return escape(block.text, line_start=True)


def _section(section: Section, level: int) -> list[str]:
    parts = [f"{'#' * level} {escape(section.title, line_start=True)}"]
    parts += [_block(b) for b in section.blocks]
    for child in section.children:
        parts += _section(child, min(level + 1, 6))
    return parts


def render_markdown(title: str, sections: list[Section]) -> str:
    parts = [f"# {escape(title, line_start=True)}"]
    for section in sections:
        parts += _section(section, 2)
    return "\n\n".join(parts) + "\n"
