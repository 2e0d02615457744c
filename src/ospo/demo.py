"""`ospo demo`: the whole method on the embedded ShapeWorld model, on a CPU, with a measured before/after.

    base model -> evaluate (ShapeWorld-GenEval, exact oracle) -> one OSPO iteration (stages 1-4, a recipe)
      -> evaluate the trained model on the same prompts and seeds -> paired before/after table -> report

Everything lands in one folder (default `runs/demo`), which is also the run directory: the stage folders,
`eval/base/`, `eval/<recipe>/`, `demo.json`, `table.md`, `report.html`. Rerunning the command resumes: finished
evaluations and stages are kept.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from ospo.artifacts import atomic_write_text
from ospo.evaluate.compare import by_task, results_from_payload


def _run_iterations(out: Path, cfg, iterations: int, base, seconds: dict):
    """The OSPO iterations of the demo (stages 1-4 each), timing each stage into `seconds`; returns the last
    iteration's config and run directory."""
    from ospo import pipeline
    from ospo.stages import STAGES

    run_dir = out
    pipeline.prepare_run_dir(run_dir, cfg, write=False)

    def done(folder, manifest, elapsed, prefix=""):
        seconds[prefix + folder] = elapsed
        c = manifest.get("counts", {})
        print(f"  {prefix}{folder}: {c.get('out', 0)} records, {c.get('rejected', 0)} rejected ({elapsed:.1f} s)",
              flush=True)

    # the base model serves the data stages; training wraps it with LoRA
    pipeline.run_stages(run_dir, cfg, list(STAGES), done, _model=base)
    print(pipeline.summarize(run_dir, cfg, seconds), flush=True)
    for k in range(2, iterations + 1):  # iteration k generates its data with the model of iteration k - 1
        cfg = pipeline.next_iteration_config(cfg, run_dir, k)
        run_dir = out / f"iter-{k}"
        print(f"  iteration {k} in {run_dir} (the model of iteration {k - 1}) ...", flush=True)
        pipeline.prepare_run_dir(run_dir, cfg, write=False)
        pipeline.run_stages(run_dir, cfg, list(STAGES), lambda *a, p=f"iter-{k}/": done(*a, prefix=p), iteration=k)
        print(pipeline.summarize(run_dir, cfg, seconds), flush=True)
    return cfg, run_dir


def _trained_model(cfg, outputs: dict):
    """The model the training stage saved: a full model, or the base model with the trained adapter."""
    from ospo.model import JanusAdapter
    from ospo.registry import resolve_model_path

    m = cfg.model
    return JanusAdapter.from_pretrained(outputs["model"] if "model" in outputs else resolve_model_path(m.path),
                                        dtype="float32", adapter=outputs.get("adapter"), batch_size=m.batch_size)


def run_demo(out_dir: str | Path = "runs/demo", config: str = "shapeworld", overrides: list[str] = (),
             eval_set: str = "geneval", images_per_prompt: int = 16, limit: int | None = None, seed: int = 0,
             report: bool = True, iterations: int = 1) -> dict:
    """Runs the demo (resumable); returns {'table': markdown, 'summary': numbers, 'seconds': per phase}.

    Iteration 1 runs in `out_dir` itself; iteration k > 1 in `out_dir/iter-k`, drawing its data with the model
    iteration k - 1 trained (`pipeline.next_iteration_config`, as `ospo run --iterations`). The last iteration's
    model is evaluated against the base model."""
    from ospo.config import load_config
    from ospo.errors import InputError
    from ospo.evaluate.shapeworld import evaluate_reusing
    from ospo.model import JanusAdapter
    from ospo.sampling import ImageSampling
    from ospo.registry import resolve_model_path
    from ospo.stages import RunContext
    from ospo.stages.train import stage_name

    if iterations < 1:
        raise InputError(f"--iterations must be >= 1, got {iterations}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(config, list(overrides))
    seconds = {}
    m = cfg.model
    base = JanusAdapter.from_pretrained(resolve_model_path(m.path), dtype="float32", adapter=m.adapter,
                                        batch_size=m.batch_size)
    sampling = ImageSampling(cfg_scale=base.default_cfg_scale, temperature=1.0)  # as `ospo eval` and `generate`

    print(f"[1/3] evaluating the base model on ShapeWorld-{eval_set} ...", flush=True)
    t0 = time.monotonic()
    base_eval = evaluate_reusing(base, out / "eval" / "base", eval_set, images_per_prompt, sampling, seed,
                                 {"model": str(resolve_model_path(m.path)), "adapter": m.adapter}, limit)
    seconds["eval_base"] = time.monotonic() - t0

    print(f"[2/3] {'one OSPO iteration' if iterations == 1 else f'{iterations} OSPO iterations'} ({cfg.recipe}) "
          f"in {out} ...", flush=True)
    cfg, run_dir = _run_iterations(out, cfg, iterations, base, seconds)
    outputs = RunContext(run_dir, cfg, iteration=iterations).stage(stage_name(cfg)).manifest().get("outputs", {})

    print(f"[3/3] evaluating the trained model ({outputs}) on the same prompts and seeds ...", flush=True)
    t0 = time.monotonic()
    label = cfg.recipe if iterations == 1 else f"{cfg.recipe}-iter-{iterations}"
    trained_eval = evaluate_reusing(_trained_model(cfg, outputs), out / "eval" / label, eval_set, images_per_prompt,
                                    sampling, seed, outputs, limit)
    seconds["eval_trained"] = time.monotonic() - t0

    table, numbers = by_task(results_from_payload(base_eval), results_from_payload(trained_eval), label)
    atomic_write_text(out / "table.md", table + "\n")
    info = {"config": config, "overrides": list(overrides), "recipe": cfg.recipe, "eval_set": eval_set,
            "images_per_prompt": images_per_prompt, "limit": limit, "seed": seed, "iterations": iterations,
            "sampling": asdict(sampling),
            "summary": numbers, "seconds": seconds, "outputs": outputs}
    atomic_write_text(out / "demo.json", json.dumps(info, indent=1))
    if report:
        from ospo.report import write_report

        info["report"] = str(write_report(out))
    return {"table": table, **info}
