"""The ShapeWorld oracle: reads pixels back into objects and scores prompts by benchmark rules.

Detection is prototype matching per cell. A cell is modelled as background b plus a glyph mask m
(from shape and texture) painted in colour c: x = b + m * (c - b). For every cell the oracle
estimates b locally (from the cell's outer pixel ring, which glyphs never touch), picks the
mask that explains the cell best with a freely fitted colour, snaps that colour to the palette,
and keeps the object if it explains the cell better than plain background. Masks come sharp and
box-blurred (3x3, 5x5), so blurry decoder output matches as well as crisp renders.
Self-contained: numpy only, no model code; pipeline stages must never import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ospo.shapeworld.captions import Spec
from ospo.shapeworld.evalsets import geneval_metadata
from ospo.shapeworld.questions import Question, answer_question, presence_question, truth
from ospo.shapeworld.render import glyph_mask
from ospo.shapeworld.world import (
    BACKGROUNDS, CELL, COLORS, GRID, IMAGE_SIZE, SHAPES, TEXTURES, Obj, Scene, region_of, relations_between,
)

__all__ = [
    "OracleError", "Detected", "Verdict", "detect", "estimate_background", "read_scene",
    "geneval_metadata", "evaluate_metadata", "score_spec", "compbench_score", "truth", "answer_question",
]


BLUR_RADII = (0, 1, 2)  # mask variants: sharp, 3x3 and 5x5 box-blurred (decoders render soft edges)


class OracleError(ValueError):
    """Input the oracle cannot read."""


@dataclass(frozen=True)
class Detected:
    """An object read from pixels. `distance`: RMS error (0-255 scale) to the best prototype;
    `confidence` = 1 - sqrt(best / second best squared error), 1.0 for an exact render."""

    shape: str
    color: str
    texture: str
    row: int
    col: int
    distance: float
    confidence: float


@dataclass(frozen=True)
class Verdict:
    """Whether an image satisfies a prompt, with one human-readable reason per failed check."""

    correct: bool
    reasons: tuple[str, ...]


def _validate(pixels) -> np.ndarray:
    """(IMAGE_SIZE, IMAGE_SIZE, 3) float64 in 0..255, or OracleError."""
    array = np.asarray(pixels)
    if array.ndim != 3 or array.shape[2] != 3 or array.shape[:2] != (IMAGE_SIZE, IMAGE_SIZE):
        got = f"{array.shape[1]}x{array.shape[0]}" if array.ndim >= 2 else f"shape {array.shape}"
        channels = f" with {array.shape[2]} channels" if array.ndim == 3 and array.shape[2] != 3 else ""
        raise OracleError(f"expected a {IMAGE_SIZE}x{IMAGE_SIZE} RGB image, got {got}{channels}")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise OracleError(f"expected uint8-like pixels, got dtype {array.dtype}")
    array = array.astype(np.float64)
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 255:
        raise OracleError("expected pixel values in 0..255")
    if np.issubdtype(np.asarray(pixels).dtype, np.floating) and array.max() <= 1.0:
        raise OracleError("pixels look like floats in 0..1; scale them to 0..255")
    return array


def _box_blur(masks: np.ndarray, radius: int) -> np.ndarray:
    """(K, H, W) masks averaged over (2r+1) x (2r+1) windows, zero outside."""
    size = 2 * radius + 1
    padded = np.pad(masks, ((0, 0), (radius, radius), (radius, radius)))
    h, w = masks.shape[1:]
    return sum(padded[:, dy:dy + h, dx:dx + w] for dy in range(size) for dx in range(size)) / size**2


@lru_cache(maxsize=None)
def _prototype_masks() -> tuple[np.ndarray, tuple[tuple[str, str], ...]]:
    """(V*K, CELL*CELL) float masks, one block of K per blur radius, and the K (shape, texture) labels."""
    labels = tuple((s, t) for s in SHAPES for t in TEXTURES)
    sharp = np.stack([glyph_mask(s, t).astype(np.float64) for s, t in labels])
    variants = [_box_blur(sharp, r) for r in BLUR_RADII]
    return np.concatenate(variants).reshape(len(BLUR_RADII) * len(labels), -1), labels


def _cells(image: np.ndarray) -> np.ndarray:
    """(GRID*GRID, CELL, CELL, 3) cells, row-major."""
    return image.reshape(GRID, CELL, GRID, CELL, 3).transpose(0, 2, 1, 3, 4).reshape(-1, CELL, CELL, 3)


def _rings(cells: np.ndarray) -> np.ndarray:
    """(N, R, 3) pixels of each cell's outer 1-px ring, which glyphs never cover."""
    return np.concatenate([cells[:, 0], cells[:, -1], cells[:, 1:-1, 0], cells[:, 1:-1, -1]], axis=1)


