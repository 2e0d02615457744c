"""Small pieces the stage shells share: text sampling from config, the start (identity claim) and the end
(merge on rank 0, wait elsewhere) of a shell."""

from __future__ import annotations

from typing import Callable

from ospo.artifacts import StageDir
from ospo.config import TextConfig
from ospo.sampling import TextSampling

def text_sampling(cfg: TextConfig) -> TextSampling:
    return TextSampling(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p)


def start(ctx, name: str, sub_configs, inputs, uses_model: bool, **extra) -> StageDir:
    """The stage directory, claimed for this run's identity (StageMismatch if made from something else)."""
    stage = ctx.stage(name)
    stage.claim({**ctx.identity(name, sub_configs, inputs, uses_model), **extra})
    return stage


def finish(ctx, stage: StageDir, manifest: Callable[[], dict]) -> dict:
    """Rank 0 merges the parts with `manifest()`; other ranks wait for that merge. Returns the manifest."""
    if ctx.rank != 0:
        ctx.wait_for(stage)
        return stage.manifest()
    return stage.finish(manifest())
