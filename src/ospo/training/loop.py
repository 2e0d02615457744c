"""The optimisation loop: plain PyTorch, one screen per piece.

    for step: lr -> rows of the global batch -> for micro-batch: forward [x;y_w] [x;y_l] [x~;y_w] in one batch
      -> objective -> backward -> clip -> AdamW -> log -> checkpoint

Distribution: `accelerate launch` / torchrun start one process per device; `accelerate` places the model and
wraps it for DDP (FSDP and DeepSpeed are not supported: the optimizer is built before `prepare` and gradients
are clipped by hand). The loop itself shards each global batch by hand:
process r of W takes rows [r*G/W, (r+1)*G/W) of global batch s and splits them into micro-batches, so the update
of a step is the same for any W and any gradient accumulation (up to float summation order).
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import numpy as np
import torch

from ospo.config import TrainConfig
from ospo.losses import sequence_logp
from ospo.sampling import item_seed
from ospo.training.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from ospo.training.data import PairData, TrainingError
from ospo.training.metrics import MetricLog
from ospo.training.objective import objective
from ospo.unified import UnifiedModel


# ------------------------------------------------------------------------------------------------ pure pieces
def total_steps(cfg: TrainConfig, num_pairs: int) -> int:
    return cfg.steps if cfg.steps > 0 else max(1, math.ceil(cfg.epochs * num_pairs / cfg.batch_size))


def learning_rate(cfg: TrainConfig, step: int, total: int, base: float) -> float:
    """Linear warm-up over warmup_ratio * total steps, then constant or cosine decay to 0."""
    warm = math.ceil(cfg.warmup_ratio * total)
    if step < warm:
        return base * (step + 1) / warm
    if cfg.schedule == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
    return base


def accumulation(cfg: TrainConfig, world_size: int) -> int:
    """Micro-batches per process per step; the global batch must split evenly."""
    per_process, rest = divmod(cfg.batch_size, world_size)
    if rest or per_process % cfg.micro_batch_size:
        raise TrainingError(f"train.batch_size {cfg.batch_size} must be a multiple of train.micro_batch_size "
                            f"{cfg.micro_batch_size} x {world_size} processes")
    return per_process // cfg.micro_batch_size


def batch_rows(seed: int, num_pairs: int, step: int, batch_size: int) -> np.ndarray:
    """Pair indices of global batch `step`: consecutive slices of per-epoch permutations seeded by (seed, epoch),
    so the data order depends on nothing but the seed (not on processes, accumulation, or resuming)."""
    j = np.arange(step * batch_size, (step + 1) * batch_size)
    epochs = j // num_pairs
    perms = {e: np.random.default_rng([seed, 4, int(e)]).permutation(num_pairs) for e in np.unique(epochs)}
    return np.array([perms[e][k] for e, k in zip(epochs, j % num_pairs)])


def micro_batch(data: PairData, rows: np.ndarray, device) -> tuple[list[str], torch.Tensor, dict]:
    """Prompts and codes of one concatenated forward: [x; y_w], [x; y_l], then [x~; y_w] for rows with a x~."""
    idx = torch.as_tensor(rows, dtype=torch.long)
    has = torch.tensor([data.negative_prompts[i] is not None for i in rows], dtype=torch.bool)
    prompts = [data.prompts[i] for i in rows] * 2 + [data.negative_prompts[i] for i in rows
                                                     if data.negative_prompts[i] is not None]
    codes = torch.cat([data.chosen[idx], data.rejected[idx], data.chosen[idx][has]])
    batch = {"has_negative": has.to(device)}
    for name in ("chosen_weights", "rejected_weights", "reference_chosen", "reference_rejected"):
        t = getattr(data, name)
        if t is not None:
            batch[name] = t[idx].to(device)
    return prompts, codes.to(device), batch


# ------------------------------------------------------------------------------------------------ model
class ImageLogps(torch.nn.Module):
    """The trained network as one module (so DDP sees every forward): (prompt ids, mask, codes) -> (logps,
    uncond): logps (B, N) the per-token log p(code_t | prompt, codes_<t), under classifier-free guidance `guidance`
    when it is not 1; uncond (B, N) the unconditional row's own per-token log-probs then, detached (to watch its
    drift), else None."""

    def __init__(self, adapter: UnifiedModel, guidance: float = 1.0, uncond_grad: bool = True):
        super().__init__()
        self.model = adapter.model  # PEFT-wrapped or plain; registered so DDP/FSDP wrap its parameters
        self._adapter = [adapter]  # not a submodule
        self.guidance, self.uncond_grad = guidance, uncond_grad

    def forward(self, prompt_ids, prompt_mask, codes):
        if self.guidance == 1:
            return self._adapter[0].teacher_forced_logps(prompt_ids, prompt_mask, codes), None
        return self._adapter[0].teacher_forced_logps(prompt_ids, prompt_mask, codes, self.guidance, with_uncond=True,
                                                     uncond_grad=self.uncond_grad)


def prepare_model(adapter: UnifiedModel, cfg: TrainConfig, seed: int = 0):
    """Makes only the trained weights require grad: LoRA on the language model (a new adapter, initialised from
    `seed` alone, or the one the model was loaded with, trained further), or the whole language model. Returns the
    trainable parameters. An empty train.lora.target_modules means the adapter's `lora_target_modules`."""
    model = adapter.model
    if cfg.lora.enabled:
        from peft import LoraConfig, PeftModel, get_peft_model

        if not isinstance(model, PeftModel):
            lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                              target_modules=cfg.lora.target_modules or adapter.lora_target_modules, bias="none")
            with torch.random.fork_rng(devices=[]):  # LoRA A is drawn at random: from the run's seed, not the
                torch.manual_seed(seed)  # global RNG's state
                model = get_peft_model(model, lora)
            adapter.model = model
        for name, p in model.named_parameters():
            p.requires_grad_("lora_" in name)
    else:
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
            adapter.model = model
        for name, p in model.named_parameters():
            p.requires_grad_(adapter.is_language_model_parameter(name))
    params = [p for p in adapter.model.parameters() if p.requires_grad]
    if not params:
        raise TrainingError(f"no parameter matches train.lora.target_modules {cfg.lora.target_modules!r}")
    if cfg.gradient_checkpointing:
        adapter.enable_gradient_checkpointing()
    return params


