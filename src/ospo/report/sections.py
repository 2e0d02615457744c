"""The report's sections about a run's config, stages, training and evaluations."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from ospo.artifacts import ArtifactError, lines
from ospo.report.page import esc, fmt, image_tag, is_number, json_object, missing_html, note_html, STAGE_ORDER, UNREADABLE
from ospo.report.svg import bar_chart_svg, line_plot_svg


def config_section(run_dir: Path) -> str:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return missing_html("no config.yaml")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        yaml.safe_load(text)
        note = ""
    except yaml.YAMLError as e:
        note = note_html(f"{path} is not valid YAML ({e})")
    return f"{note}<pre>{esc(text)}</pre>"


def _stage_folders(run_dir: Path) -> list[Path]:
    def order(p: Path):
        if p.name in STAGE_ORDER:
            return STAGE_ORDER.index(p.name), p.name
        kind = 0 if p.name.startswith("select-") else 1 if p.name.startswith("train-") else 2
        return len(STAGE_ORDER) + kind, p.name

    return sorted((p for p in run_dir.iterdir() if (p / "manifest.json").is_file()), key=order)


def stages_section(run_dir: Path) -> str:
    folders = _stage_folders(run_dir)
    if not folders:
        iters = sorted(p.name for p in run_dir.glob("iter-*") if p.is_dir())
        return missing_html(f"this folder holds iterations ({', '.join(iters)}); report each one" if iters else "")
    rows = []
    for f in folders:
        try:
            m = json_object(f / "manifest.json")
            c = m.get("counts") if isinstance(m.get("counts"), dict) else {}
        except UNREADABLE as e:
            rows.append(f"<tr><td>{esc(f.name)}</td><td colspan=5>{note_html(e)}</td></tr>")
            continue
        reasons = c.get("rejected_by_reason") if isinstance(c.get("rejected_by_reason"), dict) else {}
        reasons = ", ".join(f"{esc(str(r))} {fmt(n)}" for r, n in
                            sorted(reasons.items(), key=lambda x: (-x[1] if is_number(x[1]) else 0, str(x[0]))))
        other = ", ".join(f"{esc(str(k))} {fmt(v)}" for k, v in c.items()
                          if k not in ("in", "out", "rejected", "rejected_by_reason"))
        details = (f"<details><summary>manifest</summary><pre>{esc(json.dumps(m, indent=1, sort_keys=True))}</pre>"
                   "</details>")
        rows.append(f"<tr><td>{esc(f.name)}</td><td>{fmt(c.get('in'))}</td><td>{fmt(c.get('out'))}</td>"
                    f"<td>{fmt(c.get('rejected'))}</td><td>{reasons}</td><td>{other}{details}</td></tr>")
    return ('<table class="stages"><tr><th>stage</th><th>in</th><th>out</th><th>rejected</th><th>rejected by reason'
            '</th><th>other counts</th></tr>' + "".join(rows) + "</table>")


def training_section(run_dir: Path, page_dir: Path) -> str:
    folders = sorted(p for p in run_dir.glob("train-*") if p.is_dir())
    if not folders:
        return missing_html("no train-* folder")
    parts = []
    for f in folders:
        parts.append(f"<h3>{esc(f.name)}</h3>")
        if (f / "manifest.json").is_file():
            try:
                m = json_object(f / "manifest.json")
                final = m.get("final") if isinstance(m.get("final"), dict) else {}
                parts.append(f"<p>{fmt(m.get('steps'))} steps on {fmt(m.get('pairs'))} pairs; last step: "
                             + ", ".join(f"{esc(str(k))} {fmt(v)}" for k, v in final.items()) + "</p>")
            except UNREADABLE as e:
                parts.append(note_html(e))
        else:
            parts.append('<p class="missing">training unfinished (no manifest.json)</p>')
        log = f / "log.jsonl"
        parts.append(_curves(log) if log.is_file() else missing_html("no log.jsonl"))
        if (f / "curves.png").is_file():
            parts.append(f"<p>curves.png</p>{image_tag(f / 'curves.png', page_dir, 'training curves', 'curves')}")
    return "".join(parts)


def _curves(log: Path) -> str:
    rows, bad = [], 0
    for line in lines(log.read_text(encoding="utf-8", errors="replace")):
        if line.strip():
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            if isinstance(row, dict) and is_number(row.get("step")):
                rows.append(row)
            else:
                bad += 1
    note = note_html(f"{log}: {bad} malformed line(s) skipped") if bad else ""
    keys = list(dict.fromkeys(k for r in rows for k in r if k != "step" and is_number(r[k])))
    plots = [line_plot_svg(k, [(r["step"], r[k]) for r in rows if is_number(r.get(k))]) for k in keys]
    if not plots:
        return note + '<p class="missing">no metrics logged</p>'
    return note + f'<div class="plots">{"".join(plots)}</div>'


def eval_results(run_dir: Path) -> tuple[dict, str]:
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
            notes += note_html(e)
    return found, notes


def _checked_results(path: Path) -> dict:
    """A results.json payload whose summary has a numeric mean/low/high for every task and overall."""
    payload = json_object(path)
    summary = payload.get("summary")
    tasks = summary.get("tasks") if isinstance(summary, dict) else None
    if not isinstance(tasks, dict):
        raise ArtifactError(f"{path} has no summary.tasks")
    for name, e in [*tasks.items(), ("overall", summary.get("overall"))]:
        if not (isinstance(e, dict) and all(is_number(e.get(k)) for k in ("mean", "low", "high"))):
            raise ArtifactError(f"{path}: '{name}' has no numeric mean/low/high")
    return payload


def _interval(e: dict) -> str:
    n = f" <small>n={fmt(e.get('num_prompts'))}/{fmt(e.get('num_images'))}</small>" if "num_prompts" in e else ""
    return f"{e['mean']:.3f} <small>[{e['low']:.3f}, {e['high']:.3f}]</small>{n}"


def evaluation_section(evals: dict) -> str:
    if not evals:
        return missing_html("no eval/<label>/results.json")
    labels = list(evals)
    tasks = sorted({t for p in evals.values() for t in p["summary"]["tasks"]})
    head = "".join(f"<th>{esc(label)}</th>" for label in labels)
    meta = "".join(f"<td><small>{esc(str(p.get('set')))}, {fmt(p.get('images_per_prompt'))} images/prompt, "
                   f"seed {fmt(p.get('seed'))}</small></td>" for p in evals.values())
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


def _verdict(score) -> str:
    if not is_number(score):
        return '<td>—</td>'
    if score >= 1:
        return '<td class="yes">correct</td>'
    return '<td class="no">wrong</td>' if score <= 0 else f'<td class="partial">{score:.2f}</td>'


def contact_sheets_section(run_dir: Path, page_dir: Path, evals: dict) -> str:
    labels = sorted((p.name for p in (run_dir / "eval").glob("*") if p.is_dir()), key=lambda n: (n != "base", n))
    if not labels:
        return missing_html("no eval/<label> folder")
    parts = []
    for label in labels:
        parts.append(f"<h3>{esc(label)}</h3>")
        sheet = run_dir / "eval" / label / "contact_sheet.png"
        parts.append(image_tag(sheet, page_dir, f"contact sheet {label}", "sheet") if sheet.is_file() else
                     missing_html("no contact_sheet.png"))
        images = evals.get(label, {}).get("images")
        if not isinstance(images, list) or not all(isinstance(i, dict) for i in images):
            continue
        rows = "".join(f"<tr><td><code>{esc(str(i.get('prompt_id')))}</code></td><td>{esc(str(i.get('task')))}</td>"
                       f"<td>{esc(str(i.get('prompt')))}</td><td>{fmt(i.get('seed'))}</td>{_verdict(i.get('score'))}"
                       f"<td>{esc('; '.join(map(str, i.get('reasons') or ())))}</td></tr>" for i in images)
        correct = sum(is_number(i.get("score")) and i["score"] >= 1 for i in images)
        parts.append(f"<details><summary>{len(images)} images, {correct} judged correct by the oracle (green frame in "
                     "the sheet; red = wrong)</summary><table class=\"verdicts\"><tr><th>prompt id</th><th>task</th>"
                     f"<th>prompt</th><th>seed</th><th>verdict</th><th>reasons</th></tr>{rows}</table></details>")
    return "".join(parts)
