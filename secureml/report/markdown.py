"""report.md: the report's sections as Markdown (plots are in report.html)."""
from __future__ import annotations

from .sections import Block, Section


def _cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")


def table_markdown(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(_cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _block(block: Block) -> str:
    if block.kind == "table":
        return table_markdown(block.columns, block.rows)
    if block.kind == "plot":
        return f"*Plot: {block.text} (in report.html).*"
    if block.kind == "note":
        return f"> {block.text}"
    return block.text


def _section(section: Section, level: int) -> list[str]:
    parts = [f"{'#' * level} {section.title}"]
    parts += [_block(b) for b in section.blocks]
    for child in section.children:
        parts += _section(child, min(level + 1, 6))
    return parts


def render_markdown(title: str, sections: list[Section]) -> str:
    parts = [f"# {title}"]
    for section in sections:
        parts += _section(section, 2)
    return "\n\n".join(parts) + "\n"