# ------------------------------------------------------------------------------------------------ the loop
def _bf16(cfg: TrainConfig, device: torch.device) -> bool:
    return cfg.bf16 == "true" or (cfg.bf16 == "auto" and device.type == "cuda")


def _optimizer(params: list, cfg: TrainConfig, lr: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on biases and norms)."""
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr,
                             betas=(cfg.adam_beta1, cfg.adam_beta2))


def _backward(adapter: UnifiedModel, module, acc, data: PairData, cfg: TrainConfig, rows: np.ndarray, step: int,
              out: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """Forward and backward of this process's micro-batches of one step (gradients accumulate; DDP syncs on the
    last). Returns per metric a (sum, count) tensor over the process's pairs."""
    world, device, bf16 = acc.num_processes, acc.device, _bf16(cfg, acc.device)
    accum = len(rows) // cfg.micro_batch_size
    sums: dict[str, torch.Tensor] = {}
    for k in range(accum):
        micro = rows[k * cfg.micro_batch_size:(k + 1) * cfg.micro_batch_size]
        # LoRA dropout's masks from the step and the micro-batch's pairs: a resumed run draws what the uninterrupted
        # one drew, and the same micro-batch draws the same masks in any process
        torch.manual_seed(item_seed(seed, f"train/step-{step}/pairs-{','.join(map(str, micro.tolist()))}"))
        prompts, codes, batch = micro_batch(data, micro, device)
        ids, mask = adapter.image_prompt_ids(prompts)
        sync = k == accum - 1
        ctx = acc.no_sync(module) if not sync and world > 1 else contextlib.nullcontext()
        with ctx:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                token_logps, uncond_logps = module(ids.to(device), mask.to(device), codes)
            b = len(micro)
            logps = {"chosen": token_logps[:b], "rejected": token_logps[b:2 * b], "negative": token_logps[2 * b:]}
            losses, metrics = objective(cfg, logps, batch)
            if uncond_logps is not None:  # the shared unconditional row's likelihood of the chosen images
                metrics["logps/uncond_chosen"] = sequence_logp(uncond_logps[:b].float())
            loss = losses.sum() * world / cfg.batch_size
            if not torch.isfinite(loss):
                kept = list_checkpoints(out)
                raise TrainingError(f"training loss became {loss.item()} at step {step + 1}; stopped before "
                                    f"the update (last good checkpoint: {kept[-1] if kept else 'none'})")
            acc.backward(loss)
        for name, v in [("loss", losses.detach()), *metrics.items()]:
            s = torch.stack([v.float().sum(), torch.tensor(float(v.numel()), device=v.device)])
            sums[name] = sums.get(name, 0) + s
    return sums


