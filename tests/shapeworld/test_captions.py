"""ShapeWorld captions: canonical text, exact parsing, sampling and scene realisation."""

import numpy as np
import pytest

from ospo.shapeworld.captions import (
    SUBCATEGORIES, CaptionError, ObjectClause as C, Relation, Spec, caption, parse_caption,
)
from ospo.shapeworld.questions import decompose, question_text, truth
from ospo.shapeworld.sampler import densify, sample_scene, sample_spec, with_context
from ospo.shapeworld.world import BACKGROUNDS, relation_holds_cleanly, vocabulary

EXAMPLES = [
    ("a circle", Spec((C("circle"),)), "object1"),
    ("a red circle", Spec((C("circle", color="red"),)), "color1"),
    ("an orange square and a blue cross", Spec((C("square", color="orange"), C("cross", color="blue"))), "color2"),
    ("a striped red circle", Spec((C("circle", color="red", texture="striped"),)), "texture1"),
    ("a hollow square and a solid green diamond",
     Spec((C("square", texture="hollow"), C("diamond", color="green", texture="solid"))), "texture2"),
    ("a red circle left of a blue square",
     Spec((C("circle", color="red"), C("square", color="blue")), Relation("left of")), "spatial"),
    ("three circles", Spec((C("circle", 3),)), "numeracy1"),
    ("two circles and three squares", Spec((C("circle", 2), C("square", 3))), "numeracy2"),
    ("a striped yellow circle next to a hollow blue cross and three solid white diamonds",
     Spec((C("circle", 1, "yellow", "striped"), C("cross", 1, "blue", "hollow"), C("diamond", 3, "white", "solid")),
          Relation("next to")), "complex"),
    ("on a beige background, a red circle in the upper left and a blue square in the lower right",
     Spec((C("circle", color="red", region="upper left"), C("square", color="blue", region="lower right")),
          background="beige"), "color2"),
    ("on a gray background, a cross in the middle left left of a circle in the center",
     Spec((C("cross", region="middle left"), C("circle", region="center")), Relation("left of"), "gray"), "spatial"),
]


@pytest.mark.parametrize("text,spec,subcategory", EXAMPLES)
def test_canonical_examples(text, spec, subcategory):
    assert caption(spec) == text
    assert parse_caption(text) == spec
    assert spec.subcategory == subcategory
    assert spec.category == SUBCATEGORIES[subcategory]


@pytest.mark.parametrize("subcategory", list(SUBCATEGORIES))
def test_parse_inverts_caption_on_sampled_specs(subcategory):
    rng = np.random.default_rng(11)
    for i in range(400):
        spec = sample_spec(rng, subcategory)
        if i % 4 == 0:
            spec = densify(spec, rng)
        assert parse_caption(caption(spec)) == spec


def test_parse_tolerates_case_spacing_and_a_final_period():
    expected = parse_caption("on a beige background, a red circle left of a blue square")
    assert parse_caption("  On a BEIGE background ,a Red   circle left  of a blue square. ") == expected


@pytest.mark.parametrize("text,fragment", [
    ("a magenta circle", "unknown colour or texture 'magenta'"),
    ("a red hexagon", "unknown shape 'hexagon'"),
    ("five circles", "bad count 'five'"),
    ("two circle", "plural"),
    ("a circles", "singular"),
    ("a red circle left of", "relation 'left of' has no object"),
    ("a circle left a square", "incomplete relation"),
    ("a circle and a circle", "shape 'circle' appears in two clauses"),
    ("on a purple background, a circle", "unknown background 'purple'"),
    ("a circle in the top", "unknown region 'top'"),
    ("a red striped circle", "texture 'striped' must come before the colour"),
    ("an red circle", "use 'a' before 'red'"),
    ("a circle and", "text ended"),
    ("a circle and a square left of a cross", "only follow the first object clause"),
    ("two circles left of a square", "count 1"),
    ("a red circle, please", "unexpected word ','"),
    ("", "empty caption"),
])
def test_text_outside_the_grammar_raises_a_clear_error(text, fragment):
    with pytest.raises(CaptionError) as err:
        parse_caption(text)
    assert fragment in str(err.value)
    assert isinstance(err.value, ValueError)


