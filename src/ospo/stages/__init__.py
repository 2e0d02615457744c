"""The OSPO data loop, one module per stage. Each stage = a pure core (records in -> records out) + a thin
`run(ctx)` shell that reads its inputs from the run directory and writes its outputs through `StageDir`.

Work is split into chunks of items; chunk j belongs to process j % world_size, so `accelerate launch` or
`--num-processes` shards a stage by item id and the merged result equals the single-process one (every random
draw is seeded from (run seed, item id, slot), never from batch composition). Rank 0 merges once every chunk
file exists; other ranks wait for the stage's manifest before going on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ospo.artifacts import StageDir
from ospo.config import RunConfig, config_dict, config_hash

STAGES = ("prompts", "perturb", "densify", "images", "questions", "score", "select", "train")


@dataclass
class RunContext:
    run_dir: Path
    config: RunConfig
    rank: int = 0
    world_size: int = 1
    progress: bool = True
    iteration: int = 1  # of `ospo run --iterations K` (training scales its lr with it)
    wait_timeout_s: float = 24 * 3600
    _model: object = field(default=None, repr=False)
    _templates: object = field(default=None, repr=False)

    @classmethod
    def from_env(cls, run_dir, config: RunConfig, **kw) -> "RunContext":
        """Rank and world size as the launcher set them (`ospo.runtime.processes`)."""
        from ospo import runtime

        procs = runtime.processes()
        return cls(Path(run_dir), config, procs.rank, procs.world_size, **kw)

    @property
    def model(self):
        """The model adapter, loaded on first use (stages that need no model never load it)."""
        if self._model is None:
            from ospo import runtime
            from ospo.model import JanusAdapter
            from ospo.registry import resolve_model_path

            m = self.config.model
            device = runtime.device(m.device)
            dtype = runtime.dtype(m.dtype, device)
            self._model = JanusAdapter.from_pretrained(resolve_model_path(m.path), dtype=dtype, device=device,
                                                       adapter=m.adapter, batch_size=m.batch_size)
        return self._model

    @property
    def templates(self):
        if self._templates is None:
            from ospo.templates import load_templates

            self._templates = load_templates(self.config.templates)
        return self._templates

    def stage(self, name: str) -> StageDir:
        return StageDir(self.run_dir, name)

    def identity(self, name: str, sub_configs: Sequence, inputs: Sequence[str], uses_model: bool) -> dict:
        """What a stage's output depends on: its config sections, the seed, the model and its inputs' records."""
        from ospo import __version__

        ident = {"stage": name, "seed": self.config.seed, "ospo_version": __version__,
                 "config": {type(c).__name__: config_dict(c) for c in sub_configs},
                 "config_hash": config_hash(self.config) if not sub_configs else
                 "-".join(config_hash(c) for c in sub_configs),
                 "inputs": {i: self.stage(i).manifest()["records_hash"] for i in inputs}}
        if uses_model:
            ident["model"] = {"path": self.config.model.path, "adapter": self.config.model.adapter,
                              "templates": self.config.templates}
        return ident

    def wait_for(self, stage: StageDir) -> None:
        """Non-zero ranks wait until rank 0 has merged `stage`."""
        deadline = time.monotonic() + self.wait_timeout_s
        while not stage.complete:
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited too long for stage '{stage.name}' to be merged by rank 0")
            time.sleep(0.5)


def run_chunked(ctx: RunContext, stage: StageDir, chunks: Sequence[tuple[str, list]],
                process: Callable[[list], list], desc: str | None = None) -> None:
    """Processes this rank's chunks (skipping those already written) and writes one part file per chunk.

    `chunks` is a list of (key, items) in a fixed order; `process(items)` returns the chunk's records
    (including Rejected ones). Rank 0 then waits for every chunk file; other ranks return at once.
    """
    mine = [(k, items) for j, (k, items) in enumerate(chunks) if j % ctx.world_size == ctx.rank]
    todo = [(k, items) for k, items in mine if not stage.has_part(k)]
    bar = None
    if ctx.progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=sum(len(i) for _, i in todo), desc=desc or stage.name, unit="item", leave=False)
    try:
        for key, items in todo:
            stage.write_part(key, process(items))
            if bar:
                bar.update(len(items))
    finally:  # an error message must not land on the bar's line
        if bar:
            bar.close()
    if ctx.rank == 0:
        deadline = time.monotonic() + ctx.wait_timeout_s
        while not all(stage.has_part(k) for k, _ in chunks):
            if time.monotonic() > deadline:
                raise TimeoutError(f"stage '{stage.name}': other ranks did not finish their chunks")
            time.sleep(0.5)


def chunked(items: Sequence, size: int, prefix: str = "c") -> list[tuple[str, list]]:
    """Fixed-size chunks keyed by position: the same items always form the same chunks."""
    return [(f"{prefix}{i // size:05d}", list(items[i:i + size])) for i in range(0, len(items), size)]
