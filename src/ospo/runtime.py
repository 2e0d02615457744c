"""Where this process runs: its rank among the processes of a run, its device and its dtype, resolved in one place.

Launchers announce the process layout in the environment: `accelerate launch` and torchrun set RANK / WORLD_SIZE /
LOCAL_RANK; `ospo run --num-processes N` sets OSPO_RANK / OSPO_WORLD_SIZE (which win, so a worker it spawns is
never mistaken for another layout). Unset, the process is rank 0 of 1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Processes:
    rank: int
    world_size: int
    local_rank: int


def processes(env=None) -> Processes:
    """This process's rank among the run's processes; a launcher that asked for several and started one is an
    InputError (accelerate's simple launcher, on a machine without a multi-GPU or multi-CPU config, sets the
    rendezvous address of N processes and starts one, which would otherwise run the whole job alone)."""
    env = os.environ if env is None else env
    if "ACCELERATE_MIXED_PRECISION" in env and "MASTER_ADDR" in env and "WORLD_SIZE" not in env \
            and "OSPO_WORLD_SIZE" not in env:
        from ospo.errors import InputError

        raise InputError("accelerate launch asked for several processes but started one (its simple launcher); "
                         "use `accelerate launch --multi_gpu` on GPUs, torchrun --nproc_per_node N, or "
                         "`ospo run --num-processes N` on CPUs")
    rank = int(env.get("OSPO_RANK", env.get("RANK", 0)))
    world = int(env.get("OSPO_WORLD_SIZE", env.get("WORLD_SIZE", 1)))
    return Processes(rank, world, int(env.get("LOCAL_RANK", rank)))


def device(requested: str | None = None, procs: Processes | None = None) -> str:
    """`requested` unless it is empty or "auto": then CUDA when present, else the CPU. Plain "cuda" in a run of
    several processes means this process's own GPU (`cuda:LOCAL_RANK`)."""
    import torch

    if requested and requested.startswith("cuda") and not torch.cuda.is_available():
        from ospo.errors import InputError

        raise InputError(f"device '{requested}' asked for, but torch sees no CUDA device here; use cpu or auto")
    if requested and requested not in ("auto", "cuda"):
        try:
            torch.device(requested)
        except RuntimeError:
            from ospo.errors import InputError

            raise InputError(f"unknown device '{requested}'; use cpu, cuda, cuda:N or auto") from None
        return requested
    if requested != "cuda" and not torch.cuda.is_available():
        return "cpu"
    procs = procs or processes()
    return f"cuda:{procs.local_rank}" if procs.world_size > 1 else "cuda"


def dtype(requested: str | None, device_name: str) -> str:
    """`requested` unless it is empty or "auto": then bfloat16 on CUDA, float32 elsewhere."""
    if requested and requested != "auto":
        return requested
    return "bfloat16" if device_name.startswith("cuda") else "float32"
