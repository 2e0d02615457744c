"""Deterministic rendering of ShapeWorld scenes to 128x128 RGB arrays.

Every cell is either background or one glyph. A glyph is a binary mask (from shape and texture
only) painted in one palette colour over the background colour, so a cell's pixels depend only on
(shape, colour, texture, background): one image code per glyph and per background is exact.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ospo.shapeworld.world import BACKGROUNDS, CELL, COLORS, IMAGE_SIZE, SHAPES, TEXTURES, Scene, check_name

MARGIN = 2  # px of background around every glyph, so neighbouring glyphs never touch
OUTLINE = 2  # px width of a hollow glyph's outline
STRIPE = 2  # px height of each stripe (colour and background alternate, starting with colour)


def _shape_mask(shape: str) -> np.ndarray:
    """(CELL, CELL) bool silhouette of `shape`, centred, inside a MARGIN-px border."""
    size = CELL - 2 * MARGIN
    y, x = np.mgrid[0:size, 0:size] + 0.5 - size / 2  # pixel centres relative to the box centre
    half = size / 2
    if shape == "square":
        inner = np.ones((size, size), dtype=bool)
    elif shape == "circle":
        inner = x**2 + y**2 <= half**2
    elif shape == "triangle":  # apex up, base on the bottom row
        inner = np.abs(x) <= (y + half) / 2 + 0.5
    elif shape == "diamond":
        inner = np.abs(x) + np.abs(y) <= half
    elif shape == "cross":  # arms half the box wide, so a hollow cross keeps an interior
        inner = (np.abs(x) <= half / 2) | (np.abs(y) <= half / 2)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")
    mask = np.zeros((CELL, CELL), dtype=bool)
    mask[MARGIN:CELL - MARGIN, MARGIN:CELL - MARGIN] = inner
    return mask


def _erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary erosion with a disk of `radius`, so slanted outlines are as thin as straight ones."""
    padded = np.pad(mask, radius, constant_values=False)
    out = np.ones_like(mask)
    h, w = mask.shape
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy * dy + dx * dx <= radius * radius:
                out &= padded[radius + dy:radius + dy + h, radius + dx:radius + dx + w]
    return out


@lru_cache(maxsize=None)
def glyph_mask(shape: str, texture: str) -> np.ndarray:
    """(CELL, CELL) bool mask of the pixels painted in the object's colour (read-only)."""
    check_name("texture", texture, TEXTURES)
    mask = _shape_mask(shape)
    if texture == "striped":
        rows = np.arange(CELL)[:, None] - MARGIN
        mask = mask & ((rows // STRIPE) % 2 == 0)
    elif texture == "hollow":
        mask = mask & ~_erode(mask, OUTLINE)
    mask.setflags(write=False)
    return mask


def glyph(shape: str, color: str, texture: str, background: str) -> np.ndarray:
    """(CELL, CELL, 3) uint8 pixels of one cell holding this glyph on this background."""
    check_name("colour", color, COLORS)
    check_name("background", background, BACKGROUNDS)
    mask = glyph_mask(shape, texture)[:, :, None]
    return np.where(mask, np.uint8(COLORS[color]), np.uint8(BACKGROUNDS[background])).astype(np.uint8)


def render(scene: Scene) -> np.ndarray:
    """(IMAGE_SIZE, IMAGE_SIZE, 3) uint8 image of `scene`."""
    image = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    image[:] = BACKGROUNDS[scene.background]
    for obj in scene.objects:
        y, x = obj.row * CELL, obj.col * CELL
        image[y:y + CELL, x:x + CELL] = glyph(obj.shape, obj.color, obj.texture, scene.background)
    return image
