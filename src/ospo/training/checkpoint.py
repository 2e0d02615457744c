"""Checkpoints (resumable, written whole or not at all) and the final outputs of a training run.

    out/checkpoints/step-NNNNNN/  trainable.safetensors, optimizer.pt, state.json (+ adapter/ for LoRA)
    out/adapter/ (LoRA) or out/model/ (full fine-tuning), out/merged/ on request
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch

from ospo.artifacts import atomic_write_text
from ospo.config import TrainConfig
from ospo.training.data import TrainingError
from ospo.unified import UnifiedModel

log = logging.getLogger(__name__)


def list_checkpoints(out: Path) -> list[Path]:
    """The complete checkpoints under `out/checkpoints`, oldest first."""
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
    for old in list_checkpoints(out)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old)
    return final


def load_checkpoint(out: Path, model, opt) -> int:
    """Restores the last complete checkpoint; returns its step (0 when there is none). A file of it that cannot be
    read, or an optimizer state holding anything but tensors and plain values (torch.load(weights_only=True) refuses
    to unpickle other objects), is a TrainingError naming the file."""
    import pickle

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    found = list_checkpoints(out)
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


def _trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_outputs(adapter: UnifiedModel, cfg: TrainConfig, out: Path) -> dict:
    """adapter/ (LoRA) or model/ (full), and merged/ when asked: each loads with `--model` / `--adapter`."""
    paths = {}
    if hasattr(adapter.model, "peft_config"):
        adapter.model.save_pretrained(out / "adapter")
        paths["adapter"] = str(out / "adapter")
        if cfg.merge:
            adapter.model = adapter.model.merge_and_unload(safe_merge=True)
            adapter.save_pretrained(out / "merged")
            paths["merged"] = str(out / "merged")
    else:
        adapter.save_full_model(out / "model")
        paths["model"] = str(out / "model")
    return paths
