"""Sampling math: classifier-free guidance, top-k / top-p filtering, seeded per-item draws.

Every random draw of an item comes from its own seed, drawn up front as uniforms, so an item's
tokens never depend on which other items share its batch, the batch order or the device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


DEFAULT_CFG_SCALE = 5.0  # Janus-Pro's published sampling protocol; a checkpoint's own scale comes first
# (JanusAdapter.default_cfg_scale)


@dataclass(frozen=True)
class ImageSampling:
    """How image tokens are drawn."""

    cfg_scale: float = DEFAULT_CFG_SCALE  # guidance: logits = uncond + cfg_scale * (cond - uncond); 1 = no guidance
    temperature: float = 1.0  # 0 = greedy (argmax)
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off

    def __post_init__(self):
        _check_sampling(self.temperature, self.top_k, self.top_p)
        if not math.isfinite(self.cfg_scale):
            raise ValueError(f"cfg_scale must be a finite number, got {self.cfg_scale}")
        if self.cfg_scale < 1:
            raise ValueError(f"cfg_scale must be >= 1 (1 = no guidance), got {self.cfg_scale}")


@dataclass(frozen=True)
class TextSampling:
    """How text tokens are drawn."""

    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self):
        _check_sampling(self.temperature, self.top_k, self.top_p)
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


def _check_sampling(temperature, top_k, top_p):
    for name, value in (("temperature", temperature), ("top_p", top_p)):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 = off), got {top_k}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def cfg_mix(cond: torch.Tensor, uncond: torch.Tensor, cfg_scale: float) -> torch.Tensor:
    """Classifier-free guidance: `uncond + s * (cond - uncond)`, as transformers' Janus applies it."""
    return uncond + cfg_scale * (cond - uncond)


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Sets logits outside the top-k and outside the top-p nucleus to -inf. logits: (B, V)."""
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        drop = cum - torch.softmax(sorted_logits, dim=-1) >= top_p  # keep the token that crosses top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def draw_uniforms(seeds: list[int], num_steps: int) -> torch.Tensor:
    """One uniform in [0, 1) per item and step, from a `torch.Generator` seeded with that item's seed. (B, T) float64."""
    rows = []
    for seed in seeds:
        gen = torch.Generator().manual_seed(int(seed))
        rows.append(torch.rand(num_steps, generator=gen, dtype=torch.float64))
    return torch.stack(rows)


def sample_tokens(logits: torch.Tensor, uniforms: torch.Tensor, temperature: float, top_k: int = 0,
                  top_p: float = 1.0) -> torch.Tensor:
    """Draws one token per row by inverting the CDF of softmax(filter(logits / temperature)) at `uniforms`.

    logits: (B, V); uniforms: (B,) in [0, 1). temperature 0 is greedy. Returns (B,) int64.
    Inverse-CDF sampling makes each row's draw a function of its own logits and uniform alone.
    """
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(filter_logits(logits.float() / temperature, top_k, top_p), dim=-1)
    cdf = probs.double().cumsum(-1)  # (B, V)
    target = uniforms.to(cdf.device, torch.float64).unsqueeze(-1) * cdf[:, -1:]
    tokens = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    return tokens.clamp_(max=logits.shape[-1] - 1)


def draw_image_tokens(logits: torch.Tensor, batch: int, uniforms: torch.Tensor, sampling: ImageSampling
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """One image-token draw per item from the head's logits: (2B, V) rows [cond; uncond] under guidance, else
    (B, V). Mixes the branches (`cfg_mix`), inverts the CDF at `uniforms` (B,), and returns the tokens (B,) and
    their log-probabilities under the conditional branch alone (B,)."""
    cond = logits[:batch]
    mixed = cfg_mix(cond, logits[batch:], sampling.cfg_scale) if logits.shape[0] > batch else cond
    tokens = sample_tokens(mixed, uniforms, sampling.temperature, sampling.top_k, sampling.top_p)
    return tokens, torch.log_softmax(cond, -1).gather(-1, tokens[:, None]).squeeze(-1)


def item_seed(run_seed: int, item_id: str, slot: int = 0) -> int:
    """A 63-bit seed from (run seed, item id, slot): every random draw of an item derives from its identity,
    never from its position in a batch or shard."""
    import hashlib

    digest = hashlib.sha256(f"{run_seed}\x1f{item_id}\x1f{slot}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
