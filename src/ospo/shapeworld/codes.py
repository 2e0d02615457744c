"""Image codes by construction: one VQ code per (glyph, background) cell content and one per empty background.

A ShapeWorld cell's pixels depend only on (shape, colour, texture, background) or on the background alone
(see render.py), so a scene maps to its GRID x GRID code grid exactly, and the VQ decoder only has to
learn to paint each code's 16 px cell. Code ids are stable: they follow the order of the world's tables.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import product

import numpy as np

from ospo.shapeworld.render import glyph
from ospo.shapeworld.world import BACKGROUNDS, CELL, COLORS, GRID, SHAPES, TEXTURES, Obj, Scene


@lru_cache(maxsize=None)
def code_table() -> tuple[tuple, ...]:
    """Entry k describes code k: ("empty", background) or ("glyph", shape, colour, texture, background)."""
    empties = [("empty", bg) for bg in BACKGROUNDS]
    glyphs = [("glyph", s, c, t, bg) for bg, s, c, t in product(BACKGROUNDS, SHAPES, COLORS, TEXTURES)]
    return tuple(empties + glyphs)


@lru_cache(maxsize=None)
def _index() -> dict:
    return {entry: k for k, entry in enumerate(code_table())}


def num_codes() -> int:
    return len(code_table())


def scene_to_codes(scene: Scene) -> np.ndarray:
    """(GRID * GRID,) int64 codes of a scene, row-major."""
    index = _index()
    codes = np.full(GRID * GRID, index[("empty", scene.background)], dtype=np.int64)
    for o in scene.objects:
        codes[o.row * GRID + o.col] = index[("glyph", o.shape, o.color, o.texture, scene.background)]
    return codes


def codes_to_scene(codes) -> Scene | None:
    """The scene a code grid depicts, or None when its cells disagree on the background or a code is unknown."""
    table = code_table()
    codes = np.asarray(codes).reshape(-1)
    if len(codes) != GRID * GRID or codes.min() < 0 or codes.max() >= len(table):
        return None
    backgrounds = {table[k][-1] for k in codes}
    if len(backgrounds) != 1:
        return None
    objects = [Obj(*table[k][1:4], row=i // GRID, col=i % GRID) for i, k in enumerate(codes) if table[k][0] == "glyph"]
    return Scene(tuple(objects), backgrounds.pop())


@lru_cache(maxsize=None)
def code_pixels() -> np.ndarray:
    """(num_codes, CELL, CELL, 3) uint8: the pixels each code must decode to."""
    out = np.empty((num_codes(), CELL, CELL, 3), dtype=np.uint8)
    for k, entry in enumerate(code_table()):
        if entry[0] == "empty":
            out[k] = BACKGROUNDS[entry[1]]
        else:
            out[k] = glyph(*entry[1:])
    out.setflags(write=False)
    return out


def paint_codes(codes) -> np.ndarray:
    """(H, W, 3) uint8 image the code grid depicts, painted cell by cell (the VQ decoder's target)."""
    cells = code_pixels()[np.asarray(codes).reshape(GRID, GRID)]  # (G, G, CELL, CELL, 3)
    return cells.transpose(0, 2, 1, 3, 4).reshape(GRID * CELL, GRID * CELL, 3)


def code_features(dim: int = 16) -> np.ndarray:
    """(num_codes, dim) float32 factorised code vectors: [is glyph, shape one-hot, texture one-hot, colour RGB,
    background RGB, 1]. Used as the VQ codebook (frozen) so the decoder learns shapes, textures and colours once
    rather than 600 separate glyphs, and to initialise the LM's image-token embeddings."""
    width = 1 + len(SHAPES) + len(TEXTURES) + 3 + 3 + 1
    if dim < width:
        raise ValueError(f"code features need dim >= {width}, got {dim}")
    out = np.zeros((num_codes(), dim), dtype=np.float32)
    for k, entry in enumerate(code_table()):
        out[k, -4:-1] = np.array(BACKGROUNDS[entry[-1]]) / 127.5 - 1
        out[k, width - 1] = 1.0
        if entry[0] == "glyph":
            _, shape, color, texture, _ = entry
            out[k, 0] = 1.0
            out[k, 1 + SHAPES.index(shape)] = 1.0
            out[k, 1 + len(SHAPES) + TEXTURES.index(texture)] = 1.0
            out[k, 1 + len(SHAPES) + len(TEXTURES):width - 4] = np.array(COLORS[color]) / 127.5 - 1
    return out
