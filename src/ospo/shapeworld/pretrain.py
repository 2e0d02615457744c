"""Pretraining the tiny ShapeWorld Janus on 2 CPU cores: `ospo shapeworld pretrain --out DIR [--seed S]`.

Two phases, both checkpointed and resumable (the data of step s is drawn from a generator seeded with
(seed, phase, s), so a resumed run sees exactly the batches an uninterrupted one would):
1. VQ decoder: codes by construction (codes.py) -> learn the codebook vectors and decoder that paint each
   code's 16 px cell, on random whole code grids.
2. Everything else but the VQ: text-to-image (caption -> codes, with unconditional rows for CFG), yes/no VQA
   on rendered images, and the text tasks the OSPO stages ask of the model (mixture.py).
The result is saved with `save_pretrained` (safetensors) and loads through `JanusAdapter.from_pretrained`.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ospo.artifacts import atomic_write_text
from ospo.sampling import ImageSampling
from ospo.shapeworld import codes as world_codes
from ospo.tiny import TinyJanusSpec

log = logging.getLogger(__name__)

DATA_VERSION = 1  # bump when the mixture's content changes: the checkpoint records it


def shapeworld_spec(vocab_words=()) -> TinyJanusSpec:
    """The shipped model's sizes: one SigLIP patch and one VQ code per 16 px cell (8x8 = 64 tokens)."""
    # VQ: 64 channels at every level (GroupNorm(32) needs >= 2 channels a group to keep absolute colour) and one
    # residual block a level keep the decoder cheap enough to train on 2 cores.
    return TinyJanusSpec(image_size=128, patch_size=16, vq_channel_multiplier=(1, 1, 1, 1, 1), hidden_size=256,
                         num_layers=4, num_heads=8, intermediate_size=768, vision_hidden_size=128, vision_layers=2,
                         codebook_size=world_codes.num_codes(), vq_embed_dim=16, vq_base_channels=64,
                         vq_num_res_blocks=0, max_position_embeddings=256, extra_words=tuple(vocab_words))


# Every random draw of pretraining comes from np.random.default_rng([seed, stream, step]); streams: 1 VQ batches,
# 2 LM mixture, 3 vision phase, 4 align phase, 5 find phase, 6 text phase, 7 VQ read-back, 9 dev evaluation.
FIND_STREAM = 5
TEXT_STREAM = 6


