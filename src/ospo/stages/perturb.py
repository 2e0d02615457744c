"""Stage 2.1: hard negatives — the model rewrites each prompt with one object-level edit per slot.

Slot `s` of a prompt uses the edit `slots[s % len(slots)]` of its sub-category's plan in the template set
(e.g. replace/swap/drop). The model is asked to reason in steps and write the result after the set's marker.
Each (prompt, slot) ends as a Negative (id `<prompt_id>/n<slot>`, slots counted from 0) or a Rejected with
the reason: "empty" (no output), the parser's ("no result marker", "empty result"), or "unchanged" (the
same prompt up to case, spacing and a final period). Seeds: item_seed(run seed, negative id, 0).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Sequence

from ospo.schema import ConfigError
from ospo.parsing import ParseError, normalize_prompt, prompt_key
from ospo.records import Negative, Prompt, Rejected
from ospo.sampling import TextSampling, item_seed
from ospo.stages import chunked, run_chunked
from ospo.stages._shared import finish, start, text_sampling

NAME = "perturb"


def slot_edits(templates, subcategory: str, num_negatives: int) -> list[str]:
    plan = templates.subcategory(subcategory, needs="slots").slots
    return [plan[s % len(plan)] for s in range(num_negatives)]


def judge(negative_id: str, prompt: Prompt, slot: int, edit: str, raw: str, templates):
    """A model output -> Negative or Rejected."""
    if not raw.strip():
        return Rejected(negative_id, NAME, "empty", raw)
    try:
        text = normalize_prompt(templates.parse_perturbation(raw))
    except ParseError as err:
        return Rejected(negative_id, NAME, err.reason, raw)
    if prompt_key(text) == prompt_key(prompt.text):
        return Rejected(negative_id, NAME, "unchanged", raw, text)
    return Negative(negative_id, prompt.id, slot, edit, text, raw)


def draw_seed(run_seed: int, negative_id: str, draw: int) -> int:
    return item_seed(run_seed, negative_id if draw == 0 else f"{negative_id}/redraw{draw}", 0)


def duplicates(records: Sequence) -> list[int]:
    """Indices of the Negatives whose text (by prompt_key) an earlier Negative of the same prompt already has."""
    seen, out = set(), []
    for i, r in enumerate(records):
        if isinstance(r, Negative):
            key = (r.prompt_id, prompt_key(r.text))
            if key in seen:
                out.append(i)
            seen.add(key)
    return out


def perturb_prompts(prompts: Sequence[Prompt], templates, model, sampling: TextSampling, run_seed: int,
                    num_negatives: int, max_redraws: int = 0) -> list:
    """`num_negatives` Negative-or-Rejected records per prompt, in (prompt, slot) order: one batched model call,
    then one per round of redraws of the slots that repeat an earlier slot (none when decoding is greedy: a redraw
    would repeat itself)."""
    items = [(p, s, edit) for p in prompts for s, edit in enumerate(slot_edits(templates, p.subcategory,
                                                                               num_negatives))]
    if not items:
        return []
    ids = [f"{p.id}/n{s}" for p, s, _ in items]

    def draw(indices: list[int], k: int) -> list:
        outputs = model.generate_text([templates.perturb(items[i][0].text, items[i][2]) for i in indices],
                                      [draw_seed(run_seed, ids[i], k) for i in indices], sampling)
        return [judge(ids[i], *items[i], raw, templates) for i, raw in zip(indices, outputs)]

    records = draw(list(range(len(items))), 0)
    rounds = max_redraws if sampling.temperature > 0 else 0
    for k in range(1, rounds + 1):
        repeated = duplicates(records)
        if not repeated:
            break
        for i, r in zip(repeated, draw(repeated, k)):
            if isinstance(r, Negative):  # a failed redraw leaves the repeat in place for the next round
                records[i] = dataclasses.replace(r, draw=k)
    for i in duplicates(records):
        r = records[i]
        records[i] = Rejected(r.id, NAME, "duplicate", r.raw, r.text)
    return records


def run(ctx) -> dict:
    cfg = ctx.config.perturb
    if cfg.num_negatives < 1:
        raise ConfigError(f"perturb.num_negatives must be >= 1, got {cfg.num_negatives}")
    if cfg.max_redraws < 0:
        raise ConfigError(f"perturb.max_redraws must be >= 0, got {cfg.max_redraws}")
    stage = start(ctx, NAME, [cfg], ["prompts"], True, chunk_size=ctx.config.chunk_size)
    if stage.complete:
        return stage.manifest()
    prompts = ctx.stage("prompts").records()
    for sub in sorted({p.subcategory for p in prompts}):  # fail before any model call
        slot_edits(ctx.templates, sub, cfg.num_negatives)

    def process(chunk):
        return perturb_prompts(chunk, ctx.templates, ctx.model, text_sampling(cfg.sampling), ctx.config.seed,
                               cfg.num_negatives, cfg.max_redraws)

    run_chunked(ctx, stage, chunked(prompts, ctx.config.chunk_size), process)

    def manifest() -> dict:
        records = stage.read_parts()
        negatives = [r for r in records if isinstance(r, Negative)]
        edits = Counter(r.edit for r in negatives)
        return {"counts": {"prompts": len(prompts), "in": len(prompts) * cfg.num_negatives,
                           "negatives_by_edit": dict(sorted(edits.items())),
                           "redrawn": sum(r.draw > 0 for r in negatives)}}

    return finish(ctx, stage, manifest)
