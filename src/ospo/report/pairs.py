"""The report's browser of the selected training pairs: both images, every question's answers, the rule's numbers."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ospo.artifacts import read_jsonl
from ospo.records import QuestionSet, Score, TrainingPair, id_to_filename
from ospo.report.page import esc, fmt, image_tag, json_object, missing_html, note_html, UNREADABLE


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
            ctx.notes.append(note_html(e))
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
            ctx.words.update({(t.name, k): v for k, v in (json_object(words) if words.is_file() else {}).items()})
        except UNREADABLE as e:
            ctx.notes.append(note_html(e))
    return ctx


def _category(p: TrainingPair) -> str:
    return str(p.provenance.get("category") or "(none)")


def pairs_section(run_dir: Path, page_dir: Path) -> str:
    folders = sorted(p for p in run_dir.glob("select-*") if p.is_dir())
    if not folders:
        return missing_html("no select-* folder")
    ctx = _pair_context(run_dir)
    parts, categories = list(ctx.notes), set()
    for f in folders:
        parts.append(f"<h3>{esc(f.name)}</h3>")
        if not (f / "manifest.json").is_file():
            parts.append(missing_html("selection unfinished"))
            continue
        try:
            pairs = [r for r in read_jsonl(f / "records.jsonl") if isinstance(r, TrainingPair)]
        except UNREADABLE as e:
            parts.append(note_html(e))
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
            img = image_tag(previews / f"{id_to_filename(image_id)}.png", page_dir, f"{role} {image_id}")
        except ValueError as e:
            img = note_html(e)
        figures.append(f"<figure>{img}<figcaption>{role}<br><code>{esc(image_id)}</code></figcaption></figure>")
    for train, png in ctx.masks.get(p.id.replace("/", "__"), []):
        words = ", ".join(map(str, ctx.words.get((train, p.id), [])))
        figures.append(f'<figure>{image_tag(png, page_dir, f"mask {p.id}", "mask")}<figcaption>v3 masks ({esc(train)})'
                       f"<br>chosen | mask | rejected | mask<br>{esc(words)}</figcaption></figure>")
    numbers = "".join(f"<tr><td>{esc(str(k))}</td><td>{fmt(v)}</td></tr>" for k, v in p.scores.items())
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
            cells = "".join(f'<td class="{_yes_class(s, k)}">{fmt(s.p_yes[k])}</td><td>{fmt(s.p_no[k])}</td>'
                            if s is not None and k < min(len(s.p_yes), len(s.p_no)) else "<td>—</td><td>—</td>"
                            for s in answers)
            rows.append(f"<tr><td>{esc(question)}</td>{cells}</tr>")
    return '<table class="qa">' + "".join(rows) + "</table>"


def _yes_class(s: Score, k: int) -> str:
    return "yes" if s.p_yes[k] > s.p_no[k] else "no"
