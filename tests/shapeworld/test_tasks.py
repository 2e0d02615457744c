"""ShapeWorld text tasks (perturb, densify, decompose, elements, prompts) and their checkers (the pretraining mixture
built from them: tests/shapeworld/pretrain/test_data.py)."""

import collections

import numpy as np
import pytest

from ospo.shapeworld import tasks
from ospo.shapeworld.captions import SUBCATEGORIES, caption, parse_caption
from ospo.shapeworld.edits import EDITS, candidate_edits, find_edits, meaning
from ospo.shapeworld.questions import decompose, truth
from ospo.shapeworld.sampler import sample_scene, sample_spec
from ospo.templates import load_templates

SW = load_templates("shapeworld")
VQA_SUFFIX = " please answer yes or no ."


def specs(n_per_subcategory: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [sample_spec(rng, sub) for sub in SUBCATEGORIES for _ in range(n_per_subcategory)]


def test_perturb_gives_a_valid_different_spec_of_the_asked_edit():
    rng = np.random.default_rng(1)
    made = collections.Counter()
    for spec in specs(150):
        for edit in EDITS:
            new = tasks.perturb(spec, edit, rng)
            if new is None:
                assert candidate_edits(spec, edit) == []
                continue
            assert parse_caption(caption(new)) == new  # a valid spec in the grammar
            assert meaning(new) != meaning(spec) and caption(new) != caption(spec)
            assert edit in {e.edit for e in find_edits(spec, new)}
            assert tasks.check_perturbation(caption(spec), edit, caption(new)) == (True, "ok")
            made[spec.subcategory, edit] += 1
    assert sum(made.values()) > 3000
    for sub in SUBCATEGORIES:  # every sub-category can be replaced; two-clause ones can be dropped
        assert made[sub, "replace"] == 150
        assert made[sub, "drop"] == (150 if sub[-1] != "1" or sub in ("color1", "texture1") else 0)
    assert made["object1", "swap"] == made["color2", "swap"] - 150 == 0


def test_perturb_impossible_edits_and_targets():
    rng = np.random.default_rng(0)
    assert tasks.perturb(parse_caption("a red circle"), "swap", rng) is None
    assert tasks.perturb(parse_caption("a circle"), "drop", rng) is None
    assert tasks.perturb(parse_caption("a circle and a square"), "swap", rng) is None  # same meaning
    assert tasks.perturb(parse_caption("a circle next to a square"), "swap", rng) is None
    spec = parse_caption("a red circle left of a blue square and two triangles")
    targets = {e.target for edit in EDITS for e, _ in candidate_edits(spec, edit)}
    assert targets == {"color", "shape", "count", "relation", "object"}
    results = {caption(tasks.perturb(spec, "drop", np.random.default_rng(s))) for s in range(200)}
    assert "a blue square and two triangles" in results  # the dropped subject takes the relation along
    assert "a red circle and a blue square and two triangles" in results  # relation dropped
    with pytest.raises(ValueError, match="unknown edit"):
        tasks.perturb(spec, "rotate", rng)


def test_perturbation_slots_follow_the_method():
    assert set(tasks.PERTURBATION_SLOTS) == set(SUBCATEGORIES)
    assert tasks.PERTURBATION_SLOTS["object2"] == ("replace", "drop", "replace")
    assert tasks.PERTURBATION_SLOTS["color1"] == ("replace",) * 3
    assert tasks.PERTURBATION_SLOTS["numeracy1"] == ("replace",) * 3
    for sub in ("color2", "texture2", "spatial", "numeracy2", "complex"):
        assert tasks.PERTURBATION_SLOTS[sub] == ("replace", "swap", "drop")
    assert tasks.perturbation_slots(parse_caption("a circle next to a square")) == ("replace", "replace", "drop")
    assert tasks.perturbation_slots(parse_caption("a red circle next to a blue square")) == ("replace", "swap", "drop")
    rng = np.random.default_rng(0)
    for spec in specs(40):
        assert all(tasks.perturb(spec, e, rng) is not None for e in tasks.perturbation_slots(spec))


def test_stepwise_perturbation_text():
    spec = parse_caption("a red circle left of a blue square")
    new = parse_caption("a green circle left of a blue square")
    assert tasks.stepwise_perturbation(spec, "replace", new) == (
        "objects : red circle , blue square . edit : red to green . result : a green circle left of a blue square")
    swapped = parse_caption("a blue circle left of a red square")
    assert tasks.stepwise_perturbation(spec, "swap", swapped).endswith(
        "edit : red and blue . result : a blue circle left of a red square")
    counted = parse_caption("three striped circles and a square")
    dropped = parse_caption("three circles and a square")
    assert tasks.stepwise_perturbation(counted, "drop", dropped) == (
        "objects : three striped circles , square . edit : remove striped . result : three circles and a square")
    with pytest.raises(ValueError, match="not one swap"):
        tasks.stepwise_perturbation(spec, "swap", new)
    rng = np.random.default_rng(2)
    for spec in specs(20):
        for edit in EDITS:
            if (new := tasks.perturb(spec, edit, rng)) is not None:
                assert SW.parse_perturbation(tasks.stepwise_perturbation(spec, edit, new)) == caption(new)


def test_check_perturbation_rejects_bad_results():
    original = "a red circle left of a blue square"
    check = tasks.check_perturbation
    assert check(original, "replace", "a red circle above a blue square") == (True, "ok")
    assert check(original, "replace", "a blue square right of a green circle") == (True, "ok")  # reworded
    assert check(original, "replace", "a green circle left of a blue triangle") == (False, "not a single edit")
    assert check(original, "replace", "a blue circle left of a red square") == (False, "a swap edit, not replace")
    assert check(original, "drop", "a red circle and a blue square") == (True, "ok")
    assert check(original, "swap", "a red circle and a blue square") == (False, "a drop edit, not swap")
    assert check(original, "replace", original) == (False, "unchanged")
    assert check(original, "swap", "a blue square right of a red circle") == (False, "unchanged")
    ok, reason = check(original, "replace", "a red blob left of a blue square")
    assert not ok and reason.startswith("unparseable result")
    ok, reason = check(original, "replace", "")
    assert not ok and reason.startswith("unparseable result")


def test_densify_pair_shares_context_and_differs_only_in_the_binding():
    rng = np.random.default_rng(3)
    with_regions = 0
    for spec in specs(25):
        for edit in tasks.perturbation_slots(spec):
            negative = tasks.perturb(spec, edit, rng)
            dense_pos, dense_neg = tasks.densify_pair(spec, negative, rng)
            assert dense_pos.background is not None and dense_pos.background == dense_neg.background
            assert tasks.check_densified(caption(spec), caption(negative), caption(dense_pos), caption(dense_neg)) == (
                True, "ok")
            # stripped of context, each is its short prompt; dense, they are still one `edit` apart
            for short, dense in ((spec, dense_pos), (negative, dense_neg)):
                assert [(c.shape, c.count, c.color, c.texture) for c in dense.objects] == [
                    (c.shape, c.count, c.color, c.texture) for c in short.objects]
                assert dense.relation == short.relation
            assert edit in {e.edit for e in find_edits(dense_pos, dense_neg)}
            if len(spec.objects) == len(negative.objects):
                assert [c.region for c in dense_pos.objects] == [c.region for c in dense_neg.objects]
            with_regions += any(c.region for c in dense_pos.objects)
            for seed in range(3):  # realisable: a scene exists and makes every question true
                for dense in (dense_pos, dense_neg):
                    scene = sample_scene(dense, np.random.default_rng(seed))
                    assert all(truth(q, scene) for q in decompose(dense))
    assert with_regions > 500  # the context is mostly more than a background


def test_densify_pair_replaced_relation_and_dropped_object():
    rng = np.random.default_rng(0)
    pos, neg = parse_caption("a red circle left of a blue square"), parse_caption("a red circle above a blue square")
    dense_pos, dense_neg = tasks.densify_pair(pos, neg, rng)
    assert [c.region for c in dense_pos.objects] == [c.region for c in dense_neg.objects]
    sample_scene(dense_neg, rng)
    pos = parse_caption("a red circle and a blue square and a green triangle")
    neg = parse_caption("a red circle and a green triangle")
    dense_pos, dense_neg = tasks.densify_pair(pos, neg, rng)
    assert [dense_neg.objects[0].region, dense_neg.objects[1].region] == [
        dense_pos.objects[0].region, dense_pos.objects[2].region]


def test_check_densified_rejects_unshared_context():
    pos, neg = "a red circle", "a green circle"
    check = tasks.check_densified
    assert check(pos, neg, "on a gray background, a red circle in the center",
                 "on a gray background, a green circle in the center") == (True, "ok")
    assert check(pos, neg, "on a gray background, a red circle", "on a teal background, a green circle") == (
        False, "no shared background")
    assert check(pos, neg, "a red circle in the center", "a green circle in the center") == (
        False, "no shared background")
    assert check(pos, neg, "on a gray background, a red circle in the center",
                 "on a gray background, a green circle in the upper left") == (
        False, "regions differ between corresponding objects")
    assert check(pos, neg, "on a gray background, a red circle", "on a gray background, a blue circle") == (
        False, "dense negative changes the prompt")
    assert check("a circle and a square and a cross", "a circle and a square",
                 "on a gray background, a circle in the center and two squares in the center",
                 "on a gray background, a circle in the center and a square")[1] == "dense positive changes the prompt"
    assert check("four circles and a square", "four circles and two squares",
                 "on a gray background, four circles in the center and a square in the center",
                 "on a gray background, four circles in the center and two squares in the center") == (
        False, "not realisable")  # the centre has 4 cells


def test_decomposition_covers_everything():
    spec = parse_caption("on a gray background, a red circle left of a blue square and two triangles")
    assert tasks.decomposition(spec) == [
        "is there a red circle ?", "is there a blue square ?", "are there two triangles ?",
        "is the red circle left of the blue square ?", "is the background gray ?"]
    for spec in specs(30):
        questions = tasks.decomposition(spec)
        assert len(questions) == len(spec.objects) + (spec.relation is not None) + (spec.background is not None)
        assert tasks.check_decomposition(caption(spec), questions) == (True, "ok")
        assert SW.parse_questions(SW.decompose_answer(questions)) == questions


def test_check_decomposition_rejects_incomplete_lists():
    prompt = "a red circle left of a blue square"
    full = ["is there a red circle ?", "is there a blue square ?", "is the red circle left of the blue square ?"]
    check = tasks.check_decomposition
    assert check(prompt, full) == (True, "ok")
    assert check(prompt, full[:2] + ["is the blue square right of the red circle ?"]) == (True, "ok")
    ok, reason = check(prompt, full[:2])
    assert not ok and reason.startswith("missing relation question")
    ok, reason = check(prompt, ["is there a circle ?"] + full[1:])
    assert not ok and reason == "missing object question: is there a red circle ?"
    ok, reason = check(prompt, full[:2] + ["is the red circle right of the blue square ?"])
    assert not ok and reason.startswith("missing relation question")
    ok, reason = check(prompt, full + ["is there a green triangle ?"])
    assert not ok and reason.startswith("extra question")
    ok, reason = check(prompt, full[:2] + ["is the red circle left of ?"])
    assert not ok and reason.startswith("unparseable question")
    assert check(prompt, []) == (False, "no questions")
    ok, reason = check("two circles", ["is there a circle ?"])
    assert not ok and reason.startswith("missing object question: are there two circles")


def test_elements_and_prompt_task():
    assert tasks.element_list("relations") == ["left of", "right of", "above", "below", "next to"]
    assert tasks.element_list("numbers") == ["one", "two", "three", "four"]
    with pytest.raises(ValueError, match="planets"):
        tasks.element_list("planets")
    rng = np.random.default_rng(0)
    for sub in SUBCATEGORIES:
        for _ in range(10):
            examples, answer = tasks.prompt_task(sub, rng)
            assert len(examples) == 2 and answer not in examples and len(set(examples)) == 2
            assert all(tasks.check_prompt(x, sub) == (True, "ok") for x in examples + [answer])
    assert tasks.check_prompt("a red circle", "color2") == (False, "a color1 prompt, not color2")
    assert not tasks.check_prompt("a red", "color1")[0]
