"""Exact answers to the OSPO text tasks in ShapeWorld, and checkers that grade a model's answers.

The stages ask the model itself to list elements, write prompts in context, perturb a prompt into
a hard negative, densify a (positive, negative) pair and decompose a prompt into yes/no questions.
In ShapeWorld each task has one exact answer (built here, in the formats of the `shapeworld`
TemplateSet) which is what the tiny model is pretrained on; the checkers measure how well it learnt
them (evaluation only; the pipeline itself judges model outputs by parsing, not by these answers).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ospo.shapeworld.captions import CaptionError, Spec, caption, parse_caption
from ospo.shapeworld.edits import EDITS, Edit, candidate_edits, check_edit, clause_words, find_edits, meaning, perturb
from ospo.shapeworld.questions import Question, decompose, parse_question, question_text
from ospo.shapeworld.sampler import sample_scene, sample_spec, densify as densify_spec, with_context
from ospo.shapeworld.world import BACKGROUNDS, COLORS, NUMBER_WORDS, REGIONS, RELATIONS, SHAPES, TEXTURES
from ospo.templates import TemplateSet, load_templates

__all__ = [
    "EXTRA_WORDS", "ELEMENTS", "PERTURBATION_SLOTS", "Edit", "perturb", "candidate_edits", "find_edits",
    "perturbation_slots", "element_list", "prompt_task", "stepwise_perturbation", "densify_pair",
    "decomposition", "check_prompt", "check_perturbation", "check_densified", "check_decomposition",
]

EXTRA_WORDS: tuple[str, ...] = ()  # every task format fits world.vocabulary() as it is

ELEMENTS = {
    "shapes": SHAPES,
    "colors": tuple(COLORS),
    "textures": TEXTURES,
    "relations": RELATIONS,
    "numbers": tuple(NUMBER_WORDS[n] for n in sorted(NUMBER_WORDS)),
    "backgrounds": tuple(BACKGROUNDS),
    "regions": tuple(REGIONS),
}

# method.md stage 2 slots, mapped onto ShapeWorld's sub-categories (object1/object2 are GenEval's
# attribute-free prompts). object2 ("a circle and a square") has nothing to swap (trading the shapes
# of two bare clauses means the same), so it takes the paper's other two-object plan, replace/drop/replace.
_ONE = ("replace", "replace", "replace")
_TWO = ("replace", "swap", "drop")
PERTURBATION_SLOTS = {
    "object1": _ONE, "color1": _ONE, "texture1": _ONE, "numeracy1": _ONE,
    "object2": ("replace", "drop", "replace"),
    "color2": _TWO, "texture2": _TWO, "spatial": _TWO, "numeracy2": _TWO, "complex": _TWO,
}

_DENSIFY_TRIES = 20
_ROLE = {"exists": "object", "count": "object", "relation": "relation", "background": "background"}


@lru_cache(maxsize=1)
def shapeworld_templates() -> TemplateSet:
    return load_templates("shapeworld")


def perturbation_slots(spec: Spec) -> tuple[str, ...]:
    """The edit of each negative slot of `spec`; a slot whose edit is impossible for this spec
    (swap in "a circle next to a square") becomes replace, which every spec allows."""
    return tuple(e if candidate_edits(spec, e) else "replace" for e in PERTURBATION_SLOTS[spec.subcategory])


def element_list(kind: str) -> list[str]:
    """The world's elements of `kind` (a key of ELEMENTS), in the world's order."""
    if kind not in ELEMENTS:
        raise ValueError(f"unknown element kind {kind!r}; expected one of {', '.join(ELEMENTS)}")
    return list(ELEMENTS[kind])


def prompt_task(subcategory: str, rng: np.random.Generator, num_examples: int = 2) -> tuple[list[str], str]:
    """In-context prompt writing: `num_examples` example prompts of `subcategory` and, as the answer,
    one more prompt of it that differs from every example."""
    texts: list[str] = []
    for _ in range(100 * (num_examples + 1)):
        text = caption(sample_spec(rng, subcategory))
        if text not in texts:
            texts.append(text)
        if len(texts) == num_examples + 1:
            return texts[:-1], texts[-1]
    raise ValueError(f"could not draw {num_examples + 1} distinct {subcategory} prompts; ask for fewer examples")


def _change_text(edit: Edit) -> str:
    if edit.edit == "replace":
        return f"{edit.old} to {edit.new}"
    if edit.edit == "swap":
        return f"{edit.old} and {edit.new}"
    return f"remove {edit.old}"


def stepwise_perturbation(spec: Spec, edit: str, new_spec: Spec, templates: TemplateSet | None = None) -> str:
    """The answer the model learns for the perturbation task: its objects, the edit, the result.

    "objects : red circle , blue square . edit : red to green . result : a green circle left of a
    blue square". Raises ValueError when `new_spec` is not one `edit` of `spec`.
    """
    check_edit(edit)
    templates = templates or shapeworld_templates()
    found = [e for e in find_edits(spec, new_spec) if e.edit == edit]
    if not found:
        raise ValueError(f"{caption(new_spec)!r} is not one {edit} of {caption(spec)!r}")
    objects = templates.elements_answer(clause_words(c) for c in spec.objects)  # listed like elements
    return templates.perturb_answer(caption(new_spec), objects=objects, change=_change_text(found[0]))


def _correspondence(positive: Spec, negative: Spec) -> tuple[int | None, ...]:
    """For each negative clause, the positive clause it stands for: the same position when the edit
    kept the clause count (so a swapped or replaced shape keeps its place), else the same shape."""
    if len(positive.objects) == len(negative.objects):
        return tuple(range(len(negative.objects)))
    shapes = [c.shape for c in positive.objects]
    return tuple(shapes.index(c.shape) if c.shape in shapes else None for c in negative.objects)


def _realisable(spec: Spec) -> bool:
    try:
        sample_scene(spec, np.random.default_rng(0))  # region constraints fail the same way for every seed
    except CaptionError:
        return False
    return True


def _context_for(negative: Spec, dense_positive: Spec, mapping) -> Spec:
    regions = tuple(None if j is None else dense_positive.objects[j].region for j in mapping)
    return with_context(negative, dense_positive.background, regions)


def densify_pair(positive: Spec, negative: Spec, rng: np.random.Generator) -> tuple[Spec, Spec]:
    """Dense forms of a (positive, negative) pair that share their context: one background, and the
    same region for clauses that correspond (`_correspondence`), so the two differ only in the
    edited binding. Both are realisable by `sample_scene`.

    The context is read off a scene of the positive; when the negative cannot be placed in it (a
    replaced relation whose regions forbid it) another scene is drawn, and after a few tries the
    related clauses of both lose their regions.
    """
    mapping = _correspondence(positive, negative)
    for _ in range(_DENSIFY_TRIES):
        dense_positive = densify_spec(positive, rng)
        dense_negative = _context_for(negative, dense_positive, mapping)
        if _realisable(dense_negative):
            return dense_positive, dense_negative
    related = {0, 1} if positive.relation or negative.relation else set()
    regions = tuple(None if i in related else c.region for i, c in enumerate(dense_positive.objects))
    dense_positive = with_context(positive, dense_positive.background, regions)
    dense_negative = _context_for(negative, dense_positive, mapping)
    if not _realisable(dense_negative):  # only a region's room is left to fail: keep the background alone
        dense_positive = with_context(positive, dense_positive.background, (None,) * len(positive.objects))
        dense_negative = with_context(negative, dense_positive.background, (None,) * len(negative.objects))
    return dense_positive, dense_negative


def decomposition(spec: Spec) -> list[str]:
    """The atomic yes/no questions of `spec`: one per clause, its relation and its background."""
    return [question_text(q) for q in decompose(spec)]


# ------------------------------------------------------------------------------------ checkers (eval only)
def check_prompt(text: str, subcategory: str) -> tuple[bool, str]:
    """Whether `text` is a ShapeWorld prompt of `subcategory`."""
    try:
        spec = parse_caption(text)
    except CaptionError as err:
        return False, f"unparseable prompt: {err}"
    if spec.subcategory != subcategory:
        return False, f"a {spec.subcategory} prompt, not {subcategory}"
    return True, "ok"


def check_perturbation(original_text: str, edit: str, result_text: str) -> tuple[bool, str]:
    """Whether `result_text` is exactly one `edit` of `original_text` (and means something else).

    Raises CaptionError when the original itself does not parse (it is the checker's input, not
    the model's output).
    """
    check_edit(edit)
    original = parse_caption(original_text)
    try:
        result = parse_caption(result_text)
    except CaptionError as err:
        return False, f"unparseable result: {err}"
    if meaning(result) == meaning(original):
        return False, "unchanged"
    kinds = {e.edit for e in find_edits(original, result)}
    if edit in kinds:
        return True, "ok"
    if kinds:
        return False, f"a {' or '.join(k for k in EDITS if k in kinds)} edit, not {edit}"
    return False, "not a single edit"


def check_densified(positive_text: str, negative_text: str, dense_positive_text: str,
                    dense_negative_text: str) -> tuple[bool, str]:
    """Whether a densified pair keeps each prompt, adds a shared background and shares the regions of
    corresponding clauses, and is realisable."""
    positive, negative = parse_caption(positive_text), parse_caption(negative_text)
    try:
        dense = [parse_caption(dense_positive_text), parse_caption(dense_negative_text)]
    except CaptionError as err:
        return False, f"unparseable dense prompt: {err}"
    for role, short, long in (("positive", positive, dense[0]), ("negative", negative, dense[1])):
        if meaning(_bare(long)) != meaning(_bare(short)):
            return False, f"dense {role} changes the prompt"
    if dense[0].background is None or dense[0].background != dense[1].background:
        return False, "no shared background"
    mapping = _correspondence(dense[0], dense[1])
    if dense[1] != _context_for(dense[1], dense[0], mapping):
        return False, "regions differ between corresponding objects"
    if not all(_realisable(d) for d in dense):
        return False, "not realisable"
    return True, "ok"


def _bare(spec: Spec) -> Spec:
    return with_context(spec, None, (None,) * len(spec.objects))


def _canonical(question: Question) -> Question:
    """A relation question in the direction `meaning` uses; other questions as they are."""
    if question.kind != "relation":
        return question
    subject, kind, obj = question.subject, question.relation, question.object
    if kind in ("right of", "below"):
        subject, kind, obj = obj, {"right of": "left of", "below": "above"}[kind], subject
    if kind == "next to" and repr(obj) < repr(subject):
        subject, obj = obj, subject
    return Question("relation", subject, kind, obj)


def check_decomposition(prompt_text: str, questions) -> tuple[bool, str]:
    """Whether `questions` parse and cover every clause (object with its bindings), the relation and
    the background of the prompt, and ask about nothing the prompt does not say."""
    spec = parse_caption(prompt_text)
    if not questions:
        return False, "no questions"
    asked = []
    for text in questions:
        try:
            asked.append(_canonical(parse_question(text)))
        except CaptionError as err:
            return False, f"unparseable question: {err}"
    required = [_canonical(q) for q in decompose(spec)]
    for q in required:
        if q not in asked:
            return False, f"missing {_ROLE[q.kind]} question: {question_text(q)}"
    for q in asked:
        if q not in required:
            return False, f"extra question: {question_text(q)}"
    return True, "ok"
