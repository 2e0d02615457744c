"""The find phase's examples (`PretrainConfig.find_stages`): one-object yes/no questions, naming an object's colour
or texture, where things are and how two objects relate (docs/experiments/finding-objects.md,
docs/experiments/relations.md). Pure functions of a numpy Generator, as every sampler of the mixture.
"""

from __future__ import annotations

import numpy as np

from ospo.shapeworld import tasks
from ospo.shapeworld.captions import ObjectClause
from ospo.shapeworld.pretrain.scenes import (
    _FLIP, VQAExample, _choice, _coin, _other, _question, pick, random_scene, replicate, spaced,
)
from ospo.shapeworld.questions import Question, question_text, truth
from ospo.shapeworld.render import render
from ospo.shapeworld.world import (
    BACKGROUNDS, COLORS, GRID, RELATIONS, SHAPES, TEXTURES, Obj, Scene, region_of, relations_between,
)
from ospo.templates import TemplateSet

YES_NO_FIND_QUESTIONS = ("shape", "color", "all")  # find_example's kinds
NAMING_FIND_QUESTIONS = ("name", "name-all")  # naming_example's
POSITION_FIND_QUESTIONS = ("where", "relation")  # position_example's: where is one of 1-4 objects, a relation
FIND_QUESTIONS = YES_NO_FIND_QUESTIONS + NAMING_FIND_QUESTIONS + POSITION_FIND_QUESTIONS


def find_example(rng: np.random.Generator, copies: int = 1, questions: str = "shape") -> tuple[Scene, Question, bool]:
    """(scene, question, answer) about a random one-object scene drawn in `copies` cells (`replicate`).

    The narrowest form of the self-judge's job: find the cell that holds a thing and compare it with the
    question. With `questions="shape"` every "exists" question names a shape only ("is there a circle ?"); with
    "color" a shape and its colour ("is there a red circle ?"; a "no" is mostly the right shape in another
    colour); with "all" the questions are `sample_vqa`'s (colours, textures, regions, background). A tiny LM learns this task
    alone in a few hundred steps with the replication curriculum and not inside the full mixture
    (docs/experiments/finding-objects.md); `pretrain`'s find phase (`find_steps`) trains on it, and after a
    mixture stage it learns it as the probe did.
    """
    if questions not in YES_NO_FIND_QUESTIONS:
        raise ValueError(f"questions must be one of {YES_NO_FIND_QUESTIONS}, got {questions!r} (naming "
                         "questions: naming_example)")
    scene = replicate(random_scene(rng, 1), copies, rng)
    yes = _coin(rng)
    question = _question(scene, None, yes, rng)
    if questions == "shape" and question.kind == "exists":
        shape = scene.objects[0].shape
        question = Question("exists", ObjectClause(shape if yes else _other(rng, SHAPES, shape)))
    elif questions == "color" and question.kind == "exists":
        thing = scene.objects[0]
        shape, color = thing.shape, thing.color
        if not yes:  # mostly the right shape in a wrong colour: the near miss a shape-only judge says yes to
            if _coin(rng, 0.75):
                color = _other(rng, COLORS, color)
            else:
                shape = _other(rng, SHAPES, shape)
        question = Question("exists", ObjectClause(shape, 1, color))
    return scene, question, yes


