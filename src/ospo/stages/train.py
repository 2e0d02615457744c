"""Stage 4 — object-centric preference optimisation on the selected pairs: a plain PyTorch loop.

    pairs (select-<rule>/records.jsonl + images/codes) -> [reference log-probs (DPO)] -> [object masks (v3)]
      -> for step: for micro-batch: forward [x;y_w] [x;y_l] [x~;y_w] in one batch -> losses -> backward
         -> clip -> AdamW -> log -> checkpoint

Distribution: `accelerate launch` / torchrun start one process per device; `accelerate` places the model and
wraps it for DDP (FSDP / DeepSpeed through its config). The loop itself shards each global batch by hand:
process r of W takes rows [r*G/W, (r+1)*G/W) of global batch s and splits them into micro-batches, so the update
of a step is the same for any W and any gradient accumulation (up to float summation order).

Output folder `train-<recipe>-<hash>/`: `log.jsonl` (TRL's metric names), `curves.png`, `tensorboard/` (when
tensorboard is installed), `checkpoints/step-NNNNNN/` (resumable, the last `keep_last`), `adapter/` (PEFT LoRA)
or `model/` (full fine-tuning), `merged/` on request, `masks/` previews (v3), `manifest.json` last.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ospo.artifacts import StageDir, atomic_write_text
from ospo.config import RunConfig, TrainConfig, config_hash
from ospo.errors import OspoError
from ospo.losses import Preference, copo_loss, dpo_loss, sequence_logp, sft_loss, simpo_loss
from ospo.records import QuestionSet, Rejected, TrainingPair, id_to_filename

log = logging.getLogger(__name__)
NAME = "train"


class TrainingError(OspoError):
    """Training cannot go on (non-finite loss, batch sizes that do not divide, no pairs)."""


@dataclass
class PairData:
    """The training pairs as tensors; row i of every field belongs to pair `ids[i]`."""

    ids: list[str]
    prompts: list[str]
    negative_prompts: list[str | None]
    chosen: torch.Tensor  # (n, N) long: the sampled code ids of y_w
    rejected: torch.Tensor  # (n, N) long
    object_words: list[list[str]] | None = None
    chosen_weights: torch.Tensor | None = None  # (n, N) v3 token weights
    rejected_weights: torch.Tensor | None = None
    reference_chosen: torch.Tensor | None = None  # (n,) summed log-likelihoods under the initial model (DPO)
    reference_rejected: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.ids)


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


def objective(cfg: TrainConfig, logps: dict, batch: dict) -> tuple[torch.Tensor, dict]:
    """Per-pair total loss (B,) from per-token log-probs and the metrics (per-pair tensors) to log.

    logps: 'chosen', 'rejected' (B, N), 'negative' (B_neg, N) = l(y_w | x~) rows of the pairs with a negative
    prompt (batch['has_negative'] marks them)."""
    lw_tok, ll_tok = logps["chosen"], logps["rejected"]
    lw, ll = sequence_logp(lw_tok), sequence_logp(ll_tok)  # plain token means
    total = torch.zeros_like(lw)
    metrics = {"logps/chosen": lw.detach(), "logps/rejected": ll.detach()}
    primary: Preference | None = None
    if cfg.simpo_weight:
        if cfg.object_weighting:
            wlw = sequence_logp(lw_tok, batch["chosen_weights"])
            wll = sequence_logp(ll_tok, batch["rejected_weights"])
        else:
            wlw, wll = lw, ll
        primary = simpo_loss(wlw, wll, cfg.simpo_beta, cfg.gamma_ratio, cfg.loss_type, cfg.label_smoothing)
        total = total + cfg.simpo_weight * primary.losses
        metrics["loss/simpo"] = primary.losses.detach()
    if cfg.dpo_weight:
        pref = dpo_loss(lw_tok.sum(-1), ll_tok.sum(-1), batch["reference_chosen"], batch["reference_rejected"],
                        cfg.dpo_beta, cfg.loss_type, cfg.label_smoothing)
        total = total + cfg.dpo_weight * pref.losses
        metrics["loss/dpo"] = pref.losses.detach()
        primary = primary or pref
    if cfg.copo_weight and logps.get("negative") is not None and len(logps["negative"]):
        has = batch["has_negative"]
        pref = copo_loss(lw[has], sequence_logp(logps["negative"]), cfg.copo_beta, cfg.gamma_ratio, cfg.loss_type,
                         cfg.label_smoothing)
        copo = torch.zeros_like(lw).masked_scatter(has, pref.losses)
        total = total + cfg.copo_weight * copo
        metrics["loss/copo"] = pref.losses.detach()
        metrics["rewards/copo_margins"] = (pref.chosen_rewards - pref.rejected_rewards)
        metrics["logps/chosen_negative_prompt"] = sequence_logp(logps["negative"]).detach()
    if cfg.sft_weight:
        sft = sft_loss(lw)
        total = total + cfg.sft_weight * sft
        metrics["loss/sft"] = sft.detach()
    if primary is None:  # SFT only: log the plain likelihoods as rewards
        primary = Preference(torch.zeros_like(lw), lw.detach(), ll.detach())
    metrics["rewards/chosen"] = primary.chosen_rewards
    metrics["rewards/rejected"] = primary.rejected_rewards
    metrics["rewards/margins"] = primary.chosen_rewards - primary.rejected_rewards
    metrics["rewards/accuracies"] = (primary.chosen_rewards > primary.rejected_rewards).float()
    return total, metrics


# ------------------------------------------------------------------------------------------------ model
class ImageLogps(torch.nn.Module):
    """The trained network as one module (so DDP sees every forward): (prompt ids, mask, codes) -> (logps,
    uncond): logps (B, N) the per-token log p(code_t | prompt, codes_<t), under classifier-free guidance `guidance`
    when it is not 1; uncond (B, N) the unconditional row's own per-token log-probs then, detached (to watch its
    drift), else None."""

    def __init__(self, adapter, guidance: float = 1.0, uncond_grad: bool = True):
        super().__init__()
        self.model = adapter.model  # PEFT-wrapped or plain Janus; registered so DDP/FSDP wrap its parameters
        self._adapter = [adapter]  # not a submodule
        self.guidance, self.uncond_grad = guidance, uncond_grad

    def forward(self, prompt_ids, prompt_mask, codes):
        if self.guidance == 1:
            return self._adapter[0].teacher_forced_logps(prompt_ids, prompt_mask, codes), None
        return self._adapter[0].teacher_forced_logps(prompt_ids, prompt_mask, codes, self.guidance, with_uncond=True,
                                                     uncond_grad=self.uncond_grad)


def prepare_model(adapter, cfg: TrainConfig, seed: int = 0):
    """Makes only the trained weights require grad: LoRA on the language model (a new adapter, initialised from
    `seed` alone, or the one the model was loaded with, trained further), or the whole language model. Returns the
    trainable parameters."""
    model = adapter.model
    if cfg.lora.enabled:
        from peft import LoraConfig, PeftModel, get_peft_model

        if not isinstance(model, PeftModel):
            lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                              target_modules=cfg.lora.target_modules, bias="none")
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
            p.requires_grad_(".language_model." in f".{name}")
    params = [p for p in adapter.model.parameters() if p.requires_grad]
    if not params:
        raise TrainingError(f"no parameter matches train.lora.target_modules {cfg.lora.target_modules!r}")
    if cfg.gradient_checkpointing:
        adapter.janus.model.language_model.activation_checkpointing_enable(  # transformers 5.24's name for it
            activation_checkpointing_kwargs={"use_reentrant": False})
    return params


def _trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


# ------------------------------------------------------------------------------------------------ precomputation
@torch.no_grad()
def reference_logps(adapter, data: PairData, batch: int, guidance: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
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
def object_token_weights(adapter, data: PairData, cfg: TrainConfig, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
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


def write_mask_previews(adapter, data: PairData, out_dir: Path, num: int) -> None:
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


# ------------------------------------------------------------------------------------------------ checkpoints
def _checkpoints(out: Path) -> list[Path]:
    return sorted(p for p in (out / "checkpoints").glob("step-*") if (p / "state.json").exists())


def save_checkpoint(out: Path, step: int, model, opt, keep_last: int) -> Path:
    """checkpoints/step-NNNNNN/: trainable weights, optimizer state, position (+ a PEFT adapter for LoRA);
    written to a temporary folder and renamed, so a checkpoint either exists whole or not at all."""
    from safetensors.torch import save_file

    final = out / "checkpoints" / f"step-{step:06d}"
    tmp = out / "checkpoints" / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(_trainable_state(model), str(tmp / "trainable.safetensors"))
    torch.save(opt.state_dict(), tmp / "optimizer.pt")
    if hasattr(model, "peft_config"):
        model.save_pretrained(tmp / "adapter")
    atomic_write_text(tmp / "state.json", json.dumps({"step": step}))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in _checkpoints(out)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old)
    return final


def load_checkpoint(out: Path, model, opt) -> int:
    """Restores the last complete checkpoint; returns its step (0 when there is none). A file of it that cannot be
    read, or an optimizer state holding anything but tensors and plain values (torch.load(weights_only=True) refuses
    to unpickle other objects), is a TrainingError naming the file."""
    import pickle

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    found = _checkpoints(out)
    if not found:
        return 0
    last = found[-1]
    fix = f"delete {last} to resume from the checkpoint before it, or use a new run directory"
    try:
        state = load_file(str(last / "trainable.safetensors"))
    except (SafetensorError, OSError) as e:
        raise TrainingError(f"cannot resume: {last / 'trainable.safetensors'} is unreadable ({e}); {fix}") from None
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in state]
    if missing or any(n not in params for n in state):
        raise TrainingError(f"checkpoint {last} does not fit this model/config ({len(missing)} trained weights "
                            f"missing); use a new run directory")
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t)
    try:
        opt.load_state_dict(torch.load(last / "optimizer.pt", weights_only=True))
    except pickle.UnpicklingError:
        raise TrainingError(f"cannot resume: {last / 'optimizer.pt'} holds objects other than tensors, which ospo "
                            f"does not unpickle; {fix}") from None
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, TypeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TrainingError(f"cannot resume: {last / 'optimizer.pt'} is not a readable optimizer state ({first}); "
                            f"{fix}") from None
    step = json.loads((last / "state.json").read_text())["step"]
    log.info("resuming training from %s", last)
    return step


# ------------------------------------------------------------------------------------------------ logging
class MetricLog:
    """log.jsonl rows (rank 0), TensorBoard scalars when tensorboard is installed, and curves.png."""

    def __init__(self, out: Path, start_step: int, enabled: bool):
        self.path, self.enabled, self.writer = out / "log.jsonl", enabled, None
        if not enabled:
            return
        out.mkdir(parents=True, exist_ok=True)
        if self.path.exists():  # rows past the checkpoint we resume from are redone
            keep = [r for r in self.path.read_text().splitlines() if r and json.loads(r)["step"] <= start_step]
            atomic_write_text(self.path, "".join(r + "\n" for r in keep))
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tensorboard"), purge_step=start_step + 1)
        except ImportError:
            pass

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer:
            for k, v in row.items():
                if k != "step":
                    self.writer.add_scalar(f"train/{k}", v, row["step"])

    def close(self) -> None:
        if self.writer:
            self.writer.close()
        if self.enabled and self.path.exists():
            plot_curves(self.path, self.path.parent / "curves.png")


def plot_curves(log_path: Path, out_png: Path,
                keys=("loss", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected",
                      "grad_norm", "logps/uncond_chosen")) -> None:
    """A small grid of line plots of the logged metrics against step (PIL only, no plotting library)."""
    from PIL import Image, ImageDraw

    rows = [json.loads(r) for r in log_path.read_text().splitlines() if r]
    keys = [k for k in keys if any(k in r for r in rows)]
    if not rows or not keys:
        return
    w, h, pad = 320, 180, 28
    canvas = Image.new("RGB", (w * 3, h * math.ceil(len(keys) / 3)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, key in enumerate(keys):
        ox, oy = (i % 3) * w, (i // 3) * h
        pts = [(r["step"], r[key]) for r in rows if key in r and math.isfinite(r[key])]
        draw.rectangle([ox + pad, oy + pad, ox + w - 8, oy + h - pad], outline="gray")
        if not pts:
            continue
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
        sx = (w - 8 - pad - 4) / max(x1 - x0, 1)
        sy = (h - 2 * pad - 4) / (y1 - y0 if y1 > y0 else 1)
        line = [(ox + pad + 2 + (x - x0) * sx, oy + h - pad - 2 - (y - y0) * sy) for x, y in pts]
        draw.line(line if len(line) > 1 else line * 2, fill="navy", width=2)
        draw.text((ox + pad, oy + 6), f"{key}  last {ys[-1]:.4g}", fill="black")
        draw.text((ox + pad, oy + h - pad + 4), f"step {x0}..{x1}   y {y0:.3g}..{y1:.3g}", fill="gray")
    canvas.save(out_png)


# ------------------------------------------------------------------------------------------------ the loop
def _bf16(cfg: TrainConfig, device: torch.device) -> bool:
    return cfg.bf16 == "true" or (cfg.bf16 == "auto" and device.type == "cuda")


def _micro_batch(data: PairData, rows: np.ndarray, device) -> tuple[list[str], torch.Tensor, dict]:
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


def train(adapter, data: PairData, cfg: TrainConfig, out_dir: str | Path, *, seed: int = 0, lr: float | None = None,
          accelerator=None, progress: bool = True) -> dict:
    """Trains `adapter`'s model on `data` into `out_dir` (resuming from its last checkpoint); returns a summary.

    `lr` overrides cfg.lr (iterations scale it). The adapter's model ends up trained (PEFT-wrapped for LoRA)."""
    from accelerate import Accelerator

    out = Path(out_dir)
    acc = accelerator or Accelerator(cpu=adapter.device.type == "cpu")
    if not len(data):
        raise TrainingError("no training pairs: the selection kept none (see its manifest's rejection reasons)")
    world, rank = acc.num_processes, acc.process_index
    accum = accumulation(cfg, world)
    total = total_steps(cfg, len(data))
    base_lr = cfg.lr if lr is None else lr
    params = prepare_model(adapter, cfg, seed)
    module = ImageLogps(adapter, cfg.guidance, cfg.guidance_uncond_grad)
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=base_lr,
                            betas=(cfg.adam_beta1, cfg.adam_beta2))
    start = load_checkpoint(out, adapter.model, opt)
    module, opt = acc.prepare(module, opt)
    device, bf16 = acc.device, _bf16(cfg, acc.device)
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
            sums: dict[str, torch.Tensor] = {}
            for k in range(accum):
                micro = rows[k * cfg.micro_batch_size:(k + 1) * cfg.micro_batch_size]
                prompts, codes, batch = _micro_batch(data, micro, device)
                ids, mask = adapter._image_prompt_ids(prompts)
                sync = k == accum - 1
                ctx = acc.no_sync(module) if not sync and world > 1 else contextlib.nullcontext()
                with ctx:
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                        token_logps, uncond_logps = module(ids.to(device), mask.to(device), codes)
                    b = len(micro)
                    logps = {"chosen": token_logps[:b], "rejected": token_logps[b:2 * b],
                             "negative": token_logps[2 * b:]}
                    losses, metrics = objective(cfg, logps, batch)
                    if uncond_logps is not None:  # the shared unconditional row's likelihood of the chosen images
                        metrics["logps/uncond_chosen"] = sequence_logp(uncond_logps[:b].float())
                    loss = losses.sum() * world / cfg.batch_size
                    if not torch.isfinite(loss):
                        kept = _checkpoints(out)
                        raise TrainingError(f"training loss became {loss.item()} at step {step + 1}; stopped before "
                                            f"the update (last good checkpoint: {kept[-1] if kept else 'none'})")
                    acc.backward(loss)
                for name, v in [("loss", losses.detach()), *metrics.items()]:
                    s = torch.stack([v.float().sum(), torch.tensor(float(v.numel()), device=v.device)])
                    sums[name] = sums.get(name, 0) + s
            grad_norm = acc.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
            names = sorted(sums)
            reduced = acc.reduce(torch.stack([sums[n] for n in names]).to(device), reduction="sum")
            last = {n: float(s[0] / s[1]) for n, s in zip(names, reduced.cpu()) if s[1] > 0}
            row = {"step": step + 1, "epoch": (step + 1) * cfg.batch_size / len(data), "lr": opt.param_groups[0]["lr"],
                   "grad_norm": float(grad_norm), **last}
            logger.write(row)
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
    return {"steps": total, "resumed_from": start, "pairs": len(data), "world_size": world,
            "gradient_accumulation": accum, "lr": base_lr, "final": last}