@dataclass(frozen=True)
class PretrainConfig:
    seed: int = 0
    vq_steps: int = 600  # VQ decoder steps
    vq_stop_at: int = 0  # end the VQ phase after this step, its lr schedule still spanning `vq_steps` (the shipped
    # VQ ran 1600 steps of a 7000-step schedule: pretrain_recipes/shipped.yaml); 0 = at `vq_steps`
    vq_batch: int = 6
    vq_lr: float = 1e-3
    lm_steps: int = 2400  # steps of the LM mixture
    batch_t2i: int = 32
    batch_vqa: int = 24
    batch_text: int = 16
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    p_uncond: float = 0.1  # share of text-to-image rows trained as the unconditional CFG branch
    checkpoint_every: int = 100
    eval_every: int = 600  # dev-split evaluation (0 = never)
    threads: int = 2
    init_from: str = ""  # continue from a saved checkpoint's weights (a second, lower-lr stage; "" = from scratch)
    vision_steps: int = 400  # vision tower: cell-content classification (temporary heads, discarded)
    vision_batch: int = 32
    vision_lr: float = 3e-3
    bf16: str = "auto"  # bfloat16 autocast for forward passes (weights and optimizer stay fp32): "true", "false" or
    # "auto" = where the CPU runs bf16 matmuls natively (`native_bf16`: AVX512-class x86, Arm with BF16). The shipped
    # checkpoint was made with bf16 on. On an AVX2-only CPU bf16 is emulated, ~10x slower than fp32
    # (docs/experiments/pretraining.md). A new run records what "auto" chose in its saved config; a resumed run
    # keeps it
    t2i_weight: float = 1.0  # weight of the (token-mean) text-to-image loss in the mixture's sum
    t2i_packed_steps: int = 0  # curriculum: the first N LM steps draw text-to-image examples packed into the first cells
    factor_head: bool = False  # generation head's output layer = per-code weights + shared (shape, colour, texture,
    # background) weights while pretraining, folded into one plain Linear when saved; from scratch it also starts
    # the head near-linear (init_generation_head)
    align_steps: int = 0  # aligner phase after the vision phase: fresh aligner trained so that its (RMS-normalised)
    # image tokens separate cell contents linearly (temporary heads, vision tower frozen); 0 = skip
    align_target: str = "cells"  # "cells": linear cell classification; "words": each image token regresses onto the
    # sum of the LM's own input embeddings of its cell's words (shape, colour, texture, background), see word_targets
    freeze_vision: bool = False  # keep the vision tower of the vision phase fixed during the LM mixture
    freeze_aligner: bool = False  # keep the aligner of the align phase fixed during the LM mixture (the mixture
    # otherwise pulls it away from its target: docs/experiments/finding-objects.md)
    vqa_curriculum_steps: int = 0  # the first N LM steps draw VQA scenes with each object in several cells
    # (mixture.replicate), from `vqa_curriculum_copies` copies down to 1 linearly; 0 = off
    vqa_curriculum_copies: int = 32
    find_steps: int = 0  # find phase between the align and LM phases: the LM alone (vision tower and aligner frozen)
    # on yes/no questions about one-object scenes (mixture.sample_find: shape-only "is there a <shape> ?" and
    # background; relation and count questions too while the object is replicated). It teaches the model to find
    # a glyph when the LM has first read the aligned tokens through a mixture stage (init_from such a run), not
    # right after the align phase (docs/experiments/finding-objects.md). 0 = skip
    find_batch: int = 24
    find_curriculum_steps: int = 0  # the first N find steps draw the object in several cells, from
    # `vqa_curriculum_copies` copies (shared with the VQA curriculum) down to 1 linearly; 0 = one copy throughout.
    # With several stages, each stage restarts it over the same share of its own steps.
    find_stages: str = "shape"  # the find phase's question stages, in order, splitting `find_steps` equally:
    # comma-separated, each a "+"-joined set of mixture.FIND_QUESTIONS kinds drawn uniformly per row, e.g.
    # "name,color+name": name the one object's colour, then yes/no about its colour (keeping the naming);
    # "line~0,line~0.2,relation~0.2,relation": relations one direction first, two objects on one row first
    # (mixture.left_right_example, mixture.skewed_relation_example)
    text_steps: int = 0  # text phase between the find and LM phases: the LM alone on text tasks (no image),
    # `text_batch` rows a step of the tasks in `text_tasks` (comma-separated mixture.TEXT_TASKS, drawn uniformly).
    # The shipped recipe's last stage trains 600 steps of perturbations, then 300 mixture steps
    # (docs/experiments/perturbations.md). 0 = skip
    text_batch: int = 32
    text_tasks: str = "perturb"  # a task named twice is drawn twice as often

    def __post_init__(self):
        from ospo.errors import InputError
        from ospo.shapeworld.mixture import FIND_QUESTIONS, TEXT_TASKS, is_find_kind

        if isinstance(self.bf16, bool):  # configs saved before "auto" hold a bool
            object.__setattr__(self, "bf16", str(self.bf16).lower())
        if self.bf16 not in CHOICES["bf16"]:
            raise InputError(f"bf16 takes {_one_of('bf16')}, not {self.bf16!r}")
        stages = self.find_stages.split(",")
        bad = [k for stage in stages for k in stage.split("+") if not is_find_kind(k)]
        if bad or not all(stages):
            raise InputError(f"find_stages: unknown question kind(s) {bad} in {self.find_stages!r}; use '+'-joined "
                             f"kinds from {FIND_QUESTIONS} or 'relation~P' / 'line~P' (P: the share of reverse "
                             "relation words, 0 to 1), stages comma-separated")
        if any(t not in TEXT_TASKS for t in self.text_tasks.split(",")):  # "".split(",") == [""]: refused too
            raise InputError(f"text_tasks: {self.text_tasks!r} is not a comma-separated list of {TEXT_TASKS}")
        if not 0 <= self.vq_stop_at <= self.vq_steps:
            raise InputError(f"vq_stop_at must be 0 or between 1 and vq_steps ({self.vq_steps}), got {self.vq_stop_at}")
        if self.align_target not in CHOICES["align_target"]:
            raise InputError(f"align_target takes {_one_of('align_target')}, not {self.align_target!r}")


CHOICES = {  # string fields with a fixed set of values (YAML true/false accepted)
    "bf16": ("auto", "true", "false"),
    "align_target": ("cells", "words"),
}


