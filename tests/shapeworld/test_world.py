"""ShapeWorld's world tables, geometry and rendering."""

import ast
import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ospo.shapeworld import world
from ospo.shapeworld.render import MARGIN, glyph, glyph_mask, render
from ospo.shapeworld.world import (
    BACKGROUNDS, CELL, COLORS, GRID, IMAGE_SIZE, REGIONS, SHAPES, TEXTURES, Obj, Scene, region_cells, region_of,
    relation_holds_cleanly, relations_between, vocabulary,
)

SHAPEWORLD_DIR = Path(world.__file__).parent
# The world, its text and its oracle: numpy/PIL only, never torch or model code.
PURE_MODULES = ("world", "captions", "questions", "sampler", "render", "oracle", "evalsets")
GENEVAL_COLORS = {"red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white"}


def test_sizes_derive_from_image_size_and_grid():
    assert (IMAGE_SIZE, GRID, CELL) == (128, 8, 16)
    assert len(SHAPES) >= 5 and len(COLORS) >= 8 and len(TEXTURES) >= 3


def test_palette_uses_geneval_names_and_is_well_separated():
    assert set(COLORS) == GENEVAL_COLORS
    colours = np.array(list(COLORS.values()), dtype=float)
    backgrounds = np.array(list(BACKGROUNDS.values()), dtype=float)
    assert min(np.linalg.norm(a - b) for a, b in itertools.combinations(colours, 2)) >= 90
    assert np.linalg.norm(colours[:, None] - backgrounds[None], axis=-1).min() >= 95
    assert not set(BACKGROUNDS) & set(COLORS)


@pytest.mark.parametrize("background", list(BACKGROUNDS))
def test_every_glyph_and_the_empty_cell_differ_on_every_background(background):
    cells = [glyph(s, c, t, background) for s in SHAPES for c in COLORS for t in TEXTURES]
    cells.append(np.full((CELL, CELL, 3), BACKGROUNDS[background], dtype=np.uint8))
    flat = np.stack(cells).reshape(len(cells), -1).astype(float)
    distances = np.sqrt(((flat[:, None] - flat[None]) ** 2).sum(-1))
    np.fill_diagonal(distances, np.inf)
    assert distances.min() > 300  # e.g. >= 10 pixels differing by the minimum contrast of 98


@pytest.mark.parametrize("shape", SHAPES)
def test_glyph_masks_keep_a_margin_and_textures_are_subsets_of_the_silhouette(shape):
    solid, striped, hollow = (glyph_mask(shape, t) for t in ("solid", "striped", "hollow"))
    for mask in (solid, striped, hollow):
        assert mask.shape == (CELL, CELL)
        assert not mask[:MARGIN].any() and not mask[-MARGIN:].any()
        assert not mask[:, :MARGIN].any() and not mask[:, -MARGIN:].any()
    assert (striped <= solid).all() and (hollow <= solid).all()
    assert (solid & ~striped).sum() >= 10 and (solid & ~hollow).sum() >= 4


def test_render_paints_each_glyph_into_its_cell_and_is_deterministic():
    scene = Scene((Obj("cross", "blue", "hollow", 7, 7), Obj("circle", "red", "solid", 0, 0)), "beige")
    image = render(scene)
    assert image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and image.dtype == np.uint8
    assert np.array_equal(image[:CELL, :CELL], glyph("circle", "red", "solid", "beige"))
    assert np.array_equal(image[-CELL:, -CELL:], glyph("cross", "blue", "hollow", "beige"))
    assert (image[CELL:-CELL] == BACKGROUNDS["beige"]).all()
    assert np.array_equal(image, render(scene))


def test_a_cell_depends_only_on_its_own_glyph_and_the_background():
    alone = render(Scene((Obj("diamond", "pink", "striped", 4, 4),), "teal"))
    neighbours = tuple(Obj("square", "black", "solid", r, c) for r in (3, 4, 5) for c in (3, 5))
    crowded = render(Scene(neighbours + (Obj("diamond", "pink", "striped", 4, 4),), "teal"))
    assert np.array_equal(alone[64:80, 64:80], crowded[64:80, 64:80])