def save_outputs(adapter, cfg: TrainConfig, out: Path) -> dict:
    """adapter/ (LoRA) or model/ (full), and merged/ when asked: each loads with `--model` / `--adapter`."""
    paths = {}
    if hasattr(adapter.model, "peft_config"):
        adapter.model.save_pretrained(out / "adapter")
        paths["adapter"] = str(out / "adapter")
        if cfg.merge:
            merged = adapter.model.merge_and_unload(safe_merge=True)
            merged.save_pretrained(out / "merged")
            adapter.processor.save_pretrained(out / "merged")
            adapter.model = merged
            paths["merged"] = str(out / "merged")
    else:
        adapter.janus.save_pretrained(out / "model")
        adapter.processor.save_pretrained(out / "model")
        paths["model"] = str(out / "model")
    return paths


# ------------------------------------------------------------------------------------------------ stage shell
def stage_name(cfg: RunConfig) -> str:
    """`train-<recipe>-<hash of the train config and the selection rule>`: one folder per training setup, so one
    data run can be trained with several recipes side by side."""
    from ospo.stages.select import rule_config

    recipe = Path(cfg.recipe).stem if cfg.recipe.endswith((".yaml", ".yml")) else cfg.recipe
    return f"train-{recipe}-{config_hash(_Setup(cfg.train, rule_config(cfg.select)))[:8]}"


