"""Checkpoint surgery for the ShapeWorld Janus: its sizes, the initialisation pretraining starts from (weights
outside the VQ from the seed alone, factorised code vectors, a near-linear generation head), the factor head's
parametrization, and joining the VQ of one run with everything else of another."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from ospo.artifacts import atomic_write_text
from ospo.shapeworld import codes as world_codes
from ospo.shapeworld.pretrain.config import DATA_VERSION
from ospo.shapeworld.world import BACKGROUNDS, COLORS, SHAPES, TEXTURES, vocabulary
from ospo.tiny import TinyJanusSpec, build_tiny_janus

CFG_SCALE = 3.0  # the guidance the ShapeWorld Janus samples at: its generation config's guidance_scale
CODE_DECODER = "shapeworld"  # decode = exact painting of the by-construction codes (ospo.registry)


def shapeworld_spec(vocab_words=()) -> TinyJanusSpec:
    """The shipped model's sizes: one SigLIP patch and one VQ code per 16 px cell (8x8 = 64 tokens)."""
    # VQ: 64 channels at every level (GroupNorm(32) needs >= 2 channels a group to keep absolute colour) and one
    # residual block a level keep the decoder cheap enough to train on 2 cores.
    return TinyJanusSpec(image_size=128, patch_size=16, vq_channel_multiplier=(1, 1, 1, 1, 1), hidden_size=256,
                         num_layers=4, num_heads=8, intermediate_size=768, vision_hidden_size=128, vision_layers=2,
                         codebook_size=world_codes.num_codes(), vq_embed_dim=16, vq_base_channels=64,
                         vq_num_res_blocks=0, max_position_embeddings=256, extra_words=tuple(vocab_words))


def _reinit(model, module) -> None:
    """`model._init_weights(module)`, also for weights `from_pretrained` loaded: transformers flags those tensors
    as initialised and its init functions then leave them as they are."""
    for p in module.parameters(recurse=False):
        p._is_hf_initialized = False
    model._init_weights(module)


def reinit_outside_vq(model, seed: int) -> None:
    """Re-draws every weight outside the VQ from `seed` alone, so the VQ's architecture (which the constructor
    builds first) never changes the LM's initialisation: the two phases stay independent."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, module in model.named_modules():
            if name and not name.startswith("model.vqmodel"):
                _reinit(model, module)


def init_code_embeddings(model) -> None:
    """Factorised code vectors (codes.code_features) as the frozen VQ codebook and as the initial image-token
    embeddings of the LM."""
    features = torch.from_numpy(world_codes.code_features(model.config.vq_config.embed_dim))
    with torch.no_grad():
        model.model.vqmodel.quantize.embedding.weight.copy_(features)
        model.model.generation_embeddings.weight.copy_(features)
    model.model.vqmodel.quantize.embedding.weight.requires_grad_(False)


def cell_labels() -> torch.Tensor:
    """(num_codes, 4) factorised labels of every code: shape (0 = empty), colour (0 = empty), texture (0 = empty),
    background."""
    rows = []
    for e in world_codes.code_table():
        if e[0] == "empty":
            rows.append((0, 0, 0, list(BACKGROUNDS).index(e[1])))
        else:
            rows.append((1 + SHAPES.index(e[1]), 1 + list(COLORS).index(e[2]), 1 + TEXTURES.index(e[3]),
                         list(BACKGROUNDS).index(e[4])))
    return torch.tensor(rows)


def factor_matrix() -> torch.Tensor:
    """(num_codes, num_factors) 0/1: each code's shape, colour, texture (each with an "empty" value) and
    background, one-hot per factor (the factors of `cell_labels`)."""
    labels = cell_labels()
    sizes = [int(n) for n in labels.max(0).values + 1]
    return torch.cat([F.one_hot(labels[:, i], n) for i, n in enumerate(sizes)], dim=1).float()


class FactorWeights(torch.nn.Module):
    """Parametrization W = R + F @ A of the generation head's output weights: R per code (the plain weights), A
    per factor, shared by the ~150 codes with that shape, colour, texture or background. Every glyph seen then
    also trains its factors' rows, which 604 independent rows (each seen a few times a step) do not. Exactly a
    Linear once folded (`fold_factor_head`)."""

    def __init__(self, factors: torch.Tensor, width: int):
        super().__init__()
        self.register_buffer("factors", factors, persistent=False)
        self.shared = torch.nn.Parameter(torch.zeros(factors.shape[1], width))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.factors @ self.shared


def add_factor_head(model) -> None:
    import torch.nn.utils.parametrize as parametrize

    head = model.model.generation_head.vision_head
    parametrize.register_parametrization(head, "weight", FactorWeights(factor_matrix(), head.in_features))


def fold_factor_head(model) -> None:
    """Replaces the parametrization by its current value: a plain Linear that `from_pretrained` loads."""
    import torch.nn.utils.parametrize as parametrize

    head = model.model.generation_head.vision_head
    if parametrize.is_parametrized(head, "weight"):
        parametrize.remove_parametrizations(head, "weight", leave_parametrized=True)


def init_generation_head(model, bias: float = 3.0) -> None:
    """proj_out = identity with a bias that puts GELU in its near-linear range, so the head starts as a linear map
    of the LM's last hidden state: from a small-init GELU head a fresh model makes no progress on text-to-image
    where a plain Linear head learns the glyph (docs/experiments/pretraining.md)."""
    proj = model.model.generation_head.proj_out
    if proj.in_features != proj.out_features:
        return
    with torch.no_grad():
        proj.weight.copy_(torch.eye(proj.in_features))
        proj.bias.fill_(bias)


def assemble(vq_weights: str | Path, lm_weights: str | Path, out_dir: str | Path, provenance: dict,
             spec: TinyJanusSpec | None = None) -> Path:
    """Joins the VQ of one run and everything else of another (the phases are independent, see
    `reinit_outside_vq`) into a checkpoint: safetensors weights of a pretraining state or a saved model."""
    from safetensors.torch import load_file

    model, processor = build_tiny_janus(spec or shapeworld_spec(), vocabulary(), seed=0)
    model.generation_config.guidance_scale = CFG_SCALE
    vq, lm = load_file(str(vq_weights)), load_file(str(lm_weights))
    state = {k: (vq if k.startswith("model.vqmodel.") else lm)[k] for k in model.state_dict()}
    model.load_state_dict(state)
    model.config.ospo_code_decoder = CODE_DECODER
    out = Path(out_dir)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    atomic_write_text(out / "pretrain.json", json.dumps({"data_version": DATA_VERSION, **provenance}, indent=1))
    return out
