"""ShapeWorld evaluation: generate images for a fixed prompt set, read them with the oracle, score by GenEval's
rules (or CompBench-style graded scores), summarise per task with bootstrap intervals, draw a contact sheet.

This module uses the oracle; it is evaluation, never a pipeline stage.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ospo.sampling import ImageSampling, item_seed
from ospo.shapeworld import evalsets, oracle


@dataclass(frozen=True)
class ScoredImage:
    prompt_id: str
    task: str
    prompt: str
    seed: int
    score: float
    reasons: tuple[str, ...]


def score_image(record: evalsets.EvalPrompt, pixels: np.ndarray) -> tuple[float, tuple[str, ...]]:
    """GenEval verdict (1/0) for GenEval-style sets, a graded CompBench score for the compbench set."""
    scene = oracle.read_scene(pixels)
    if record.benchmark == "compbench":
        return oracle.compbench_score(record.spec, scene), ()
    verdict = oracle.evaluate_metadata(record.metadata, scene)
    return float(verdict.correct), verdict.reasons


def generate_and_score(model, records, images_per_prompt: int, sampling: ImageSampling, seed: int = 0):
    """Returns (scored images, PIL images), `images_per_prompt` per record, seeds from (seed, prompt id, k)."""
    jobs = [(r, k) for r in records for k in range(images_per_prompt)]
    seeds = [item_seed(seed, r.id, k) for r, k in jobs]
    tokens = model.generate_image_tokens([r.prompt for r, _ in jobs], seeds, sampling)
    images = model.decode_images(tokens.codes)
    scored = []
    for (record, _), s, image in zip(jobs, seeds, images):
        score, reasons = score_image(record, np.asarray(image))
        scored.append(ScoredImage(record.id, record.task, record.prompt, s, score, reasons))
    return scored, images


def summary_table(summary: evalsets.Summary) -> str:
    lines = ["| task | score | 95% interval | prompts | images |", "|---|---|---|---|---|"]
    for task, e in summary.tasks.items():
        lines.append(f"| {task} | {e.mean:.3f} | [{e.low:.3f}, {e.high:.3f}] | {e.num_prompts} | {e.num_images} |")
    o = summary.overall
    lines.append(f"| **overall** | **{o.mean:.3f}** | [{o.low:.3f}, {o.high:.3f}] | {o.num_prompts} | {o.num_images} |")
    return "\n".join(lines)


def contact_sheet(scored: list[ScoredImage], images: list, max_tiles: int = 48, columns: int = 8):
    """A grid of generated images, each framed green (correct) or red (wrong), its prompt printed below."""
    from PIL import Image, ImageDraw

    picks = scored[:max_tiles]
    size = images[0].size[0] if images else 128
    tile_w, tile_h = size + 8, size + 30
    rows = max(1, -(-len(picks) // columns))
    sheet = Image.new("RGB", (columns * tile_w, rows * tile_h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (item, image) in enumerate(zip(picks, images)):
        x, y = (i % columns) * tile_w, (i // columns) * tile_h
        colour = (40, 170, 60) if item.score >= 1 else (220, 40, 40) if item.score <= 0 else (230, 160, 20)
        draw.rectangle([x, y, x + size + 7, y + size + 7], fill=colour)
        sheet.paste(image, (x + 4, y + 4))
        words, line, lines = item.prompt.split(), "", []
        for w in words:
            if len(line) + len(w) > size // 6:
                lines.append(line)
                line = ""
            line = f"{line} {w}".strip()
        lines.append(line)
        draw.text((x + 2, y + size + 8), "\n".join(lines[:2]), fill="black")
    return sheet


def evaluate_shapeworld(model, set_name: str, out_dir: Path | None = None, images_per_prompt: int = 4,
                        sampling: ImageSampling = ImageSampling(), seed: int = 0, limit: int | None = None,
                        records=None) -> evalsets.Summary:
    """Evaluates `model` on a ShapeWorld set ('geneval', 'compbench', or given records); writes results.json,
    table.md and contact_sheet.png to `out_dir` when given."""
    records = list(records if records is not None else evalsets.load_eval_set(set_name))
    if limit is not None:  # the first `limit` prompts of every task
        by_task: dict[str, list] = {}
        for r in records:
            by_task.setdefault(r.task, []).append(r)
        records = [r for rs in by_task.values() for r in rs[:limit]]
    scored, images = generate_and_score(model, records, images_per_prompt, sampling, seed)
    summary = evalsets.summarize([evalsets.ImageResult(s.prompt_id, s.task, s.score) for s in scored])
    if out_dir is not None:
        from ospo.artifacts import atomic_write_text

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        payload = {"set": set_name, "model": getattr(model, "name", None), "images_per_prompt": images_per_prompt,
                   "sampling": asdict(sampling), "seed": seed, "summary": summary_dict(summary),
                   "images": [asdict(s) for s in scored]}
        atomic_write_text(out / "results.json", json.dumps(payload, indent=1))
        atomic_write_text(out / "table.md", summary_table(summary) + "\n")
        contact_sheet(scored, images).save(out / "contact_sheet.png")
    return summary


def weights_hashes(weights: dict | None) -> dict:
    """Content hashes of the weight files behind `weights` ({"model": dir, "adapter": dir}, either optional): a
    retrained adapter or another checkpoint at the same path is another model."""
    from ospo.artifacts import file_hash

    out = {}
    for key, name in (("model", "model.safetensors"), ("adapter", "adapter_model.safetensors")):
        f = Path(str((weights or {}).get(key))) / name
        if (weights or {}).get(key) and f.is_file():
            out[key] = file_hash(f)
    return out


def evaluate_reusing(model, out: Path, set_name: str, images_per_prompt: int, sampling: ImageSampling, seed: int,
                     weights: dict | None, limit: int | None = None, records=None, extra: dict | None = None) -> dict:
    """`evaluate_shapeworld` into `out` unless a finished results.json there was drawn with the same settings
    (`extra` included) from the same `weights` (paths and file contents); returns the results.json payload."""
    from ospo.artifacts import atomic_write_text

    path = Path(out) / "results.json"
    wanted = {"images_per_prompt": images_per_prompt, "seed": seed, "sampling": asdict(sampling), "limit": limit,
              "weights": weights, "weights_hashes": weights_hashes(weights), **(extra or {})}
    if path.exists():
        payload = json.loads(path.read_text())
        if all(payload.get(k) == v for k, v in wanted.items()):
            return payload
    evaluate_shapeworld(model, set_name, out, images_per_prompt, sampling, seed, limit=limit, records=records)
    payload = {**json.loads(path.read_text()), **wanted}
    atomic_write_text(path, json.dumps(payload, indent=1))
    return payload


def summary_dict(summary: evalsets.Summary) -> dict:
    return {"tasks": {t: asdict(e) for t, e in summary.tasks.items()}, "overall": asdict(summary.overall)}


def vqa_margins(model, images: list, questions: list[list[str]], answers: list[list[str]]
                ) -> tuple[np.ndarray, np.ndarray]:
    """Per (image, question) pair, in order: the model's p(yes) - p(no), and whether the true answer is yes."""
    scores = model.yes_no_scores(images, questions)
    margins = [float(y) - float(n) for s in scores for y, n in zip(s.p_yes, s.p_no)]
    truth = [a == "yes" for ans in answers for a in ans]
    return np.asarray(margins, dtype=np.float64), np.asarray(truth, dtype=bool)


