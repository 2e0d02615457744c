"""Inline SVG charts for the report, drawn here: no plotting library, nothing loaded from outside."""

from __future__ import annotations

from ospo.report.page import COLOURS, esc, fmt


def line_plot_svg(title: str, points: list[tuple[float, float]], width: int = 300, height: int = 170) -> str:
    """An inline SVG line plot of (x, y) points over their own ranges (a flat series sits at mid-height)."""
    left, right, top, bottom = 48, 10, 22, 24
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)

    def px(x):
        return left + (x - x0) / ((x1 - x0) or 1) * (width - left - right)

    def py(y):
        return height - bottom - ((y - y0) / (y1 - y0) if y1 > y0 else 0.5) * (height - top - bottom)

    line = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
    return (f'<svg class="plot" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">'
            f'<title>{esc(title)}</title><rect x="{left}" y="{top}" width="{width - left - right}" '
            f'height="{height - top - bottom}" fill="none" stroke="#bbb"/>'
            f'<polyline points="{line}" fill="none" stroke="{COLOURS[0]}" stroke-width="1.5"/>'
            f'<circle cx="{px(xs[-1]):.1f}" cy="{py(ys[-1]):.1f}" r="2.5" fill="{COLOURS[0]}"/>'
            f'<text x="{left}" y="14" class="t">{esc(title)}  last {fmt(ys[-1])}</text>'
            f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{fmt(y1)}</text>'
            f'<text x="{left - 4}" y="{height - bottom}" text-anchor="end">{fmt(y0)}</text>'
            f'<text x="{left}" y="{height - 8}">{fmt(x0)}</text>'
            f'<text x="{width - right}" y="{height - 8}" text-anchor="end">step {fmt(x1)}</text></svg>')


def bar_chart_svg(title: str, bars: list[tuple[str, float, float, float]], height: int = 170) -> str:
    """An inline SVG bar per (label, mean, low, high), with the interval as an error bar; y from 0 to max(1, high)."""
    left, top, bottom, step = 34, 22, 34, 56
    width = left + step * len(bars) + 10
    scale = max([1.0] + [b[3] for b in bars])

    def py(v):
        return height - bottom - max(v, 0) / scale * (height - top - bottom)

    parts = [f'<svg class="plot" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">'
             f'<title>{esc(title)}</title><text x="{left}" y="14" class="t">{esc(title)}</text>'
             f'<line x1="{left}" y1="{py(0):.1f}" x2="{width - 6}" y2="{py(0):.1f}" stroke="#888"/>'
             f'<text x="{left - 4}" y="{py(scale) + 4:.1f}" text-anchor="end">{fmt(scale)}</text>'
             f'<text x="{left - 4}" y="{py(0):.1f}" text-anchor="end">0</text>']
    for i, (label, mean, low, high) in enumerate(bars):
        x, mid, colour = left + 8 + i * step, left + 8 + i * step + (step - 16) / 2, COLOURS[i % len(COLOURS)]
        parts.append(f'<rect class="bar" x="{x}" y="{py(mean):.1f}" width="{step - 16}" '
                     f'height="{py(0) - py(mean):.1f}" '
                     f'fill="{colour}"><title>{esc(label)}: {mean:.3f} [{low:.3f}, {high:.3f}]</title></rect>'
                     f'<line x1="{mid}" y1="{py(low):.1f}" x2="{mid}" y2="{py(high):.1f}" stroke="#222"/>'
                     f'<text x="{mid}" y="{height - bottom + 14}" text-anchor="middle">{esc(label[:9])}</text>'
                     f'<text x="{mid}" y="{height - bottom + 27}" text-anchor="middle">{mean:.2f}</text>')
    return "".join(parts) + "</svg>"