def test_scene_validation_and_ordering():
    with pytest.raises(ValueError, match="share a cell"):
        Scene((Obj("circle", "red", "solid", 1, 1), Obj("square", "red", "solid", 1, 1)), "gray")
    with pytest.raises(ValueError, match="magenta"):
        Obj("circle", "magenta", "solid", 0, 0)
    with pytest.raises(ValueError, match="off the"):
        Obj("circle", "red", "solid", 0, GRID)
    with pytest.raises(ValueError, match="background"):
        Scene((), "red")
    scene = Scene((Obj("circle", "red", "solid", 5, 0), Obj("square", "red", "solid", 1, 6)), "gray")
    assert [(o.row, o.col) for o in scene.objects] == [(1, 6), (5, 0)]


def test_relations_follow_genevals_rule_in_cell_units():
    assert relations_between((3, 2), (3, 5)) == {"left of"}
    assert relations_between((3, 5), (3, 2)) == {"right of"}
    assert relations_between((1, 4), (4, 4)) == {"above"}
    assert relations_between((4, 3), (3, 3)) == {"below", "next to"}
    # diagonal neighbour: revised offset (-0.8, -0.8) / sqrt(2) = -0.566 on both axes
    assert relations_between((2, 2), (3, 3)) == {"left of", "above", "next to"}
    # offset (-1, -2): revised (-0.8, -1.8) / sqrt(5) = (-0.358, -0.805): above only
    assert relations_between((1, 2), (3, 3)) == {"above"}
    # offset (-2, -3): without the 0.2 margin dx = -0.555 ("left of"); with it dx = -1.8 / sqrt(13) = -0.499
    assert relations_between((0, 0), (3, 2)) == {"above"}
    assert relations_between((3, 3), (3, 3)) == set()


def test_clean_relations_exclude_perpendicular_directions():
    assert relation_holds_cleanly("left of", (3, 1), (3, 3))
    assert not relation_holds_cleanly("left of", (2, 2), (3, 3))
    assert not relation_holds_cleanly("left of", (3, 4), (3, 3))
    assert relation_holds_cleanly("next to", (2, 2), (3, 3))
    assert not relation_holds_cleanly("next to", (1, 1), (3, 3))


def test_regions_partition_the_board():
    cells = [cell for region in REGIONS for cell in region_cells(region)]
    assert len(REGIONS) == 9 and sorted(cells) == region_cells(None)
    assert region_of(0, 0) == "upper left" and region_of(7, 7) == "lower right"
    assert region_of(3, 4) == "center" and region_of(4, 0) == "middle left" and region_of(0, 4) == "upper center"


def test_vocabulary_is_small_unique_and_has_the_required_words():
    words = vocabulary()
    assert 150 <= len(words) <= 250
    assert len(words) == len(set(words))
    required = {"one", "two", "three", "four", "circles", "crosses", "left", "of", "above", "next", "to",
                "upper", "lower", "center", "background", ".", ",", "?", ":", "yes", "no"}
    assert required <= set(words)
    assert set(SHAPES) | set(COLORS) | set(TEXTURES) | set(BACKGROUNDS) <= set(words)


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_world_text_and_oracle_modules_import_neither_torch_nor_model_code():
    for stem in PURE_MODULES + ("__init__",):
        for name in _imported_modules(SHAPEWORLD_DIR / f"{stem}.py"):
            top = name.split(".")[0]
            allowed = top in ("numpy", "PIL") or top in sys.stdlib_module_names or name.startswith("ospo.shapeworld.")
            assert allowed and name != "ospo.shapeworld.pretrain", (stem, name)


def test_importing_the_world_and_oracle_does_not_load_torch():
    modules = [f"ospo.shapeworld.{stem}" for stem in PURE_MODULES]
    code = f"import sys\nfor m in {modules!r}: __import__(m)\nassert 'torch' not in sys.modules, 'torch was imported'"
    env = {**os.environ, "PYTHONPATH": str(SHAPEWORLD_DIR.parents[1])}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
