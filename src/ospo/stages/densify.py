"""Stage 2.2: joint densification — each (prompt, negative) pair rewritten into two long descriptions that
share one scene and differ only in the edited binding.

Each Negative ends as a DensePair (same id) or a Rejected with the reason: "empty" (no output), the parser's
("no positive marker", "empty negative", ...), or "identical dense pair" (both descriptions the same up to
case, spacing and a final period). With config.densify.enabled False the DensePair copies the short prompts
and no model is called, so later stages read the same records either way. Seeds: item_seed(run seed, id, 1).
"""

from __future__ import annotations

from typing import Mapping, Sequence

from ospo.errors import InputError
from ospo.parsing import ParseError, normalize_prompt, prompt_key
from ospo.records import DensePair, Negative, Rejected
from ospo.sampling import TextSampling, item_seed
from ospo.stages import chunked, run_chunked
from ospo.stages._shared import finish, start, text_sampling

NAME = "densify"
SEED_SLOT = 1  # perturb draws with slot 0 of the same ids


def judge(negative: Negative, raw: str, templates):
    """A model output -> DensePair or Rejected."""
    if not raw.strip():
        return Rejected(negative.id, NAME, "empty", raw)
    try:
        dense_positive, dense_negative = (normalize_prompt(t) for t in templates.parse_densified(raw))
    except ParseError as err:
        return Rejected(negative.id, NAME, err.reason, raw)
    if prompt_key(dense_positive) == prompt_key(dense_negative):
        return Rejected(negative.id, NAME, "identical dense pair", raw, dense_positive)
    return DensePair(negative.id, negative.prompt_id, negative.slot, dense_positive, dense_negative, raw)


def densify_negatives(negatives: Sequence[Negative], positives: Mapping[str, str], templates, model,
                      sampling: TextSampling, run_seed: int, enabled: bool = True) -> list:
    """One DensePair-or-Rejected per negative, in order. `positives`: prompt id -> short prompt text."""
    missing = sorted({n.prompt_id for n in negatives} - set(positives))
    if missing:
        raise InputError(f"densify: negatives of unknown prompt {missing[0]!r}; rerun the prompts and perturb stages")
    if not enabled:
        return [DensePair(n.id, n.prompt_id, n.slot, positives[n.prompt_id], n.text) for n in negatives]
    if not negatives:
        return []
    outputs = model.generate_text([templates.densify(positives[n.prompt_id], n.text) for n in negatives],
                                  [item_seed(run_seed, n.id, SEED_SLOT) for n in negatives], sampling)
    return [judge(n, raw, templates) for n, raw in zip(negatives, outputs)]


def run(ctx) -> dict:
    cfg = ctx.config.densify
    stage = start(ctx, NAME, [cfg], ["prompts", "perturb"], cfg.enabled, chunk_size=ctx.config.chunk_size)
    if stage.complete:
        return stage.manifest()
    positives = {p.id: p.text for p in ctx.stage("prompts").records()}
    negatives = ctx.stage("perturb").records()

    def process(chunk):
        model = ctx.model if cfg.enabled else None
        return densify_negatives(chunk, positives, ctx.templates, model, text_sampling(cfg.sampling),
                                 ctx.config.seed, cfg.enabled)

    run_chunked(ctx, stage, chunked(negatives, ctx.config.chunk_size), process)
    return finish(ctx, stage, lambda: {"enabled": cfg.enabled, "counts": {"in": len(negatives)}})
