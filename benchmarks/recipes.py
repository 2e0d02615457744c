"""The training recipes against each other on ShapeWorld, same data budget, scored by the exact oracle.

On one finished data run (stages prompts ... score, e.g. the demo's), every recipe trains on the pairs its own
selection rule keeps from the *same* prompts and images, with the same optimizer settings and number of passes,
and is evaluated on the same prompts and seeds as the base model. The table gives each model's ShapeWorld-GenEval
score per task with its 95% bootstrap interval, and the paired difference to the base model.

    python -m benchmarks.recipes --run runs/demo [--split dev|test] [--recipes ospo-v2,ospo-v3,...]

Tune on `--split dev` (prompts drawn apart from the evaluation set); report `--split test` (the held-out set).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

RECIPES = ("ospo-v1", "ospo-v2", "ospo-v3", "dpo", "sft-only", "simpo-best-of-n")


def evaluate(model, split: str, out: Path, images_per_prompt: int, sampling, seeds: list[int], num_dev: int,
             weights: dict) -> dict:
    """Evaluates `model` once per seed into `out/seed-<k>/` (a finished evaluation of the same weights and
    settings is reused, so a rerun or more seeds only draw what is missing); returns the payload with the images
    of every seed pooled."""
    from ospo.artifacts import atomic_write_text
    from ospo.evaluate.shapeworld import evaluate_shapeworld
    from ospo.shapeworld import evalsets

    records = evalsets.dev_split(num_dev) if split == "dev" else None
    pooled = None
    for seed in seeds:
        path = out / f"seed-{seed}" / "results.json"
        payload = json.loads(path.read_text()) if path.exists() else {}
        if not (payload.get("weights") == weights and payload.get("seed") == seed and payload.get("num_dev") ==
                (num_dev if split == "dev" else None) and payload.get("images_per_prompt") == images_per_prompt and
                payload.get("sampling") == asdict(sampling)):
            evaluate_shapeworld(model, "geneval" if split == "test" else "dev", path.parent, images_per_prompt,
                                sampling, seed, records=records)
            payload = json.loads(path.read_text())
            payload.update(weights=weights, num_dev=num_dev if split == "dev" else None)
            atomic_write_text(path, json.dumps(payload, indent=1))
        pooled = payload if pooled is None else {**pooled, "images": pooled["images"] + payload["images"]}
    pooled = {k: v for k, v in pooled.items() if k not in ("seed", "summary")}
    return {**pooled, "seeds": list(seeds)}


def weights_identity(model_path, adapter: str | None) -> dict:
    """What an evaluation was drawn from: the paths and the content hashes of their weight files (a retrained
    adapter at the same path, or another shipped checkpoint, is another model)."""
    from ospo.artifacts import file_hash

    out = {"model": str(model_path)}
    for key, folder, name in (("model", model_path, "model.safetensors"),
                              ("adapter", adapter, "adapter_model.safetensors")):
        if folder is not None:
            out[key] = str(folder)
            f = Path(folder) / name
            out[f"{key}_hash"] = file_hash(f) if f.is_file() else None
    return out


def main(argv=None) -> None:
    from ospo import pipeline
    from ospo.demo import image_results
    from ospo.model import JanusAdapter
    from ospo.sampling import ImageSampling
    from ospo.shapeworld.evalsets import compare, summarize
    from ospo.stages import RunContext, resolve_model_path
    from ospo.stages.train import stage_name

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a ShapeWorld run directory with the data stages done")
    ap.add_argument("--split", choices=["dev", "test"], default="dev")
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--images-per-prompt", type=int, default=16, help="as `ospo demo` (GenEval's protocol: 4)")
    ap.add_argument("--num-dev", type=int, default=8, help="dev prompts per sub-category")
    ap.add_argument("--seed", type=int, default=0, help="first evaluation seed")
    ap.add_argument("--seeds", type=int, default=1, help="evaluation seeds seed .. seed+N-1, their images pooled "
                    "per prompt (another seed draws other images of the same prompts)")
    ap.add_argument("--set", action="append", default=[], dest="overrides", help="config overrides for training")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.seeds < 1:
        ap.error(f"--seeds must be >= 1, got {args.seeds}")
    run = Path(args.run)
    cfg = pipeline.load_run_config(run, args.overrides)
    base = JanusAdapter.from_pretrained(resolve_model_path(cfg.model.path), batch_size=cfg.model.batch_size)
    sampling = ImageSampling(cfg_scale=base.janus.generation_config.guidance_scale or cfg.images.cfg_scale)
    out = run / f"recipes-{args.split}"
    seeds = list(range(args.seed, args.seed + args.seeds))
    results = {"base": evaluate(base, args.split, out / "base", args.images_per_prompt, sampling, seeds,
                                args.num_dev, weights_identity(resolve_model_path(cfg.model.path), None))}
    seconds = {}
    for recipe in args.recipes.split(","):
        rcfg = pipeline.load_run_config(run, [*args.overrides, f"recipe={recipe}"])
        t0 = time.monotonic()
        pipeline.run_stages(run, rcfg, ["select", "train"], progress=False)
        seconds[recipe] = time.monotonic() - t0
        outputs = RunContext(run, rcfg).stage(stage_name(rcfg)).manifest()["outputs"]
        model = JanusAdapter.from_pretrained(resolve_model_path(rcfg.model.path), adapter=outputs.get("adapter"),
                                             batch_size=cfg.model.batch_size)
        results[recipe] = evaluate(model, args.split, out / recipe, args.images_per_prompt, sampling, seeds,
                                   args.num_dev, weights_identity(resolve_model_path(rcfg.model.path),
                                                                  outputs.get("adapter")))
    base_results = image_results(results["base"])
    summaries = {name: summarize(image_results(r)) for name, r in results.items()}
    tasks = list(summaries["base"].tasks)
    print(f"ShapeWorld-GenEval ({args.split} split), {args.images_per_prompt} images per prompt x {len(seeds)} "
          f"seed(s) {seeds}, same seeds for every model; "
          f"mean [95% interval]; last column: paired difference to base\n")
    print("| model | " + " | ".join(tasks) + " | overall | vs base |")
    print("|---" * (len(tasks) + 3) + "|")
    table = {}
    for name, s in summaries.items():
        d = compare(base_results, image_results(results[name])).overall if name != "base" else None
        cells = [f"{s.tasks[t].mean:.3f}" for t in tasks]
        vs = "" if d is None else f"{d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}]"
        print(f"| {name} | " + " | ".join(cells) + f" | {s.overall.mean:.3f} [{s.overall.low:.3f}, "
              f"{s.overall.high:.3f}] | {vs} |")
        table[name] = {"tasks": {t: s.tasks[t].mean for t in tasks}, "overall": s.overall.mean,
                       "interval": [s.overall.low, s.overall.high],
                       "vs_base": None if d is None else [d.mean, d.low, d.high], "train_seconds": seconds.get(name)}
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