def _cell_backgrounds(cells: np.ndarray) -> np.ndarray:
    """(N, 3) per-cell background: mean of the half of the cell's ring nearest the image's background.

    Local, so it follows a decoder's per-cell colour drift; trimmed, so a blurred glyph bleeding
    into part of its ring does not pull the estimate towards the glyph's colour.
    """
    rings = _rings(cells)
    overall = np.median(rings.reshape(-1, 3), axis=0)
    nearest = np.argsort(((rings - overall) ** 2).sum(-1), axis=1)[:, : rings.shape[1] // 2]
    return np.take_along_axis(rings, nearest[..., None], axis=1).mean(axis=1)


def estimate_background(pixels) -> str:
    """Name of the background colour nearest to the median of all cells' ring pixels."""
    observed = np.median(_rings(_cells(_validate(pixels))).reshape(-1, 3), axis=0)
    names = list(BACKGROUNDS)
    return names[int(np.argmin([np.sum((observed - np.array(BACKGROUNDS[n])) ** 2) for n in names]))]


def _ratio(best: np.ndarray, second: np.ndarray) -> np.ndarray:
    """1 - sqrt(best / second): 1 for a perfect, unambiguous fit, 0 for a tie."""
    return 1.0 - np.sqrt(best / np.maximum(second, 1e-12))


def detect(pixels) -> list[Detected]:
    """Objects in an image, row-major. Raises OracleError for anything but a 128x128 RGB image.

    Per cell: (1) for every mask fit the colour freely by least squares, c - b = (m . y) / (m . m),
    and keep the (shape, texture) with the least error, so an off colour cannot favour a smaller
    mask; (2) snap the fitted colour to the nearest palette colour; (3) keep the object only if
    that palette glyph explains the cell better than plain background (a ghost at under half
    contrast reads as empty).
    """
    cells = _cells(_validate(pixels))
    n, rows = len(cells), np.arange(len(cells))
    backgrounds = _cell_backgrounds(cells)  # (N, 3)
    residual = cells.reshape(n, -1, 3) - backgrounds[:, None, :]  # (N, P, 3): y = x - b
    masks, labels = _prototype_masks()  # (V*K, P)
    area = (masks**2).sum(axis=1)  # (V*K,)
    projected = masks @ residual  # (N, V*K, 3)
    empty = (residual**2).sum(axis=(1, 2))  # (N,) error of "no object"
    fit_error = (empty[:, None] - (projected**2).sum(-1) / area).reshape(n, len(BLUR_RADII), -1)  # (N, V, K)
    label_error = np.maximum(fit_error.min(axis=1), 0.0)  # (N, K): best over blur variants
    ranked = np.argsort(label_error, axis=1)
    best = ranked[:, 0]
    variant = fit_error[rows, :, best].argmin(axis=1) * len(labels) + best  # (N,) mask index
    fitted = backgrounds + projected[rows, variant] / area[variant, None]  # (N, 3)
    palette = np.array(list(COLORS.values()), dtype=np.float64)  # (C, 3)
    color_distance = np.linalg.norm(palette[None] - fitted[:, None], axis=-1)  # (N, C)
    color_rank = np.argsort(color_distance, axis=1)
    contrast = palette[color_rank[:, 0]] - backgrounds  # (N, 3): c - b
    error = empty - 2 * (projected[rows, variant] * contrast).sum(-1) + area[variant] * (contrast**2).sum(-1)
    error = np.maximum(error, 0.0)
    confidence = np.minimum.reduce([
        _ratio(label_error[rows, best], label_error[rows, ranked[:, 1]]),
        1.0 - color_distance[rows, color_rank[:, 0]] / np.maximum(color_distance[rows, color_rank[:, 1]], 1e-12),
        _ratio(error, empty),
    ])
    colors = list(COLORS)
    found = []
    for i in np.flatnonzero(error < empty):
        shape, texture = labels[best[i]]
        distance = float(np.sqrt(error[i] / residual[i].size))
        color = colors[color_rank[i, 0]]
        found.append(Detected(shape, color, texture, int(i) // GRID, int(i) % GRID, distance, float(confidence[i])))
    return found


def read_scene(pixels) -> Scene:
    """The Scene an image depicts, as far as the oracle can read it."""
    objects = tuple(Obj(d.shape, d.color, d.texture, d.row, d.col) for d in detect(pixels))
    return Scene(objects, estimate_background(pixels))


# --- GenEval-style scoring ------------------------------------------------------------------


def _split(scene: Scene | Sequence[Detected]) -> tuple[list, str | None]:
    if isinstance(scene, Scene):
        return list(scene.objects), scene.background
    return list(scene), None


def evaluate_metadata(metadata: dict, scene: Scene | Sequence[Detected]) -> Verdict:
    """GenEval's `evaluate` on ShapeWorld objects (benchmarks.md 1.4), with boxes = cells.

    Per include clause: take the `count` most confident objects of the shape (ties row-major); too
    few -> wrong; fewer than `count` of them with the colour (texture, region) -> wrong. Then a
    "position": [rel, g] clause needs `rel` (world.relations_between) from every found object to
    every object of group g. Exclude clauses fail when at least `count` objects of the shape exist.
    All failures are reported (GenEval stops at the first); correctness is the same.
    """
    objects, background = _split(scene)
    ranked = sorted(objects, key=lambda o: (-getattr(o, "confidence", 1.0), o.row, o.col))
    by_shape = {s: [o for o in ranked if o.shape == s] for s in SHAPES}
    reasons, groups = [], []
    for entry in metadata["include"]:
        shape, count = entry["shape"], entry["count"]
        chosen = by_shape[shape][:count]
        if len(chosen) < count:
            reasons.append(f"expected {shape}>={count}, found {len(chosen)}")
            groups.append(None)
            continue
        matched = True
        for key in ("color", "texture", "region"):
            if key in entry:
                seen = [region_of(o.row, o.col) if key == "region" else getattr(o, key) for o in chosen]
                if seen.count(entry[key]) < count:
                    reasons.append(f"expected {entry[key]} {shape}>={count}, found {', '.join(seen)} {shape}")
                    matched = False
        groups.append(chosen if matched else None)
    for entry, chosen in zip(metadata["include"], groups):
        if "position" not in entry or chosen is None:
            continue
        kind, g = entry["position"]
        target = metadata["include"][g]["shape"]
        if groups[g] is None:
            reasons.append(f"no target {target} for {entry['shape']} {kind} {target}")
            continue
        for a in chosen:
            for b in groups[g]:
                found = relations_between((a.row, a.col), (b.row, b.col))
                if kind not in found:
                    seen = ", ".join(sorted(found)) or "none"
                    reasons.append(f"expected {entry['shape']} {kind} {target}, found {seen}")
    for entry in metadata["exclude"]:
        n = len(by_shape[entry["shape"]])
        if n >= entry["count"]:
            reasons.append(f"expected {entry['shape']}<{entry['count']}, found {n}")
    if "background" in metadata:
        if background is None:
            raise TypeError("the prompt names a background: pass a Scene (oracle.read_scene), not a list")
        if background != metadata["background"]:
            reasons.append(f"expected background {metadata['background']}, found {background}")
    return Verdict(not reasons, tuple(reasons))


def score_spec(spec: Spec, scene: Scene | Sequence[Detected]) -> Verdict:
    """GenEval verdict for `spec` on a Scene or a list of detections."""
    return evaluate_metadata(geneval_metadata(spec), scene)


def compbench_score(spec: Spec, scene: Scene | Sequence[Detected]) -> float:
    """T2I-CompBench-style graded score in [0, 1]: weighted fraction of the prompt satisfied.

    Units: each clause (weight 1): 1 if a matching object exists (shape with its colour, texture,
    region); a counted clause scores 0.5 for presence + 0.5 for the exact count, as CompBench's
    numeracy scorer. The relation (weight 2, as CompBench's spatial 0.25 + 0.25 + 0.5): 1 if some
    matching pair stands in it. The background (weight 1) when the prompt names one.
    """
    objects = _split(scene)[0]
    units = []
    for clause in spec.objects:
        present = float(truth(presence_question(clause), objects))
        exact = float(truth(Question("count", clause), objects)) if clause.count > 1 else present
        units.append((1.0, 0.5 * present + 0.5 * exact))
    if spec.relation is not None:
        rel = spec.relation
        question = Question("relation", spec.objects[rel.subject], rel.kind, spec.objects[rel.object])
        units.append((2.0, float(truth(question, objects))))
    if spec.background is not None:
        units.append((1.0, float(truth(Question("background", background=spec.background), scene))))
    return sum(w * v for w, v in units) / sum(w for w, _ in units)
