"""How long `ospo shapeworld pretrain` (a recipe's whole chain) will take on this machine, before running it.

Every stage of the recipe runs a few steps of each of its phases (vq, vision, align, find, text, lm) with the
stage's own batch sizes, threads and bf16 setting, in a scratch folder; the time between consecutive steps of a
phase (its first step left out: it pays for setup) gives seconds per step, and the recipe's step counts turn that
into minutes. The mixture's dev-split evaluations (`eval_every`) are timed once on the shipped checkpoint and
counted per stage. Not counted: checkpoint writes (a fraction of a second each, every `checkpoint_every` steps) and model
loading. A step's cost does not depend on the weights, so stages that continue an earlier one are timed from
fresh weights of the same architecture; it does depend on the sampled rows' lengths, so a few steps give an
estimate, not a measurement.

    python -m benchmarks.pretrain_speed [--recipe shipped] [--steps 4] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.tables import markdown_table
from ospo.shapeworld.pretrain import PretrainConfig, native_bf16


def phase_steps(cfg: PretrainConfig) -> dict[str, int]:
    """The steps each phase of `cfg` runs (phases with none left out), in the order `pretrain` runs them."""
    steps = {"vq": (cfg.vq_stop_at or cfg.vq_steps), "vision": cfg.vision_steps, "align": cfg.align_steps,
             "find": cfg.find_steps, "text": cfg.text_steps, "lm": cfg.lm_steps}
    return {phase: n for phase, n in steps.items() if n > 0}


def evaluations(cfg: PretrainConfig) -> int:
    """How many dev-split evaluations the mixture runs: at every `eval_every`-th step it checkpoints and at its
    last step (as `train_lm` does; none with `eval_every` 0)."""
    if not cfg.eval_every or not cfg.lm_steps:
        return 0
    at = {s for s in range(1, cfg.lm_steps + 1)
          if s % cfg.eval_every == 0 and s % cfg.checkpoint_every == 0}
    return len(at | {cfg.lm_steps})


def short(cfg: PretrainConfig, steps: int) -> PretrainConfig:
    """`cfg` with `steps` steps in each of its phases, from fresh weights, no evaluations and no checkpoint before a
    phase's end."""
    n = phase_steps(cfg)
    return replace(cfg, init_from="", vq_steps=steps if "vq" in n else 0, vq_stop_at=0,
                   vision_steps=steps if "vision" in n else 0, align_steps=steps if "align" in n else 0,
                   find_steps=steps if "find" in n else 0, text_steps=steps if "text" in n else 0,
                   lm_steps=steps if "lm" in n else 0,
                   eval_every=0, checkpoint_every=10 ** 9)


def seconds_per_step(stamps: list[float]) -> float:
    """Median time between consecutive steps, the first step left out (it pays for the phase's setup)."""
    gaps = np.diff(stamps[1:]) if len(stamps) > 2 else np.diff(stamps)
    return float(np.median(gaps)) if len(gaps) else float("nan")


def time_stage(cfg: PretrainConfig, steps: int, spec=None) -> dict[str, float]:
    """Seconds per step of each phase `cfg` runs, from `steps` timed steps of each (at least 3)."""
    from ospo.shapeworld.pretrain import pretrain

    stamps: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        pretrain(Path(tmp) / "run", short(cfg, max(3, steps)), spec=spec,
                 progress=lambda phase, step, total, metrics: stamps.setdefault(phase, []).append(time.perf_counter()))
    return {phase: seconds_per_step(t) for phase, t in stamps.items()}


def time_evaluation() -> float:
    """Seconds of one `dev_evaluate` call on the shipped checkpoint (the work does not depend on the weights)."""
    from ospo.model import JanusAdapter
    from ospo.shapeworld import checkpoint_path
    from ospo.shapeworld.pretrain import dev_evaluate

    adapter = JanusAdapter.from_pretrained(str(checkpoint_path()), batch_size=64)  # pretraining's adapter batch
    start = time.perf_counter()
    dev_evaluate(adapter, PretrainConfig())
    return time.perf_counter() - start


def estimate(recipe_name: str, steps: int, spec=None, evaluation_seconds: float | None = None) -> list[dict]:
    """One row per (stage, phase) and one per stage's evaluations, each with its predicted minutes. `spec` (a
    smaller model, for tests) applies to the timed steps; evaluations are timed on the shipped checkpoint unless
    `evaluation_seconds` is given."""
    from ospo.shapeworld.pretrain import load_recipe

    recipe = load_recipe(recipe_name)
    rows = []
    for stage in recipe.stages:
        if stage.assemble:
            continue
        cfg = PretrainConfig(**{**stage.fields, "init_from": ""})
        measured = time_stage(cfg, steps, spec)
        for phase, n in phase_steps(cfg).items():
            per = measured[phase]
            rows.append({"stage": stage.name, "phase": phase, "steps": n, "s/step": per, "minutes": n * per / 60})
        k = evaluations(cfg)
        if k:
            if evaluation_seconds is None:
                evaluation_seconds = time_evaluation()
            rows.append({"stage": stage.name, "phase": "dev evaluation", "steps": k, "s/step": evaluation_seconds,
                         "minutes": k * evaluation_seconds / 60})
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default="shipped", help="a packaged recipe's name or a recipe YAML file")
    p.add_argument("--steps", type=int, default=4, help="timed steps of each phase of each stage (at least 3)")
    p.add_argument("--json", help="write the rows and the total here")
    args = p.parse_args(argv)
    rows = estimate(args.recipe, args.steps)
    total = sum(r["minutes"] for r in rows)
    print(f"recipe {args.recipe}: {args.steps} timed steps a phase; bf16 autocast where a stage leaves it to auto: "
          f"{'on' if native_bf16() else 'off'} (native bf16 on this CPU: {native_bf16()})\n")
    print(markdown_table(rows, "stage", digits=2))
    print(f"\npredicted total: {total:.0f} minutes ({total / 60:.1f} hours), checkpoint writes and loading aside")
    if args.json:
        Path(args.json).write_text(json.dumps({"recipe": args.recipe, "steps": args.steps, "rows": rows,
                                               "total_minutes": total, "native_bf16": native_bf16()}, indent=1))


if __name__ == "__main__":
    main()
