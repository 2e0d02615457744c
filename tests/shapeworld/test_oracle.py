"""The oracle: reading pixels (clean and corrupted) and scoring prompts by GenEval / CompBench rules."""

import numpy as np
import pytest
from PIL import Image

from ospo.shapeworld.captions import SUBCATEGORIES, caption, parse_caption
from ospo.shapeworld.evalsets import geneval_metadata
from ospo.shapeworld.oracle import (
    Detected, OracleError, compbench_score, detect, estimate_background, read_scene, score_spec,
)
from ospo.shapeworld.render import render
from ospo.shapeworld.sampler import densify, sample_scene, sample_spec
from ospo.shapeworld.world import BACKGROUNDS, CELL, COLORS, GRID, SHAPES, TEXTURES, Obj, Scene


def random_scene(rng: np.random.Generator, num_objects: int) -> Scene:
    cells = rng.choice(GRID * GRID, size=num_objects, replace=False)
    objects = tuple(
        Obj(SHAPES[rng.integers(len(SHAPES))], list(COLORS)[rng.integers(len(COLORS))],
            TEXTURES[rng.integers(len(TEXTURES))], int(c) // GRID, int(c) % GRID)
        for c in cells
    )
    return Scene(objects, list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))])


def box_blur(image: np.ndarray) -> np.ndarray:
    padded = np.pad(image.astype(float), ((1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = image.shape[:2]
    return sum(padded[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)) / 9.0


def colour_shift(image: np.ndarray, scene: Scene, rng: np.random.Generator, amount: float = 15.0) -> np.ndarray:
    """A global shift of up to amount/2 per channel plus up to `amount` per object cell."""
    out = image.astype(float) + rng.uniform(-amount / 2, amount / 2, 3)
    for o in scene.objects:
        out[o.row * CELL:(o.row + 1) * CELL, o.col * CELL:(o.col + 1) * CELL] += rng.uniform(-amount, amount, 3)
    return out


CORRUPTIONS = {
    "noise15": lambda image, scene, rng: image + rng.normal(0, 15, image.shape),
    "blur3x3": lambda image, scene, rng: box_blur(image),
    "colour_shift15": colour_shift,
    "blur+shift+noise10": lambda image, scene, rng: (
        box_blur(colour_shift(image, scene, rng)) + rng.normal(0, 10, image.shape)
    ),
}


def object_accuracy(scenes, corrupt, rng) -> tuple[float, int]:
    correct = total = false_positives = 0
    for scene in scenes:
        image = np.clip(corrupt(render(scene), scene, rng), 0, 255)
        found = {(d.row, d.col): (d.shape, d.color, d.texture) for d in detect(image)}
        truth = {(o.row, o.col): (o.shape, o.color, o.texture) for o in scene.objects}
        correct += sum(found.get(cell) == value for cell, value in truth.items())
        total += len(truth)
        false_positives += len(found.keys() - truth.keys())
    return correct / total, false_positives


def test_clean_renders_are_read_exactly():
    rng = np.random.default_rng(0)
    for i in range(150):
        scene = random_scene(rng, 1 + i % 40)
        image = render(scene)
        assert read_scene(image) == scene
        assert all(d.confidence == 1.0 and d.distance == 0.0 for d in detect(image))


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_detection_survives_noise_blur_and_colour_shifts(name):
    rng = np.random.default_rng(1)
    scenes = [random_scene(rng, 20) for _ in range(60)]  # 1200 objects
    accuracy, false_positives = object_accuracy(scenes, CORRUPTIONS[name], rng)
    assert accuracy >= 0.99 and false_positives <= 2, (accuracy, false_positives)
    image = np.clip(CORRUPTIONS[name](render(scenes[0]), scenes[0], rng), 0, 255)
    assert estimate_background(image) == scenes[0].background


def test_confidence_drops_on_corrupted_pixels():
    rng = np.random.default_rng(2)
    scene = random_scene(rng, 10)
    noisy = np.clip(render(scene) + rng.normal(0, 15, (128, 128, 3)), 0, 255)
    found = detect(noisy)
    assert len(found) == 10 and all(0.0 < d.confidence < 1.0 and d.distance > 0 for d in found)


@pytest.mark.parametrize("pixels,fragment", [
    (np.zeros((64, 64, 3), np.uint8), "expected a 128x128 RGB image, got 64x64"),
    (np.zeros((128, 128), np.uint8), "expected a 128x128 RGB image"),
    (np.zeros((128, 128, 4), np.uint8), "4 channels"),
    (np.full((128, 128, 3), 0.5), "0..1"),
    (np.full((128, 128, 3), 300), "0..255"),
    (np.full((128, 128, 3), "a"), "dtype"),
])
def test_bad_images_raise_oracle_errors(pixels, fragment):
    with pytest.raises(OracleError) as err:
        detect(pixels)
    assert fragment in str(err.value)
    assert isinstance(err.value, ValueError)


def test_pil_images_are_accepted():
    scene = random_scene(np.random.default_rng(4), 5)
    assert read_scene(Image.fromarray(render(scene))) == scene


@pytest.mark.parametrize("subcategory", list(SUBCATEGORIES))
def test_sampled_scenes_are_judged_correct_from_their_pixels(subcategory):
    rng = np.random.default_rng(6)
    for i in range(200):
        spec = sample_spec(rng, subcategory)
        if i % 2:
            spec = densify(spec, rng)
        scene = read_scene(render(sample_scene(spec, rng)))
        verdict = score_spec(spec, scene)
        assert verdict.correct, (caption(spec), verdict.reasons)
        assert compbench_score(spec, scene) == 1.0


def obj(shape, row, col, color="red", texture="solid", confidence=1.0) -> Detected:
    return Detected(shape, color, texture, row, col, 0.0, confidence)


def test_counting_is_exact_through_the_exclude_clause():
    spec = parse_caption("three circles")
    assert score_spec(spec, [obj("circle", 0, c) for c in range(3)]).correct
    too_few = score_spec(spec, [obj("circle", 0, c) for c in range(2)])
    assert not too_few.correct and too_few.reasons == ("expected circle>=3, found 2",)
    too_many = score_spec(spec, [obj("circle", 0, c) for c in range(4)])
    assert not too_many.correct and too_many.reasons == ("expected circle<4, found 4",)


def test_the_article_a_means_at_least_one():
    spec = parse_caption("two circles and a square")
    detections = [obj("circle", 0, 0), obj("circle", 0, 1), obj("square", 5, 5), obj("square", 6, 6)]
    assert score_spec(spec, detections).correct


def test_colour_and_texture_are_checked_on_the_most_confident_objects():
    spec = parse_caption("a red circle")
    wrong = score_spec(spec, [obj("circle", 0, 0, color="blue")])
    assert not wrong.correct and "expected red circle>=1, found blue circle" in wrong.reasons
    # GenEval checks only the top-`count` detections of the class
    blue_first = [obj("circle", 0, 0, "blue", confidence=0.9), obj("circle", 1, 1, confidence=0.5)]
    red_first = [obj("circle", 0, 0, "blue", confidence=0.5), obj("circle", 1, 1, confidence=0.9)]
    assert not score_spec(spec, blue_first).correct
    assert score_spec(spec, red_first).correct
    assert not score_spec(parse_caption("a striped circle"), [obj("circle", 0, 0)]).correct


def test_missing_object_is_reported():
    verdict = score_spec(parse_caption("a red circle and a blue square"), [obj("circle", 0, 0)])
    assert not verdict.correct and verdict.reasons == ("expected square>=1, found 0",)


def test_position_uses_genevals_margin_rule():
    spec = parse_caption("a circle left of a square")
    assert geneval_metadata(spec)["include"] == [
        {"shape": "square", "count": 1}, {"shape": "circle", "count": 1, "position": ["left of", 0]},
    ]
    assert score_spec(spec, [obj("circle", 3, 2), obj("square", 3, 3)]).correct
    assert score_spec(spec, [obj("circle", 2, 2), obj("square", 3, 3)]).correct  # dx = -0.566
    steep = score_spec(spec, [obj("circle", 1, 2), obj("square", 3, 3)])  # dx = -0.358
    assert not steep.correct and steep.reasons == ("expected circle left of square, found above",)
    assert not score_spec(spec, [obj("circle", 3, 4), obj("square", 3, 3)]).correct
    red_target = parse_caption("a circle left of a red square")
    no_target = score_spec(red_target, [obj("circle", 3, 2), obj("square", 3, 3, "blue")])
    assert "no target square for circle left of square" in no_target.reasons


def test_background_is_checked_when_the_prompt_names_one():
    spec = parse_caption("on a gray background, a red circle")
    assert score_spec(spec, Scene((Obj("circle", "red", "solid", 0, 0),), "gray")).correct
    wrong = score_spec(spec, Scene((Obj("circle", "red", "solid", 0, 0),), "mint"))
    assert wrong.reasons == ("expected background gray, found mint",)
    with pytest.raises(TypeError, match="Scene"):
        score_spec(spec, [obj("circle", 0, 0)])


def test_compbench_score_gives_partial_credit():
    numeracy = parse_caption("two circles and three squares")
    assert compbench_score(numeracy, [obj("circle", 0, 0), obj("circle", 0, 1), obj("square", 5, 5)]) == 0.75
    spatial = parse_caption("a red circle left of a blue square")
    assert compbench_score(spatial, [obj("circle", 3, 2), obj("square", 3, 3, "blue")]) == 1.0
    assert compbench_score(spatial, [obj("circle", 3, 4), obj("square", 3, 3, "blue")]) == 0.5
    assert compbench_score(spatial, [obj("circle", 3, 2)]) == 0.25
    assert compbench_score(parse_caption("a red circle"), [obj("circle", 0, 0, "blue")]) == 0.0
