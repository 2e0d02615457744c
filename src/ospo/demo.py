"""`ospo demo`: the whole method on the embedded ShapeWorld model, on a CPU, with a measured before/after.

    base model -> evaluate (ShapeWorld-GenEval, exact oracle) -> one OSPO iteration (stages 1-4, a recipe)
      -> evaluate the trained model on the same prompts and seeds -> paired before/after table -> report

Everything lands in one folder (default `runs/demo`), which is also the run directory: the stage folders,
`eval/base/`, `eval/<recipe>/`, `demo.json`, `table.md`, `report.html`. Rerunning the command resumes: finished evaluations and stages are kept.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from ospo.artifacts import atomic_write_text


def image_results(payload: dict) -> list:
    """The per-image results of an evaluation's results.json payload, for summarize / compare."""
    from ospo.shapeworld.evalsets import ImageResult

    return [ImageResult(i["prompt_id"], i["task"], i["score"]) for i in payload["images"]]


def comparison_table(base: dict, trained: dict, label: str) -> tuple[str, dict]:
    """Markdown table per task: base and trained means with 95% intervals, and the paired difference with its
    interval (prompts resampled together); `*` marks a difference whose interval excludes 0."""
    from ospo.shapeworld.evalsets import compare, summarize

    b, t = summarize(image_results(base)), summarize(image_results(trained))
    d = compare(image_results(base), image_results(trained))

    def cell(e):
        return f"{e.mean:.3f} [{e.low:.3f}, {e.high:.3f}]"

    lines = [f"| task | base | {label} | difference (paired) |", "|---|---|---|---|"]
    rows = [(task, b.tasks[task], t.tasks[task], d.tasks[task]) for task in b.tasks]
    rows.append(("**overall**", b.overall, t.overall, d.overall))
    for task, eb, et, ed in rows:
        star = " *" if ed.low > 0 or ed.high < 0 else ""
        lines.append(f"| {task} | {cell(eb)} | {cell(et)} | {ed.mean:+.3f} [{ed.low:+.3f}, {ed.high:+.3f}]{star} |")
    lines.append(f"\n{b.overall.num_prompts} prompts, {b.overall.num_images} images per model; 95% bootstrap "
                 f"intervals over prompts; * = the paired interval excludes 0.")
    data = {"base": {k: asdict(v) for k, v in b.tasks.items()} | {"overall": asdict(b.overall)},
            label: {k: asdict(v) for k, v in t.tasks.items()} | {"overall": asdict(t.overall)},
            "difference": {k: asdict(v) for k, v in d.tasks.items()} | {"overall": asdict(d.overall)}}
    return "\n".join(lines), data


def run_demo(out_dir: str | Path = "runs/demo", config: str = "shapeworld", overrides: list[str] = (),
             eval_set: str = "geneval", images_per_prompt: int = 16, limit: int | None = None, seed: int = 0,
             report: bool = True, iterations: int = 1) -> dict:
    """Runs the demo (resumable); returns {'table': markdown, 'summary': numbers, 'seconds': per phase}.

    Iteration 1 runs in `out_dir` itself; iteration k > 1 in `out_dir/iter-k`, drawing its data with the model
    iteration k - 1 trained (`pipeline.next_iteration_config`, as `ospo run --iterations`). The last iteration's
    model is evaluated against the base model."""
    from ospo import pipeline
    from ospo.config import load_config
    from ospo.errors import InputError
    from ospo.evaluate.shapeworld import evaluate_reusing
    from ospo.model import JanusAdapter
    from ospo.sampling import ImageSampling
    from ospo.stages import STAGES, RunContext, resolve_model_path
    from ospo.stages.train import stage_name

    if iterations < 1:
        raise InputError(f"--iterations must be >= 1, got {iterations}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(config, list(overrides))
    run_dir = out
    seconds = {}
    m = cfg.model
    base = JanusAdapter.from_pretrained(resolve_model_path(m.path), dtype="float32", adapter=m.adapter,
                                        batch_size=m.batch_size)
    cfg_scale = base.janus.generation_config.guidance_scale or cfg.images.cfg_scale
    sampling = ImageSampling(cfg_scale=cfg_scale, temperature=1.0)

    print(f"[1/3] evaluating the base model on ShapeWorld-{eval_set} ...", flush=True)
    t0 = time.monotonic()
    base_eval = evaluate_reusing(base, out / "eval" / "base", eval_set, images_per_prompt, sampling, seed,
                                 {"model": str(resolve_model_path(m.path)), "adapter": m.adapter}, limit)
    seconds["eval_base"] = time.monotonic() - t0

    print(f"[2/3] {'one OSPO iteration' if iterations == 1 else f'{iterations} OSPO iterations'} ({cfg.recipe}) "
          f"in {run_dir} ...", flush=True)
    pipeline.prepare_run_dir(run_dir, cfg)

    def done(folder, manifest, elapsed, prefix=""):
        seconds[prefix + folder] = elapsed
        c = manifest.get("counts", {})
        print(f"  {prefix}{folder}: {c.get('out', 0)} records, {c.get('rejected', 0)} rejected ({elapsed:.1f} s)",
              flush=True)

    ctx_model = base  # the base model serves the data stages; training wraps it with LoRA
    pipeline.run_stages(run_dir, cfg, list(STAGES), done, _model=ctx_model)
    print(pipeline.summarize(run_dir, cfg, seconds), flush=True)
    for k in range(2, iterations + 1):  # iteration k generates its data with the model of iteration k - 1
        cfg = pipeline.next_iteration_config(cfg, run_dir, k)
        run_dir = out / f"iter-{k}"
        print(f"  iteration {k} in {run_dir} (the model of iteration {k - 1}) ...", flush=True)
        pipeline.prepare_run_dir(run_dir, cfg)
        pipeline.run_stages(run_dir, cfg, list(STAGES), lambda *a, p=f"iter-{k}/": done(*a, prefix=p), iteration=k)
        print(pipeline.summarize(run_dir, cfg, seconds), flush=True)
    train_manifest = RunContext(run_dir, cfg, iteration=iterations).stage(stage_name(cfg)).manifest()
    outputs = train_manifest.get("outputs", {})

    print(f"[3/3] evaluating the trained model ({outputs}) on the same prompts and seeds ...", flush=True)
    t0 = time.monotonic()
    trained = JanusAdapter.from_pretrained(outputs["model"] if "model" in outputs else resolve_model_path(m.path),
                                           dtype="float32", adapter=outputs.get("adapter"), batch_size=m.batch_size)
    label = cfg.recipe if iterations == 1 else f"{cfg.recipe}-iter-{iterations}"
    trained_eval = evaluate_reusing(trained, out / "eval" / label, eval_set, images_per_prompt, sampling, seed,
                                    outputs, limit)
    seconds["eval_trained"] = time.monotonic() - t0

    table, numbers = comparison_table(base_eval, trained_eval, label)
    atomic_write_text(out / "table.md", table + "\n")
    info = {"config": config, "overrides": list(overrides), "recipe": cfg.recipe, "eval_set": eval_set,
            "images_per_prompt": images_per_prompt, "limit": limit, "seed": seed, "iterations": iterations,
            "sampling": asdict(sampling),
            "summary": numbers, "seconds": seconds, "outputs": outputs}
    atomic_write_text(out / "demo.json", json.dumps(info, indent=1))
    if report:
        try:
            from ospo.report import write_report

            info["report"] = str(write_report(out))
        except ImportError:  # the report module is optional for the demo's numbers
            pass
    return {"table": table, **info}
