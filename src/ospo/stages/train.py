"""Stage 4 — object-centric preference optimisation on the selected pairs: the stage shell (records in, adapter
out) around `ospo.training`.

    pairs (select-<rule>/records.jsonl + images/codes) -> [reference log-probs (DPO)] -> [object masks (v3)]
      -> ospo.training.train -> adapter/ (LoRA) or model/ (full fine-tuning)

Output folder `train-<recipe>-<hash>/`: `log.jsonl` (TRL's metric names), `curves.png`, `tensorboard/` (when
tensorboard is installed), `checkpoints/step-NNNNNN/` (resumable, the last `keep_last`), `adapter/` (PEFT LoRA)
or `model/` (full fine-tuning), `merged/` on request, `masks/` previews (v3), `manifest.json` last.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ospo.artifacts import StageDir, atomic_write_text
from ospo.config import RunConfig, TrainConfig, config_hash
from ospo.records import QuestionSet, Rejected, TrainingPair
from ospo.training import PairData, TrainingError, add_precomputed, save_outputs, train
from ospo.unified import UnifiedModel

NAME = "train"


def update_config(t: TrainConfig) -> TrainConfig:
    """The part of the train config that decides the update: how often it checkpoints, how many checkpoints it
    keeps, whether it also saves a merged model and how many mask previews it draws do not, so changing them
    reuses a finished training."""
    return replace(t, save_every=0, keep_last=0, merge=False, num_previews=0)


def stage_name(cfg: RunConfig) -> str:
    """`train-<recipe>-<hash of the update's train config and the selection rule>`: one folder per training setup,
    so one data run can be trained with several recipes side by side."""
    from ospo.stages.select import rule_config

    recipe = Path(cfg.recipe).stem if cfg.recipe.endswith((".yaml", ".yml")) else cfg.recipe
    return f"train-{recipe}-{config_hash(_Setup(update_config(cfg.train), rule_config(cfg.select)))[:8]}"


@dataclass(frozen=True)
class _Setup:
    train: TrainConfig
    select: object


def load_pair_data(ctx, select_stage: StageDir) -> tuple[PairData, list[Rejected]]:
    """The selected pairs joined with their stored codes (and the prompt's object words); pairs whose codes are
    missing are returned as Rejected (reason 'missing-codes') rather than dropped silently."""
    from ospo.stages.images import load_image_codes

    pairs = [r for r in select_stage.records() if isinstance(r, TrainingPair)]
    codes = load_image_codes(ctx.stage("images"))
    sets = {q.prompt_id: q for q in ctx.stage("questions").records()
            if isinstance(q, QuestionSet) and q.role == "positive" and q.kind == "local"}
    from ospo.masks import object_words

    keep, rejected = [], []
    for p in pairs:
        if p.chosen_image_id not in codes or p.rejected_image_id not in codes:
            rejected.append(Rejected(p.id, NAME, "missing-codes",
                                     detail=f"{p.chosen_image_id} / {p.rejected_image_id}"))
        else:
            keep.append(p)
    data = PairData(
        ids=[p.id for p in keep], prompts=[p.prompt for p in keep],
        negative_prompts=[p.negative_prompt for p in keep],
        chosen=torch.as_tensor(np.stack([codes[p.chosen_image_id] for p in keep])) if keep else torch.zeros(0, 0),
        rejected=torch.as_tensor(np.stack([codes[p.rejected_image_id] for p in keep])) if keep else torch.zeros(0, 0),
        object_words=[object_words(p.prompt, sets[p.provenance.get("prompt_id", p.id)].questions
                                   if p.provenance.get("prompt_id", p.id) in sets else ()) for p in keep])
    data.chosen, data.rejected = data.chosen.long(), data.rejected.long()
    if ctx.config.train.image_codes == "reencoded" and keep:
        data.chosen, data.rejected = (_reencoded(ctx, [getattr(p, f"{role}_image_id") for p in keep])
                                      for role in ("chosen", "rejected"))
    return data, rejected


def _reencoded(ctx, image_ids: list[str]) -> torch.Tensor:
    """The codes the VQ encoder gives the images' pictures (the saved previews, or the codes decoded in memory when
    the images stage wrote none): the reference code's training input (lossy)."""
    from ospo.stages.images import Pictures

    from ospo.records import Image

    pictures = Pictures(ctx.stage("images"), ctx.model, ctx.config.images.previews)
    shas = {r.id: r.preview_sha for r in ctx.stage("images").records() if isinstance(r, Image)}
    return ctx.model.encode_images([pictures(i, shas.get(i, "")) for i in image_ids])


