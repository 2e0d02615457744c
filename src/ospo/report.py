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

import html
import json
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import yaml

from ospo.artifacts import ArtifactError, atomic_write_text, read_jsonl
from ospo.errors import InputError
from ospo.records import QuestionSet, Score, TrainingPair, id_to_filename

STAGE_ORDER = ("prompts", "perturb", "densify", "images", "questions", "score")  # then select-*, train-*, others
UNREADABLE = (OSError, ValueError, KeyError, TypeError, ArtifactError)  # what a malformed file raises here
COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860")
esc = html.escape


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
    evals, eval_notes = _eval_results(run_dir)
    sections = [("config", "Config", lambda: _config(run_dir)),
                ("stages", "Stages", lambda: _stages(run_dir)),
                ("pairs", "Training pairs", lambda: _pairs(run_dir, page_dir)),
                ("training", "Training", lambda: _training(run_dir, page_dir)),
                ("evaluation", "Evaluation", lambda: eval_notes + _evaluation(evals)),
                ("sheets", "Contact sheets", lambda: _contact_sheets(run_dir, page_dir, evals))]
    nav = " · ".join(f'<a href="#{key}">{title}</a>' for key, title, _ in sections)
    body = "".join(f'<section id="{key}"><h2>{title}</h2>{_guard(build)}</section>' for key, title, build in sections)
    return _HEAD.replace("%TITLE%", esc(f"OSPO report: {run_dir.resolve().name}")) + nav + "</nav>" + body + _TAIL


# ------------------------------------------------------------------------------------------------ helpers
def _guard(build) -> str:
    try:
        return build()
    except UNREADABLE as e:
        return _note(e)


def _note(message) -> str:
    return f'<p class="note">could not read: {esc(str(message))}</p>'


def _missing(what: str = "") -> str:
    return f'<p class="missing">not run yet{esc(": " + what) if what else ""}</p>'


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ArtifactError(f"{path} is not valid JSON ({e})") from None


def _json_object(path: Path) -> dict:
    data = _json(path)
    if not isinstance(data, dict):
        raise ArtifactError(f"{path} holds a JSON {type(data).__name__}, not an object")
    return data


def _num(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) and abs(v) < 1e4 else esc(str(v))
    return esc(str(v))


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _img(path: Path, page_dir: Path, alt: str, cls: str = "") -> str:
    """An <img> linking `path` relative to the page, or a placeholder when the file does not exist."""
    if not path.is_file():
        return f'<div class="noimg">no image ({esc(path.name)})</div>'
    src = quote(Path(os.path.relpath(path, page_dir)).as_posix())
    return f'<img src="{esc(src)}" alt="{esc(alt)}" class="{cls}" loading="lazy">'


# ------------------------------------------------------------------------------------------------ config, stages
def _config(run_dir: Path) -> str:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return _missing("no config.yaml")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        yaml.safe_load(text)
        note = ""
    except yaml.YAMLError as e:
        note = _note(f"{path} is not valid YAML ({e})")
    return f"{note}<pre>{esc(text)}</pre>"


def _stage_folders(run_dir: Path) -> list[Path]:
    def order(p: Path):
        if p.name in STAGE_ORDER:
            return STAGE_ORDER.index(p.name), p.name
        kind = 0 if p.name.startswith("select-") else 1 if p.name.startswith("train-") else 2
        return len(STAGE_ORDER) + kind, p.name

    return sorted((p for p in run_dir.iterdir() if (p / "manifest.json").is_file()), key=order)


