"""Orchestration of the data loop: run stages in order in one run directory, shard them over processes, summarise.

A run directory holds the resolved `config.yaml` of the run and one folder per stage (see `ospo.stages`).
Reusing a run directory with another config is refused, naming the keys that differ, except for the
`select` section (re-selecting with another rule is cheap and writes its own folder) and `model.batch_size`.
Stage modules are imported by name (`ospo.stages.<name>`, each with `run(ctx) -> manifest`) only when run.
Stages run under a lock of the run directory (`lock_run_dir`), so two runs never write into one directory at once.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import yaml

from ospo.artifacts import atomic_write_text
from ospo.config import RunConfig, config_dict, load_config
from ospo.errors import OspoError
from ospo.schema import ConfigError, read_yaml_file
from ospo.scoring import histogram
from ospo.stages import STAGES, RunContext

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
LOCK_FILE = ".lock"
# Config keys a run directory may be reused with: the selection (its folder is per rule) and the batch size (no
# result depends on it: every random draw is seeded per item).
MAY_DIFFER = ("select.", "model.batch_size", "train.", "recipe")


class RunDirError(OspoError):
    """A run directory that does not fit the command (another config, or not a run directory at all)."""


# ------------------------------------------------------------------------------------------------ stages
def parse_stages(text: str | None) -> list[str]:
    """'images,score' -> the named stages in pipeline order; None -> every stage. Unknown names are errors."""
    if text is None:
        return list(STAGES)
    names = [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        if n not in STAGES:
            close = difflib.get_close_matches(n, STAGES, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise OspoError(f"unknown stage '{n}'{hint}; stages: {', '.join(STAGES)}")
    if not names:
        raise OspoError("--stages is empty")
    return [n for n in STAGES if n in names]


def stage_module(name: str):
    """The module `ospo.stages.<name>`; a clear error if that stage is not implemented."""
    parse_stages(name)
    try:
        return importlib.import_module(f"ospo.stages.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"ospo.stages.{name}":
            raise OspoError(f"stage '{name}' is not implemented in this version of ospo") from None
        raise


def stage_dir_name(name: str, cfg: RunConfig) -> str:
    """The folder a stage writes in a run directory (selection: one per rule)."""
    if name == "select":
        from ospo.stages.select import stage_name

        return stage_name(cfg.select)
    if name == "train":
        from ospo.stages.train import stage_name

        return stage_name(cfg)
    return name


# ------------------------------------------------------------------------------------------------ run directory
def flatten(data: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}."""
    out = {}
    for k, v in data.items():
        out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def config_differences(old: dict, new: dict) -> list[str]:
    """Dotted keys whose values differ between two config dicts (a key present in one only differs)."""
    a, b = flatten(old), flatten(new)
    return sorted(k for k in set(a) | set(b) if a.get(k, KeyError) != b.get(k, KeyError))


def prepare_run_dir(run_dir: str | Path, cfg: RunConfig, write: bool = True) -> None:
    """Checks the resolved config against the one saved in the run directory, or, with `write` and none saved yet,
    saves it. Only a process holding the run directory's rank-0 lock writes (`run_stages`): a check before the lock
    (`write=False`) fails early on a run directory made with another config and writes nothing."""
    path = Path(run_dir) / CONFIG_FILE
    if path.is_file():
        saved = read_yaml_file(path, f"the run's config {path}", RunDirError) or {}
        if not isinstance(saved, dict):
            raise RunDirError(f"the run's config {path} is not a mapping; restore it or use a new run directory")
        was, default = flatten(saved), flatten(config_dict(RunConfig()))
        now = flatten(config_dict(cfg))
        differ = [k for k in config_differences(saved, config_dict(cfg)) if not k.startswith(MAY_DIFFER)
                  and not (k not in was and k in default and now.get(k) == default[k])]  # a key added to ospo
        # since the run was made, at its default, is the behaviour the run had
        if differ:
            was, now = flatten(saved), flatten(config_dict(cfg))
            values = ", ".join(f"{k}: {was.get(k, '(unset)')!r} then, {now.get(k, '(unset)')!r} now" for k in differ)
            keep = " ".join(f"--set {k}={was[k]}" for k in differ if k in was and not isinstance(was[k], (dict, list)))
            raise RunDirError(f"{run_dir} was made with another config ({values}); use a new run directory, or the "
                              f"saved config ({path}){f': {keep} resumes it' if keep else ''}")
        return
    if write:
        atomic_write_text(path, yaml.safe_dump(config_dict(cfg), sort_keys=False))