@dataclass(frozen=True)
class _Setup:
    train: TrainConfig
    select: object


def load_pair_data(ctx, select_stage: StageDir) -> tuple[PairData, list[Rejected]]:
    """The selected pairs joined with their stored codes (and the prompt's object words); pairs whose codes are
    missing are returned as Rejected (reason 'missing-codes') rather than dropped silently."""
    from ospo.stages.images import load_image_codes

    pairs = [r for r in select_stage.records() if isinstance(r, TrainingPair)]
    codes = load_image_codes(ctx.stage("images"))
    sets = {q.prompt_id: q for q in ctx.stage("questions").records()
            if isinstance(q, QuestionSet) and q.role == "positive" and q.kind == "local"}
    from ospo.masks import object_words

    keep, rejected = [], []
    for p in pairs:
        if p.chosen_image_id not in codes or p.rejected_image_id not in codes:
            rejected.append(Rejected(p.id, NAME, "missing-codes", detail=f"{p.chosen_image_id} / {p.rejected_image_id}"))
        else:
            keep.append(p)
    data = PairData(
        ids=[p.id for p in keep], prompts=[p.prompt for p in keep],
        negative_prompts=[p.negative_prompt for p in keep],
        chosen=torch.as_tensor(np.stack([codes[p.chosen_image_id] for p in keep])) if keep else torch.zeros(0, 0),
        rejected=torch.as_tensor(np.stack([codes[p.rejected_image_id] for p in keep])) if keep else torch.zeros(0, 0),
        object_words=[object_words(p.prompt, sets[p.provenance.get("prompt_id", p.id)].questions
                                   if p.provenance.get("prompt_id", p.id) in sets else ()) for p in keep])
    data.chosen, data.rejected = data.chosen.long(), data.rejected.long()
    return data, rejected


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