def _stages(run_dir: Path) -> str:
    folders = _stage_folders(run_dir)
    if not folders:
        iters = sorted(p.name for p in run_dir.glob("iter-*") if p.is_dir())
        return _missing(f"this folder holds iterations ({', '.join(iters)}); report each one" if iters else "")
    rows = []
    for f in folders:
        try:
            m = _json_object(f / "manifest.json")
            c = m.get("counts") if isinstance(m.get("counts"), dict) else {}
        except UNREADABLE as e:
            rows.append(f"<tr><td>{esc(f.name)}</td><td colspan=5>{_note(e)}</td></tr>")
            continue
        reasons = c.get("rejected_by_reason") if isinstance(c.get("rejected_by_reason"), dict) else {}
        reasons = ", ".join(f"{esc(str(r))} {_num(n)}" for r, n in
                            sorted(reasons.items(), key=lambda x: (-x[1] if _is_number(x[1]) else 0, str(x[0]))))
        other = ", ".join(f"{esc(str(k))} {_num(v)}" for k, v in c.items()
                          if k not in ("in", "out", "rejected", "rejected_by_reason"))
        details = (f"<details><summary>manifest</summary><pre>{esc(json.dumps(m, indent=1, sort_keys=True))}</pre>"
                   "</details>")
        rows.append(f"<tr><td>{esc(f.name)}</td><td>{_num(c.get('in'))}</td><td>{_num(c.get('out'))}</td>"
                    f"<td>{_num(c.get('rejected'))}</td><td>{reasons}</td><td>{other}{details}</td></tr>")
    return ('<table class="stages"><tr><th>stage</th><th>in</th><th>out</th><th>rejected</th><th>rejected by reason'
            '</th><th>other counts</th></tr>' + "".join(rows) + "</table>")


# ------------------------------------------------------------------------------------------------ training pairs
@dataclass
class _PairContext:
    """What a pair card shows besides the pair: questions, answers, v3 masks, and notes on unreadable files."""

    sets: dict = field(default_factory=lambda: defaultdict(list))  # prompt id -> [QuestionSet]
    scores: dict = field(default_factory=dict)  # (image id, question set id) -> Score
    masks: dict = field(default_factory=lambda: defaultdict(list))  # pair file name -> [(train folder, png)]
    words: dict = field(default_factory=dict)  # (train folder, pair id) -> object words
    notes: list = field(default_factory=list)


def _pair_context(run_dir: Path) -> _PairContext:
    ctx = _PairContext()
    for name in ("questions", "score"):
        path = run_dir / name / "records.jsonl"
        try:
            records = read_jsonl(path) if path.is_file() else []
        except UNREADABLE as e:
            ctx.notes.append(_note(e))
            continue
        for r in records:
            if isinstance(r, QuestionSet):
                ctx.sets[r.prompt_id].append(r)
            elif isinstance(r, Score):
                ctx.scores[(r.image_id, r.question_set_id)] = r
    for t in sorted(p for p in run_dir.glob("train-*") if p.is_dir()):
        for png in sorted((t / "masks").glob("*.png")):
            ctx.masks[png.stem].append((t.name, png))
        words = t / "masks" / "object_words.json"
        try:
            ctx.words.update({(t.name, k): v for k, v in (_json_object(words) if words.is_file() else {}).items()})
        except UNREADABLE as e:
            ctx.notes.append(_note(e))
    return ctx


def _category(p: TrainingPair) -> str:
    return str(p.provenance.get("category") or "(none)")


def _pairs(run_dir: Path, page_dir: Path) -> str:
    folders = sorted(p for p in run_dir.glob("select-*") if p.is_dir())
    if not folders:
        return _missing("no select-* folder")
    ctx = _pair_context(run_dir)
    parts, categories = list(ctx.notes), set()
    for f in folders:
        parts.append(f"<h3>{esc(f.name)}</h3>")
        if not (f / "manifest.json").is_file():
            parts.append(_missing("selection unfinished"))
            continue
        try:
            pairs = [r for r in read_jsonl(f / "records.jsonl") if isinstance(r, TrainingPair)]
        except UNREADABLE as e:
            parts.append(_note(e))
            continue
        categories.update(_category(p) for p in pairs)
        parts += [_pair_card(p, ctx, run_dir, page_dir) for p in pairs] or ['<p class="missing">no pairs</p>']
    options = "".join(f'<option value="{esc(c)}">{esc(c)}</option>' for c in sorted(categories))
    head = ('<p class="filter"><label>category <select id="category-filter"><option value="">all</option>'
            f'{options}</select></label> <span id="pair-count"></span></p>')
    return head + "".join(parts)


