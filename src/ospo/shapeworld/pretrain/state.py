"""A pretraining run's resumable state in OUT/pretrain-state/: weights, optimizer and position, replaced atomically
at each checkpoint; its log.jsonl; and the optimizer step every phase takes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from ospo.artifacts import atomic_write_text
from ospo.errors import OspoError

log = logging.getLogger(__name__)
PHASES = ("vq", "vision", "align", "find", "text", "lm")  # in the order a run trains them


def _optimizer_step(opt, loss: torch.Tensor, phase: str, step: int, clip_params=None) -> float | None:
    """Backward and one optimizer step (gradients clipped to norm 1 over `clip_params` when given; returns that
    norm). A non-finite loss stops the run before the step, so the last checkpoint holds good weights."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(clip_params, 1.0) if clip_params is not None else None
    if not torch.isfinite(loss):
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
    if PHASES.index(pos["phase"]) < PHASES.index(phase):
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