def _one_of(key: str) -> str:
    return ", ".join(CHOICES[key][:-1]) + " or " + CHOICES[key][-1]


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU runs bf16 matmuls natively (oneDNN's own check: AVX512-class x86 or Arm with BF16). Elsewhere
    torch's CPU autocast to bf16 falls back to slow kernels, an order of magnitude slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without the private op: judge by the kernels torch dispatches to
        return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def config_fields(values: dict, where: str) -> dict:
    """Typed PretrainConfig fields from user input (`--set` strings or a recipe's YAML values): an unknown field
    names the closest one; a value that is not of the field's type is refused. `where` prefixes the messages."""
    import difflib
    from dataclasses import fields

    from ospo.errors import InputError

    types = {f.name: type(f.default) for f in fields(PretrainConfig)}
    out = {}
    for key, value in values.items():
        if key not in types:
            close = difflib.get_close_matches(str(key), types, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; fields: {', '.join(types)}"
            raise InputError(f"{where}{key!r}: not a pretraining field{hint}")
        kind = types[key]
        text = value.strip() if isinstance(value, str) else None
        try:
            if kind is bool:
                if isinstance(value, bool):
                    out[key] = value
                elif text is not None and text.lower() in ("1", "true", "yes", "0", "false", "no"):
                    out[key] = text.lower() in ("1", "true", "yes")
                else:
                    raise ValueError
            elif key in CHOICES:
                word = str(value).strip().lower()
                word = {"1": "true", "yes": "true", "0": "false", "no": "false"}.get(word, word)
                if word not in CHOICES[key]:
                    raise ValueError
                out[key] = word
            elif kind is str:
                if not isinstance(value, str):
                    raise ValueError
                out[key] = value
            elif isinstance(value, bool):
                raise ValueError
            elif kind is int:
                number = float(text) if text is not None else value
                if not isinstance(number, (int, float)) or number != int(number):
                    raise ValueError
                out[key] = int(number)
            else:
                out[key] = float(text if text is not None else value)
        except (ValueError, TypeError, OverflowError):
            wanted = (_one_of(key) if key in CHOICES else
                      {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[kind])
            raise InputError(f"{where}{key}={value!r}: {key} takes {wanted}") from None
    return out


# ------------------------------------------------------------------------------------------------ VQ decoder
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


def _autocast(cfg: PretrainConfig):
    return torch.autocast("cpu", dtype=torch.bfloat16,
                          enabled=cfg.bf16 == "true" or (cfg.bf16 == "auto" and native_bf16()))


@torch.no_grad()
def vq_readback(vq, seed: int, num_scenes: int = 48) -> float:
    """Share of objects the oracle reads back exactly (shape, colour, texture, cell) from decoded dev scenes;
    misses and false detections both count against (|truth & read| / |truth | read|)."""
    from ospo.shapeworld import mixture, oracle

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


def _optimizer_step(opt, loss: torch.Tensor, phase: str, step: int, clip_params=None) -> float | None:
    """Backward and one optimizer step (gradients clipped to norm 1 over `clip_params` when given; returns that
    norm). A non-finite loss stops the run before the step, so the last checkpoint holds good weights."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(clip_params, 1.0) if clip_params is not None else None
    if not torch.isfinite(loss):
        from ospo.errors import OspoError

        raise OspoError(f"pretraining loss became {loss.item()} in the {phase} phase at step {step}; "
                        "the last checkpoint is kept")
    opt.step()
    return None if grad_norm is None else float(grad_norm)


def _truncate_log(state_dir: Path, phase: str, start: int) -> None:
    """Drops the rows of `phase` past the checkpoint a run resumes from (they are redone)."""
    path = state_dir / "log.jsonl"
    if path.exists():
        rows = [line for line in path.read_text().splitlines()
                if json.loads(line).get("phase") != phase or json.loads(line)["step"] <= start]
        atomic_write_text(path, "".join(r + "\n" for r in rows))


def _log(state_dir: Path, row: dict) -> None:
    """Appends one row to the run's log.jsonl."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / "log.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def _logged_metrics(state_dir: Path, phase: str) -> dict:
    """The metrics of `phase`'s last log row (a resumed run reports a finished phase's own numbers)."""
    rows = [json.loads(line) for line in (state_dir / "log.jsonl").read_text().splitlines()]
    last = [r for r in rows if r["phase"] == phase][-1:]
    return {k: v for r in last for k, v in r.items() if k not in ("phase", "step")}


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


# ------------------------------------------------------------------------------------------------ vision tower
def cell_labels() -> torch.Tensor:
    """(num_codes, 4) factorised labels of every code: shape (0 = empty), colour (0 = empty), texture (0 = empty),
    background."""
    from ospo.shapeworld.world import BACKGROUNDS, COLORS, SHAPES, TEXTURES

    rows = []
    for e in world_codes.code_table():
        if e[0] == "empty":
            rows.append((0, 0, 0, list(BACKGROUNDS).index(e[1])))
        else:
            rows.append((1 + SHAPES.index(e[1]), 1 + list(COLORS).index(e[2]), 1 + TEXTURES.index(e[3]),
                         list(BACKGROUNDS).index(e[4])))
    return torch.tensor(rows)


def _cell_batch(processor, cfg: PretrainConfig, stream: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels of `cfg.vision_batch` random scenes (up to 12 objects) and each cell's `cell_labels`, drawn from
    a generator seeded with (seed, stream, step)."""
    from PIL import Image

    from ospo.shapeworld import mixture
    from ospo.shapeworld.render import render

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
    from ospo.shapeworld.world import BACKGROUNDS, COLORS, SHAPES, TEXTURES

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
    from ospo.shapeworld.world import BACKGROUNDS, COLORS, SHAPES, TEXTURES

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


# ------------------------------------------------------------------------------------------------ generation head
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


# ------------------------------------------------------------------------------------------------ LM mixture
def _lr(cfg: PretrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak, over the mixture's steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.lm_steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def t2i_loss(adapter, prompts: list[str], codes: torch.Tensor, uncond: torch.Tensor) -> torch.Tensor:
    """Token-mean cross-entropy of the image codes given the prompt; rows flagged `uncond` see the CFG
    unconditional prompt instead, so that guidance has a trained unconditional branch."""
    ids, mask = adapter._image_prompt_ids(prompts)
    ids = torch.where(uncond[:, None], adapter.uncond_ids(ids), ids)
    logits, _ = adapter.image_token_logits(ids, mask, codes)
    return F.cross_entropy(logits.flatten(0, 1).float(), codes.flatten())


def answer_loss(adapter, users: list[str], answers: list[str], images=None) -> torch.Tensor:
    """Token-mean cross-entropy of `answer + EOS` after the chat-formatted user turn (with an image if given)."""
    tok, janus = adapter.tokenizer, adapter.janus
    texts = []
    for user, answer in zip(users, answers):
        content = ([{"type": "image"}] if images is not None else []) + [{"type": "text", "text": user}]
        texts.append(adapter.processor.apply_chat_template(
            [{"role": "user", "content": content}, {"role": "assistant", "content": answer}]))
    kwargs = {"images": list(images)} if images is not None else {}
    enc = adapter.processor(text=texts, return_tensors="pt", padding=True, **kwargs)
    n_answer = torch.tensor([len(tok(a, add_special_tokens=False)["input_ids"]) + 1 for a in answers])
    keep = int(n_answer.max()) + 1
    out = janus(**enc, logits_to_keep=keep)  # logits of the last `keep` positions
    logits = out.logits[:, :-1]  # position j predicts token j + 1
    targets = enc["input_ids"][:, -keep + 1:]
    pos = torch.arange(keep - 1).expand(len(texts), -1)
    weight = (pos >= (keep - 1) - n_answer[:, None]).float()
    nll = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none").view_as(weight)
    return (nll * weight).sum() / weight.sum()


def curriculum_copies(curriculum_steps: int, copies: int, step: int) -> int:
    """Copies of each object at `step` of a replication curriculum: `copies` at step 0, down to 1 linearly by
    `curriculum_steps` (at least 1 throughout; 1 when `curriculum_steps` is 0)."""
    if step >= curriculum_steps:
        return 1
    return max(1, round(copies * (1 - step / curriculum_steps)))


def vqa_copies(cfg: PretrainConfig, step: int) -> int:
    """Copies of each object in the VQA scenes of LM step `step` (the `vqa_curriculum_steps` schedule)."""
    return curriculum_copies(cfg.vqa_curriculum_steps, cfg.vqa_curriculum_copies, step)


def find_plan(cfg: PretrainConfig, step: int) -> tuple[tuple[str, ...], int]:
    """(question kinds, copies of the object) of find step `step`: its stage of `cfg.find_stages` (the steps split
    equally, the last stage taking the remainder) and the `find_curriculum_steps` schedule restarted in every
    stage over the same share of its steps, from `vqa_curriculum_copies` copies."""
    stages = [tuple(stage.split("+")) for stage in cfg.find_stages.split(",")]
    length = max(1, cfg.find_steps // len(stages))
    index = min(step // length, len(stages) - 1)
    stage_steps = length if index < len(stages) - 1 else cfg.find_steps - length * index
    curriculum = round(cfg.find_curriculum_steps * stage_steps / max(1, cfg.find_steps))
    return stages[index], curriculum_copies(curriculum, cfg.vqa_curriculum_copies, step - length * index)


def find_copies(cfg: PretrainConfig, step: int) -> int:
    """Copies of the object in the scenes of find step `step` (`find_plan`)."""
    return find_plan(cfg, step)[1]


def find_rows(cfg: PretrainConfig, step: int) -> list:
    """The `mixture.sample_find` rows of find step `step`, drawn from the step's own random stream."""
    from ospo.shapeworld import mixture

    kinds, copies = find_plan(cfg, step)
    rng = np.random.default_rng([cfg.seed, FIND_STREAM, step])
    # one kind: no draw (`pick`), so single-stage runs keep the rows they had before stages existed
    return [mixture.sample_find(rng, copies, mixture.pick(rng, kinds)) for _ in range(cfg.find_batch)]


@dataclass(frozen=True)
class LMBatch:
    """The mixture examples of one LM step."""

    t2i: list
    vqa: list
    text: list
    uncond: np.ndarray  # (batch_t2i,) bool: rows trained as the unconditional CFG branch


def lm_batch(cfg: PretrainConfig, step: int, stream: int = 2) -> LMBatch:
    """The mixture examples of one step, drawn from a generator seeded with (seed, stream, step)."""
    from ospo.shapeworld import mixture

    rng = np.random.default_rng([cfg.seed, stream, step])
    t2i = mixture.sample_t2i_packed if step < cfg.t2i_packed_steps else mixture.sample_t2i
    t2i_rows = [t2i(rng) for _ in range(cfg.batch_t2i)]
    vqa = [mixture.sample_vqa(rng, copies=vqa_copies(cfg, step)) for _ in range(cfg.batch_vqa)]
    text = [mixture.sample_text(rng) for _ in range(cfg.batch_text)]
    uncond = rng.random(cfg.batch_t2i) < cfg.p_uncond
    return LMBatch(t2i_rows, vqa, text, uncond)


def lm_step_loss(adapter, batch: LMBatch) -> dict[str, torch.Tensor]:
    """One loss per stream of `batch`."""
    codes = torch.from_numpy(np.stack([e.codes for e in batch.t2i]))
    return {"t2i": t2i_loss(adapter, [e.prompt for e in batch.t2i], codes, torch.from_numpy(batch.uncond)),
            "vqa": answer_loss(adapter, [e.question for e in batch.vqa], [e.answer for e in batch.vqa],
                               [e.image for e in batch.vqa]),
            "text": answer_loss(adapter, [e.instruction for e in batch.text], [e.answer for e in batch.text])}


def lm_parameters(model, freeze_vision: bool = False, freeze_aligner: bool = False) -> list:
    """Freezes the VQ tokenizer (and the vision tower / the aligner when asked) and returns everything else."""
    frozen = ("model.vqmodel.",) + (("model.vision_model.",) if freeze_vision else ()) + (
        ("model.aligner.",) if freeze_aligner else ())
    params = []
    for name, p in model.named_parameters():
        p.requires_grad_(not name.startswith(frozen))
        if p.requires_grad:
            params.append(p)
    return params


def train_find(adapter, cfg: PretrainConfig, state_dir: Path, progress=None) -> dict:
    """The find phase (`cfg.find_steps`): the LM alone on `find_rows`; checkpointed every `checkpoint_every` steps
    and resumed exactly.

    It copies the research probe's training, the one setting where the LM learned to find a glyph: the vision
    tower and the aligner frozen whatever `cfg.freeze_*` says (trained with the LM, the aligner drifts off the
    tokens it was aligned to and nothing is learned), a constant lr and an optimizer of its own (the LM phase's
    warm-up and decay belong to the mixture)."""
    def loss(step):
        rows = find_rows(cfg, step)
        return answer_loss(adapter, [e.question for e in rows], [e.answer for e in rows], [e.image for e in rows])

    return _train_rows(adapter, cfg, state_dir, "find", cfg.find_steps, loss, progress,
                       lambda step: {"copies": find_copies(cfg, step)})


def text_rows(cfg: PretrainConfig, step: int) -> list:
    """The `mixture.sample_text` rows of text step `step` (tasks of `cfg.text_tasks`), from the step's own stream."""
    from ospo.shapeworld import mixture

    rng = np.random.default_rng([cfg.seed, TEXT_STREAM, step])
    return [mixture.sample_text(rng, task=mixture.pick(rng, cfg.text_tasks.split(","))) for _ in range(cfg.text_batch)]


def train_text(adapter, cfg: PretrainConfig, state_dir: Path, progress=None) -> dict:
    """The text phase (`cfg.text_steps`): the LM alone on `text_rows`, like the find phase (own optimizer,
    constant lr, checkpointed and resumed exactly)."""
    def loss(step):
        rows = text_rows(cfg, step)
        return answer_loss(adapter, [e.instruction for e in rows], [e.answer for e in rows])

    return _train_rows(adapter, cfg, state_dir, "text", cfg.text_steps, loss, progress)


def _train_rows(adapter, cfg: PretrainConfig, state_dir: Path, phase: str, steps: int, step_loss, progress=None,
                extra=None) -> dict:
    """A phase that trains the LM alone (vision tower and aligner frozen) on `step_loss(step)` for `steps` steps."""
    if not steps:
        return {}
    model = adapter.janus
    params = lm_parameters(model, freeze_vision=True, freeze_aligner=True)
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.0)
    start = _load_state(state_dir, phase, model, opt)
    if start >= steps:
        return _logged_metrics(state_dir, phase)
    _truncate_log(state_dir, phase, start)
    model.train()
    model.model.vqmodel.eval()
    model.model.vision_model.eval()
    recent: list[float] = []
    for step in range(start, steps):
        with _autocast(cfg):
            loss = step_loss(step)
        _optimizer_step(opt, loss, phase, step, params)
        recent.append(loss.item())
        if progress:
            progress(step + 1, steps, {phase: loss.item(), **(extra(step) if extra else {})})
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == steps:
            metrics = {phase: float(np.mean(recent))}
            _log(state_dir, {"phase": phase, "step": step + 1, **metrics})
            recent = []
            _save_state(state_dir, phase, step + 1, model, opt, metrics)
    model.eval()
    return _logged_metrics(state_dir, phase)


def train_lm(adapter, cfg: PretrainConfig, state_dir: Path, progress=None, evaluate=None) -> dict:
    """The LM mixture's `cfg.lm_steps` steps, checkpointed every `checkpoint_every` steps and resumed exactly."""
    phase, last = "lm", cfg.lm_steps
    model = adapter.janus
    params = lm_parameters(model, cfg.freeze_vision, cfg.freeze_aligner)
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    start = _load_state(state_dir, phase, model, opt)
    recent: list[dict] = []
    state_dir.mkdir(parents=True, exist_ok=True)
    _truncate_log(state_dir, phase, start)
    for step in range(start, last):
        model.train()
        model.model.vqmodel.eval()
        if cfg.freeze_vision:
            model.model.vision_model.eval()
        for g in opt.param_groups:
            g["lr"] = _lr(cfg, step)
        with _autocast(cfg):
            losses = lm_step_loss(adapter, lm_batch(cfg, step))
        loss = sum(v * (cfg.t2i_weight if k == "t2i" else 1.0) for k, v in losses.items())
        grad_norm = _optimizer_step(opt, loss, phase, step, params)
        row = {"step": step + 1, "lr": _lr(cfg, step), "grad_norm": grad_norm,
               **{k: v.item() for k, v in losses.items()}}
        recent.append(row)
        if progress:
            progress(step + 1, cfg.lm_steps, row)
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == last:
            metrics = {}
            if evaluate is not None and cfg.eval_every and ((step + 1) % cfg.eval_every == 0 or step + 1 == cfg.lm_steps):
                model.eval()
                metrics = evaluate(adapter)
            mean = {k: float(np.mean([r[k] for r in recent])) for k in ("t2i", "vqa", "text", "grad_norm")}
            _log(state_dir, {"phase": phase, "step": step + 1, "lr": row["lr"], **mean, **metrics})
            recent = []
            _save_state(state_dir, phase, step + 1, model, opt, {**mean, **metrics})
    model.eval()
    return json.loads((state_dir / "position.json").read_text())["metrics"]


# ------------------------------------------------------------------------------------------------ checkpoints
def _save_state(state_dir: Path, phase: str, step: int, model, opt, metrics: dict) -> None:
    """Atomically replaces the resumable state: model weights (safetensors), optimizer state, position."""
    from safetensors.torch import save_file

    state_dir.mkdir(parents=True, exist_ok=True)
    tmp_model, tmp_opt = state_dir / "model.safetensors.tmp", state_dir / "optimizer.pt.tmp"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_model))
    if opt is not None:
        torch.save(opt.state_dict(), tmp_opt)
    tmp_model.replace(state_dir / "model.safetensors")
    if opt is not None:
        tmp_opt.replace(state_dir / f"optimizer-{phase}.pt")
    atomic_write_text(state_dir / "position.json", json.dumps({"phase": phase, "step": step, "metrics": metrics}))


def _load_state(state_dir: Path, phase: str, model, opt) -> int:
    """Restores the state of `phase` if a checkpoint of it (or of a later phase) exists; returns the step."""
    from safetensors.torch import load_file

    pos_file = state_dir / "position.json"
    if not pos_file.exists():
        return 0
    pos = json.loads(pos_file.read_text())
    order = ["vq", "vision", "align", "find", "text", "lm"]
    if order.index(pos["phase"]) < order.index(phase):
        model.load_state_dict(load_file(str(state_dir / "model.safetensors")))
        return 0
    model.load_state_dict(load_file(str(state_dir / "model.safetensors")))
    if pos["phase"] == phase and opt is not None:
        opt_file = state_dir / f"optimizer-{phase}.pt"
        if opt_file.exists():  # absent after a finished run removed it: nothing is left to train
            opt.load_state_dict(torch.load(opt_file, weights_only=True))
            log.info("resuming %s at step %d", phase, pos["step"])
        return pos["step"]
    return 10**9  # this phase finished earlier


# Fields that earlier versions of pretraining had, with the value that left them off: a saved config holding
# that value reads as today's config; any other value names the field (its code is at git tag notebook-2026-12-07).
REMOVED_FIELDS = {"align_vision": False, "batch_describe": 0, "describe_curriculum_steps": 0, "batch_mix_find": 0,
                  "mix_find_kinds": "relation+line~0.5", "vqa_balanced": False, "mix_text_tasks": "",
                  "find_at_lm_step": 0, "rewarm": False, "fresh_optimizer": False}


def saved_config(values: dict, where: str = "a saved pretraining config") -> PretrainConfig:
    """A PretrainConfig from a saved dict, including those written before the fields of REMOVED_FIELDS went."""
    from ospo.errors import InputError

    kept = {k: v for k, v in values.items() if k not in REMOVED_FIELDS}
    used = sorted(k for k, v in values.items() if k in REMOVED_FIELDS and v != REMOVED_FIELDS[k])
    if used:
        raise InputError(f"{where} uses removed pretraining option(s) {used}; run it with the code at git tag "
                         "notebook-2026-12-07")
    return PretrainConfig(**kept)


def load_config(out_dir: Path, cfg: PretrainConfig) -> PretrainConfig:
    """The config a resumed run must keep using; a new run writes its own, with `bf16="auto"` resolved on this
    machine (a resumed run asked for "auto" keeps the precision it started with)."""
    path = out_dir / "pretrain-state" / "pretrain_config.json"
    if path.exists():
        saved = saved_config(json.loads(path.read_text()), str(path))
        if cfg.bf16 == "auto":
            cfg = replace(cfg, bf16=saved.bf16)
        if saved != cfg:
            from ospo.errors import OspoError

            differ = {k: (v, getattr(cfg, k)) for k, v in asdict(saved).items() if getattr(cfg, k) != v}
            raise OspoError(f"{out_dir} holds a pretraining run with another config (field: (saved, asked) "
                            f"{differ}); use a new --out or the same settings (saved: {path})")
        return saved
    if cfg.bf16 == "auto":
        cfg = replace(cfg, bf16="true" if native_bf16() else "false")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(asdict(cfg), indent=1))
    return cfg