def run(ctx) -> dict:
    """Trains on the selection of this run's rule; returns the manifest."""
    from ospo.stages._shared import start
    from ospo.stages.images import model_identity
    from ospo.stages.select import stage_name as select_name

    cfg = ctx.config
    select_dir = select_name(cfg.select)
    stage = start(ctx, stage_name(cfg), [cfg.train, model_identity(cfg.model)], ["images", "questions", select_dir],
                  True, recipe=cfg.recipe, iteration=ctx.iteration)
    if stage.complete:
        return stage.manifest()
    out = stage.path
    t = cfg.train
    data, rejected = load_pair_data(ctx, ctx.stage(select_dir))
    if not len(data):  # before the reference and the masks, which would fail on nothing less clearly
        if rejected:
            raise TrainingError(f"no training pairs: all {len(rejected)} pairs the selection ({select_dir}) kept "
                                f"lack stored image codes (rerun the images stage)")
        counts = ctx.stage(select_dir).manifest().get("counts", {})
        raise TrainingError(f"no training pairs: the selection ({select_dir}) kept none of {counts.get('in', '?')} "
                            f"prompts; its manifest counts the rejection reasons")
    adapter = ctx.model
    batch = ctx.config.model.batch_size
    if t.dpo_weight:  # the reference: the model before any update, computed once and kept with the pairs
        ref = _computed_once(out / "reference_logps.safetensors",
                             lambda: reference_logps(adapter, data, batch, t.guidance), ctx.rank)
        data.reference_chosen, data.reference_rejected = ref["chosen"], ref["rejected"]
    if t.object_weighting:
        path = out / "object_weights.safetensors"
        fresh = not path.exists()
        w = _computed_once(path, lambda: object_token_weights(adapter, data, t, batch), ctx.rank)
        data.chosen_weights, data.rejected_weights = w["chosen"], w["rejected"]
        if fresh and ctx.rank == 0:
            write_mask_previews(adapter, data, out / "masks", t.num_previews)
    lr = t.lr * t.iteration_lr_scale ** (ctx.iteration - 1)
    try:
        summary = train(adapter, data, t, out, seed=cfg.seed, lr=lr, progress=ctx.progress)
        if ctx.rank == 0:
            stage.write_part("skipped", rejected)
            summary["outputs"] = save_outputs(adapter, t, out)
    except OSError as e:  # a full disk, a read-only folder: one line naming the file; checkpoints already made stay
        raise TrainingError(f"could not write {e.filename or out}: {e.strerror or e}; the last complete checkpoint "
                            f"in {out / 'checkpoints'} is kept (rerun to resume)") from None
    from ospo.stages._shared import finish

    return finish(ctx, stage, lambda: {"counts": {"in": len(data) + len(rejected), "pairs": len(data)},
                                       "select": select_dir, **summary})
