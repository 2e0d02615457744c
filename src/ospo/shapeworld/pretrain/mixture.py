"""The ShapeWorld pretraining mixture: text-to-image, yes/no VQA and the OSPO text tasks.

Every sampler is a pure function of a numpy Generator (same generator state -> same example), so
pretraining can seed each step from (seed, phase, step) and resume exactly. All text is written
with spaces around punctuation ("background , a red circle"), which the word-level tokenizer splits
the same way as "background, a red circle", so every whitespace-separated word is a vocabulary word.
Nothing is excluded here: keeping evaluation prompts out is the pipeline's job. The scene and question samplers
(scenes.py) and the find phase's examples (find.py) are re-exported: this module is the one import for the
pretraining data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ospo.shapeworld import tasks
from ospo.shapeworld.captions import SUBCATEGORIES, Spec, caption
from ospo.shapeworld.codes import scene_to_codes
from ospo.shapeworld.edits import EDITS, perturb
from ospo.shapeworld.pretrain.find import (  # noqa: F401  (the find phase's examples: part of the mixture's interface)
    FIND_QUESTIONS, FORWARD_RELATIONS, NAMING_FIND_QUESTIONS, POSITION_FIND_QUESTIONS, REVERSE_RELATIONS,
    SKEWED_FIND_QUESTIONS, YES_NO_FIND_QUESTIONS, distinct_shapes_scene, find_example, is_find_kind,
    left_right_example, naming_example, position_example, relation_share, sample_find, skewed_relation_example,
)
from ospo.shapeworld.pretrain.scenes import (  # noqa: F401  (scenes and questions: part of the mixture's interface)
    MAX_RANDOM_OBJECTS, P_DENSE, P_NEGATIVE, VQAExample, _choice, _coin, balanced_question, pick,
    question_form, random_scene, replicate, sample_prompt_spec, spaced, vqa_question,
)
from ospo.shapeworld.questions import question_text
from ospo.shapeworld.render import render
from ospo.shapeworld.sampler import sample_scene, sample_spec
from ospo.shapeworld.world import BACKGROUNDS, COLORS, GRID, TEXTURES, Obj, Scene
from ospo.templates import TemplateSet

TEXT_TASKS = ("elements", "prompt", "perturb", "densify", "decompose")


@dataclass(frozen=True)
class T2IExample:
    prompt: str
    codes: np.ndarray  # (GRID * GRID,) int64, row-major


@dataclass(frozen=True)
class TextExample:
    instruction: str
    answer: str


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