def test_specs_validate_themselves():
    with pytest.raises(CaptionError, match="count"):
        C("circle", 5)
    with pytest.raises(CaptionError, match="relation"):
        Relation("behind")
    with pytest.raises(CaptionError, match="at least one"):
        Spec(())
    with pytest.raises(CaptionError, match="first two"):
        Spec((C("circle"), C("square")), Relation("above", 1, 0))


@pytest.mark.parametrize("subcategory", list(SUBCATEGORIES))
def test_sample_spec_gives_the_requested_subcategory(subcategory):
    rng = np.random.default_rng(3)
    specs = [sample_spec(rng, subcategory) for _ in range(200)]
    assert all(s.subcategory == subcategory and s.background is None for s in specs)
    assert all(len({c.shape for c in s.objects}) == len(s.objects) for s in specs)
    if subcategory in ("color2", "spatial", "complex"):
        coloured = [s for s in specs if s.objects[0].color]
        assert coloured and all(len({c.color for c in s.objects}) == len(s.objects) for s in coloured)
    if subcategory in ("spatial", "complex"):
        assert {s.relation.kind for s in specs} == {"left of", "right of", "above", "below", "next to"}
    if subcategory == "numeracy1":
        assert {s.objects[0].count for s in specs} == {2, 3, 4}


def test_sample_spec_rejects_unknown_subcategories():
    with pytest.raises(CaptionError, match="non_spatial"):
        sample_spec(np.random.default_rng(0), "non_spatial")


@pytest.mark.parametrize("subcategory", list(SUBCATEGORIES))
def test_sample_scene_realises_exactly_what_the_spec_says(subcategory):
    rng = np.random.default_rng(5)
    for i in range(150):
        spec = sample_spec(rng, subcategory)
        if i % 2:
            spec = densify(spec, rng)
        scene = sample_scene(spec, rng)
        assert all(truth(q, scene) for q in decompose(spec)), caption(spec)
        assert len(scene.objects) == sum(c.count for c in spec.objects)  # no distractors
        for clause in spec.objects:
            assert sum(o.shape == clause.shape for o in scene.objects) == clause.count
        if spec.background:
            assert scene.background == spec.background
        if spec.relation:
            a, b = (next(o for o in scene.objects if o.shape == spec.objects[k].shape) for k in (0, 1))
            assert relation_holds_cleanly(spec.relation.kind, (a.row, a.col), (b.row, b.col))


def test_sampling_is_reproducible_from_the_seed():
    def draw(seed):
        rng = np.random.default_rng(seed)
        spec = sample_spec(rng, "complex")
        return spec, sample_scene(spec, rng)

    assert draw(1) == draw(1)
    assert draw(1) != draw(2)


def test_densify_adds_realisable_context_and_with_context_shares_it():
    rng = np.random.default_rng(0)
    spec = parse_caption("a red circle left of a blue square")
    dense = densify(spec, rng)
    assert dense.background in BACKGROUNDS and all(c.region for c in dense.objects)
    assert dense.relation == spec.relation
    assert [c.shape for c in dense.objects] == ["circle", "square"]
    negative = parse_caption("a green circle left of a blue square")
    shared = with_context(negative, dense.background, tuple(c.region for c in dense.objects))
    assert caption(shared).replace("green", "red") == caption(dense)
    with pytest.raises(CaptionError, match="regions"):
        with_context(spec, "gray", ("center",))


def test_unrealisable_context_raises():
    rng = np.random.default_rng(0)
    impossible = parse_caption("a circle in the upper left right of a square in the upper right")
    with pytest.raises(CaptionError, match="no placement"):
        sample_scene(impossible, rng)
    crowded = parse_caption("a circle in the center next to a square in the center and three crosses in the center")
    with pytest.raises(CaptionError, match="no room"):
        sample_scene(crowded, rng)


def test_every_caption_and_question_word_is_in_the_vocabulary():
    rng = np.random.default_rng(8)
    vocab, seen = set(vocabulary()), set()
    for subcategory in SUBCATEGORIES:
        for _ in range(100):
            spec = densify(sample_spec(rng, subcategory), rng)
            seen |= set(caption(spec).replace(",", " ,").split())
            seen |= {w for q in decompose(spec) for w in question_text(q).split()}
    assert seen <= vocab, seen - vocab