def assemble(vq_weights: str | Path, lm_weights: str | Path, out_dir: str | Path, provenance: dict,
             spec: TinyJanusSpec | None = None) -> Path:
    """Joins the VQ of one run and everything else of another (the phases are independent, see
    `reinit_outside_vq`) into a checkpoint: safetensors weights of a pretraining state or a saved model."""
    from safetensors.torch import load_file

    from ospo.shapeworld.world import vocabulary
    from ospo.tiny import build_tiny_janus

    model, processor = build_tiny_janus(spec or shapeworld_spec(), vocabulary(), seed=0)
    model.generation_config.guidance_scale = 3.0
    vq, lm = load_file(str(vq_weights)), load_file(str(lm_weights))
    state = {k: (vq if k.startswith("model.vqmodel.") else lm)[k] for k in model.state_dict()}
    model.load_state_dict(state)
    model.config.ospo_code_decoder = "shapeworld"
    out = Path(out_dir)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    atomic_write_text(out / "pretrain.json", json.dumps({"data_version": DATA_VERSION, **provenance}, indent=1))
    return out


# ------------------------------------------------------------------------------------------------ driver
def dev_evaluate(adapter, cfg: PretrainConfig, num_per_subcategory: int = 6, num_vqa: int = 192) -> dict:
    """Quick dev-split numbers (never the evaluation sets): GenEval-rule accuracy of generated images, VQA
    accuracy on held-out renders and on the model's own images."""
    from ospo.evaluate import shapeworld as sw_eval
    from ospo.shapeworld import evalsets, mixture
    from ospo.templates import load_templates

    records = evalsets.dev_split(num_per_subcategory)
    sampling = ImageSampling(cfg_scale=adapter.janus.generation_config.guidance_scale or 1.0)
    scored, images = sw_eval.generate_and_score(adapter, records, 1, sampling, seed=cfg.seed)
    rng = np.random.default_rng([cfg.seed, 9])
    held_out = [mixture.sample_vqa(rng) for _ in range(num_vqa)]
    from PIL import Image

    vqa = sw_eval.vqa_accuracy(adapter, [Image.fromarray(e.image) for e in held_out], [[e.question] for e in held_out],
                               [[e.answer] for e in held_out])
    own = sw_eval.self_vqa_on_generated(adapter, records, scored, images, load_templates("shapeworld").vqa)
    return {"dev_geneval": float(np.mean([s.score for s in scored])), "dev_vqa_renders": vqa, "dev_vqa_own": own}