def _pair_card(p: TrainingPair, ctx: _PairContext, run_dir: Path, page_dir: Path) -> str:
    previews = run_dir / "images" / "previews"
    figures = []
    for role, image_id in (("chosen", p.chosen_image_id), ("rejected", p.rejected_image_id)):
        try:
            img = _img(previews / f"{id_to_filename(image_id)}.png", page_dir, f"{role} {image_id}")
        except ValueError as e:
            img = _note(e)
        figures.append(f"<figure>{img}<figcaption>{role}<br><code>{esc(image_id)}</code></figcaption></figure>")
    for train, png in ctx.masks.get(p.id.replace("/", "__"), []):
        words = ", ".join(map(str, ctx.words.get((train, p.id), [])))
        figures.append(f'<figure>{_img(png, page_dir, f"mask {p.id}", "mask")}<figcaption>v3 masks ({esc(train)})'
                       f"<br>chosen | mask | rejected | mask<br>{esc(words)}</figcaption></figure>")
    numbers = "".join(f"<tr><td>{esc(str(k))}</td><td>{_num(v)}</td></tr>" for k, v in p.scores.items())
    sub = p.provenance.get("subcategory")
    return (f'<div class="pair" data-category="{esc(_category(p))}"><h4><code>{esc(p.id)}</code> '
            f'<span class="tag">{esc(_category(p))}{esc(" / " + str(sub)) if sub else ""}</span> '
            f'<span class="tag">rule {esc(p.rule)}</span></h4>'
            f'<p><b>prompt</b> {esc(p.prompt)}</p><p><b>negative prompt</b> '
            f'{esc(p.negative_prompt) if p.negative_prompt is not None else "<i>(none)</i>"}</p>'
            f'<div class="images">{"".join(figures)}</div><div class="tables">{_answers(p, ctx)}'
            f'<table class="numbers"><tr><th colspan=2>selection numbers</th></tr>{numbers}</table></div></div>')


def _answers(p: TrainingPair, ctx: _PairContext) -> str:
    """The prompt's question sets (positive local, global, negatives), each question's p(yes)/p(no) per image."""
    sets = sorted(ctx.sets.get(p.provenance.get("prompt_id", p.id), []),
                  key=lambda q: (q.role != "positive", q.kind != "local", q.id))
    if not sets:
        return '<p class="missing">no questions for this prompt</p>'
    rows = ['<tr><th>question</th><th colspan=2>chosen p(yes) / p(no)</th>'
            '<th colspan=2>rejected p(yes) / p(no)</th></tr>']
    for q in sets:
        rows.append(f'<tr class="set"><td colspan=5>{esc(q.role)} · {esc(q.kind)} · <code>{esc(q.id)}</code>: '
                    f"{esc(q.text)}</td></tr>")
        answers = [ctx.scores.get((image, q.id)) for image in (p.chosen_image_id, p.rejected_image_id)]
        for k, question in enumerate(q.questions):
            cells = "".join(f'<td class="{_yes_class(s, k)}">{_num(s.p_yes[k])}</td><td>{_num(s.p_no[k])}</td>'
                            if s is not None and k < min(len(s.p_yes), len(s.p_no)) else "<td>—</td><td>—</td>"
                            for s in answers)
            rows.append(f"<tr><td>{esc(question)}</td>{cells}</tr>")
    return '<table class="qa">' + "".join(rows) + "</table>"


def _yes_class(s: Score, k: int) -> str:
    return "yes" if s.p_yes[k] > s.p_no[k] else "no"


# ------------------------------------------------------------------------------------------------ training
def _training(run_dir: Path, page_dir: Path) -> str:
    folders = sorted(p for p in run_dir.glob("train-*") if p.is_dir())
    if not folders:
        return _missing("no train-* folder")
    parts = []
    for f in folders:
        parts.append(f"<h3>{esc(f.name)}</h3>")
        if (f / "manifest.json").is_file():
            try:
                m = _json_object(f / "manifest.json")
                final = m.get("final") if isinstance(m.get("final"), dict) else {}
                parts.append(f"<p>{_num(m.get('steps'))} steps on {_num(m.get('pairs'))} pairs; last step: "
                             + ", ".join(f"{esc(str(k))} {_num(v)}" for k, v in final.items()) + "</p>")
            except UNREADABLE as e:
                parts.append(_note(e))
        else:
            parts.append('<p class="missing">training unfinished (no manifest.json)</p>')
        log = f / "log.jsonl"
        parts.append(_curves(log) if log.is_file() else _missing("no log.jsonl"))
        if (f / "curves.png").is_file():
            parts.append(f"<p>curves.png</p>{_img(f / 'curves.png', page_dir, 'training curves', 'curves')}")
    return "".join(parts)


