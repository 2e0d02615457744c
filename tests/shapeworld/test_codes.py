"""Codes by construction: one code per cell paints exactly what the renderer draws, and reads back."""

import numpy as np

from ospo.shapeworld import codes as world_codes
from ospo.shapeworld import sampler
from ospo.shapeworld.captions import SUBCATEGORIES
from ospo.shapeworld.pretrain import shapeworld_spec
from ospo.shapeworld.render import render


def test_codes_paint_exactly_what_the_renderer_draws_and_invert():
    rng = np.random.default_rng(0)
    for sub in SUBCATEGORIES:
        scene = sampler.sample_scene(sampler.sample_spec(rng, sub), rng)
        codes = world_codes.scene_to_codes(scene)
        assert codes.shape == (64,)
        assert np.array_equal(world_codes.paint_codes(codes), render(scene))
        assert world_codes.codes_to_scene(codes) == scene


def test_codes_to_scene_rejects_mixed_backgrounds_and_unknown_codes():
    table = world_codes.code_table()
    empties = [k for k, e in enumerate(table) if e[0] == "empty"]
    mixed = np.array([empties[0]] * 63 + [empties[1]])
    assert world_codes.codes_to_scene(mixed) is None
    assert world_codes.codes_to_scene(np.full(64, len(table))) is None
    assert world_codes.num_codes() == shapeworld_spec().codebook_size