def pretrain(out_dir: str | Path, cfg: PretrainConfig = PretrainConfig(), progress=None,
             keep_state: bool = False, spec: TinyJanusSpec | None = None) -> dict:
    """Runs (or resumes) pretraining into `out_dir`; returns the final metrics."""
    from ospo.model import JanusAdapter
    from ospo.shapeworld.world import vocabulary
    from ospo.tiny import build_tiny_janus

    torch.set_num_threads(cfg.threads)
    out, state_dir = Path(out_dir), Path(out_dir) / "pretrain-state"
    cfg = load_config(out, cfg)
    model, processor = build_tiny_janus(spec or shapeworld_spec(), vocabulary(), seed=cfg.seed)
    model.generation_config.guidance_scale = 3.0
    model.config.ospo_code_decoder = "shapeworld"  # decode = exact painting of the by-construction codes (ospo.registry)
    reinit_outside_vq(model, cfg.seed)
    init_code_embeddings(model)
    if cfg.init_from:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(Path(cfg.init_from) / "model.safetensors")))
    elif cfg.factor_head:
        init_generation_head(model)
    if cfg.factor_head:
        add_factor_head(model)
    vq_metrics = train_vq_decoder(model, cfg, state_dir, progress and (lambda s, n, m: progress("vq", s, n, m)))
    vision_metrics = train_vision(model, processor, cfg, state_dir,
                                  progress and (lambda s, n, m: progress("vision", s, n, m)))
    vision_metrics.update(train_aligner(model, processor, cfg, state_dir,
                                        progress and (lambda s, n, m: progress("align", s, n, m))))
    adapter = JanusAdapter(model, processor, name="shapeworld-janus", batch_size=64)
    find_metrics = train_find(adapter, cfg, state_dir, progress and (lambda s, n, m: progress("find", s, n, m)))
    text_metrics = train_text(adapter, cfg, state_dir, progress and (lambda s, n, m: progress("text", s, n, m)))
    metrics = train_lm(adapter, cfg, state_dir, progress and (lambda s, n, m: progress("lm", s, n, m)),
                       evaluate=lambda a: dev_evaluate(a, cfg))
    fold_factor_head(model)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    info = {"pretrain_config": asdict(cfg), "data_version": DATA_VERSION, "vq": vq_metrics, "vision": vision_metrics,
            "find": find_metrics, "text": text_metrics, "final": metrics}
    atomic_write_text(out / "pretrain.json", json.dumps(info, indent=1))
    if (state_dir / "log.jsonl").exists():
        atomic_write_text(out / "pretrain_log.jsonl", (state_dir / "log.jsonl").read_text())
    if not keep_state:
        for f in state_dir.glob("optimizer-*.pt"):
            f.unlink()
    return info