def _curves(log: Path) -> str:
    rows, bad = [], 0
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.strip():
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            if isinstance(row, dict) and _is_number(row.get("step")):
                rows.append(row)
            else:
                bad += 1
    note = _note(f"{log}: {bad} malformed line(s) skipped") if bad else ""
    keys = list(dict.fromkeys(k for r in rows for k in r if k != "step" and _is_number(r[k])))
    plots = [line_plot_svg(k, [(r["step"], r[k]) for r in rows if _is_number(r.get(k))]) for k in keys]
    if not plots:
        return note + '<p class="missing">no metrics logged</p>'
    return note + f'<div class="plots">{"".join(plots)}</div>'


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
            f'<text x="{left}" y="14" class="t">{esc(title)}  last {_num(ys[-1])}</text>'
            f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{_num(y1)}</text>'
            f'<text x="{left - 4}" y="{height - bottom}" text-anchor="end">{_num(y0)}</text>'
            f'<text x="{left}" y="{height - 8}">{_num(x0)}</text>'
            f'<text x="{width - right}" y="{height - 8}" text-anchor="end">step {_num(x1)}</text></svg>')


# ------------------------------------------------------------------------------------------------ evaluation
def _eval_results(run_dir: Path) -> tuple[dict, str]:
    """{label: results.json payload} of eval/<label>/ ('base' first), and notes on unreadable ones."""
    found, notes = {}, ""
    labels = sorted((p.name for p in (run_dir / "eval").glob("*") if p.is_dir()), key=lambda n: (n != "base", n))
    for label in labels:
        path = run_dir / "eval" / label / "results.json"
        if not path.is_file():
            continue
        try:
            found[label] = _checked_results(path)
        except UNREADABLE as e:
            notes += _note(e)
    return found, notes


def _checked_results(path: Path) -> dict:
    """A results.json payload whose summary has a numeric mean/low/high for every task and overall."""
    payload = _json_object(path)
    summary = payload.get("summary")
    tasks = summary.get("tasks") if isinstance(summary, dict) else None
    if not isinstance(tasks, dict):
        raise ArtifactError(f"{path} has no summary.tasks")
    for name, e in [*tasks.items(), ("overall", summary.get("overall"))]:
        if not (isinstance(e, dict) and all(_is_number(e.get(k)) for k in ("mean", "low", "high"))):
            raise ArtifactError(f"{path}: '{name}' has no numeric mean/low/high")
    return payload


def _interval(e: dict) -> str:
    n = f" <small>n={_num(e.get('num_prompts'))}/{_num(e.get('num_images'))}</small>" if "num_prompts" in e else ""
    return f"{e['mean']:.3f} <small>[{e['low']:.3f}, {e['high']:.3f}]</small>{n}"


def _evaluation(evals: dict) -> str:
    if not evals:
        return _missing("no eval/<label>/results.json")
    labels = list(evals)
    tasks = sorted({t for p in evals.values() for t in p["summary"]["tasks"]})
    head = "".join(f"<th>{esc(label)}</th>" for label in labels)
    meta = "".join(f"<td><small>{esc(str(p.get('set')))}, {_num(p.get('images_per_prompt'))} images/prompt, "
                   f"seed {_num(p.get('seed'))}</small></td>" for p in evals.values())
    rows = [f"<tr><th>task</th>{head}</tr>", f"<tr><td><small>set</small></td>{meta}</tr>"]
    for task in tasks + ["overall"]:
        cells = []
        for p in evals.values():
            e = p["summary"]["overall"] if task == "overall" else p["summary"]["tasks"].get(task)
            cells.append(f"<td>{_interval(e)}</td>" if e else "<td>—</td>")
        rows.append(f'<tr class="{"overall" if task == "overall" else ""}"><td>{esc(task)}</td>{"".join(cells)}</tr>')
    charts = []
    for task in tasks + ["overall"]:
        bars = [(label, e["mean"], e["low"], e["high"]) for label, p in evals.items()
                if (e := p["summary"]["overall"] if task == "overall" else p["summary"]["tasks"].get(task))]
        charts.append(bar_chart_svg(task, bars))
    return ('<p>mean score with its bootstrap 95% interval; n = prompts/images</p><table class="eval">'
            + "".join(rows) + f'</table><div class="plots">{"".join(charts)}</div>')


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
             f'<text x="{left - 4}" y="{py(scale) + 4:.1f}" text-anchor="end">{_num(scale)}</text>'
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


