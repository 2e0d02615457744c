"""Stage 3.3 — filtering and selection: one TrainingPair `(x, x~, y_w, y_l)` per prompt, or a Rejected with why.

The rules are pure (`ospo.selection`); this shell joins the records of the earlier stages by id into one
`Candidates` per prompt and, for v2, computes the likelihoods `l(y|x)` by teacher forcing on the stored codes
under the current model. Each rule writes its own folder (`select-v2`, `select-v3`, ...; other thresholds than
the defaults add a hash), so `ospo stage select --run RUN --set select.rule=v3` re-selects without touching
the earlier stages.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

from ospo.config import SelectConfig, config_hash
from ospo.records import Image, Negative, Prompt, QuestionSet, Rejected, Score, TrainingPair
from ospo.scoring import histogram
from ospo.selection import (STAGE, Candidates, Slot, V2Plan, filter_stats, select_best_of_n, select_v1, select_v3, v2_plan,
                            v2_select)
from ospo.stages import RunContext, chunked, run_chunked
from ospo.stages._shared import finish, start

NAME = "select"
INPUTS = ("prompts", "perturb", "images", "questions", "score")
# the SelectConfig fields each rule reads
RULE_FIELDS = {"v1": (), "v2": ("chosen_threshold", "rejected_threshold", "require_negative_prompt"), "v3": ("v3_tau",),
               "best-of-n": ()}


def rule_config(cfg: SelectConfig) -> SelectConfig:
    """The selection config with the fields its rule does not read reset to their defaults."""
    default = SelectConfig(rule=cfg.rule)
    return dataclasses.replace(default, **{k: getattr(cfg, k) for k in RULE_FIELDS[cfg.rule]})


def stage_name(cfg: SelectConfig) -> str:
    """The folder of a selection: `select-<rule>`, plus a config hash when a threshold the rule reads differs from
    its default."""
    cfg = rule_config(cfg)
    return f"select-{cfg.rule}" + ("" if cfg == SelectConfig(rule=cfg.rule) else f"-{config_hash(cfg)[:8]}")


# ------------------------------------------------------------------------------------------------ pure core
def build_candidates(prompts: list[Prompt], negatives: list[Negative], images: list[Image],
                     question_sets: list[QuestionSet], scores: list[Score]) -> list[Candidates]:
    """One Candidates per prompt (sorted by id), joined by id: slots from the images, answers from the scores."""
    negs, pairs, sets = defaultdict(dict), defaultdict(lambda: defaultdict(dict)), defaultdict(list)
    for n in negatives:
        negs[n.prompt_id][n.id] = n.text
    for i in images:
        pairs[i.prompt_id][(i.slot, i.pair_id)][i.role] = i.id
    for q in question_sets:
        sets[q.prompt_id].append(q)
    answers = {(s.image_id, s.question_set_id): s.s for s in scores}
    out = []
    for p in sorted(prompts, key=lambda p: p.id):
        local = [q for q in sets[p.id] if q.role == "positive" and q.kind == "local"]
        if len(local) > 1:
            raise ValueError(f"prompt {p.id} has {len(local)} local question sets ({', '.join(q.id for q in local)})")
        glob = sorted((q for q in sets[p.id] if q.kind == "global"), key=lambda q: q.id)
        neg_sets = [q for q in sets[p.id] if q.role == "negative"]
        slots = tuple(Slot(pair_id, slot, pair_id, roles.get("positive"), roles.get("negative"))
                      for (slot, pair_id), roles in sorted(pairs[p.id].items()))
        image_ids = [i for s in slots for i in (s.positive_image, s.negative_image) if i]
        local_s = {i: answers[(i, local[0].id)] for i in image_ids if local and (i, local[0].id) in answers}
        global_s = {i: sum((answers[(i, q.id)] for q in glob), ()) for i in image_ids
                    if glob and all((i, q.id) in answers for q in glob)}
        contradiction = {(i, q.id): answers[(i, q.id)] for i in image_ids for q in neg_sets if (i, q.id) in answers}
        texts = {**{q.id: q.text for q in neg_sets}, **negs[p.id]}
        out.append(Candidates(p.id, p.text, slots, texts, local_s, global_s, contradiction,
                              {"category": p.category, "subcategory": p.subcategory}))
    return out


# ------------------------------------------------------------------------------------------------ shell
def _likelihoods(model, requests: list[tuple[str, str]], codes: dict) -> dict[tuple[str, str], float]:
    """l(image | text) = mean_t log p(y_t | text, y_<t) by teacher forcing on the stored codes, batched."""
    import numpy as np
    import torch

    out = {}
    step = getattr(model, "batch_size", 16)
    with torch.no_grad():
        for i in range(0, len(requests), step):
            batch = requests[i:i + step]
            rows = torch.from_numpy(np.stack([codes[image_id] for _, image_id in batch]).astype(np.int64))
            logps = model.image_token_logps([text for text, _ in batch], rows)  # (b, N)
            out.update(zip(batch, logps.float().mean(-1).tolist()))
    return out


def _select_chunk(ctx: RunContext, items: list[Candidates], codes) -> list:
    s = ctx.config.select
    if s.rule == "v1":
        return [select_v1(c) for c in items]
    if s.rule == "v3":
        return [select_v3(c, s.v3_tau) for c in items]
    if s.rule == "best-of-n":
        return [select_best_of_n(c) for c in items]
    plans = [v2_plan(c, s.chosen_threshold, s.rejected_threshold) for c in items]
    requests = sorted({r for c, p in zip(items, plans) if isinstance(p, V2Plan) for r in p.requests(c)})
    if requests:
        stored = codes()  # before loading the model: a bad code file fails fast
        logp = _likelihoods(ctx.model, requests, stored)
    else:
        logp = {}
    out = [v2_select(c, p, logp) if isinstance(p, V2Plan) else p for c, p in zip(items, plans)]
    if s.require_negative_prompt:
        out = [Rejected(r.id, STAGE, "no-negative-prompt", detail="the chosen image clearly contradicts no negative "
                        "prompt") if isinstance(r, TrainingPair) and r.negative_prompt is None else r for r in out]
    return out


def _summary(records: list, candidates: list[Candidates], s: SelectConfig) -> dict:
    pairs = [r for r in records if isinstance(r, TrainingPair)]
    return {"counts": {"in": len(candidates), "with_negative_prompt": sum(p.negative_prompt is not None
                                                                          for p in pairs)},
            "rule": s.rule, "filtering": filter_stats(candidates, s.rule, s.chosen_threshold, s.rejected_threshold,
                                                      s.v3_tau),
            "histograms": {k: histogram([p.scores[f"{k}_S"] for p in pairs if p.scores.get(f"{k}_S") is not None])
                           for k in ("chosen", "rejected")}}


def run(ctx: RunContext) -> dict:
    """Selects one training pair per prompt with the configured rule; returns the manifest."""
    from ospo.stages.images import model_identity

    cfg = ctx.config
    uses_model = cfg.select.rule == "v2"
    stage = start(ctx, stage_name(cfg.select),
                  [rule_config(cfg.select)] + ([model_identity(cfg.model)] if uses_model else []),
                  INPUTS, uses_model, chunk_size=cfg.chunk_size)
    if stage.complete:
        return stage.manifest()
    rec = {name: ctx.stage(name).records() for name in INPUTS}
    kinds = {"prompts": Prompt, "perturb": Negative, "images": Image, "questions": QuestionSet, "score": Score}
    rec = {name: [r for r in rec[name] if isinstance(r, kinds[name])] for name in INPUTS}
    candidates = build_candidates(rec["prompts"], rec["perturb"], rec["images"], rec["questions"], rec["score"])
    cache = {}

    def codes():  # loaded once per process, only by a process that has v2 work to do
        if "codes" not in cache:
            from ospo.stages.images import load_image_codes

            cache["codes"] = load_image_codes(ctx.stage("images"))
        return cache["codes"]

    run_chunked(ctx, stage, chunked(candidates, cfg.chunk_size), lambda items: _select_chunk(ctx, items, codes),
                desc=stage.name)
    return finish(ctx, stage, lambda: _summary(stage.read_parts(), candidates, cfg.select))
