"""Stage 3.1: question decomposition — each short prompt split by the model into atomic yes/no questions.

Decomposed: every Prompt (role "positive", id = the prompt's id) and, with
config.questions.decompose_negatives (the conditional loss needs them), every Negative (role "negative",
id = the negative's id). Each ends as a QuestionSet (kind "local") or a Rejected with the reason: "empty"
(no output), the parser's ("no question mark", "unfinished question", "repeated question", ...), or
"too many questions" (more than max_questions). Whenever the template set has a global question, each prompt also gets a
QuestionSet of kind "global" (id `<prompt_id>/global`, used by the v1 rule) holding that question; it needs
no model call. Seeds: item_seed(run seed, id, 2).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Sequence

from ospo.parsing import ParseError
from ospo.records import Negative, Prompt, QuestionSet, Rejected
from ospo.sampling import TextSampling, item_seed
from ospo.stages import chunked, run_chunked
from ospo.stages._shared import finish, start, text_sampling

NAME = "questions"
SEED_SLOT = 2  # perturb and densify draw with slots 0 and 1


@dataclass(frozen=True)
class Item:
    """A short prompt to decompose."""

    id: str
    prompt_id: str
    role: str  # "positive" | "negative"
    text: str


def items_of(prompts: Sequence[Prompt], negatives: Sequence[Negative] = ()) -> list[Item]:
    """Each prompt followed by its negatives (in id order)."""
    by_prompt: dict[str, list[Negative]] = {}
    for n in sorted(negatives, key=lambda n: n.id):
        by_prompt.setdefault(n.prompt_id, []).append(n)
    out = []
    for p in prompts:
        out.append(Item(p.id, p.id, "positive", p.text))
        out += [Item(n.id, n.prompt_id, "negative", n.text) for n in by_prompt.get(p.id, [])]
    return out


def judge(item: Item, raw: str, templates, max_questions: int):
    """A model output -> QuestionSet or Rejected."""
    if not raw.strip():
        return Rejected(item.id, NAME, "empty", raw)
    try:
        questions = templates.parse_questions(raw)
    except ParseError as err:
        return Rejected(item.id, NAME, err.reason, raw)
    if len(questions) > max_questions:
        return Rejected(item.id, NAME, "too many questions", raw, f"{len(questions)} > {max_questions}")
    return QuestionSet(item.id, item.prompt_id, item.role, item.text, tuple(questions), "local", raw)


def global_question_set(item: Item, templates) -> QuestionSet:
    return QuestionSet(f"{item.prompt_id}/global", item.prompt_id, "positive", item.text,
                       (templates.global_question(item.text),), "global")


def decompose_items(items: Sequence[Item], templates, model, sampling: TextSampling, run_seed: int,
                    max_questions: int, global_questions: bool = False) -> list:
    """One QuestionSet-or-Rejected per item (one batched model call), plus a global set per positive item."""
    outputs = model.generate_text([templates.decompose(i.text) for i in items],
                                  [item_seed(run_seed, i.id, SEED_SLOT) for i in items], sampling) if items else []
    records = [judge(i, raw, templates, max_questions) for i, raw in zip(items, outputs)]
    if global_questions:
        records += [global_question_set(i, templates) for i in items if i.role == "positive"]
    return records


def run(ctx) -> dict:
    cfg = ctx.config.questions
    # written whenever the template set has a global question (no model call), so that any selection rule,
    # v1 included, can be re-run on the same scores
    global_questions = ctx.templates.tasks["decompose"].global_question is not None
    inputs = ["prompts"] + (["perturb"] if cfg.decompose_negatives else [])
    stage = start(ctx, NAME, [cfg], inputs, True, chunk_size=ctx.config.chunk_size,
                  global_questions=global_questions)
    if stage.complete:
        return stage.manifest()
    prompts = ctx.stage("prompts").records()
    negatives = ctx.stage("perturb").records() if cfg.decompose_negatives else []
    items = items_of(prompts, negatives)

    def process(chunk):
        return decompose_items(chunk, ctx.templates, ctx.model, text_sampling(cfg.sampling), ctx.config.seed,
                               cfg.max_questions, global_questions)

    run_chunked(ctx, stage, chunked(items, ctx.config.chunk_size), process)

    def manifest() -> dict:
        roles = Counter(i.role for i in items)
        kinds = Counter(r.kind for r in stage.read_parts() if isinstance(r, QuestionSet))
        return {"global_questions": global_questions,
                "counts": {"in": len(items) + (roles["positive"] if global_questions else 0),
                           "positive": roles["positive"], "negative": roles["negative"],
                           "local": kinds["local"], "global": kinds["global"]}}

    return finish(ctx, stage, manifest)