DATA_STAGES = ("prompts", "perturb", "densify", "images", "questions", "score")


def _reasons(counts: dict) -> str:
    top = sorted(counts.get("rejected_by_reason", {}).items(), key=lambda x: -x[1])[:3]
    return f" ({', '.join(f'{r} {n}' for r, n in top)})" if top else ""


def emptied_by(ctx, select_dir: str) -> str:
    """Which stage left training nothing: the first finished data stage that kept no record, else the selection,
    each with its counts and main rejection reasons."""
    for name in DATA_STAGES:
        stage = ctx.stage(name)
        counts = stage.manifest().get("counts", {}) if stage.complete else {}
        if stage.complete and counts.get("out") == 0:
            return f"{name}: 0 of {counts.get('in', '?')} kept{_reasons(counts)}; every later stage had nothing to do"
    counts = ctx.stage(select_dir).manifest().get("counts", {})
    return (f"the selection ({select_dir}) kept none of {counts.get('in', '?')} prompts{_reasons(counts)}; its "
            f"manifest counts every rejection reason")


def _merge_if_asked(ctx, stage: StageDir) -> dict:
    """`train.merge` on a finished training: the LoRA-merged model from the saved adapter, without training again;
    the manifest then names it."""
    manifest = stage.manifest()
    outputs = manifest.get("outputs", {})
    if "merged" in outputs or "adapter" not in outputs:  # merged already, or full fine-tuning (nothing to merge)
        return manifest
    if ctx.rank != 0:  # one process writes the merged model
        return manifest
    from ospo import runtime
    from ospo.model import JanusAdapter
    from ospo.registry import resolve_model_path

    m = ctx.config.model
    device = runtime.device(m.device)
    trained = JanusAdapter.from_pretrained(resolve_model_path(m.path), dtype=runtime.dtype(m.dtype, device),
                                           device=device, adapter=outputs["adapter"])
    merged = save_outputs(trained, replace(ctx.config.train, merge=True), stage.path)
    manifest = {**manifest, "outputs": {**outputs, "merged": merged["merged"]}}
    atomic_write_text(stage.path / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def run(ctx) -> dict:
    """Trains on the selection of this run's rule; returns the manifest."""
    from ospo.stages._shared import start
    from ospo.stages.images import model_identity
    from ospo.stages.select import stage_name as select_name

    cfg = ctx.config
    select_dir = select_name(cfg.select)
    stage = start(ctx, stage_name(cfg), [update_config(cfg.train), model_identity(cfg.model)],
                  ["images", "questions", select_dir], True, recipe=cfg.recipe, iteration=ctx.iteration)
    if stage.complete:
        return _merge_if_asked(ctx, stage) if cfg.train.merge else stage.manifest()
    out = stage.path
    t = cfg.train
    data, rejected = load_pair_data(ctx, ctx.stage(select_dir))
    if not len(data):  # before the reference and the masks, which would fail on nothing less clearly
        if rejected:
            raise TrainingError(f"no training pairs: all {len(rejected)} pairs the selection ({select_dir}) kept "
                                f"lack stored image codes (rerun the images stage)")
        raise TrainingError(f"no training pairs: {emptied_by(ctx, select_dir)}")
    adapter: UnifiedModel = ctx.model
    add_precomputed(adapter, data, t, out, ctx.config.model.batch_size, ctx.rank)
    lr = t.lr * t.iteration_lr_scale ** (ctx.iteration - 1)
    try:
        summary = train(adapter, data, t, out, seed=cfg.seed, lr=lr, progress=ctx.progress)
        if ctx.rank == 0:
            stage.write_part("skipped", rejected)
            summary["outputs"] = save_outputs(adapter, t, out)
    except OSError as e:  # a full disk, a read-only folder: one line naming the file; checkpoints already made stay
        raise TrainingError(f"could not write {e.filename or out}: {e.strerror or e}; the last complete checkpoint "
                            f"in {out / 'checkpoints'} is kept (rerun to resume)") from None
    from ospo.stages._shared import finish

    return finish(ctx, stage, lambda: {"counts": {"in": len(data) + len(rejected), "out": len(data),
                                                  "pairs": len(data)},
                                       "select": select_dir, **summary})
