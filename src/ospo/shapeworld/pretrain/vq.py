"""Phase 1, the VQ decoder: codes by construction (ospo.shapeworld.codes) -> learn the decoder that paints each
code's 16 px cell, on random whole code grids."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ospo.shapeworld import codes as world_codes
from ospo.shapeworld import oracle
from ospo.shapeworld.pretrain import mixture
from ospo.shapeworld.pretrain.config import PretrainConfig, _autocast
from ospo.shapeworld.pretrain.state import _load_state, _log, _optimizer_step, _save_state, _truncate_log


def decode_crop(vq, codes: torch.Tensor) -> torch.Tensor:
    """Decodes a (B, h, w) code grid to (B, 3, 16h, 16w) pixels in [-1, 1] (the path of `vqmodel.decode`)."""
    b, h, w = codes.shape
    emb = F.normalize(vq.quantize.embedding(codes), dim=-1).permute(0, 3, 1, 2)  # (B, D, h, w)
    return vq.decoder(vq.post_quant_conv(emb))


def vq_batch(rng: np.random.Generator, batch: int, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Random full code grids (one background each; glyph density from sparse scenes to crowded boards, as
    generated images have) and the pixels they must decode to. The decoder's GroupNorm and attention see
    whole-image statistics, so it is trained on whole images, not crops."""
    table = world_codes.code_table()
    by_bg: dict[str, list[int]] = {}
    for k, entry in enumerate(table):
        by_bg.setdefault(entry[-1], []).append(k)  # entry 0 of each list is the empty code (empties come first)
    grids = np.empty((batch, size, size), dtype=np.int64)
    for i in range(batch):
        ids = by_bg[list(by_bg)[rng.integers(len(by_bg))]]
        density = rng.choice([0.03, 0.08, 0.15, 0.3, 0.6])
        glyphs = rng.choice(ids[1:], size=(size, size))
        grids[i] = np.where(rng.random((size, size)) < density, glyphs, ids[0])
    cells = world_codes.code_pixels()[grids]  # (B, h, w, 16, 16, 3)
    pixels = cells.transpose(0, 1, 3, 2, 4, 5).reshape(batch, size * 16, size * 16, 3)
    target = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1
    return torch.from_numpy(grids), target


@torch.no_grad()
def vq_readback(vq, seed: int, num_scenes: int = 48) -> float:
    """Share of objects the oracle reads back exactly (shape, colour, texture, cell) from decoded dev scenes;
    misses and false detections both count against (|truth & read| / |truth | read|)."""
    vq.eval()
    rng = np.random.default_rng([seed, 7])
    scenes = [mixture.random_scene(rng) for _ in range(num_scenes)]
    codes = torch.from_numpy(np.stack([world_codes.scene_to_codes(s) for s in scenes])).view(-1, 8, 8)
    pixels = ((decode_crop(vq, codes).clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    hits = total = 0
    for scene, image in zip(scenes, pixels):
        truth, found = set(scene.objects), set(oracle.read_scene(image).objects)
        hits, total = hits + len(truth & found), total + len(truth | found)
    return hits / max(total, 1)


def _empty_codes() -> list[int]:
    return [k for k, entry in enumerate(world_codes.code_table()) if entry[0] == "empty"]


def train_vq_decoder(model, cfg: PretrainConfig, state_dir: Path, progress=None) -> dict:
    vq = model.model.vqmodel
    params = list(vq.post_quant_conv.parameters()) + list(vq.decoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.vq_lr, weight_decay=0.0)
    start = _load_state(state_dir, "vq", model, opt)
    _truncate_log(state_dir, "vq", start)
    vq.train()
    losses = []
    end = cfg.vq_stop_at or cfg.vq_steps
    for step in range(start, end):
        for g in opt.param_groups:
            g["lr"] = cfg.vq_lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / cfg.vq_steps))
        codes, target = vq_batch(np.random.default_rng([cfg.seed, 1, step]), cfg.vq_batch)
        with _autocast(cfg):
            decoded = decode_crop(vq, codes)
        error = (decoded.float() - target).abs()
        # glyphs occupy few cells: weight a glyph's pixels (x10) and the rest of its cell (x5) above plain
        # background, so that neither painting the background nor painting the whole cell is a cheap optimum
        glyph_cells = torch.from_numpy(np.isin(codes.numpy(), _empty_codes(), invert=True)).float()
        in_glyph_cell = glyph_cells.repeat_interleave(16, 1).repeat_interleave(16, 2)[:, None]
        foreground = (target != target[:, :, :1, :1]).any(1, keepdim=True).float()
        loss = (error * (1 + 4 * in_glyph_cell + 5 * foreground)).mean()
        _optimizer_step(opt, loss, "vq", step, params)
        losses.append(loss.item())
        if progress:
            progress(step + 1, end, {"vq_l1": loss.item()})
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == end:
            metrics = {"vq_l1": float(np.mean(losses[-cfg.checkpoint_every:]))}
            if cfg.eval_every and ((step + 1) % cfg.eval_every == 0 or step + 1 == end):
                metrics["vq_readback"] = vq_readback(vq, cfg.seed)
                vq.train()
            _log(state_dir, {"phase": "vq", "step": step + 1, "lr": opt.param_groups[0]["lr"], **metrics})
            _save_state(state_dir, "vq", step + 1, model, opt, metrics)
    vq.eval()
    return {"vq_l1": float(np.mean(losses[-20:])) if losses else None}
