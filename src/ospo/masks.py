"""Object masks over the image-token grid from the generator's own attention (paper v3), and the v3 token weights.

Pure tensor code: the attention itself comes from `JanusAdapter.object_attention`, the object words from the
prompt's own structure (`object_words`): no external detector or NLP model.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

# Words that never name an object: function words, numbers, relations, and the words every question template uses.
_STOP = set("""a an the and or of on in at to with without is are there this that these those it its image photo
picture shows show showing does do has have one two three four five six seven eight nine ten some any each
left right above below under over next near behind front top bottom upper lower middle center side
yes no not please answer question""".split())


def otsu_threshold(values: torch.Tensor, bins: int = 256) -> float:
    """Otsu's threshold of a 1-D set of values: the cut that maximises the between-class variance.

    Returns a value t such that `values > t` is the upper class (the middle of the gap when several cuts tie);
    constant input returns its value."""
    v = values.detach().float().flatten().cpu().numpy()
    lo, hi = float(v.min()), float(v.max())
    if hi - lo < 1e-12:
        return lo
    hist, edges = np.histogram(v, bins=bins, range=(lo, hi))
    p = hist / hist.sum()
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(p)  # weight of the class at or below each bin
    mu = np.cumsum(p * centres)
    mu_t = mu[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu_t * w0 - mu) ** 2 / (w0 * (1 - w0))
    between[~np.isfinite(between)] = -1
    # every cut inside an empty gap between the classes is equally optimal: take the middle of that plateau
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))
    return float((edges[best[0] + 1] + edges[best[-1] + 1]) / 2)


def _minmax(x: torch.Tensor) -> torch.Tensor:
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo) if hi - lo > 1e-12 else torch.zeros_like(x)


def gaussian_kernel(size: int = 5, sigma: float = 1.0) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    k = g[:, None] * g[None, :]
    return k / k.sum()


def middle_layers(num_layers: int, skip: int = 5) -> slice:
    """The paper skips the first and last 5 layers; a model too shallow for that keeps its middle layer(s)."""
    skip = min(skip, (num_layers - 1) // 2)
    return slice(skip, num_layers - skip)


def object_mask(attention: torch.Tensor, grid: tuple[int, int], skip_layers: int = 5, otsu_scale: float = 0.8,
                blur_size: int = 5, blur_sigma: float = 1.0) -> torch.Tensor:
    """(num_layers, num_words, N) attention from object words to image tokens -> (N,) soft mask in [0, 1].

    Average the middle layers; per word: min-max normalise, keep tokens above otsu_scale * Otsu threshold; union
    over words; smooth with a Gaussian on the (h, w) grid; min-max normalise again. No words -> all zeros."""
    h, w = grid
    if attention.shape[-1] != h * w:
        raise ValueError(f"attention covers {attention.shape[-1]} image tokens, the grid {h}x{w} has {h * w}")
    if attention.shape[1] == 0:
        return torch.zeros(h * w)
    per_word = attention.float()[middle_layers(attention.shape[0], skip_layers)].mean(0)  # (W, N)
    union = torch.zeros(h * w)
    for a in per_word:
        a = _minmax(a.cpu())
        union = torch.maximum(union, (a > otsu_scale * otsu_threshold(a)).float())
    if union.max() == 0:
        return union
    k = gaussian_kernel(blur_size, blur_sigma)[None, None]
    soft = F.conv2d(union.view(1, 1, h, w), k, padding=blur_size // 2).view(-1)
    return _minmax(soft)


def token_weights(mask: torch.Tensor, alpha: float) -> torch.Tensor:
    """v3 per-token weights w_t = 1 + alpha * m_t."""
    return 1 + alpha * mask


def object_words(prompt: str, questions: Sequence[str] = ()) -> list[str]:
    """The prompt's content words that its own decomposition asks about (the objects and their attributes),
    in prompt order, without function, number and relation words. With no questions, every content word."""
    words = re.findall(r"[a-z]+", prompt.lower())
    asked = set(re.findall(r"[a-z]+", " ".join(questions).lower())) if questions else set(words)
    out = []
    for word in words:
        if word not in _STOP and word in asked and word not in out:
            out.append(word)
    return out


def grid_shape(num_tokens: int) -> tuple[int, int]:
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(f"{num_tokens} image tokens do not form a square grid")
    return side, side
