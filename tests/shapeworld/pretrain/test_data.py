"""The pretraining data (ospo.shapeworld.pretrain: mixture, scenes, find, and the rows each LM step draws): every
word in the vocabulary, deterministic in the generator, answers exact by the oracle, the curricula and the find
phase's question kinds."""

import collections
from dataclasses import replace

import numpy as np
import pytest

from ospo.shapeworld import codes as world_codes
from ospo.shapeworld import tasks
from ospo.shapeworld.captions import SUBCATEGORIES, parse_caption
from ospo.shapeworld.codes import codes_to_scene
from ospo.shapeworld.edits import EDITS
from ospo.shapeworld.oracle import read_scene, score_spec
from ospo.shapeworld.pretrain import PretrainConfig, lm_batch, mixture, scenes
from ospo.shapeworld.questions import parse_question, truth
from ospo.shapeworld.world import vocabulary
from ospo.templates import load_templates

SW = load_templates("shapeworld")
VQA_SUFFIX = " please answer yes or no ."
SMALL = PretrainConfig(vq_steps=2, vq_batch=2, vision_steps=2, vision_batch=2, lm_steps=3, batch_t2i=3, batch_vqa=2, batch_text=2,
                       checkpoint_every=1, eval_every=0, warmup_steps=1)


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
        variant = scenes._same_form_variant(question, rng)
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


def test_packed_curriculum_examples_realise_their_caption_in_the_first_cells():
    from ospo.shapeworld import oracle
    from ospo.shapeworld.pretrain import mixture
    from ospo.shapeworld.captions import parse_caption

    rng = np.random.default_rng(3)
    for _ in range(100):
        example = mixture.sample_t2i_packed(rng)
        scene = world_codes.codes_to_scene(example.codes)
        assert oracle.score_spec(parse_caption(example.prompt), scene).correct, example.prompt
        assert sorted(o.row * 8 + o.col for o in scene.objects) == list(range(len(scene.objects)))


def test_curriculum_steps_draw_packed_examples_then_random_scenes():
    cfg = replace(SMALL, t2i_packed_steps=2, batch_t2i=8)
    first = [world_codes.codes_to_scene(e.codes) for e in lm_batch(cfg, 1).t2i]
    later = [world_codes.codes_to_scene(e.codes) for e in lm_batch(cfg, 2).t2i]
    packed = lambda s: sorted(o.row * 8 + o.col for o in s.objects) == list(range(len(s.objects)))  # noqa: E731
    assert all(packed(s) for s in first) and not all(packed(s) for s in later)


def test_text_rows_are_of_the_asked_tasks_and_bad_task_names_are_refused():
    from ospo.errors import InputError
    from ospo.shapeworld.pretrain import mixture
    from ospo.shapeworld.pretrain import text_rows

    cfg = replace(SMALL, text_steps=4, text_batch=12)
    rows = text_rows(cfg, 0)
    assert len(rows) == 12 and all(" edit : " in r.answer and "result :" in r.answer for r in rows)
    assert [r.answer for r in text_rows(cfg, 0)] == [r.answer for r in rows]
    both = text_rows(replace(cfg, text_tasks="perturb,decompose"), 1)
    assert {" edit : " in r.answer for r in both} == {True, False}
    with pytest.raises(InputError, match="text_tasks"):
        replace(SMALL, text_tasks="perturb,rewrite")
    with pytest.raises(ValueError, match="task must be one of"):
        mixture.sample_text(np.random.default_rng(0), task="rewrite")


def test_find_rows_ask_about_one_replicated_object_with_exact_answers():
    from ospo.shapeworld import oracle
    from ospo.shapeworld.pretrain import mixture
    from ospo.shapeworld.pretrain import find_copies
    from ospo.shapeworld.questions import answer_question

    cfg = replace(SMALL, find_steps=20, find_curriculum_steps=10, vqa_curriculum_copies=16)
    assert [find_copies(cfg, s) for s in (0, 5, 10, 15)] == [16, 8, 1, 1]
    assert find_copies(SMALL, 0) == 1  # no curriculum: one copy throughout
    rng = np.random.default_rng(0)
    exists = 0
    for copies, questions in ((16, "shape"), (1, "shape"), (1, "all")):
        rows = [mixture.sample_find(rng, copies, questions) for _ in range(16)]
        assert {e.answer for e in rows} == {"yes", "no"}
        for e in rows:
            scene = oracle.read_scene(e.image)
            assert len(scene.objects) == copies and len({(o.shape, o.color, o.texture) for o in scene.objects}) == 1
            question = e.question.replace(" please answer yes or no .", "")
            assert answer_question(question, scene) == e.answer
            if questions == "shape" and question.startswith("is there"):  # names a shape only: "is there a circle ?"
                assert len(question.split()) == 5, question
                exists += 1
    assert exists >= 8
    near_misses = 0
    for _ in range(200):  # "color": a shape and its colour; a "no" is mostly the right shape in a wrong colour
        scene, question, yes = mixture.find_example(rng, 4, "color")
        if question.kind == "exists":
            assert question.subject.color is not None and question.subject.texture is None
            thing = scene.objects[0]
            near_misses += (not yes) and question.subject.shape == thing.shape and question.subject.color != thing.color
    assert near_misses >= 20
    with pytest.raises(ValueError, match="questions must be one of"):
        mixture.find_example(rng, questions="colours")


