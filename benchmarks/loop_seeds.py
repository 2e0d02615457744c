"""How much one OSPO iteration's gain depends on the loop's own random draws, on ShapeWorld.

The demo's before/after is one draw of the loop: the prompts the model wrote, the images it drew, hence the pairs
it kept and the LoRA initialisation all follow the run's `seed`. This script runs the whole loop (stages 1-4, one
recipe, one iteration) once per loop seed, each in `OUT/loop-<s>/`, from the same base model, and evaluates every
trained model on the same prompts and evaluation seeds as the base model (evaluated once, `OUT/base-<split>/`), in
`OUT/loop-<s>/eval-<split>/<its train folder>/`. `--set train.*` trains other adapters on the same data.

    python -m benchmarks.loop_seeds --out runs/loops [--loop-seeds 0,1,2,3] [--split test] [--seeds 2]

It prints one row per loop seed (its pairs and its paired difference to base) and a pooled row: every loop's
images of a prompt pooled against the base model's, i.e. the expected gain of one iteration, with the paired
bootstrap over prompts. Loop seed 0 with the default settings is the demo's run. Finished stages and evaluations
are kept, so a rerun (or more loop seeds) only computes what is missing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


# long: flags, then run, evaluate and tabulate each loop seed in order (a script read top to bottom)
def main(argv=None) -> None:
    from benchmarks.recipes import evaluate, weights_identity
    from ospo import pipeline
    from ospo.config import load_config
    from ospo.evaluate.compare import Row, by_model, results_from_payload
    from ospo.model import JanusAdapter
    from ospo.sampling import ImageSampling
    from ospo.registry import resolve_model_path
    from ospo.stages import STAGES, RunContext
    from ospo.stages.train import stage_name

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="a folder for the runs (loop-<s>/) and the base evaluation")
    ap.add_argument("--config", default="shapeworld")
    ap.add_argument("--loop-seeds", default="0,1,2,3", help="run seeds, one whole loop each")
    ap.add_argument("--split", choices=["dev", "geneval-dev", "test"], default="test")
    ap.add_argument("--images-per-prompt", type=int, default=16, help="as `ospo demo` (GenEval's protocol: 4)")
    ap.add_argument("--num-dev", type=int, default=8, help="dev prompts per sub-category (--split dev)")
    ap.add_argument("--seeds", type=int, default=2, help="evaluation seeds 0 .. N-1, their images pooled per prompt")
    ap.add_argument("--set", action="append", default=[], dest="overrides", help="config overrides for every loop")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    try:
        loop_seeds = [int(s) for s in args.loop_seeds.split(",")]
    except ValueError:
        ap.error(f"--loop-seeds takes comma-separated integers, got {args.loop_seeds!r}")
    if len(set(loop_seeds)) != len(loop_seeds):
        ap.error(f"--loop-seeds repeats a seed: {args.loop_seeds}")
    if args.seeds < 1:
        ap.error(f"--seeds must be >= 1, got {args.seeds}")
    if any(o.split("=", 1)[0].strip() == "seed" for o in args.overrides):
        ap.error("the run seed is set by --loop-seeds, not by --set seed=...")
    out = Path(args.out)
    seeds = list(range(args.seeds))
    cfg = load_config(args.config, args.overrides)
    model_path = resolve_model_path(cfg.model.path)
    base = JanusAdapter.from_pretrained(model_path, adapter=cfg.model.adapter, batch_size=cfg.model.batch_size)
    sampling = ImageSampling(cfg_scale=base.default_cfg_scale)
    t0 = time.monotonic()
    results = {"base": evaluate(base, args.split, out / f"base-{args.split}", args.images_per_prompt, sampling,
                                seeds, args.num_dev, weights_identity(model_path, cfg.model.adapter))}
    print(f"base evaluated ({time.monotonic() - t0:.0f} s)", flush=True)
    del base
    loops = {}
    for s in loop_seeds:
        run = out / f"loop-{s}"
        lcfg = load_config(args.config, [*args.overrides, f"seed={s}"])
        t0 = time.monotonic()
        pipeline.prepare_run_dir(run, lcfg)
        pipeline.run_stages(run, lcfg, list(STAGES), progress=False)  # each stage loads the base model afresh
        ctx = RunContext(run, lcfg)
        outputs = ctx.stage(stage_name(lcfg)).manifest()["outputs"]
        pairs = ctx.stage(pipeline.stage_dir_name("select", lcfg)).manifest()["counts"]["out"]
        model = JanusAdapter.from_pretrained(outputs.get("model") or model_path, adapter=outputs.get("adapter"),
                                             batch_size=lcfg.model.batch_size)
        # one folder per training setup (as the train stage's own), so other `--set train.*` never overwrite it
        results[s] = evaluate(model, args.split, run / f"eval-{args.split}" / stage_name(lcfg),
                              args.images_per_prompt, sampling, seeds, args.num_dev,
                              weights_identity(outputs.get("model") or model_path, outputs.get("adapter")))
        loops[s] = {"pairs": pairs, "seconds": time.monotonic() - t0}
        print(f"loop seed {s}: {pairs} pairs ({loops[s]['seconds']:.0f} s)", flush=True)

    pairs = {f"loop seed {s}": loops[s]["pairs"] for s in loop_seeds}
    rows = [Row(f"loop seed {s}", results_from_payload(results[s]), (str(loops[s]["pairs"]),)) for s in loop_seeds]
    pairs[f"pooled ({len(loop_seeds)} loops)"] = sum(pairs.values())
    rows.append(Row(f"pooled ({len(loop_seeds)} loops)", [i for r in rows for i in r.results],
                    (str(sum(loops[s]["pairs"] for s in loop_seeds)),)))
    text, table = by_model(results_from_payload(results["base"]), rows, ("pairs",), overall_interval=False)
    for label, n in pairs.items():
        table[label]["pairs"] = n
    print(f"\nShapeWorld-GenEval ({args.split} split), recipe {cfg.recipe}, one iteration per loop seed; "
          f"{args.images_per_prompt} images per prompt x {len(seeds)} evaluation seed(s) per model, the same for "
          f"every model; last column: paired difference to base, 95% bootstrap interval over prompts\n")
    print(text)
    gains = [table[f"loop seed {s}"]["vs_base"][0] for s in loop_seeds]
    spread = f", standard deviation {statistics.stdev(gains):.3f}" if len(gains) > 1 else ""
    print(f"\nper-loop gains: {', '.join(f'{g:+.3f}' for g in gains)}; mean {statistics.mean(gains):+.3f}{spread}")
    if args.json:
        Path(args.json).write_text(json.dumps({"loops": loops, "table": table, "seeds": seeds,
                                               "overrides": args.overrides}, indent=1))


if __name__ == "__main__":
    main()
