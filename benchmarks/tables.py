"""Markdown tables for the benchmark scripts' printed results."""

from __future__ import annotations


def markdown_table(rows: list[dict], first: str, digits: int = 3) -> str:
    """Rows of dicts as a markdown table: the `first` key as the first column, then every other key of the first
    row in order, numbers with `digits` decimals."""
    columns = [k for k in rows[0] if k != first]
    lines = [f"| {first} | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    lines += [f"| {r[first]} | " + " | ".join(f"{r[c]:.{digits}f}" for c in columns) + " |" for r in rows]
    return "\n".join(lines)