def test_find_stages_split_the_steps_restart_the_curriculum_and_name_colours_exactly():
    from ospo.errors import InputError
    from ospo.shapeworld import oracle
    from ospo.shapeworld.pretrain import mixture
    from ospo.shapeworld.pretrain import find_plan, find_rows

    cfg = replace(SMALL, find_steps=20, find_curriculum_steps=10, vqa_curriculum_copies=16,
                  find_stages="name,color+name", find_batch=24)
    plan = [find_plan(cfg, s) for s in (0, 5, 9, 10, 15, 19)]
    assert plan == [(("name",), 16), (("name",), 1), (("name",), 1),
                    (("color", "name"), 16), (("color", "name"), 1), (("color", "name"), 1)]
    naming = find_rows(cfg, 0)
    for e in naming:  # "what color is the <shape> ?" -> the colour word, true of the rendered scene
        words = e.question.split()
        assert words[:4] == ["what", "color", "is", "the"] and words[-1] == "?"
        objects = oracle.read_scene(e.image).objects
        assert {(o.shape, o.color) for o in objects} == {(words[4], e.answer)}
    rng = np.random.default_rng(5)
    sizes = set()
    for _ in range(40):  # "name-all": colour or texture of one of up to four objects of distinct shapes
        e = mixture.sample_find(rng, 1, "name-all")
        _, attribute, _, _, shape, _ = e.question.split()
        objects = oracle.read_scene(e.image).objects
        assert len({o.shape for o in objects}) == len(objects)
        assert getattr(next(o for o in objects if o.shape == shape), attribute) == e.answer
        sizes.add((len(objects), attribute))
    assert {n for n, _ in sizes} >= {1, 2} and {a for _, a in sizes} == {"color", "texture"}
    mixed = find_rows(cfg, 12)
    assert {e.answer for e in mixed} >= {"yes", "no"} and any(e.question.startswith("what") for e in mixed)
    assert [e.question for e in find_rows(cfg, 12)] == [e.question for e in mixed]  # the step's own stream
    with pytest.raises(InputError, match="find_stages"):
        replace(SMALL, find_stages="shape,colour")
    with pytest.raises(ValueError, match="naming_example"):
        mixture.find_example(np.random.default_rng(0), questions="name")


def test_position_find_questions_are_exact_about_the_rendered_scene_and_balanced():
    """"where" names the region of the asked shape, "relation" answers by GenEval's rule on the pixels' cells;
    both are drawn once per object (copies ignored), in the tokenizer's words."""
    from ospo.shapeworld import oracle
    from ospo.shapeworld.pretrain import mixture
    from ospo.shapeworld.pretrain import find_rows
    from ospo.shapeworld.world import region_of, relations_between, vocabulary

    words = set(vocabulary())
    rng = np.random.default_rng(11)
    answers, relations = [], set()
    for i in range(120):
        kind = ("where", "relation")[i % 2]
        e = mixture.sample_find(rng, 8, kind)
        assert set((e.question + " " + e.answer).split()) <= words
        objects = oracle.read_scene(e.image).objects
        assert len({o.shape for o in objects}) == len(objects)  # distinct shapes, one cell each
        by_shape = {o.shape: o for o in objects}
        if kind == "where":
            assert e.question.split()[:4] == ["what", "region", "is", "the"]
            thing = by_shape[e.question.split()[4]]
            assert e.answer == region_of(thing.row, thing.col)
        else:
            q = e.question.split(" ?")[0].split()
            a, b = by_shape[q[2]], by_shape[q[-1]]
            relation = " ".join(q[3:-2])
            holds = relation in relations_between((a.row, a.col), (b.row, b.col))
            assert e.answer == ("yes" if holds else "no")
            answers.append(e.answer)
            relations.add(relation)
    assert 0.35 < answers.count("yes") / len(answers) < 0.65 and relations >= {"left of", "right of", "above",
                                                                                 "below"}
    cfg = replace(SMALL, find_steps=4, find_stages="where,relation+where", find_batch=6)
    assert all(e.question.startswith("what region") for e in find_rows(cfg, 0))
    with pytest.raises(ValueError, match="position_example"):
        mixture.position_example(rng, "shape")


