"""Markdown tables for the benchmark scripts' printed results."""

from __future__ import annotations

import numbers


def _cell(value, digits: int) -> str:
    """A float (numpy's too) with `digits` decimals; counts and words as they are; nothing as an empty cell."""
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return f"{float(value):.{digits}f}"
    return "" if value is None else str(value)


def markdown_table(rows: list[dict], first: str, digits: int = 3) -> str:
    """Rows of dicts as a markdown table: the `first` key as the first column, then every other key in the order
    the rows first use it; floats with `digits` decimals, a key a row lacks as an empty cell."""
    columns = list(dict.fromkeys(k for r in rows for k in r if k != first))
    lines = [f"| {first} | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    lines += [f"| {r[first]} | " + " | ".join(_cell(r.get(c), digits) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
