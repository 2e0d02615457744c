"""Pretraining the tiny ShapeWorld Janus on 2 CPU cores: `ospo shapeworld pretrain --out DIR [--seed S]`, one
stage of the chain a recipe (recipe.py) writes down.

The phases run in order, each checkpointed and resumable (the data of step s is drawn from a generator seeded with
(seed, phase, s), so a resumed run sees exactly the batches an uninterrupted one would): the VQ decoder (vq.py),
the vision tower and the aligner (vision.py), the find and text phases and the LM mixture (lm.py). The result is
saved with `save_pretrained` (safetensors) and loads through `JanusAdapter.from_pretrained`.

Why a loop of its own, not ospo.training: pretraining trains all weights of a model it builds (no LoRA, no
preference pairs), in phases that each train other parameters with their own optimizer, schedule and data stream,
on one CPU process; ospo.training trains an existing checkpoint on selected pairs, sharded over processes through
accelerate. They share the adapter and the checkpoint format, not the step.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ospo.artifacts import atomic_write_text
from ospo.sampling import ImageSampling
from ospo.shapeworld import evalsets
from ospo.shapeworld import scoring as world_scoring
from ospo.shapeworld.pretrain import mixture
from ospo.shapeworld.pretrain.config import DATA_VERSION, PretrainConfig, resume_config
from ospo.shapeworld.pretrain.lm import train_find, train_lm, train_text
from ospo.shapeworld.pretrain.surgery import (
    CFG_SCALE, CODE_DECODER, add_factor_head, fold_factor_head, init_code_embeddings, init_generation_head,
    reinit_outside_vq, shapeworld_spec,
)
from ospo.shapeworld.pretrain.vision import train_aligner, train_vision
from ospo.shapeworld.pretrain.vq import train_vq_decoder
from ospo.shapeworld.world import vocabulary
from ospo.tiny import TinyJanusSpec, build_tiny_janus


def dev_evaluate(adapter, cfg: PretrainConfig, num_per_subcategory: int = 6, num_vqa: int = 192) -> dict:
    """Quick dev-split numbers (never the evaluation sets): GenEval-rule accuracy of generated images, VQA
    accuracy on held-out renders and on the model's own images."""
    from ospo.templates import load_templates

    records = evalsets.dev_split(num_per_subcategory)
    sampling = ImageSampling(cfg_scale=adapter.default_cfg_scale)
    scored, images = world_scoring.generate_and_score(adapter, records, 1, sampling, seed=cfg.seed, desc="dev images")
    rng = np.random.default_rng([cfg.seed, 9])
    held_out = [mixture.sample_vqa(rng) for _ in range(num_vqa)]
    from PIL import Image

    vqa = world_scoring.vqa_accuracy(adapter, [Image.fromarray(e.image) for e in held_out],
                                      [[e.question] for e in held_out], [[e.answer] for e in held_out])
    own = world_scoring.self_vqa_on_generated(adapter, records, scored, images, load_templates("shapeworld").vqa)
    return {"dev_geneval": float(np.mean([s.score for s in scored])), "dev_vqa_renders": vqa, "dev_vqa_own": own}


def pretrain(out_dir: str | Path, cfg: PretrainConfig = PretrainConfig(), progress=None,
             keep_state: bool = False, spec: TinyJanusSpec | None = None) -> dict:
    """Runs (or resumes) pretraining into `out_dir`; returns the final metrics."""
    from ospo.model import JanusAdapter

    torch.set_num_threads(cfg.threads)
    out, state_dir = Path(out_dir), Path(out_dir) / "pretrain-state"
    cfg = resume_config(out, cfg)
    model, processor = build_tiny_janus(spec or shapeworld_spec(), vocabulary(), seed=cfg.seed)
    model.generation_config.guidance_scale = CFG_SCALE
    model.config.ospo_code_decoder = CODE_DECODER
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
