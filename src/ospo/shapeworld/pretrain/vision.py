"""Phases 2 and 3, the vision tower and the aligner: temporary heads teach the tower to encode each cell's content
(`train_vision`), then a fresh aligner to hand the LM tokens it can read (`train_aligner`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ospo.shapeworld import codes as world_codes
from ospo.shapeworld.pretrain import mixture
from ospo.shapeworld.pretrain.config import PretrainConfig, _autocast
from ospo.shapeworld.pretrain.state import _load_state, _log, _logged_metrics, _optimizer_step, _save_state
from ospo.shapeworld.pretrain.surgery import _reinit, cell_labels
from ospo.shapeworld.render import render
from ospo.shapeworld.world import BACKGROUNDS, COLORS, SHAPES, TEXTURES


def _cell_batch(processor, cfg: PretrainConfig, stream: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels of `cfg.vision_batch` random scenes (up to 12 objects) and each cell's `cell_labels`, drawn from
    a generator seeded with (seed, stream, step)."""
    from PIL import Image

    rng = np.random.default_rng([cfg.seed, stream, step])
    scenes = [mixture.random_scene(rng, 12) for _ in range(cfg.vision_batch)]
    pixels = processor.image_processor([Image.fromarray(render(sc)) for sc in scenes],
                                       return_tensors="pt")["pixel_values"]
    target = cell_labels()[torch.from_numpy(np.stack([world_codes.scene_to_codes(sc) for sc in scenes]))]
    return pixels, target


def train_vision(model, processor, cfg: PretrainConfig, state_dir: Path, progress=None) -> dict:
    """One SigLIP patch per cell: teaches the vision tower to encode each cell's content (shape, colour, texture,
    background) with temporary linear heads on its patch features (discarded afterwards). From scratch, the
    LM mixture alone leaves yes/no answers blind to the image for hundreds of steps (they settle on the
    question's prior); with features that already separate cell contents, the LM only learns to read them.
    Short and deterministic: a killed run redoes the whole phase from the VQ checkpoint."""
    if not cfg.vision_steps:
        return {}
    if _load_state(state_dir, "vision", model, None) >= cfg.vision_steps:
        return _logged_metrics(state_dir, "vision")
    vision = model.model.vision_model
    heads = _cell_heads(model.config.vision_config.hidden_size, torch.Generator().manual_seed(cfg.seed))
    opt = torch.optim.AdamW(list(vision.parameters()) + list(heads.parameters()), lr=cfg.vision_lr, weight_decay=0.0)
    vision.train()
    loss = torch.tensor(0.0)
    for step in range(cfg.vision_steps):
        pixels, target = _cell_batch(processor, cfg, 3, step)  # (B, 3, H, W), (B, N, 4)
        with _autocast(cfg):
            features = vision(pixel_values=pixels).last_hidden_state  # (B, N, D): one patch per cell
        loss = sum(F.cross_entropy(h(features.float()).flatten(0, 1), target[..., i].flatten())
                   for i, h in enumerate(heads))
        _optimizer_step(opt, loss, "vision", step)
        if progress:
            progress(step + 1, cfg.vision_steps, {"vision_ce": loss.item()})
    vision.eval()
    metrics = {"vision_ce": float(loss.item())}
    _log(state_dir, {"phase": "vision", "step": cfg.vision_steps, **metrics})
    _save_state(state_dir, "vision", cfg.vision_steps, model, None, metrics)
    return metrics


def _cell_heads(width: int, gen: torch.Generator) -> torch.nn.ModuleList:
    """Temporary linear classifiers of a cell's shape, colour, texture (each with "empty") and background."""
    heads = torch.nn.ModuleList(torch.nn.Linear(width, n) for n in
                                (1 + len(SHAPES), 1 + len(COLORS), 1 + len(TEXTURES), len(BACKGROUNDS)))
    with torch.no_grad():
        for h in heads:
            h.weight.normal_(0, width**-0.5, generator=gen)
            h.bias.zero_()
    return heads


