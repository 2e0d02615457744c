"""The README's picture: the base ShapeWorld model and the model one OSPO iteration trained, side by side.

For the first prompt of each ShapeWorld-GenEval task (no choosing), `--images` images per model from the same
seeds; each tile is framed green when the oracle calls it correct, red when not.

    python -m benchmarks.before_after --run runs/demo --out docs/images/before-after.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def trained_adapter(run: Path) -> Path:
    """The adapter of the run's single training folder."""
    found = sorted(run.glob("train-*/adapter"))
    if len(found) != 1:
        raise SystemExit(f"{run}: expected one train-*/adapter folder, found {[str(p) for p in found]}")
    return found[0]


def tiles(model, records, images: int, seed: int, sampling) -> list[list[tuple[np.ndarray, bool]]]:
    """Per record, `images` (pixels, oracle verdict) pairs."""
    from ospo.shapeworld.scoring import generate_and_score

    scored, pil = generate_and_score(model, records, images, sampling, seed)
    rows = [[] for _ in records]
    for i, (s, image) in enumerate(zip(scored, pil)):
        rows[i // images].append((np.asarray(image.convert("RGB")), s.score == 1.0))
    return rows


def draw(records, base_rows, trained_rows, tile: int = 128, border: int = 4):
    from PIL import Image, ImageDraw

    images = len(base_rows[0])
    label_h, head_h, gap = 18, 22, 16
    cell = tile + 2 * border
    width = 2 * images * cell + gap
    height = head_h + len(records) * (cell + label_h)
    canvas = Image.new("RGB", (width, height), "white")
    pen = ImageDraw.Draw(canvas)
    pen.text((4, 4), "base model", fill="black")
    pen.text((images * cell + gap + 4, 4), "after one OSPO iteration (ospo-v2)", fill="black")
    for r, record in enumerate(records):
        y = head_h + r * (cell + label_h)
        pen.text((4, y), f"{record.task}: {record.prompt}", fill="black")
        for side, rows in enumerate((base_rows, trained_rows)):
            for k, (pixels, correct) in enumerate(rows[r]):
                x = side * (images * cell + gap) + k * cell
                pen.rectangle([x, y + label_h, x + cell - 1, y + label_h + cell - 1],
                              fill=(40, 160, 60) if correct else (200, 40, 40))
                canvas.paste(Image.fromarray(pixels).resize((tile, tile), Image.NEAREST),
                             (x + border, y + label_h + border))
    return canvas


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a finished `ospo demo` or `ospo run --config shapeworld` folder")
    ap.add_argument("--out", required=True, help="the PNG to write")
    ap.add_argument("--images", type=int, default=4, help="images per prompt and model (default 4)")
    ap.add_argument("--seed", type=int, default=0, help="evaluation seed (default 0, the demo's)")
    args = ap.parse_args(argv)

    from ospo.model import JanusAdapter
    from ospo.registry import resolve_model_path
    from ospo.sampling import ImageSampling
    from ospo.shapeworld.evalsets import load_eval_set

    records, seen = [], set()
    for record in load_eval_set("geneval"):
        if record.task not in seen:
            seen.add(record.task)
            records.append(record)
    path = resolve_model_path("shapeworld")
    base = JanusAdapter.from_pretrained(path)
    sampling = ImageSampling(cfg_scale=base.default_cfg_scale, temperature=1.0)
    base_rows = tiles(base, records, args.images, args.seed, sampling)
    trained = JanusAdapter.from_pretrained(path, adapter=str(trained_adapter(Path(args.run))))
    trained_rows = tiles(trained, records, args.images, args.seed, sampling)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    draw(records, base_rows, trained_rows).save(out, optimize=True)
    right = [sum(c for _, c in row) for row in base_rows], [sum(c for _, c in row) for row in trained_rows]
    print(f"wrote {out}: {len(records)} prompts x {args.images} images; oracle-correct base {sum(right[0])}, "
          f"trained {sum(right[1])}")


if __name__ == "__main__":
    main()