def vqa_hits(model, images: list, questions: list[list[str]], answers: list[list[str]]) -> list[bool]:
    """Per (image, question) pair, in order: does the model's p(yes) > p(no) agree with the true answer?"""
    margins, truth = vqa_margins(model, images, questions, answers)
    return [bool(h) for h in (margins > 0) == truth]


def vqa_accuracy(model, images: list, questions: list[list[str]], answers: list[list[str]]) -> float:
    """Share of (image, question) pairs where the model's p(yes) > p(no) agrees with the true answer."""
    hits = vqa_hits(model, images, questions, answers)
    return float(np.mean(hits)) if hits else float("nan")


def roc_auc(margins: np.ndarray, truth: np.ndarray) -> float:
    """Probability that a true-yes pair gets a larger margin than a true-no pair (ties count half): how well the
    judge ranks, whatever its yes/no bias. NaN when either class is absent."""
    margins, truth = np.asarray(margins, dtype=np.float64), np.asarray(truth, dtype=bool)
    pos, neg = margins[truth], margins[~truth]
    if not len(pos) or not len(neg):
        return float("nan")
    greater, ties = pos[:, None] > neg[None, :], pos[:, None] == neg[None, :]
    return float(greater.mean() + 0.5 * ties.mean())


def own_image_questions(records, scored: list[ScoredImage], images: list, vqa_format
                        ) -> tuple[list[list[str]], list[list[str]]]:
    """The prompt's atomic questions about each generated image, and their true answers from the oracle."""
    from ospo.shapeworld import questions as world_questions

    by_id = {r.id: r for r in records}
    qs, ans = [], []
    for item, image in zip(scored, images):
        scene = oracle.read_scene(np.asarray(image))
        atoms = world_questions.decompose(by_id[item.prompt_id].spec)
        qs.append([vqa_format(world_questions.question_text(q)) for q in atoms])
        ans.append([world_questions.answer_question(q, scene) for q in atoms])
    return qs, ans


def self_vqa_on_generated(model, records, scored: list[ScoredImage], images: list, vqa_format) -> float:
    """Self-VQA accuracy on the model's own generated images: the prompt's atomic questions, truth from the
    oracle's reading of each image."""
    qs, ans = own_image_questions(records, scored, images, vqa_format)
    return vqa_accuracy(model, images, qs, ans)
