"""What training computes once before the loop, from the model as it is: DPO's reference log-likelihoods and
v3's object token weights (with PNG previews of the masks), each stored beside the run's training so that a resumed
run reads them back instead of computing them from a model that has already moved."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from ospo.artifacts import atomic_write_text
from ospo.config import TrainConfig
from ospo.records import id_to_filename
from ospo.training.data import PairData
from ospo.unified import UnifiedModel


@torch.no_grad()
def reference_logps(adapter: UnifiedModel, data: PairData, batch: int, guidance: float = 1.0
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed image-token log-likelihoods of chosen and rejected under the model as it is now (DPO's reference),
    under the same guidance as the trained log-likelihoods."""
    out = []
    for codes in (data.chosen, data.rejected):
        rows = [adapter.image_token_logps(data.prompts[i:i + batch], codes[i:i + batch],
                                          cfg_scale=guidance).sum(-1)
                for i in range(0, len(data), batch)]
        out.append(torch.cat(rows).float().cpu())
    return out[0], out[1]


@torch.no_grad()
def object_token_weights(adapter: UnifiedModel, data: PairData, cfg: TrainConfig, batch: int
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """v3: token weights 1 + alpha * m from the model's own attention of each prompt's object words."""
    from ospo.masks import grid_shape, object_mask, token_weights

    grid = grid_shape(data.chosen.shape[1])
    out = []
    for codes in (data.chosen, data.rejected):
        masks = []
        for i in range(0, len(data), batch):
            words = data.object_words[i:i + batch]
            attn = adapter.object_attention(data.prompts[i:i + batch], codes[i:i + batch], words)
            masks += [object_mask(a, grid, cfg.mask_skip_layers, cfg.otsu_scale) for a in attn]
        out.append(token_weights(torch.stack(masks), cfg.alpha))
    return out[0], out[1]


def write_mask_previews(adapter: UnifiedModel, data: PairData, out_dir: Path, num: int) -> None:
    """PNG per pair: chosen and rejected image, each beside its object mask blended over it (red = object)."""
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    n = min(num, len(data))
    if not n:
        return
    images = adapter.decode_images(torch.cat([data.chosen[:n], data.rejected[:n]]))
    side = math.isqrt(data.chosen.shape[1])
    for i in range(n):
        tiles = []
        for img, w in ((images[i], data.chosen_weights[i]), (images[n + i], data.rejected_weights[i])):
            arr = np.asarray(img.convert("RGB"), dtype=np.float32)
            m = (w - w.min()) / (w.max() - w.min() + 1e-8)
            m = np.asarray(Image.fromarray((m.view(side, side).numpy() * 255).astype(np.uint8)).resize(
                arr.shape[1::-1], Image.NEAREST), dtype=np.float32)[..., None] / 255
            overlay = arr * (1 - 0.6 * m) + np.array([255, 0, 0], dtype=np.float32) * 0.6 * m
            tiles += [arr, overlay]
        Image.fromarray(np.concatenate(tiles, 1).clip(0, 255).astype(np.uint8)).save(
            out_dir / f"{id_to_filename(data.ids[i])}.png")
    (out_dir / "README.txt").write_text("Per pair: chosen image | its object mask (red) | rejected | its mask.\n"
                                        "Words: see object_words.json.\n")
    atomic_write_text(out_dir / "object_words.json",
                      json.dumps({data.ids[i]: data.object_words[i] for i in range(n)}, indent=1))


def _save_atomic(tensors: dict, path: Path) -> None:
    """safetensors file written to a temporary name and renamed: a killed run never leaves a truncated one."""
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp))
    tmp.replace(path)


def _computed_once(path: Path, compute, rank: int) -> dict[str, torch.Tensor]:
    """{'chosen', 'rejected'} tensors stored at `path` by the first run (rank 0 writes), computed otherwise."""
    from safetensors.torch import load_file

    if path.exists():
        return load_file(str(path))
    chosen, rejected = compute()
    tensors = {"chosen": chosen, "rejected": rejected}
    if rank == 0:
        _save_atomic(tensors, path)
    return tensors


def add_precomputed(adapter: UnifiedModel, data: PairData, t: TrainConfig, out: Path, batch: int,
                     rank: int) -> None:
    """DPO's reference and v3's token weights: from the model before any update, computed once and kept with the
    pairs in `out` (a resumed run reads them back)."""
    if t.dpo_weight:
        ref = _computed_once(out / "reference_logps.safetensors",
                             lambda: reference_logps(adapter, data, batch, t.guidance), rank)
        data.reference_chosen, data.reference_rejected = ref["chosen"], ref["rejected"]
    if t.object_weighting:
        path = out / "object_weights.safetensors"
        fresh = not path.exists()
        w = _computed_once(path, lambda: object_token_weights(adapter, data, t, batch), rank)
        data.chosen_weights, data.rejected_weights = w["chosen"], w["rejected"]
        if fresh and rank == 0:
            write_mask_previews(adapter, data, out / "masks", t.num_previews)
