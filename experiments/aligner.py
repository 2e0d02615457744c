"""Aligner targets and training that only the research probes use: the "words+position" target (each cell's word
sum plus a code of its row and column) and an align phase that may train the vision tower too. Pretraining in the
package keeps the "cells" and "words" targets of the shipped recipe (docs/experiments/relations.md)."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from ospo.shapeworld import pretrain
from ospo.shapeworld.pretrain.config import _autocast
from ospo.shapeworld.pretrain.state import _optimizer_step
from ospo.shapeworld.pretrain.surgery import _reinit
from ospo.shapeworld.pretrain.vision import _cell_batch


def cell_position_code(width: int, grid: int = 8) -> torch.Tensor:
    """(grid * grid, width) unit vectors saying each cell's row (first half) and column (second half) with
    sinusoids of several periods, row-major like the image tokens."""
    half = width // 2
    freqs = torch.pi / grid * torch.arange(1, half // 2 + 1, dtype=torch.float32) / (half // 4)
    cells = torch.arange(grid * grid)

    def axis(values):
        angles = values[:, None].float() * freqs[None]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)

    code = torch.cat([axis(cells // grid), axis(cells % grid)], dim=-1)
    code = F.pad(code, (0, width - code.shape[-1]))
    return code / code.norm(dim=-1, keepdim=True)


def aligned_tokens(words: torch.Tensor, labels: torch.Tensor, position_scale: float = 0.0) -> torch.Tensor:
    """(B, cells, width) the sums of the word embeddings of cells with `cell_labels` rows `labels` (B, cells, 4),
    plus `cell_position_code` times `position_scale` times the sums' mean norm (0: no code)."""
    goal = words[labels.unbind(-1)]
    if position_scale:
        grid = math.isqrt(labels.shape[1])
        goal = goal + cell_position_code(words.shape[-1], grid) * words.norm(dim=-1).mean() * position_scale
    return goal


def train_aligner(model, processor, cfg: pretrain.PretrainConfig, state_dir: Path, position: bool = False,
                  train_vision: bool = False) -> dict:
    """The package's align phase towards "words" (`position`: "words" plus the cell's place), training the vision
    tower too with `train_vision`. Not resumable: the probes run it in a scratch folder."""
    if not (position or train_vision):
        return pretrain.train_aligner(model, processor, cfg, state_dir)
    vision, aligner = model.model.vision_model, model.model.aligner
    torch.manual_seed(cfg.seed)
    for module in aligner.modules():
        if isinstance(module, torch.nn.Linear):
            _reinit(model, module)
    words = pretrain.word_targets(model, processor.tokenizer)
    opt = torch.optim.AdamW(list(aligner.parameters()) + (list(vision.parameters()) if train_vision else []),
                            lr=cfg.vision_lr, weight_decay=0.0)
    vision.eval()
    vision.requires_grad_(train_vision)
    loss = torch.tensor(0.0)
    for step in range(cfg.align_steps):
        pixels, target = _cell_batch(processor, cfg, 4, step)
        with torch.set_grad_enabled(train_vision), _autocast(cfg):
            features = vision(pixel_values=pixels).last_hidden_state
        goal = aligned_tokens(words, target, float(position))
        loss = (aligner(features.float()) - goal).pow(2).mean() / goal.pow(2).mean()
        _optimizer_step(opt, loss, "align", step)
    vision.zero_grad(set_to_none=True)
    return {"align_rel_mse": float(loss.item())}
