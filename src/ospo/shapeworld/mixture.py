"""The ShapeWorld pretraining mixture: text-to-image, yes/no VQA and the OSPO text tasks.

Every sampler is a pure function of a numpy Generator (same generator state -> same example), so
pretraining can seed each step from (seed, phase, step) and resume exactly. All text is written
with spaces around punctuation ("background , a red circle"), which the word-level tokenizer splits
the same way as "background, a red circle", so every whitespace-separated word is a vocabulary word.
Nothing is excluded here: keeping evaluation prompts out is the pipeline's job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

from ospo.shapeworld import tasks
from ospo.shapeworld.captions import SUBCATEGORIES, ObjectClause, Spec, caption
from ospo.shapeworld.codes import scene_to_codes
from ospo.shapeworld.edits import EDITS, perturb
from ospo.shapeworld.questions import Question, decompose, matches, question_text, truth
from ospo.shapeworld.render import render
from ospo.shapeworld.sampler import densify, sample_scene, sample_spec
from ospo.shapeworld.world import (
    BACKGROUNDS, COLORS, GRID, MAX_COUNT, REGIONS, RELATIONS, SHAPES, TEXTURES, Obj, Scene, region_of,
    relations_between,
)
from ospo.templates import TemplateSet

TEXT_TASKS = ("elements", "prompt", "perturb", "densify", "decompose")
P_DENSE = 0.4  # share of text-to-image / VQA prompts in dense form
P_NEGATIVE = 0.25  # share of prompts replaced by a perturbation of themselves (negatives get generated too)
MAX_RANDOM_OBJECTS = 6
_KINDS, _KIND_WEIGHTS = ("exists", "count", "relation", "background"), (0.3, 0.3, 0.3, 0.1)
_FLIP = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


@dataclass(frozen=True)
class T2IExample:
    prompt: str
    codes: np.ndarray  # (GRID * GRID,) int64, row-major


@dataclass(frozen=True)
class VQAExample:
    image: np.ndarray  # (128, 128, 3) uint8
    question: str  # the whole user text after the image (TemplateSet.vqa applied)
    answer: str  # "yes" or "no"


@dataclass(frozen=True)
class TextExample:
    instruction: str
    answer: str


def spaced(text: str) -> str:
    """`text` with every punctuation mark as its own word: "background, a" -> "background , a"."""
    return " ".join(re.sub(r"([.,?:])", r" \1 ", text).split())


def _choice(rng: np.random.Generator, items):
    items = list(items)
    return items[int(rng.integers(len(items)))]


def pick(rng: np.random.Generator, items):
    """One of `items` uniformly; a single item without a draw (so adding a choice of one leaves the stream as
    it was)."""
    items = list(items)
    return items[0] if len(items) == 1 else _choice(rng, items)


def _coin(rng: np.random.Generator, p: float = 0.5) -> bool:
    return bool(rng.random() < p)


def sample_prompt_spec(rng: np.random.Generator, dense_p: float = P_DENSE) -> Spec:
    """A spec of a uniformly drawn sub-category, sometimes perturbed (so negatives' forms such as
    "a red circle and a square" occur), sometimes densified."""
    spec = sample_spec(rng, _choice(rng, SUBCATEGORIES))
    if _coin(rng, P_NEGATIVE):
        spec = perturb(spec, _choice(rng, EDITS), rng) or spec
    return densify(spec, rng) if _coin(rng, dense_p) else spec


def sample_t2i(rng: np.random.Generator) -> T2IExample:
    """A caption (short or dense, any sub-category) and the codes of a scene that realises it."""
    spec = sample_prompt_spec(rng)
    return T2IExample(spaced(caption(spec)), scene_to_codes(sample_scene(spec, rng)))


_PACKABLE = tuple(s for s in SUBCATEGORIES if s not in ("spatial", "complex"))


def sample_t2i_packed(rng: np.random.Generator) -> T2IExample:
    """A short caption without relation or regions, its objects packed into the first cells in the
    order the caption names them: "a red circle and two squares" -> cells 0, 1, 2.

    A valid (if atypical) realisation of the caption, used as a curriculum at the start of
    pretraining: the first glyph is then predicted from the begin-of-image position, where reading
    the caption is as easy as in a text task, and the next ones from the glyph just drawn. Trained on
    randomly placed scenes alone, the tiny model learns where objects go and how many, but for
    hundreds of steps not which glyph the caption asks for (its glyph distribution does not depend
    on the caption at all; docs/experiments/pretraining.md).
    """
    spec = sample_spec(rng, _choice(rng, _PACKABLE))
    background = _choice(rng, BACKGROUNDS)
    objects, cell = [], 0
    for clause in spec.objects:
        for _ in range(clause.count):
            color = clause.color or _choice(rng, COLORS)
            texture = clause.texture or _choice(rng, TEXTURES)
            objects.append(Obj(clause.shape, color, texture, cell // GRID, cell % GRID))
            cell += 1
    return T2IExample(spaced(caption(spec)), scene_to_codes(Scene(tuple(objects), background)))


# ------------------------------------------------------------------------------------------------ VQA
def random_scene(rng: np.random.Generator, max_objects: int = MAX_RANDOM_OBJECTS) -> Scene:
    """1..max_objects objects in random cells with random attributes. Shapes come from a random
    subset of 1-5 shapes, so repeated shapes (and count questions about them) are common."""
    n = int(rng.integers(1, max_objects + 1))
    shapes = rng.choice(SHAPES, size=int(rng.integers(1, len(SHAPES) + 1)), replace=False)
    cells = rng.choice(GRID * GRID, size=n, replace=False)
    objects = tuple(Obj(str(_choice(rng, shapes)), _choice(rng, COLORS), _choice(rng, TEXTURES), int(c) // GRID,
                        int(c) % GRID) for c in cells)
    return Scene(objects, _choice(rng, BACKGROUNDS))


def replicate(scene: Scene, copies: int, rng: np.random.Generator) -> Scene:
    """`scene` with every object drawn in `copies` cells (fewer when the board runs out: at most 64 objects).

    A curriculum for finding an object: a tiny LM learns to compare a question with what fills many cells long
    before it learns to find the one cell of 64 that holds it (docs/experiments/finding-objects.md). Answers stay exact: `sample_vqa` draws and checks its question on the replicated
    scene."""
    if copies <= 1 or not scene.objects:
        return scene
    copies = min(copies, (GRID * GRID) // len(scene.objects))
    if copies == 1:
        return scene
    cells = rng.choice(GRID * GRID, size=copies * len(scene.objects), replace=False)
    objects = tuple(replace(o, row=int(c) // GRID, col=int(c) % GRID)
                    for k, o in enumerate(scene.objects) for c in cells[k * copies:(k + 1) * copies])
    return Scene(objects, scene.background)


def _describe(obj: Obj, rng: np.random.Generator) -> ObjectClause:
    """A count-1 clause that `obj` fits, naming each of its attributes with some probability."""
    return ObjectClause(obj.shape, 1, obj.color if _coin(rng, 0.6) else None, obj.texture if _coin(rng, 0.4) else None,
                        region_of(obj.row, obj.col) if _coin(rng, 0.2) else None)


def _true_question(scene: Scene, kind: str, rng: np.random.Generator) -> Question | None:
    """A question of `kind` that holds in `scene` (None when the scene offers none, e.g. no count >= 2)."""
    objects = scene.objects
    if kind == "background":
        return Question("background", background=scene.background)
    if kind == "exists":
        return Question("exists", _describe(_choice(rng, objects), rng))
    if kind == "count":
        obj = _choice(rng, objects)
        clause = ObjectClause(obj.shape, 1, obj.color if _coin(rng, 0.3) else None)
        n = sum(matches(o, clause) for o in objects)
        return Question("count", replace(clause, count=n)) if 2 <= n <= MAX_COUNT else None
    if len(objects) < 2:
        return None
    i, j = rng.choice(len(objects), size=2, replace=False)
    a, b = objects[i], objects[j]
    kind = _choice(rng, sorted(relations_between((a.row, a.col), (b.row, b.col))))
    return Question("relation", _describe(a, rng), kind, _describe(b, rng))


def _other(rng: np.random.Generator, values, current):
    return _choice(rng, [v for v in values if v != current])


def _near_clause(clause: ObjectClause, rng: np.random.Generator) -> ObjectClause:
    """`clause` with one attribute changed or added: the shape, colour or texture."""
    key = _choice(rng, ("shape", "color", "texture"))
    values = {"shape": SHAPES, "color": COLORS, "texture": TEXTURES}[key]
    return replace(clause, **{key: _other(rng, values, getattr(clause, key))})


def _near_miss(q: Question, rng: np.random.Generator) -> Question:
    """A question one step from `q`: a changed attribute, a count off by one, the flipped relation."""
    if q.kind == "background":
        return Question("background", background=_other(rng, BACKGROUNDS, q.background))
    if q.kind == "exists":
        return Question("exists", _near_clause(q.subject, rng))
    if q.kind == "count":
        counts = [n for n in (q.subject.count - 1, q.subject.count + 1) if 2 <= n <= MAX_COUNT]
        return Question("count", replace(q.subject, count=_choice(rng, counts)))
    move = _choice(rng, ("flip", "flip", "subject", "object"))
    if move == "flip":
        flipped = _FLIP.get(q.relation) or _other(rng, RELATIONS, q.relation)
        return Question("relation", q.subject, flipped, q.object)
    if move == "subject":
        return Question("relation", _near_clause(q.subject, rng), q.relation, q.object)
    return Question("relation", q.subject, q.relation, _near_clause(q.object, rng))


def question_form(q: Question) -> tuple:
    """What a question says without looking at an image: its kind, which attributes each clause names, the
    relation word and the count. A judge that knows only this is blind; `balanced_question` makes "yes" and "no"
    equally likely for every form."""
    def named(c: ObjectClause | None) -> tuple:
        return () if c is None else (c.color is not None, c.texture is not None, c.region is not None)
    return q.kind, named(q.subject), q.relation, named(q.object), q.subject.count if q.kind == "count" else None


def _same_form_variant(q: Question, rng: np.random.Generator) -> Question:
    """`q` with one named value changed (a shape, a named colour, texture or region, the background) or, for a
    relation between clauses that name the same attributes, subject and object swapped: `question_form` is kept."""
    if q.kind == "background":
        return Question("background", background=_other(rng, BACKGROUNDS, q.background))
    side = "subject" if q.kind != "relation" or _coin(rng) else "object"
    if q.kind == "relation" and question_form(Question("exists", q.subject)) == question_form(
            Question("exists", q.object)) and _coin(rng, 1 / 3):
        return replace(q, subject=q.object, object=q.subject)
    clause = getattr(q, side)
    keys = ["shape"] + [k for k in ("color", "texture", "region") if getattr(clause, k) is not None]
    key = _choice(rng, keys)
    values = {"shape": SHAPES, "color": COLORS, "texture": TEXTURES, "region": sorted(REGIONS)}[key]
    return replace(q, **{side: replace(clause, **{key: _other(rng, values, getattr(clause, key))})})


def _base_question(scene: Scene, spec: Spec | None, rng: np.random.Generator) -> Question | None:
    """A question meant to hold in `scene`: one of the prompt's (when the scene realises one) or one about any of
    its objects (None when the drawn kind has none, e.g. no count >= 2)."""
    if spec is not None and _coin(rng):
        return _choice(rng, decompose(spec))
    return _true_question(scene, str(rng.choice(_KINDS, p=_KIND_WEIGHTS)), rng)


def _background_question(scene: Scene, yes: bool, rng: np.random.Generator) -> Question:
    """The fallback when no question of another kind was found: the background, true or not as asked."""
    return Question("background", background=scene.background if yes else _other(rng, BACKGROUNDS, scene.background))


def balanced_question(scene: Scene, spec: Spec | None, yes: bool, rng: np.random.Generator) -> Question:
    """A question whose true answer about `scene` is `yes`, drawn so that the answer cannot be told from the
    question's form (`question_form`): a true question (`_base_question`), kept only when some variant of the same
    form (`_same_form_variant`) is false; the answer "no" asks that variant. Yes and no then come from the same
    forms with the same probabilities. `_question` (the default mixture's) lets a blind judge score about 0.61 on
    held-out renders (shape-only "exists" questions are true 80% of the time, with a colour 34%:
    docs/experiments/judge.md)."""
    for _ in range(50):
        base = _base_question(scene, spec, rng)
        if base is None or not truth(base, scene):
            continue
        for _ in range(8):
            variant = _same_form_variant(base, rng)
            if not truth(variant, scene):
                return base if yes else variant
    return _background_question(scene, yes, rng)


def _question(scene: Scene, spec: Spec | None, yes: bool, rng: np.random.Generator) -> Question:
    """A question whose true answer about `scene` is `yes`: a question of the prompt (when the scene
    realises one) or about any of its objects; a "no" one is a near miss of a true one, or, now and
    then, a random object that is absent."""
    for _ in range(50):
        base = _base_question(scene, spec, rng)
        if base is None:
            continue
        if not yes:
            base = _near_miss(base, rng) if _coin(rng, 0.85) else Question(
                "exists", ObjectClause(_choice(rng, SHAPES), 1, _choice(rng, COLORS)))
        if truth(base, scene) == yes:
            return base
    return _background_question(scene, yes, rng)


def vqa_question(rng: np.random.Generator, copies: int = 1, balanced: bool = False) -> tuple[Scene, Question, bool]:
    """(scene, question, true answer) of `sample_vqa`, drawn the same way from the same generator state, without
    rendering the scene (for statistics over many questions)."""
    yes = _coin(rng)
    if _coin(rng):
        spec = sample_prompt_spec(rng)
        scene = sample_scene(spec, rng)
    else:
        spec, scene = None, random_scene(rng)
    if copies > 1:
        scene = replicate(scene, copies, rng)
    return scene, (balanced_question if balanced else _question)(scene, spec, yes, rng), yes


def sample_vqa(rng: np.random.Generator, templates: TemplateSet | None = None, copies: int = 1,
               balanced: bool = False) -> VQAExample:
    """A rendered scene, a yes/no question about it and the exact answer (`vqa_question`).

    The answer is drawn first with a fair coin (exactly balanced in expectation), then a question
    with that answer. Scenes come half from prompts (the questions the pipeline will ask) and half
    from 1-6 random objects (distractors, repeated shapes); `copies` > 1 draws each object in that many
    cells (`replicate`, a curriculum), before the question is drawn. `balanced` draws the question with
    `balanced_question` (the answer independent of the question's form) instead of `_question`.
    """
    templates = templates or tasks.shapeworld_templates()
    scene, question, yes = vqa_question(rng, copies, balanced)
    return VQAExample(render(scene), spaced(templates.vqa(question_text(question))), "yes" if yes else "no")


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


# ------------------------------------------------------------------------------------------------ text tasks
def _perturbed_pair(rng: np.random.Generator) -> tuple[Spec, str, Spec]:
    """An edit (uniform over EDITS), a short prompt that allows it, and one such negative.

    Prompts are redrawn until one allows the edit, so swaps are as frequent as replacements although
    only two-clause prompts can be swapped.
    """
    edit = _choice(rng, EDITS)
    while True:
        spec = sample_spec(rng, _choice(rng, SUBCATEGORIES))
        negative = perturb(spec, edit, rng)
        if negative is not None:
            return spec, edit, negative


def sample_text(rng: np.random.Generator, templates: TemplateSet | None = None, task: str | None = None) -> TextExample:
    """One text-task example in the `shapeworld` formats: of `task`, or of a task drawn uniformly from
    TEXT_TASKS."""
    templates = templates or tasks.shapeworld_templates()
    if task is not None and task not in TEXT_TASKS:
        raise ValueError(f"task must be one of {TEXT_TASKS}, got {task!r}")
    task = task or _choice(rng, TEXT_TASKS)
    if task == "elements":
        kind = _choice(rng, tasks.ELEMENTS)
        instruction, answer = templates.elements(kind), templates.elements_answer(tasks.element_list(kind))
    elif task == "prompt":
        subcategory = _choice(rng, SUBCATEGORIES)
        examples, answer = tasks.prompt_task(subcategory, rng)
        instruction = templates.prompt(subcategory, examples)
    elif task == "perturb":
        spec, edit, negative = _perturbed_pair(rng)
        instruction = templates.perturb(caption(spec), edit)
        answer = tasks.stepwise_perturbation(spec, edit, negative, templates)
    elif task == "densify":
        spec, _, negative = _perturbed_pair(rng)
        dense = tasks.densify_pair(spec, negative, rng)
        instruction = templates.densify(caption(spec), caption(negative))
        answer = templates.densify_answer(*(caption(d) for d in dense))
    else:
        spec = sample_spec(rng, _choice(rng, SUBCATEGORIES))
        if _coin(rng, 0.3):  # CoPO decomposes negatives too
            spec = _perturbed_pair(rng)[2]
        instruction, answer = templates.decompose(caption(spec)), templates.decompose_answer(tasks.decomposition(spec))
    return TextExample(spaced(instruction), spaced(answer))