def test_replicate_draws_every_object_in_several_cells_and_answers_stay_exact():
    from ospo.shapeworld import oracle
    from ospo.shapeworld.pretrain import mixture
    from ospo.shapeworld.questions import answer_question

    rng = np.random.default_rng(3)
    scene = mixture.random_scene(rng, 3)
    many = mixture.replicate(scene, 5, rng)
    assert len(many.objects) == 5 * len(scene.objects) and many.background == scene.background
    assert len({(o.row, o.col) for o in many.objects}) == len(many.objects)  # distinct cells
    for o in scene.objects:
        same = [m for m in many.objects if (m.shape, m.color, m.texture) == (o.shape, o.color, o.texture)]
        assert len(same) >= 5
    assert len(mixture.replicate(scene, 1000, rng).objects) <= 64  # the board caps the copies
    assert mixture.replicate(scene, 1, rng) is scene
    for step in range(20):  # VQA examples of replicated scenes: the answer is the oracle's on the pixels
        e = mixture.sample_vqa(np.random.default_rng([7, step]), copies=8)
        question = e.question.replace(" please answer yes or no .", "")
        assert answer_question(question, oracle.read_scene(e.image)) == e.answer


def test_vqa_curriculum_shrinks_copies_to_one_and_leaves_runs_without_it_unchanged():
    from ospo.shapeworld import oracle
    from ospo.shapeworld.pretrain import vqa_copies

    cfg = replace(SMALL, batch_vqa=12, vqa_curriculum_steps=10, vqa_curriculum_copies=16)
    assert [vqa_copies(cfg, s) for s in (0, 5, 9, 10, 50)] == [16, 8, 2, 1, 1]
    early = [len(oracle.read_scene(e.image).objects) for e in lm_batch(cfg, 0).vqa]
    late = [len(oracle.read_scene(e.image).objects) for e in lm_batch(cfg, 10).vqa]
    assert min(early) >= 16 and max(late) <= 12
    plain, off = lm_batch(replace(SMALL, batch_vqa=12), 10), lm_batch(cfg, 10)
    assert [e.question for e in plain.vqa] == [e.question for e in off.vqa]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(plain.vqa, off.vqa))


def test_skewed_relation_and_line_questions_ask_the_asked_share_of_reverse_words_and_are_exact():
    """"relation~P": "right of" / "below" with probability P, else "left of" / "above", a fair yes/no coin, each
    answer true of the rendered scene; "line~P" the same about two objects on one row ("left of" / "right of");
    a bad share is refused where the config is read."""
    from ospo.errors import InputError
    from ospo.shapeworld import oracle
    from ospo.shapeworld.pretrain import mixture
    from ospo.shapeworld.pretrain import find_rows
    from ospo.shapeworld.world import relations_between

    for share in (0.0, 0.2, 1.0):
        rng = np.random.default_rng(3)
        answers, reverse = [], 0
        for _ in range(200):
            e = mixture.sample_find(rng, 4, f"relation~{share}")
            by_shape = {o.shape: o for o in oracle.read_scene(e.image).objects}
            q = e.question.split(" ?")[0].split()
            a, b, relation = by_shape[q[2]], by_shape[q[-1]], " ".join(q[3:-2])
            assert relation in mixture.FORWARD_RELATIONS + mixture.REVERSE_RELATIONS
            assert e.answer == ("yes" if relation in relations_between((a.row, a.col), (b.row, b.col)) else "no")
            answers.append(e.answer)
            reverse += relation in mixture.REVERSE_RELATIONS
        assert 0.4 < answers.count("yes") / 200 < 0.6
        assert abs(reverse / 200 - share) < 0.07, (share, reverse)
    rng = np.random.default_rng(5)
    lines = [mixture.sample_find(rng, 4, kind) for kind in ("line~0",) * 40 + ("line~1",) * 40]
    for e in lines:
        objects = oracle.read_scene(e.image).objects
        assert len(objects) == 2 and objects[0].row == objects[1].row
        by_shape = {o.shape: o for o in objects}
        q = e.question.split(" ?")[0].split()
        left = by_shape[q[2]].col < by_shape[q[-1]].col
        assert e.answer == ("yes" if left == (q[3] == "left") else "no")
    assert [e.question.split()[3] for e in lines] == ["left"] * 40 + ["right"] * 40
    assert 0.3 < [e.answer for e in lines].count("yes") / 80 < 0.7
    assert mixture.relation_share("relation~0.25") == 0.25 and mixture.is_find_kind("relation~1")
    assert mixture.is_find_kind("line~0.2")
    for bad in ("relation~", "relation~1.5", "relation~x", "where~0.2"):
        assert not mixture.is_find_kind(bad)
        with pytest.raises(ValueError, match="relation~P"):
            mixture.relation_share(bad)
    with pytest.raises(InputError, match="relation~P"):
        replace(SMALL, find_stages="relation~0,relation~2")
    with pytest.raises(ValueError, match="relation~P"):  # a bad "<kind>~P" reaching the sampler names the form
        mixture.sample_find(np.random.default_rng(0), 1, "shape~1")
    cfg = replace(SMALL, find_steps=4, find_stages="relation~0,relation", find_batch=8)
    assert all(any(w in e.question for w in ("left of", "above")) for e in find_rows(cfg, 0))
