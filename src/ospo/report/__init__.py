"""`ospo report RUN_DIR`: one HTML page about a run directory, readable offline from file://.

Sections: the run's config; a manifest summary per stage folder; a browser of the selected training pairs (chosen and
rejected previews side by side, each question of the prompt with p(yes)/p(no) for both images, the rule's numbers,
the v3 mask overlay), filterable by category; training curves (inline SVG drawn here from log.jsonl, plus
curves.png); the evaluation table, one column per eval/<label>, with a bar chart per task; the ShapeWorld contact
sheets with every image's oracle verdict.

Images are linked by a path relative to the page's folder, never inlined: a run holds thousands of previews, and the
default page (RUN_DIR/report.html) keeps working when the run directory is copied or moved as a whole. A page
written elsewhere (--out) links into the run directory by a relative path too, so move the two together. The page
loads nothing else: no external script, style sheet or font; its one inline script does the filtering.

Every string taken from the run (model-written prompts and questions, manifests, file contents, error messages) goes
through `html.escape`. A missing piece shows "not run yet"; a file that cannot be read shows a visible note.
"""

from __future__ import annotations

from pathlib import Path

from ospo.artifacts import atomic_write_text
from ospo.errors import InputError
from ospo.report.page import esc, guarded, HEAD, TAIL
from ospo.report.svg import bar_chart_svg, line_plot_svg
from ospo.report.pairs import pairs_section
from ospo.report.sections import config_section, contact_sheets_section, eval_results, evaluation_section, stages_section, training_section

__all__ = ["bar_chart_svg", "line_plot_svg", "render_report", "write_report"]


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Writes the report of `run_dir` to `out` (default RUN_DIR/report.html) and returns its path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir} is not a directory; pass a run directory made by `ospo run`")
    out = Path(out) if out is not None else run_dir / "report.html"
    atomic_write_text(out, render_report(run_dir, out.parent))
    return out


def render_report(run_dir: Path, page_dir: Path) -> str:
    """The whole page; image links are relative to `page_dir`."""
    evals, eval_notes = eval_results(run_dir)
    sections = [("config", "Config", lambda: config_section(run_dir)),
                ("stages", "Stages", lambda: stages_section(run_dir)),
                ("pairs", "Training pairs", lambda: pairs_section(run_dir, page_dir)),
                ("training", "Training", lambda: training_section(run_dir, page_dir)),
                ("evaluation", "Evaluation", lambda: eval_notes + evaluation_section(evals)),
                ("sheets", "Contact sheets", lambda: contact_sheets_section(run_dir, page_dir, evals))]
    nav = " · ".join(f'<a href="#{key}">{title}</a>' for key, title, _ in sections)
    body = "".join(f'<section id="{key}"><h2>{title}</h2>{guarded(build)}</section>' for key, title, build in sections)
    return HEAD.replace("%TITLE%", esc(f"OSPO report: {run_dir.resolve().name}")) + nav + "</nav>" + body + TAIL
