"""The LM phases: the find and text phases (the LM alone on one task, `_train_rows`) and the mixture of
text-to-image, yes/no VQA and text tasks (`train_lm`); each step's rows come from its own random stream."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ospo.shapeworld.pretrain import mixture
from ospo.shapeworld.pretrain.config import FIND_STREAM, TEXT_STREAM, PretrainConfig, _autocast
from ospo.shapeworld.pretrain.state import (
    _load_state, _log, _logged_metrics, _optimizer_step, _save_state, _truncate_log,
)


def _lr(cfg: PretrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak, over the mixture's steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.lm_steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def t2i_loss(adapter, prompts: list[str], codes: torch.Tensor, uncond: torch.Tensor) -> torch.Tensor:
    """Token-mean cross-entropy of the image codes given the prompt; rows flagged `uncond` see the CFG
    unconditional prompt instead, so that guidance has a trained unconditional branch."""
    ids, mask = adapter.image_prompt_ids(prompts)
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
