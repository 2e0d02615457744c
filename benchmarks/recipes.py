"""The training recipes against each other on ShapeWorld, same data budget, scored by the exact oracle.

On one finished data run (stages prompts ... score, e.g. the demo's), every recipe trains on the pairs its own
selection rule keeps from the *same* prompts and images, with the same optimizer settings and number of passes,
and is evaluated on the same prompts and seeds as the base model. The table gives each model's ShapeWorld-GenEval
score per task with its 95% bootstrap interval, and the paired difference to the base model.

    python -m benchmarks.recipes --run runs/demo [--split dev|geneval-dev|test] [--recipes ospo-v2,ospo-v3,...]

Tune on a dev split, report `--split test` (the held-out evaluation set). `dev` draws the loop's own ten
sub-categories; `geneval-dev` has ShapeWorld-GenEval's six tasks with the prompts the evaluation set leaves
(`evalsets.geneval_dev_split`), and says how many of them the run itself wrote as training prompts.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

RECIPES = ("ospo-v1", "ospo-v2", "ospo-v3", "dpo", "sft-only", "simpo-best-of-n")


def evaluate(model, split: str, out: Path, images_per_prompt: int, sampling, seeds: list[int], num_dev: int,
             weights: dict) -> dict:
    """Evaluates `model` once per seed into `out/seed-<k>/` (`evaluate_reusing`: a finished evaluation of the same
    weights and settings is kept, so a rerun or more seeds only draw what is missing); returns the payload with
    the images of every seed pooled."""
    from ospo.evaluate.shapeworld import evaluate_reusing

    dev = split == "dev"
    records = split_records(split, num_dev)
    payloads = [evaluate_reusing(model, out / f"seed-{seed}", "geneval" if split == "test" else split,
                                 images_per_prompt, sampling, seed, weights, records=records,
                                 extra={"num_dev": num_dev if dev else None})
                for seed in seeds]
    pooled = {k: v for k, v in payloads[0].items() if k not in ("seed", "summary")}
    return {**pooled, "seeds": list(seeds), "images": [i for p in payloads for i in p["images"]]}


def split_records(split: str, num_dev: int):
    """The prompts of `split`: None for the test split (the shipped evaluation set)."""
    from ospo.shapeworld import evalsets

    if split == "dev":
        return evalsets.dev_split(num_dev)
    return evalsets.geneval_dev_split() if split == "geneval-dev" else None


def trained_on(run: Path, records) -> dict[str, int]:
    """Per task, how many of `records` the run wrote as training prompts (its prompts stage's records)."""
    from ospo.artifacts import read_jsonl
    from ospo.parsing import prompt_key

    written = {prompt_key(r.text) for r in read_jsonl(run / "prompts" / "records.jsonl")}
    return {task: sum(prompt_key(r.prompt) in written for r in records if r.task == task)
            for task in dict.fromkeys(r.task for r in records)}


def weights_identity(model_path, adapter: str | None) -> dict:
    """What an evaluation was drawn from: the weights' paths and the content hashes of their files."""
    from ospo.evaluate.shapeworld import weights_hashes

    paths = {"model": str(model_path), **({"adapter": str(adapter)} if adapter is not None else {})}
    return {**paths, **{f"{k}_hash": h for k, h in weights_hashes(paths).items()}}


# long: flags, then train, evaluate and tabulate each recipe in order (a script read top to bottom)
def main(argv=None) -> None:
    from ospo import pipeline
    from ospo.evaluate.compare import Row, by_model, results_from_payload
    from ospo.model import JanusAdapter
    from ospo.sampling import ImageSampling
    from ospo.registry import resolve_model_path
    from ospo.stages import RunContext
    from ospo.stages.train import stage_name

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a ShapeWorld run directory with the data stages done")
    ap.add_argument("--split", choices=["dev", "geneval-dev", "test"], default="dev")
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--images-per-prompt", type=int, default=16, help="as `ospo demo` (GenEval's protocol: 4)")
    ap.add_argument("--num-dev", type=int, default=8, help="dev prompts per sub-category")
    ap.add_argument("--seed", type=int, default=0, help="first evaluation seed")
    ap.add_argument("--seeds", type=int, default=1, help="evaluation seeds seed .. seed+N-1, their images pooled "
                    "per prompt (another seed draws other images of the same prompts)")
    ap.add_argument("--iteration", type=int, default=1, help="the iteration the run is (OUT/iter-K of `ospo run "
                    "--iterations`): recipes train as that iteration does, on the model it started from (its lr "
                    "scaled by train.iteration_lr_scale); base is always the model before the first iteration")
    ap.add_argument("--set", action="append", default=[], dest="overrides", help="config overrides for training")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.seeds < 1:
        ap.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.iteration < 1:
        ap.error(f"--iteration must be >= 1, got {args.iteration}")
    run = Path(args.run)
    cfg = pipeline.load_run_config(run, args.overrides)
    base = JanusAdapter.from_pretrained(resolve_model_path(cfg.model.path), batch_size=cfg.model.batch_size)
    sampling = ImageSampling(cfg_scale=base.default_cfg_scale)
    out = run / f"recipes-{args.split}"
    seeds = list(range(args.seed, args.seed + args.seeds))
    results = {"base": evaluate(base, args.split, out / "base", args.images_per_prompt, sampling, seeds,
                                args.num_dev, weights_identity(resolve_model_path(cfg.model.path), None))}
    seconds = {}
    for recipe in args.recipes.split(","):
        rcfg = pipeline.load_run_config(run, [*args.overrides, f"recipe={recipe}"])
        t0 = time.monotonic()
        pipeline.run_stages(run, rcfg, ["select", "train"], progress=False, iteration=args.iteration)
        seconds[recipe] = time.monotonic() - t0
        outputs = RunContext(run, rcfg).stage(stage_name(rcfg)).manifest()["outputs"]
        model = JanusAdapter.from_pretrained(resolve_model_path(rcfg.model.path), adapter=outputs.get("adapter"),
                                             batch_size=cfg.model.batch_size)
        results[recipe] = evaluate(model, args.split, out / recipe, args.images_per_prompt, sampling, seeds,
                                   args.num_dev, weights_identity(resolve_model_path(rcfg.model.path),
                                                                  outputs.get("adapter")))
    if args.split == "geneval-dev":
        records = split_records(args.split, args.num_dev)
        counts, sizes = trained_on(run, records), Counter(r.task for r in records)
        print("geneval-dev prompts the run wrote as training prompts: " +
              ", ".join(f"{t} {counts[t]}/{n}" for t, n in sizes.items()) + "\n")
    rows = [Row(name, results_from_payload(r)) for name, r in results.items() if name != "base"]
    text, table = by_model(results_from_payload(results["base"]), rows)
    print(f"ShapeWorld-GenEval ({args.split} split), {args.images_per_prompt} images per prompt x {len(seeds)} "
          f"seed(s) {seeds}, same seeds for every model; "
          f"mean [95% interval]; last column: paired difference to base\n")
    print(text)
    for name in table:
        table[name]["train_seconds"] = seconds.get(name)
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
