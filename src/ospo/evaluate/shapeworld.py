"""ShapeWorld evaluation harness: a model on a fixed prompt set (`ospo.shapeworld.evalsets`), scored with the oracle
(`ospo.shapeworld.scoring`), summarised per task with bootstrap intervals and written as results.json, table.md and
a contact sheet; a finished evaluation of the same weights and settings is reused. Evaluation, never a pipeline stage; the world's package imports nothing of this one.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from ospo.evaluate.compare import ImageResult, Summary, summarize
from ospo.sampling import ImageSampling
from ospo.shapeworld import evalsets
from ospo.shapeworld.scoring import ScoredImage, generate_and_score


def summary_table(summary: Summary) -> str:
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
                        sampling: ImageSampling | None = None, seed: int = 0, limit: int | None = None,
                        records=None) -> Summary:
    """Evaluates `model` on a ShapeWorld set ('geneval', 'compbench', or given records); writes results.json,
    table.md and contact_sheet.png to `out_dir` when given. `sampling` defaults to the model's own guidance scale at
    temperature 1, as `ospo eval shapeworld` samples."""
    sampling = sampling or ImageSampling(cfg_scale=model.default_cfg_scale, temperature=1.0)
    records = list(records if records is not None else evalsets.load_eval_set(set_name))
    if limit is not None:  # the first `limit` prompts of every task
        by_task: dict[str, list] = {}
        for r in records:
            by_task.setdefault(r.task, []).append(r)
        records = [r for rs in by_task.values() for r in rs[:limit]]
    scored, images = generate_and_score(model, records, images_per_prompt, sampling, seed, desc=f"evaluate {set_name}")
    summary = summarize([ImageResult(s.prompt_id, s.task, s.score) for s in scored])
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


def summary_dict(summary: Summary) -> dict:
    return {"tasks": {t: asdict(e) for t, e in summary.tasks.items()}, "overall": asdict(summary.overall)}