def distinct_shapes_scene(rng: np.random.Generator, low: int, high: int) -> Scene:
    """low..high objects of distinct shapes in distinct random cells (so a shape names one object)."""
    shapes = rng.choice(SHAPES, size=int(rng.integers(low, min(high, len(SHAPES)) + 1)), replace=False)
    cells = rng.choice(GRID * GRID, size=len(shapes), replace=False)
    return Scene(tuple(Obj(str(shape), _choice(rng, COLORS), _choice(rng, TEXTURES), int(c) // GRID, int(c) % GRID)
                       for shape, c in zip(shapes, cells)), _choice(rng, BACKGROUNDS))


def naming_example(rng: np.random.Generator, copies: int = 1, objects: int = 1,
                   attributes: tuple[str, ...] = ("color",)) -> tuple[Scene, str, str]:
    """(scene, "what color is the <shape> ?", its colour) about a random scene in which each object is drawn in
    `copies` cells: one object, or with `objects` > 1 between 1 and that many of distinct shapes (the shape
    names one of them), asked for one of `attributes` ("color", "texture").

    An open question, not a yes/no one: its answer carries the found cell's colour to the answer position in
    one step. Yes/no questions about a shape's colour need two things at once (fetch the colour, compare it
    with the question's) and are not learned; after naming they are (docs/experiments/finding-objects.md)."""
    scene = random_scene(rng, 1) if objects <= 1 else distinct_shapes_scene(rng, 1, objects)
    thing, attribute = pick(rng, scene.objects), pick(rng, attributes)
    scene = replicate(scene, copies, rng)
    return scene, f"what {attribute} is the {thing.shape} ?", getattr(thing, attribute)


def position_example(rng: np.random.Generator, questions: str) -> tuple[Scene, str, str]:
    """(scene, question, answer) about where things are, among objects of distinct shapes drawn once each.

    "where": "what region is the <shape> in ?" about one of 1-4 objects, answered with its region ("upper left",
    "center"; `world.REGIONS`), an open question like `naming_example`'s. "relation": "is the <shape> <relation>
    the <shape> ?" about two of 2-4 objects, "yes" or "no" with a fair coin (a "no" names a relation that does not
    hold, the reverse of a true one when there is one). The held-out renders' relation questions stay at chance
    after the find stages about shapes and colours (the shipped model: 0.553 on 600 of them, each relation
    0.52-0.57), and naming a found object's position first does not change that (docs/experiments/relations.md):
    the fair coin between a relation and its reverse makes the answer an XOR of places and relation word, and the
    image tokens carry no place to compare."""
    if "~" in questions:
        share = relation_share(questions)
        return (skewed_relation_example(rng, share) if questions.startswith("relation~")
                else left_right_example(rng, share))
    if questions == "where":
        scene = distinct_shapes_scene(rng, 1, 4)
        thing = pick(rng, scene.objects)
        return scene, f"what region is the {thing.shape} in ?", region_of(thing.row, thing.col)
    if questions != "relation":
        raise ValueError(f"position_example: questions must be one of {POSITION_FIND_QUESTIONS}, got {questions!r}")
    scene = distinct_shapes_scene(rng, 2, 4)
    a, b = (scene.objects[int(i)] for i in rng.choice(len(scene.objects), size=2, replace=False))
    holds = relations_between((a.row, a.col), (b.row, b.col))
    yes = _coin(rng) and bool(holds)
    if yes:
        relation = _choice(rng, sorted(holds))
    else:
        reverse = sorted({_FLIP[r] for r in holds if r in _FLIP} - holds)
        relation = _choice(rng, reverse) if reverse and _coin(rng, 0.75) else \
            _choice(rng, [r for r in RELATIONS if r not in holds])
    question = Question("relation", ObjectClause(a.shape), relation, ObjectClause(b.shape))
    assert truth(question, scene) == yes
    return scene, question_text(question), "yes" if yes else "no"


FORWARD_RELATIONS, REVERSE_RELATIONS = ("left of", "above"), ("right of", "below")
SKEWED_FIND_QUESTIONS = ("relation", "line")  # "<kind>~P" find kinds: relation words, P the reverse words' share


def relation_share(kind: str) -> float:
    """The share of reverse relation words P in a find kind "relation~P" or "line~P" (a float in [0, 1]);
    ValueError otherwise."""
    base, _, share = kind.partition("~")
    try:
        value = float(share)
    except ValueError:
        value = -1.0
    if base not in SKEWED_FIND_QUESTIONS or not 0.0 <= value <= 1.0:
        raise ValueError(f"a skewed relation kind is 'relation~P' or 'line~P' with P a share between 0 and 1, "
                         f"got {kind!r}")
    return value


def left_right_example(rng: np.random.Generator, p_right: float = 0.5) -> tuple[Scene, str, str]:
    """The easiest relation: two objects of distinct shapes on one row, "is the <shape> left of (right of, with
    probability `p_right`) the <shape> ?"; "yes" or "no" by the placement, even odds. The find kind "line~P".
    It is learnable from tokens that keep each cell's place, while "relation~0" (two of 2-4 objects anywhere)
    stays at chance (docs/experiments/relations.md)."""
    shapes = rng.choice(SHAPES, size=2, replace=False)
    row, cols = int(rng.integers(GRID)), rng.choice(GRID, size=2, replace=False)
    objs = tuple(Obj(str(s), str(rng.choice(list(COLORS))), str(rng.choice(list(TEXTURES))), row, int(c))
                 for s, c in zip(shapes, cols))
    # no draw at p_right 0, and at 0.5 the draw of the fair-coin version: the streams of earlier runs are kept
    relation = "right of" if p_right and rng.random() >= 1.0 - p_right else "left of"
    holds = (cols[0] < cols[1]) == (relation == "left of")
    return Scene(objs, str(rng.choice(list(BACKGROUNDS)))), f"is the {shapes[0]} {relation} the {shapes[1]} ?", \
        "yes" if holds else "no"


def skewed_relation_example(rng: np.random.Generator, reverse_share: float) -> tuple[Scene, str, str]:
    """(scene, "is the <shape> <relation> the <shape> ?", answer) about two of 2-4 objects of distinct shapes,
    the relation "right of" or "below" with probability `reverse_share`, else "left of" or "above"; "yes" or "no"
    with a fair coin (scenes redrawn until the answer is the coin's).

    Why: with a fair coin between a relation and its reverse (position_example's "relation"), nothing the model
    reads alone predicts the answer (an XOR of the objects' places and the relation word) and the LM stays on a
    constant. One direction alone has a first-order signal (an object in the leftmost column is left of every
    other one): on two objects of one row "left of" alone is learned first, then a fifth of "right of" teaches
    both; anywhere, this kind alone is too hard a first step, and after lines it is learned in part
    (docs/experiments/relations.md)."""
    relation = _choice(rng, REVERSE_RELATIONS if _coin(rng, reverse_share) else FORWARD_RELATIONS)
    yes = _coin(rng)
    while True:  # P(relation holds) is about 1/2 for two random distinct cells: a few draws at most
        scene = distinct_shapes_scene(rng, 2, 4)
        a, b = (scene.objects[int(i)] for i in rng.choice(len(scene.objects), size=2, replace=False))
        if (relation in relations_between((a.row, a.col), (b.row, b.col))) == yes:
            break
    question = Question("relation", ObjectClause(a.shape), relation, ObjectClause(b.shape))
    return scene, question_text(question), "yes" if yes else "no"


def is_find_kind(kind: str) -> bool:
    """True for a kind `sample_find` draws: one of FIND_QUESTIONS or a skewed "relation~P" / "line~P"."""
    if kind in FIND_QUESTIONS:
        return True
    try:
        relation_share(kind)
    except ValueError:
        return False
    return True


def sample_find(rng: np.random.Generator, copies: int = 1, questions: str = "shape",
                templates: TemplateSet | None = None) -> VQAExample:
    """`find_example` rendered and formatted like `sample_vqa`; `questions="name"`: `naming_example` (one
    object, its colour); "name-all": its colour or texture, among up to four objects of distinct shapes;
    "where", "relation", "relation~P" and "line~P": `position_example` (drawn once each whatever `copies` says: copies would
    make a position ambiguous)."""
    if questions in POSITION_FIND_QUESTIONS or "~" in questions:  # a bad "<kind>~P": relation_share says the form
        scene, question, answer = position_example(rng, questions)
        if questions != "where":
            templates = templates or tasks.shapeworld_templates()
            question = spaced(templates.vqa(question))
        return VQAExample(render(scene), question, answer)
    if questions in NAMING_FIND_QUESTIONS:
        scene, question, answer = (naming_example(rng, copies) if questions == "name" else
                                   naming_example(rng, copies, objects=4, attributes=("color", "texture")))
        return VQAExample(render(scene), question, answer)
    templates = templates or tasks.shapeworld_templates()
    scene, question, yes = find_example(rng, copies, questions)
    return VQAExample(render(scene), spaced(templates.vqa(question_text(question))), "yes" if yes else "no")