def _mean_over_processes(acc, sums: dict[str, torch.Tensor]) -> dict[str, float]:
    """Each metric's mean over the global batch (sums and counts added over processes)."""
    names = sorted(sums)
    reduced = acc.reduce(torch.stack([sums[n] for n in names]).to(acc.device), reduction="sum")
    return {n: float(s[0] / s[1]) for n, s in zip(names, reduced.cpu()) if s[1] > 0}


def train(adapter: UnifiedModel, data: PairData, cfg: TrainConfig, out_dir: str | Path, *, seed: int = 0,
          lr: float | None = None, accelerator=None, progress: bool = True) -> dict:
    """Trains `adapter`'s model on `data` into `out_dir` (resuming from its last checkpoint); returns a summary.

    `lr` overrides cfg.lr (iterations scale it). The adapter's model ends up trained (PEFT-wrapped for LoRA)."""
    from accelerate import Accelerator

    out = Path(out_dir)
    acc = accelerator or Accelerator(cpu=adapter.device.type == "cpu")
    if not len(data):
        raise TrainingError("no training pairs: the selection kept none (see its manifest's rejection reasons)")
    if cfg.guidance is None:  # a RunConfig resolves it to the sampler's images.cfg_scale; a bare TrainConfig cannot
        raise TrainingError("train.guidance is unset: give the scale the losses score at (1 = the conditional branch)")
    world, rank = acc.num_processes, acc.process_index
    accum = accumulation(cfg, world)
    total = total_steps(cfg, len(data))
    base_lr = cfg.lr if lr is None else lr
    params = prepare_model(adapter, cfg, seed)
    module = ImageLogps(adapter, cfg.guidance, cfg.guidance_uncond_grad)
    opt = _optimizer(params, cfg, base_lr)
    start = load_checkpoint(out, adapter.model, opt)
    module, opt = acc.prepare(module, opt)
    logger = MetricLog(out, start, enabled=acc.is_main_process)
    bar = None
    if progress and acc.is_main_process and start < total:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=start, desc="train", unit="step")
    per_process = cfg.batch_size // world
    adapter.model.train()
    last = {}
    try:
        for step in range(start, total):
            for g in opt.param_groups:
                g["lr"] = learning_rate(cfg, step, total, base_lr)
            rows = batch_rows(seed, len(data), step, cfg.batch_size)[rank * per_process:(rank + 1) * per_process]
            sums = _backward(adapter, module, acc, data, cfg, rows, step, out, seed)
            grad_norm = acc.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
            last = _mean_over_processes(acc, sums)
            logger.write({"step": step + 1, "epoch": (step + 1) * cfg.batch_size / len(data),
                          "learning_rate": opt.param_groups[0]["lr"], "grad_norm": float(grad_norm), **last})
            if bar:
                bar.update(1)
                bar.set_postfix(loss=f"{last['loss']:.4f}", acc=f"{last['rewards/accuracies']:.2f}", refresh=False)
            if (cfg.save_every and (step + 1) % cfg.save_every == 0) or step + 1 == total:
                acc.wait_for_everyone()
                if acc.is_main_process:
                    save_checkpoint(out, step + 1, adapter.model, opt, cfg.keep_last)
                acc.wait_for_everyone()
    finally:
        if bar:
            bar.close()
        logger.close()
    adapter.model.eval()
    if not last and total and (out / "log.jsonl").exists():  # resumed at the final checkpoint (killed before the
        # manifest): the last step's metrics are its log row
        from ospo.training.metrics import final_metrics

        last = final_metrics(out / "log.jsonl", total)
    return {"steps": total, "resumed_from": start, "pairs": len(data), "world_size": world,
            "gradient_accumulation": accum, "lr": base_lr, "final": last}
