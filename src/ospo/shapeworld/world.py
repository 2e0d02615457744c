"""ShapeWorld: a discrete, cell-aligned world of coloured glyphs with exact ground truth.

An image is a GRID x GRID board of CELL-pixel cells; every object fills exactly one cell. All
sizes derive from IMAGE_SIZE and GRID below. This module holds the world's vocabulary (shapes,
colours, textures, backgrounds, regions, relations), the scene records, and the cell geometry
that both the caption sampler and the oracle use, so the two can never disagree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

IMAGE_SIZE = 128
GRID = 8
CELL = IMAGE_SIZE // GRID  # 16 px

SHAPES = ("square", "circle", "triangle", "cross", "diamond")
PLURALS = {"square": "squares", "circle": "circles", "triangle": "triangles", "cross": "crosses", "diamond": "diamonds"}

# GenEval's ten colour names. Values are >= 94 apart (RGB Euclidean) from each other and >= 98
# from every background, so every (colour, texture) reads on every background.
COLORS = {
    "red": (220, 30, 30),
    "orange": (255, 140, 0),
    "yellow": (250, 225, 40),
    "green": (30, 160, 50),
    "blue": (30, 70, 230),
    "purple": (140, 40, 190),
    "pink": (245, 125, 205),
    "brown": (120, 65, 20),
    "black": (15, 15, 15),
    "white": (250, 250, 250),
}
TEXTURES = ("solid", "striped", "hollow")
BACKGROUNDS = {
    "gray": (128, 128, 128),
    "beige": (210, 190, 140),
    "teal": (40, 140, 150),
    "mint": (165, 225, 185),
}

RELATIONS = ("left of", "right of", "above", "below", "next to")
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
MAX_COUNT = 4

# Regions: the board split into three row bands and three column bands (3 / 2 / 3 cells at GRID=8).
_BAND = math.ceil(GRID / 3)
ROW_BANDS = {"upper": range(0, _BAND), "middle": range(_BAND, GRID - _BAND), "lower": range(GRID - _BAND, GRID)}
COL_BANDS = {"left": range(0, _BAND), "center": range(_BAND, GRID - _BAND), "right": range(GRID - _BAND, GRID)}


def _region_name(row_band: str, col_band: str) -> str:
    if (row_band, col_band) == ("middle", "center"):
        return "center"
    return f"{row_band} {col_band}"


REGIONS = {_region_name(r, c): (ROW_BANDS[r], COL_BANDS[c]) for r in ROW_BANDS for c in COL_BANDS}

# The GenEval position rule pads by 0.1 * (width_A + width_B); boxes here are cells (1 x 1).
POSITION_MARGIN = 0.1 * (1 + 1)


@dataclass(frozen=True)
class Obj:
    """One glyph on the board, at cell (row, col); row 0 is the top row."""

    shape: str
    color: str
    texture: str
    row: int
    col: int

    def __post_init__(self) -> None:
        check_name("shape", self.shape, SHAPES)
        check_name("colour", self.color, COLORS)
        check_name("texture", self.texture, TEXTURES)
        if not (0 <= self.row < GRID and 0 <= self.col < GRID):
            raise ValueError(f"cell ({self.row}, {self.col}) is off the {GRID}x{GRID} board")


@dataclass(frozen=True)
class Scene:
    """A board: its background colour name and its objects, sorted row-major, one per cell."""

    objects: tuple[Obj, ...]
    background: str

    def __post_init__(self) -> None:
        check_name("background", self.background, BACKGROUNDS)
        cells = [(o.row, o.col) for o in self.objects]
        if len(set(cells)) != len(cells):
            raise ValueError(f"two objects share a cell in {cells}")
        object.__setattr__(self, "objects", tuple(sorted(self.objects, key=lambda o: (o.row, o.col))))


def check_name(kind: str, name: str | None, allowed) -> None:
    """Raise ValueError naming `kind` when `name` is not one of `allowed` (None passes)."""
    if name is not None and name not in allowed:
        raise ValueError(f"unknown {kind} {name!r}; expected one of {', '.join(allowed)}")


def region_of(row: int, col: int) -> str:
    """The region name containing cell (row, col)."""
    for name, (rows, cols) in REGIONS.items():
        if row in rows and col in cols:
            return name
    raise ValueError(f"cell ({row}, {col}) is off the {GRID}x{GRID} board")


def region_cells(region: str | None) -> list[tuple[int, int]]:
    """All cells of `region` (the whole board for None), row-major."""
    if region is None:
        return [(r, c) for r in range(GRID) for c in range(GRID)]
    check_name("region", region, REGIONS)
    rows, cols = REGIONS[region]
    return [(r, c) for r in rows for c in cols]


def relations_between(a: tuple[int, int], b: tuple[int, int]) -> frozenset[str]:
    """Relations that hold for object A at cell `a` relative to object B at cell `b`.

    Directions follow GenEval's `relative_position` on cell centres, in cell units, with boxes
    equal to cells: offset = centre_A - centre_B (x = column, y = row, y grows downward);
    revised = sign(offset) * max(|offset| - 0.2, 0) per axis (0.2 = 0.1 * (w_A + w_B));
    (dx, dy) = revised / ||offset||; dx < -0.5 -> "left of", dx > 0.5 -> "right of",
    dy < -0.5 -> "above", dy > 0.5 -> "below". Several may hold (a diagonal neighbour is both
    "left of" and "above"). "next to" (not in GenEval) holds for the 8 neighbouring cells.
    """
    off_x, off_y = a[1] - b[1], a[0] - b[0]
    revised = [math.copysign(max(abs(v) - POSITION_MARGIN, 0.0), v) for v in (off_x, off_y)]
    if all(abs(v) < 1e-3 for v in revised):
        return frozenset()
    norm = math.hypot(off_x, off_y)
    dx, dy = revised[0] / norm, revised[1] / norm
    tests = (("left of", dx < -0.5), ("right of", dx > 0.5), ("above", dy < -0.5), ("below", dy > 0.5))
    found = {name for name, hit in tests if hit}
    if max(abs(off_x), abs(off_y)) == 1:
        found.add("next to")
    return frozenset(found)


def relation_holds_cleanly(kind: str, a: tuple[int, int], b: tuple[int, int]) -> bool:
    """True when `kind` holds for A at `a` vs B at `b` and no other direction does.

    The sampler places related objects this way so that an image never also depicts the
    perpendicular relation (a diagonal placement would make "left of" and "above" both true).
    """
    found = relations_between(a, b)
    if kind == "next to":
        return "next to" in found
    return kind in found and found - {"next to"} == {kind}


# Words reserved for the text tasks built on this world (perturbation, densification, question
# decomposition, yes/no VQA instructions). Captions and questions never use them.
INSTRUCTION_WORDS = (
    "please", "answer", "yes", "or", "no", "does", "this", "image", "accurately", "show", "describe",
    "write", "rewrite", "prompt", "prompts", "negative", "positive", "dense", "short", "caption",
    "question", "questions", "list", "objects", "object", "bindings", "binding", "attribute",
    "attributes", "relation", "relations", "count", "number", "color", "shape", "texture", "edit",
    "replace", "swap", "drop", "with", "result", "step", "steps", "new", "same", "scene", "then",
    "into", "each", "all", "by", "for", "it", "what", "which", "how", "many", "category", "kind",
    "spatial", "numeracy", "complex", "layout", "example", "examples", "done", "none", "more",
    "element", "elements", "first", "second", "both", "make", "change", "remove", "add", "keep",
    "only", "one", "from", "word", "words", "colors", "shapes", "textures", "regions", "region",
    "exactly", "at", "least", "not", "true", "false", "original", "output", "input", "text", "given",
    "other", "different", "than", "be", "has", "have", "give", "name", "task", "perturb", "densify",
    "decompose", "instruction",
)
PUNCTUATION = (".", ",", "?", ":")


def vocabulary() -> list[str]:
    """Every word that captions, questions and text-task instructions of this world may use."""
    words = ["a", "an", "the", "and", "on", "background", "in", "is", "are", "there"]
    words += [NUMBER_WORDS[n] for n in sorted(NUMBER_WORDS)]
    words += list(SHAPES) + [PLURALS[s] for s in SHAPES] + list(COLORS) + list(TEXTURES) + list(BACKGROUNDS)
    words += list(ROW_BANDS) + list(COL_BANDS)
    words += [w for rel in RELATIONS for w in rel.split()]
    words += list(INSTRUCTION_WORDS) + list(PUNCTUATION)
    return list(dict.fromkeys(words))