def load_run_config(run_dir: str | Path, overrides: list[str] = ()) -> RunConfig:
    """The run's saved resolved config with `--set` overrides applied."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise RunDirError(f"{run_dir} is not a run directory (no {CONFIG_FILE}); start one with `ospo run`")
    try:
        return load_config(path, list(overrides))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


# ------------------------------------------------------------------------------------------------ running
@contextlib.contextmanager
def lock_run_dir(run_dir: str | Path, rank: int = 0):
    """Holds an exclusive `flock` on RUN_DIR/.lock (rank r > 0: RUN_DIR/.lock-rank-r) for the body; RunDirError at
    once, naming the directory and the lock, when another process holds it.

    One lock per rank: the processes of one run (`--num-processes` workers, which set OSPO_RANK, or `accelerate
    launch` ranks) have distinct ranks, so they never block each other, while a process of a second run on the same
    directory collides with the process of its rank in the first run and stops before writing anything. (A second
    run with more ranks than the first: its extra ranks find their locks free, but its rank 0 fails at once and
    `spawn_workers` / the launcher stops the others.) The `--num-processes` parent takes no lock: it only checks or
    creates config.yaml, which every rank checks again under its lock. The kernel drops a lock when its process
    dies, even by SIGKILL, so a killed run leaves no stale lock; the empty lock files stay (deleting one could let
    two processes lock two different files).
    """
    import fcntl

    path = Path(run_dir) / (LOCK_FILE if rank == 0 else f"{LOCK_FILE}-rank-{rank}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a")
    except OSError as e:
        raise RunDirError(f"cannot create the lock file {path}: {e.strerror or e}") from None
    busy = RunDirError(f"{run_dir} is in use by another ospo run (it holds the lock {path}); wait for that run to "
                       f"end, or use another run directory")
    with f:
        if os.environ.get("OSPO_RUN_LOCK") == "off":  # the user's choice on a file system that refuses both locks
            log.warning("OSPO_RUN_LOCK=off: %s is not locked; run nothing else in it meanwhile", run_dir)
            yield
            return
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy from None
        except OSError:  # file systems without flock (some NFS and FUSE mounts) often have POSIX record locks
            try:
                fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except (BlockingIOError, PermissionError):
                raise busy from None
            except OSError as e:
                raise RunDirError(f"cannot lock {path}: its file system supports neither flock nor POSIX locks "
                                  f"({e.strerror or e}); set OSPO_RUN_LOCK=off to run without the lock, and run "
                                  f"nothing else in {run_dir} meanwhile") from None
        yield  # closing the file releases the lock


def run_stages(run_dir: str | Path, cfg: RunConfig, names: list[str],
               on_stage_done: Callable[[str, dict, float], None] | None = None, **ctx_kw) -> dict[str, dict]:
    """Runs the named stages in order as this process's rank (RANK/WORLD_SIZE or OSPO_RANK/OSPO_WORLD_SIZE) under
    the rank's lock of the run directory; returns {stage folder: manifest}. Each stage folder also gets the resolved
    config."""
    ctx = RunContext.from_env(run_dir, cfg, **ctx_kw)
    if "progress" not in ctx_kw:
        ctx.progress = ctx.rank == 0
    manifests = {}
    with lock_run_dir(run_dir, ctx.rank):
        # under the lock: two runs started together both passed the check before it; rank 0 alone writes the config
        prepare_run_dir(run_dir, cfg, write=ctx.rank == 0)
        for name in names:
            start = time.monotonic()
            manifest = stage_module(name).run(ctx) or ctx.stage(stage_dir_name(name, cfg)).manifest()
            folder = manifest.get("stage", name)
            if ctx.rank == 0 and not (Path(run_dir) / folder / CONFIG_FILE).exists():
                atomic_write_text(Path(run_dir) / folder / CONFIG_FILE,
                                  yaml.safe_dump(config_dict(cfg), sort_keys=False))
            manifests[folder] = manifest
            if on_stage_done:
                on_stage_done(folder, manifest, time.monotonic() - start)
    return manifests


def next_iteration_config(cfg: RunConfig, previous_run: Path, k: int) -> RunConfig:
    """Iteration k's config: the model iteration k-1 trained (its LoRA adapter, trained further; or its full
    model) and a fresh seed, so the model writes new prompts and draws new images."""
    import dataclasses

    from ospo.stages import RunContext
    from ospo.stages.train import stage_name

    prev_cfg = load_run_config(previous_run)
    manifest = RunContext(Path(previous_run), prev_cfg).stage(stage_name(prev_cfg)).manifest()
    outputs = manifest.get("outputs", {})
    if "adapter" in outputs:
        model = dataclasses.replace(cfg.model, path=prev_cfg.model.path, adapter=outputs["adapter"])
    elif "model" in outputs:
        model = dataclasses.replace(cfg.model, path=outputs["model"], adapter=None)
    else:
        raise RunDirError(f"{previous_run}: its training saved no model ({manifest.get('stage')})")
    return dataclasses.replace(cfg, seed=cfg.seed + k - 1, model=model)


def spawn_workers(argv: list[str], num_processes: int) -> int:
    """Runs `ospo <argv>` in `num_processes` processes with OSPO_RANK / OSPO_WORLD_SIZE set (CPU threads split
    between them); stops the others when one fails. Returns the first non-zero exit status, else 0."""
    threads = str(max(1, (os.cpu_count() or 1) // num_processes))
    port = str(_free_port())
    procs = []
    for rank in range(num_processes):
        # RANK/WORLD_SIZE/MASTER_*: the training stage joins a torch.distributed (gloo/nccl) group through accelerate
        env = {"OMP_NUM_THREADS": threads, **os.environ, "OSPO_RANK": str(rank), "OSPO_WORLD_SIZE": str(num_processes),
               "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(num_processes),
               "LOCAL_WORLD_SIZE": str(num_processes), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        procs.append(subprocess.Popen([sys.executable, "-m", "ospo.cli", *argv], env=env,
                                      preexec_fn=_die_with_parent(os.getpid())))
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = [c for c in codes if c not in (None, 0)]
            if failed or all(c == 0 for c in codes):
                return failed[0] if failed else 0
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait()


def _die_with_parent(parent: int):
    """A preexec_fn that has the kernel SIGKILL the worker when its parent dies (Linux: prctl PR_SET_PDEATHSIG), so a
    killed `--num-processes` parent leaves no workers writing into the run directory; elsewhere, None."""
    if not sys.platform.startswith("linux"):
        return None

    def arm():
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the call: nothing would signal us
            os._exit(1)

    return arm


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------------ summary
def _bar(n: int, top: int, width: int = 20) -> str:
    return "#" * (round(width * n / top) if top else 0)


def summarize(run_dir: str | Path, cfg: RunConfig, seconds: dict[str, float] | None = None) -> str:
    """One screen of text: counts per finished stage, rejection reasons, filter pass rates, S histograms."""
    from ospo.artifacts import StageDir

    seconds = seconds or {}
    lines = [f"run {run_dir}  (seed {cfg.seed}, rule {cfg.select.rule})",
             f"{'stage':<22}{'out':>7}{'rejected':>10}{'time':>9}  rejection reasons"]
    manifests = {}
    for name in STAGES:
        folder = stage_dir_name(name, cfg)
        if StageDir(run_dir, folder).complete:
            m = manifests[name] = StageDir(run_dir, folder).manifest()
            c = m.get("counts", {})
            reasons = ", ".join(f"{r} {n}" for r, n in sorted(c.get("rejected_by_reason", {}).items(),
                                                                key=lambda x: -x[1])[:4])
            t = f"{seconds[folder]:.1f}s" if folder in seconds else "-"
            lines.append(f"{folder:<22}{c.get('out', 0):>7}{c.get('rejected', 0):>10}{t:>9}  {reasons}")
    local_S = manifests.get("score", {}).get("local_S", {})
    for role, s in sorted(local_S.items(), key=lambda x: x[0] != "positive"):
        lines.append(f"self-VQA S of {role} images on the prompt's questions: mean {s['mean_S']} (n={s['n']})")
    select = manifests.get("select")
    if select:
        rates = ", ".join(f"{k} {p}/{t} ({100 * p / t:.0f}%)" if t else f"{k} 0/0"
                          for k, (p, t) in select.get("filtering", {}).items())
        lines.append(f"filtering ({select.get('rule')}): {rates}")
        out = select["counts"].get("out", 0)
        lines.append(f"pairs: {out} of {select['counts'].get('in', 0)} prompts; with a negative prompt (CoPO): "
                     f"{select['counts'].get('with_negative_prompt', 0)}")
        lines += _histogram_lines(select.get("histograms", {}))
    train = manifests.get("train")
    if train:
        f = train.get("final", {})
        lines.append(f"training ({cfg.recipe}): {train.get('steps')} steps on {train.get('pairs')} pairs; last step: "
                     f"loss {f.get('loss', float('nan')):.4f}, reward accuracy {f.get('rewards/accuracies', 0):.2f}, "
                     f"margin {f.get('rewards/margins', 0):+.3f}")
        for kind, path in train.get("outputs", {}).items():
            lines.append(f"  {kind}: {path}")
    return "\n".join(lines)


def _histogram_lines(h: dict) -> list[str]:
    chosen, rejected = h.get("chosen") or histogram([]), h.get("rejected") or histogram([])
    top = max(chosen + rejected) if chosen + rejected else 0
    if not top:
        return []
    edges = [-1 + 0.2 * k for k in range(len(chosen) + 1)]
    lines = [f"{'S (selected)':<11} {'chosen':>7} {'rejected':>8}"]
    for k, (c, r) in enumerate(zip(chosen, rejected)):
        lines.append(f"[{edges[k]:+.1f},{edges[k + 1]:+.1f}) {c:>7} {r:>8}  {_bar(c, top):<20} | {_bar(r, top)}")
    return lines