def _verdict(score) -> str:
    if not _is_number(score):
        return '<td>—</td>'
    if score >= 1:
        return '<td class="yes">correct</td>'
    return '<td class="no">wrong</td>' if score <= 0 else f'<td class="partial">{score:.2f}</td>'


def _contact_sheets(run_dir: Path, page_dir: Path, evals: dict) -> str:
    labels = sorted((p.name for p in (run_dir / "eval").glob("*") if p.is_dir()), key=lambda n: (n != "base", n))
    if not labels:
        return _missing("no eval/<label> folder")
    parts = []
    for label in labels:
        parts.append(f"<h3>{esc(label)}</h3>")
        sheet = run_dir / "eval" / label / "contact_sheet.png"
        parts.append(_img(sheet, page_dir, f"contact sheet {label}", "sheet") if sheet.is_file() else
                     _missing("no contact_sheet.png"))
        images = evals.get(label, {}).get("images")
        if not isinstance(images, list) or not all(isinstance(i, dict) for i in images):
            continue
        rows = "".join(f"<tr><td><code>{esc(str(i.get('prompt_id')))}</code></td><td>{esc(str(i.get('task')))}</td>"
                       f"<td>{esc(str(i.get('prompt')))}</td><td>{_num(i.get('seed'))}</td>{_verdict(i.get('score'))}"
                       f"<td>{esc('; '.join(map(str, i.get('reasons') or ())))}</td></tr>" for i in images)
        correct = sum(_is_number(i.get("score")) and i["score"] >= 1 for i in images)
        parts.append(f"<details><summary>{len(images)} images, {correct} judged correct by the oracle (green frame in "
                     "the sheet; red = wrong)</summary><table class=\"verdicts\"><tr><th>prompt id</th><th>task</th>"
                     f"<th>prompt</th><th>seed</th><th>verdict</th><th>reasons</th></tr>{rows}</table></details>")
    return "".join(parts)


# ------------------------------------------------------------------------------------------------ the page
_HEAD = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>%TITLE%</title><link rel="icon" href="data:,">
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1em 2em; color: #222; }
nav { position: sticky; top: 0; background: #fff; padding: .4em 0; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .5em 0; }
td, th { border: 1px solid #ddd; padding: 2px 6px; text-align: left; }
pre { background: #f6f6f6; padding: .6em; overflow: auto; max-height: 30em; }
.note { color: #a00; background: #fee; padding: .3em .6em; border-left: 4px solid #c00; }
.missing { color: #777; font-style: italic; }
.pair { border: 1px solid #ccc; border-radius: 4px; padding: .5em 1em; margin: .8em 0; }
.pair h4 { margin: .2em 0; } .tag { background: #eef; border-radius: 3px; padding: 0 .4em; font-weight: normal; }
.images, .tables, .plots { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
figure { margin: 0; } figcaption { font-size: 12px; color: #555; max-width: 260px; word-break: break-all; }
.images img { width: 256px; image-rendering: pixelated; } .images img.mask { width: 512px; }
img.curves, img.sheet { max-width: 100%; } .noimg { width: 256px; height: 64px; background: #eee; color: #777; }
tr.set td { background: #f3f3f3; } td.yes { color: #080; } td.no { color: #b00; } td.partial { color: #b70; }
tr.overall td { font-weight: bold; } svg.plot { background: #fff; border: 1px solid #eee; }
svg text { font: 10px sans-serif; fill: #333; } svg text.t { font-size: 12px; font-weight: bold; }
</style></head><body>
<h1>%TITLE%</h1><nav>"""
_TAIL = """
<script>
(function () {
  var select = document.getElementById("category-filter");
  if (!select) { return; }
  function apply() {
    var pairs = document.querySelectorAll(".pair"), shown = 0;
    for (var i = 0; i < pairs.length; i++) {
      var keep = select.value === "" || pairs[i].getAttribute("data-category") === select.value;
      pairs[i].style.display = keep ? "" : "none";
      shown += keep ? 1 : 0;
    }
    document.getElementById("pair-count").textContent = shown + " of " + pairs.length + " pairs shown";
  }
  select.addEventListener("change", apply);
  apply();
})();
</script>
</body></html>
"""
