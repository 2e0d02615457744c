"""The pretraining config: one stage's settings (`PretrainConfig`), read with the run config's loader (ospo.schema:
types checked, unknown fields named with the closest one, `--set` values read as YAML), and the config a run
records and a resumed run must keep (`resume_config`)."""

from __future__ import annotations

import functools
import json
import typing
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from ospo.artifacts import atomic_write_text
from ospo.schema import ConfigError, build_config, field_choices, one_of, parse_value, typed_fields
from ospo.errors import InputError, OspoError
from ospo.shapeworld.pretrain.find import FIND_QUESTIONS, is_find_kind
from ospo.shapeworld.pretrain.mixture import TEXT_TASKS

DATA_VERSION = 1  # bump when the mixture's content changes: the checkpoint records it

# Every random draw of pretraining comes from np.random.default_rng([seed, stream, step]); streams: 1 VQ batches,
# 2 LM mixture, 3 vision phase, 4 align phase, 5 find phase, 6 text phase, 7 VQ read-back, 9 dev evaluation.
FIND_STREAM = 5
TEXT_STREAM = 6


@dataclass(frozen=True)
class PretrainConfig:
    seed: int = 0
    vq_steps: int = 600  # VQ decoder steps
    vq_stop_at: int = 0  # end the VQ phase after this step, its lr schedule still spanning `vq_steps` (the shipped
    # VQ ran 1600 steps of a 7000-step schedule: pretrain/recipes/shipped.yaml); 0 = at `vq_steps`
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
    bf16: str = one_of("auto", "auto", "true", "false")  # bfloat16 autocast for forward passes (weights and
    # optimizer stay fp32): "true", "false" or "auto" = where the CPU runs bf16 matmuls natively (`native_bf16`:
    # AVX512-class x86, Arm with BF16). The shipped checkpoint was made with bf16 on. On an AVX2-only CPU bf16 is
    # emulated, ~10x slower than fp32 (docs/experiments/pretraining.md). A new run records what "auto" chose in its
    # saved config; a resumed run keeps it
    t2i_weight: float = 1.0  # weight of the (token-mean) text-to-image loss in the mixture's sum
    t2i_packed_steps: int = 0  # curriculum: the first N LM steps draw text-to-image examples packed into the first cells
    factor_head: bool = False  # generation head's output layer = per-code weights + shared (shape, colour, texture,
    # background) weights while pretraining, folded into one plain Linear when saved; from scratch it also starts
    # the head near-linear (init_generation_head)
    align_steps: int = 0  # aligner phase after the vision phase: fresh aligner trained so that its (RMS-normalised)
    # image tokens separate cell contents linearly (temporary heads, vision tower frozen); 0 = skip
    align_target: str = one_of("cells", "cells", "words")  # "cells": linear cell classification; "words": each
    # image token regresses onto the sum of the LM's own input embeddings of its cell's words (shape, colour,
    # texture, background), see word_targets
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
        for key, choices in field_choices(PretrainConfig).items():  # a config built in code, not by the loader
            if getattr(self, key) not in choices:
                raise InputError(f"{key} takes {', '.join(choices[:-1])} or {choices[-1]}, not {getattr(self, key)!r}")
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


# Fields that earlier versions of pretraining had, with the value that left them off: a saved config holding
# that value reads as today's config; any other value names the field (its code is at git tag notebook-2026-12-07).
REMOVED_FIELDS = {"align_vision": False, "batch_describe": 0, "describe_curriculum_steps": 0, "batch_mix_find": 0,
                  "mix_find_kinds": "relation+line~0.5", "vqa_balanced": False, "mix_text_tasks": "",
                  "find_at_lm_step": 0, "rewarm": False, "fresh_optimizer": False}


def config_fields(values: dict, where: str = "") -> dict:
    """Typed PretrainConfig fields from user input (`--set` texts or a recipe's YAML values), by the run config's
    loader: a text given for a field that is not a string is read as YAML, as `--set` reads run config values
    ("800" -> 800, "true" -> true, "1e-3" -> 0.001); an unknown field names the closest one; a value of the wrong
    type, or not one of a field's choices, is refused naming both. `where` (e.g. "--set") prefixes the messages."""
    hints = typing.get_type_hints(PretrainConfig)
    parsed = {k: parse_value(v) if isinstance(v, str) and hints.get(k, object) is not str else v
              for k, v in values.items()}
    try:
        return typed_fields(PretrainConfig, parsed, noun="pretraining field")
    except ConfigError as e:
        where = where.rstrip(": ")
        raise ConfigError(f"{where}: {e}" if where else str(e)) from None


def saved_config(values: dict, where: str = "a saved pretraining config") -> PretrainConfig:
    """A PretrainConfig from a saved dict, including those written before the fields of REMOVED_FIELDS went."""
    kept = {k: v for k, v in values.items() if k not in REMOVED_FIELDS}
    used = sorted(k for k, v in values.items() if k in REMOVED_FIELDS and v != REMOVED_FIELDS[k])
    if used:
        raise InputError(f"{where} uses removed pretraining option(s) {used}; run it with the code at git tag "
                         "notebook-2026-12-07")
    try:
        return build_config(PretrainConfig, kept, noun="pretraining field")
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def resume_config(out_dir: Path, cfg: PretrainConfig) -> PretrainConfig:
    """The config a resumed run must keep using; a new run writes its own, with `bf16="auto"` resolved on this
    machine (a resumed run asked for "auto" keeps the precision it started with)."""
    path = out_dir / "pretrain-state" / "pretrain_config.json"
    if path.exists():
        saved = saved_config(json.loads(path.read_text()), str(path))
        if cfg.bf16 == "auto":
            cfg = replace(cfg, bf16=saved.bf16)
        if saved != cfg:
            differ = {k: (v, getattr(cfg, k)) for k, v in asdict(saved).items() if getattr(cfg, k) != v}
            raise OspoError(f"{out_dir} holds a pretraining run with another config (field: (saved, asked) "
                            f"{differ}); use a new --out or the same settings (saved: {path})")
        return saved
    if cfg.bf16 == "auto":
        cfg = replace(cfg, bf16="true" if native_bf16() else "false")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(asdict(cfg), indent=1))
    return cfg


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU runs bf16 matmuls natively (oneDNN's own check: AVX512-class x86 or Arm with BF16). Elsewhere
    torch's CPU autocast to bf16 falls back to slow kernels, an order of magnitude slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without the private op: judge by the kernels torch dispatches to
        return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def _autocast(cfg: PretrainConfig):
    return torch.autocast("cpu", dtype=torch.bfloat16,
                          enabled=cfg.bf16 == "true" or (cfg.bf16 == "auto" and native_bf16()))