def word_targets(model, tokenizer) -> torch.Tensor:
    """(shapes+1, colours+1, textures+1, backgrounds, width) table of the aligner's "words" target: the sum of the
    LM's input embeddings (frozen copy) of a cell's shape, colour, texture and background words, the pad token's
    embedding standing in for the words of an empty cell. Indexed by `cell_labels` rows.

    Why: a question's words and the image tokens of the cell they describe then start out close in the LM's own
    input space (docs/experiments/finding-objects.md)."""
    emb = model.get_input_embeddings().weight.detach().float().clone()

    def ids(values, empty=True):
        found = tokenizer.convert_tokens_to_ids(list(values))
        missing = [v for v, i in zip(values, found) if i is None or i == tokenizer.unk_token_id]
        if missing:
            raise ValueError(f"the tokenizer has no token for the ShapeWorld words {missing}")
        return torch.tensor(([tokenizer.pad_token_id] if empty else []) + found)

    shape, colour, texture, background = (emb[ids(SHAPES)], emb[ids(COLORS)], emb[ids(TEXTURES)],
                                          emb[ids(BACKGROUNDS, empty=False)])
    return (shape[:, None, None, None] + colour[None, :, None, None] + texture[None, None, :, None]
            + background[None, None, None, :])


def train_aligner(model, processor, cfg: PretrainConfig, state_dir: Path, progress=None) -> dict:
    """Re-initialises the aligner and trains it, the vision tower frozen, towards `cfg.align_target`: "cells", image
    tokens that separate cell contents linearly *after the LM's RMS normalisation*; "words", image tokens close to
    `word_targets`. Trained through the LM mixture alone, the aligner collapses: image tokens far larger than text
    embeddings and dominated by one shared direction, and the LM never learns to read an image
    (docs/experiments/finding-objects.md). Deterministic, redone on resume."""
    if not cfg.align_steps:
        return {}
    if _load_state(state_dir, "align", model, None) >= cfg.align_steps:
        return _logged_metrics(state_dir, "align")
    vision, aligner = model.model.vision_model, model.model.aligner
    torch.manual_seed(cfg.seed)
    for module in aligner.modules():
        if isinstance(module, torch.nn.Linear):
            _reinit(model, module)
    heads = _cell_heads(model.config.text_config.hidden_size, torch.Generator().manual_seed(cfg.seed + 1))
    words = word_targets(model, processor.tokenizer) if cfg.align_target == "words" else None
    metric = "align_rel_mse" if words is not None else "align_ce"
    opt = torch.optim.AdamW(list(aligner.parameters()) + ([] if words is not None else list(heads.parameters())),
                            lr=cfg.vision_lr, weight_decay=0.0)
    vision.eval()  # no dropout either way
    loss = torch.tensor(0.0)
    for step in range(cfg.align_steps):
        pixels, target = _cell_batch(processor, cfg, 4, step)
        with torch.no_grad(), _autocast(cfg):
            features = vision(pixel_values=pixels).last_hidden_state
        tokens = aligner(features.float())
        if words is not None:
            goal = words[target.unbind(-1)]  # (B, cells, width): the sums of each cell's word embeddings
            loss = (tokens - goal).pow(2).mean() / goal.pow(2).mean()  # relative squared error
        else:
            tokens = tokens * torch.rsqrt(tokens.pow(2).mean(-1, keepdim=True) + 1e-6)  # what the LM's first norm sees
            loss = sum(F.cross_entropy(h(tokens).flatten(0, 1), target[..., i].flatten()) for i, h in enumerate(heads))
        _optimizer_step(opt, loss, "align", step)
        if progress:
            progress(step + 1, cfg.align_steps, {metric: loss.item()})
    metrics = {metric: float(loss.item())}
    _log(state_dir, {"phase": "align", "step": cfg.align_steps, **metrics})
    _save_state(state_dir, "align", cfg.align_steps, model, None, metrics)
    return metrics
