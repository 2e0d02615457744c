"""ShapeWorld text tasks (perturb, densify, decompose, elements, prompts), their checkers, and the
pretraining mixture built from them."""

import collections
from dataclasses import replace

import numpy as np
import pytest

from ospo.shapeworld import mixture, tasks
from ospo.shapeworld.captions import SUBCATEGORIES, caption, parse_caption
from ospo.shapeworld.codes import codes_to_scene
from ospo.shapeworld.edits import EDITS, candidate_edits, find_edits, meaning
from ospo.shapeworld.oracle import read_scene, score_spec
from ospo.shapeworld.questions import decompose, parse_question, truth
from ospo.shapeworld.sampler import sample_scene, sample_spec
from ospo.shapeworld.world import vocabulary
from ospo.templates import load_templates

SW = load_templates("shapeworld")
VQA_SUFFIX = " please answer yes or no ."


def specs(n_per_subcategory: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [sample_spec(rng, sub) for sub in SUBCATEGORIES for _ in range(n_per_subcategory)]


# ------------------------------------------------------------------------------------------- perturbation
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


# ------------------------------------------------------------------------------------------- densification
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


# ------------------------------------------------------------------------------------------- decomposition
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


# ------------------------------------------------------------------------------------------- elements, prompts
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


# ------------------------------------------------------------------------------------------- mixture
def test_every_mixture_word_is_in_the_vocabulary():
    vocab = set(vocabulary()) | set(tasks.EXTRA_WORDS)
    rng = np.random.default_rng(0)
    unknown = collections.Counter()
    texts = []
    for _ in range(1500):
        texts.append(mixture.sample_t2i(rng).prompt)
        vqa = mixture.sample_vqa(rng)
        texts += [vqa.question, vqa.answer]
        text = mixture.sample_text(rng)
        texts += [text.instruction, text.answer]
    for text in texts:
        unknown.update(w for w in text.split() if w not in vocab)
    assert not unknown, unknown.most_common(10)
    assert any("background ," in t for t in texts) and any(t.endswith("?") for t in texts)

    from ospo.tiny import UNK, build_tokenizer  # the real word-level tokenizer agrees

    tokenizer = build_tokenizer(sorted(vocab))
    assert all(UNK not in tokenizer.tokenize(t) for t in texts[:600])


def test_mixture_is_deterministic():
    a, b = np.random.default_rng(7), np.random.default_rng(7)
    for _ in range(20):
        x, y = mixture.sample_t2i(a), mixture.sample_t2i(b)
        assert x.prompt == y.prompt and np.array_equal(x.codes, y.codes)
        v, w = mixture.sample_vqa(a), mixture.sample_vqa(b)
        assert (v.question, v.answer) == (w.question, w.answer) and np.array_equal(v.image, w.image)
        assert mixture.sample_text(a) == mixture.sample_text(b)


def test_t2i_codes_realise_their_prompt():
    rng = np.random.default_rng(1)
    subcategories, dense = set(), 0
    for _ in range(400):
        example = mixture.sample_t2i(rng)
        assert example.codes.shape == (64,) and example.codes.dtype == np.int64
        spec = parse_caption(example.prompt)
        scene = codes_to_scene(example.codes)
        assert score_spec(spec, scene).correct, example.prompt
        subcategories.add(spec.subcategory)
        dense += spec.background is not None
    assert subcategories == set(SUBCATEGORIES)
    assert 100 < dense < 300


def test_vqa_is_balanced_true_and_near_miss():
    rng = np.random.default_rng(2)
    kinds, near = collections.Counter(), collections.Counter()
    n, n_read = 2000, 600
    for i in range(n):
        example = mixture.sample_vqa(rng)
        assert example.image.shape == (128, 128, 3) and example.image.dtype == np.uint8
        assert example.question.endswith(VQA_SUFFIX)
        question = parse_question(example.question[:-len(VQA_SUFFIX)])
        kinds[question.kind, example.answer] += 1
        if i >= n_read:
            continue
        scene = read_scene(example.image)  # the oracle reads renders back exactly
        assert example.answer == ("yes" if truth(question, scene) else "no"), example.question
        if example.answer == "no" and question.kind == "exists":
            near["exists", "no"] += 1
            near["exists"] += any(o.shape == question.subject.shape for o in scene.objects)
        if example.answer == "no" and question.kind == "relation":
            flip = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
            near["relation", "no"] += 1
            near["relation"] += truth(replace(question, relation=flip.get(question.relation, "next to")), scene)
    yes = sum(v for (_, a), v in kinds.items() if a == "yes")
    assert abs(yes / n - 0.5) < 0.03
    for kind in ("exists", "count", "relation", "background"):
        assert kinds[kind, "yes"] > 0.04 * n and kinds[kind, "no"] > 0.04 * n, kinds
    assert near["exists"] > 0.5 * near["exists", "no"]  # mostly a present shape with a wrong attribute
    assert near["relation"] > 0.3 * near["relation", "no"]  # often the flipped relation of a true one



def _blind_accuracy(examples, min_count: int = 50) -> float:
    """Accuracy of answering every question form (`mixture.question_form`) seen at least `min_count` times with its
    majority answer, over the questions of those forms: what a judge that never looks at the image scores."""
    from benchmarks.shapeworld_targets import blind_in_sample

    return blind_in_sample([e.question for e in examples], [e.answer == "yes" for e in examples], min_count)


def test_balanced_vqa_hides_the_answer_from_the_question_form_and_stays_exact():
    """The default questions let a blind judge (question form only) score well above chance; the balanced ones
    do not: every frequent form is answered yes about half the time, and every answer is what the render shows."""
    rng, plain_rng = np.random.default_rng(5), np.random.default_rng(5)
    n = 2500
    balanced = [mixture.sample_vqa(rng, balanced=True) for _ in range(n)]
    plain = [mixture.sample_vqa(plain_rng) for _ in range(n)]
    assert _blind_accuracy(plain) > 0.62
    assert _blind_accuracy(balanced) < 0.55
    forms = collections.defaultdict(list)
    for i, e in enumerate(balanced):
        question = parse_question(e.question[:-len(VQA_SUFFIX)])
        forms[mixture.question_form(question)].append(e.answer == "yes")
        if i < 400:
            assert e.answer == ("yes" if truth(question, read_scene(e.image)) else "no"), e.question
    frequent = {f: np.mean(v) for f, v in forms.items() if len(v) >= 100}
    assert len(frequent) >= 6 and all(0.38 < p < 0.62 for p in frequent.values()), frequent
    kinds = collections.Counter(f[0] for f, v in forms.items() for _ in v)
    assert all(kinds[k] > 0.05 * n for k in ("exists", "count", "relation", "background")), kinds
    # shape-only "is there a <shape> ?" asked "no" as often as "yes": the form the shipped model answers blind
    shape_only = forms["exists", (False, False, False), None, (), None]
    assert len(shape_only) > 100 and 0.4 < np.mean(shape_only) < 0.6


def test_same_form_variant_keeps_the_form_and_changes_a_value():
    rng = np.random.default_rng(0)
    for _ in range(300):
        example = mixture.sample_vqa(rng, balanced=True)
        question = parse_question(example.question[:-len(VQA_SUFFIX)])
        variant = mixture._same_form_variant(question, rng)
        assert mixture.question_form(variant) == mixture.question_form(question)
        assert variant != question

def test_text_mixture_covers_all_tasks_with_exact_answers():
    rng = np.random.default_rng(3)
    counts = collections.Counter()
    n = 1500
    for _ in range(n):
        example = mixture.sample_text(rng)
        head, _, body = example.instruction.partition(" : ")
        counts[head] += 1
        if head in EDITS:
            result = SW.parse_perturbation(example.answer)
            assert tasks.check_perturbation(body, head, result) == (True, "ok"), example
        elif head == "dense":
            positive, negative = body.split(" . ")
            assert tasks.check_densified(positive, negative, *SW.parse_densified(example.answer)) == (True, "ok")
        elif head == "questions":
            assert tasks.check_decomposition(body, SW.parse_questions(example.answer)) == (True, "ok")
        elif head == "write a new prompt":
            examples = body.split(" . ")
            sub = parse_caption(examples[0]).subcategory
            assert tasks.check_prompt(SW.parse_prompt(example.answer), sub) == (True, "ok")
        else:
            assert head.startswith("list ") and head.endswith(" :")
            kind = {v: k for k, v in SW.tasks["elements"].names.items()}[head[5:-2]]
            assert SW.parse_elements(example.answer) == tasks.element_list(kind)
    by_task = {"perturb": sum(counts[e] for e in EDITS), "dense": counts["dense"], "questions": counts["questions"],
               "prompt": counts["write a new prompt"], "list": n - sum(counts[k] for k in (
                   *EDITS, "dense", "questions", "write a new prompt"))}
    assert all(abs(v / n - 0.2) < 0.04 for v in by_task.values()), by_task
    assert all(counts[e] > 50 for e in EDITS)
