"""`ospo <command>`: one CLI, a subcommand per job. Heavy imports happen inside commands so --help is instant.

Errors meant for the user (OspoError, ValueError from validation) print as one line on stderr and exit 2;
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from ospo import runtime


def _add_model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--model", required=required, default=None,
                   help="hub id (e.g. deepseek-community/Janus-Pro-1B) or local directory"
                   + ("" if required else " (default: the shipped ShapeWorld model)"))
    p.add_argument("--adapter", default=None, help="PEFT LoRA adapter directory to apply on top of --model")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--dtype", default=None,
                   help="float32 | bfloat16 | float16 (default: bfloat16 on GPU, float32 on CPU)")
    p.add_argument("--batch-size", type=int, default=16, help="items per forward pass")


def finite_float(text: str) -> float:
    """An argparse type: a float that is a number (NaN passes every range check; inf breaks arithmetic)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _add_cfg_scale_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cfg-scale", type=finite_float, default=None,
                   help="classifier-free guidance scale, 1 = none (default: the checkpoint's, from its generation "
                        "config; 5 when it has none)")


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                   help="override a config value, e.g. --set select.rule=v3 (repeatable)")
    p.add_argument("--num-processes", type=int, default=1,
                   help="shard every stage over N local worker processes (or use `accelerate launch -m ospo.cli`)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ospo", description="Object-centric self-improving preference optimisation "
                                     "for unified multimodal models (Janus-Pro).")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_model_commands(sub)
    _add_shapeworld_commands(sub)
    _add_run_commands(sub)
    _add_eval_commands(sub)
    _add_demo_command(sub)
    return parser


def _add_model_commands(sub) -> None:
    p = sub.add_parser("generate", help="text -> images: writes PNGs and the sampled code ids")
    _add_model_args(p)
    p.add_argument("--prompt", required=True, action="append", help="prompt text (repeat for several)")
    p.add_argument("--num-images", type=int, default=1, help="images per prompt")
    _add_cfg_scale_arg(p)
    p.add_argument("--temperature", type=finite_float, default=1.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0, help="0 = off")
    p.add_argument("--top-p", type=finite_float, default=1.0, help="1 = off")
    p.add_argument("--seed", type=int, default=0, help="image k of a prompt uses seed + k")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("ask", help="image + yes/no question -> p(yes), p(no)")
    _add_model_args(p)
    p.add_argument("--image", required=True, action="append", help="PNG/JPEG path (repeat for several)")
    p.add_argument("--question", required=True, action="append", help="question (repeat for several)")
    p.add_argument("--suffix", default=" Please answer yes or no.", help="appended to every question")
    p.set_defaults(func=cmd_ask)


def _add_shapeworld_commands(sub) -> None:
    sw = sub.add_parser("shapeworld", help="the embedded synthetic world").add_subparsers(dest="sw_command",
                                                                                        metavar="SUBCOMMAND")
    p = sw.add_parser("pretrain", help="pretrain the tiny ShapeWorld Janus (resumable; rerun the same command)",
                      description="Without stage flags, runs a recipe of pretraining stages (default 'shipped': "
                                  "the chain of stages that made the shipped checkpoint: 3-5 hours on 2 CPU cores, `python -m "
                                  "benchmarks.pretrain_speed` predicts it for this machine). "
                                  "With --vq-steps, --lm-steps or --set, runs that one stage from PretrainConfig's "
                                  "defaults.")
    p.add_argument("--out", required=True, help="checkpoint directory (resumes if it holds an unfinished run)")
    p.add_argument("--seed", type=int, default=0, help="seeds every random draw of every stage (default 0)")
    p.add_argument("--recipe", default=None, metavar="NAME|FILE.yaml",
                   help="stages to run: a packaged recipe (shipped) or a YAML file; 'single' = one stage from the "
                        "flags below (implied by them)")
    p.add_argument("--vq-steps", type=int, default=None, help="one stage: VQ decoder steps (default: the config's)")
    p.add_argument("--lm-steps", type=int, default=None, help="one stage: mixture steps (default: the config's)")
    p.add_argument("--keep-state", action="store_true", help="keep optimizer states after the final save")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="one stage: override a PretrainConfig field, e.g. --set vq_lr=2e-3 (repeatable)")
    p.set_defaults(func=cmd_shapeworld_pretrain)


def _add_run_commands(sub) -> None:
    from ospo.stages import STAGES  # light: no torch

    p = sub.add_parser("run", help="run the OSPO loop (prompts ... select, train) into a run directory")
    p.add_argument("--config", required=True,
                   help="a YAML config file, or a shipped one: shapeworld, janus-pro-1b, janus-pro-7b")
    _add_run_args(p)
    p.add_argument("--out", required=True, help="run directory (rerun the same command to resume)")
    p.add_argument("--stages", default=None, help="comma-separated subset of: " + ", ".join(STAGES)
                   + " (run in pipeline order; default: all)")
    p.add_argument("--iterations", type=int, default=1,
                   help="run the stages K times, iteration k+1 (in OUT/iter-k+1) generating with the model iteration "
                        "k trained, with lr scaled by train.iteration_lr_scale")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("stage", help="run one stage in an existing run directory (with its saved config)")
    p.add_argument("name", choices=STAGES, metavar="NAME", help=", ".join(STAGES))
    p.add_argument("--run", required=True, help="run directory made by `ospo run`")
    _add_run_args(p)
    p.set_defaults(func=cmd_stage)

    p = sub.add_parser("report", help="write an offline HTML report of a run directory (pairs, curves, evals)")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory made by `ospo run`")
    p.add_argument("--out", default=None, help="HTML file to write (default: RUN_DIR/report.html)")
    p.set_defaults(func=cmd_report)


def _add_eval_commands(sub) -> None:
    ev = sub.add_parser("eval", help="evaluate a model").add_subparsers(dest="eval_command", metavar="BENCHMARK")
    p = ev.add_parser("shapeworld", help="ShapeWorld-GenEval / -CompBench, scored by the exact oracle")
    _add_model_args(p, required=False)
    p.add_argument("--set", default="geneval", choices=["geneval", "compbench"])
    p.add_argument("--images-per-prompt", type=int, default=4)
    p.add_argument("--limit", type=int, default=None, help="first N prompts of every task")
    _add_cfg_scale_arg(p)
    p.add_argument("--temperature", type=finite_float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_eval_shapeworld)

    p = ev.add_parser("export", help="generate images in the layout the official GenEval / T2I-CompBench / DPG-Bench "
                                     "scorer reads (resumable; prints the scorer commands)")
    p.add_argument("benchmark", choices=["geneval", "t2i-compbench", "dpg-bench"], metavar="BENCH",
                   help="geneval | t2i-compbench | dpg-bench")
    p.add_argument("--prompts", required=True, help="geneval: evaluation_metadata.jsonl; t2i-compbench: a "
                   "<category>_val.txt or the dataset folder; dpg-bench: the prompts folder of <item_id>.txt")
    _add_model_args(p)
    p.add_argument("--seed", type=int, default=42, help="image k of every prompt uses seed + k")
    p.add_argument("--images-per-prompt", type=int, default=None,
                   help="default: 4 (geneval), 10 (t2i-compbench); dpg-bench: always 4 (one 2x2 grid)")
    _add_cfg_scale_arg(p)
    p.add_argument("--temperature", type=finite_float, default=1.0, help="0 = greedy")
    p.add_argument("--limit", type=int, default=None, help="first N prompts (of every category)")
    p.add_argument("--category", action="append", default=None, metavar="NAME[,NAME]",
                   help="t2i-compbench categories to export from the dataset folder (default: all 8)")
    p.add_argument("--num-processes", type=int, default=1, help="shard the prompts over N local worker processes")
    p.add_argument("--out", required=True, help="output folder (rerun the same command to resume)")
    p.set_defaults(func=cmd_eval_export)


def _add_demo_command(sub) -> None:
    p = sub.add_parser("demo", help="the whole loop on the shipped ShapeWorld model, with a before/after table")
    p.add_argument("--out", default="runs/demo", help="output (and run) directory; rerun to resume")
    p.add_argument("--config", default="shapeworld", help="config name or YAML path (default: shapeworld)")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                   help="override a config value, e.g. --set recipe=ospo-v3 (repeatable)")
    p.add_argument("--images-per-prompt", type=int, default=16,
                   help="images per evaluation prompt (default 16; GenEval's protocol draws 4, but ShapeWorld-GenEval "
                        "has only 3-100 prompts per task, and at 4 the paired interval is wider than the effect)")
    p.add_argument("--limit", type=int, default=None, help="first N prompts of every evaluation task")
    p.add_argument("--seed", type=int, default=0, help="evaluation seed")
    p.add_argument("--iterations", type=int, default=1, help="OSPO iterations before the trained model is evaluated; "
                   "iteration k > 1 runs in OUT/iter-k with the model iteration k - 1 trained (default 1)")
    p.set_defaults(func=cmd_demo)


def _cfg_scale(args) -> float:
    """--cfg-scale, else the checkpoint's default guidance (read before, and without, loading its weights)."""
    if args.cfg_scale is not None:
        return args.cfg_scale
    from ospo.model import checkpoint_default_cfg_scale
    from ospo.registry import resolve_model_path

    return checkpoint_default_cfg_scale(resolve_model_path(args.model))


def load_model(args):
    from ospo.model import JanusAdapter
    from ospo.registry import resolve_model_path

    device = runtime.device(args.device)
    dtype = runtime.dtype(args.dtype, device)
    return JanusAdapter.from_pretrained(resolve_model_path(args.model), dtype=dtype, device=device,
                                        adapter=args.adapter, batch_size=args.batch_size)


def cmd_generate(args) -> None:
    import json
    from pathlib import Path

    import io

    from ospo.artifacts import atomic_write_bytes, atomic_write_text, output_folder, save_codes
    from ospo.errors import InputError
    from ospo.sampling import ImageSampling

    if args.num_images < 1:
        raise InputError(f"--num-images must be >= 1, got {args.num_images}")
    if any(not p.strip() for p in args.prompt):
        raise InputError("--prompt is empty")
    sampling = ImageSampling(_cfg_scale(args), args.temperature, args.top_k, args.top_p)
    prompts = [p for p in args.prompt for _ in range(args.num_images)]
    seeds = [args.seed + k for _ in args.prompt for k in range(args.num_images)]
    ids = [f"{i:05d}" for i in range(len(prompts))]
    out = output_folder(args.out)  # before the model generates anything
    taken = [n for n in ("images.jsonl", "codes.safetensors", *(f"{i}.png" for i in ids)) if (out / n).exists()]
    if taken:
        raise InputError(f"--out {out} already holds {taken[0]} (of an earlier generate); use another folder")
    model = load_model(args)
    for prompt in args.prompt:  # transformers would only warn, then draw from positions it never learned
        length = model.image_prompt_ids([prompt])[0].shape[1] + model.num_image_tokens
        if length > model.context_length:
            raise InputError(f"--prompt {prompt[:40]!r}... needs {length} tokens with the image's "
                             f"{model.num_image_tokens}, more than the model's {model.context_length}; shorten it")
    tokens = model.generate_image_tokens(prompts, seeds, sampling)
    images = model.decode_images(tokens.codes)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for image_id, prompt, seed, image, logps in zip(ids, prompts, seeds, images, tokens.logps):
        png = io.BytesIO()
        image.save(png, format="PNG")
        atomic_write_bytes(out / f"{image_id}.png", png.getvalue())  # a full disk leaves no half-written PNG
        rows.append({"id": image_id, "prompt": prompt, "seed": seed, "file": f"{image_id}.png",
                     "mean_logp": round(float(logps.mean()), 6)})
    save_codes(out / "codes.safetensors", dict(zip(ids, tokens.codes)))
    atomic_write_text(out / "images.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} images, codes.safetensors and images.jsonl to {out}")


def cmd_ask(args) -> None:
    from ospo.artifacts import load_image
    from ospo.errors import InputError

    if any(not q.strip() for q in args.question):
        raise InputError("--question is empty")
    images = [load_image(p) for p in args.image]
    model = load_model(args)
    questions = [q.strip() + args.suffix for q in args.question]
    scores = model.yes_no_scores(images, [questions] * len(images))
    for path, yes_no in zip(args.image, scores):
        for q, y, n in zip(args.question, yes_no.p_yes.tolist(), yes_no.p_no.tolist()):
            print(f"{path}\t{q}\tp(yes)={y:.4f}\tp(no)={n:.4f}\tscore={y - n:+.4f}")


def cmd_shapeworld_pretrain(args) -> None:
    from ospo.shapeworld.pretrain.command import run_command

    run_command(args)


def cmd_eval_shapeworld(args) -> None:
    from ospo.evaluate.shapeworld import evaluate_shapeworld, summary_table
    from ospo.sampling import ImageSampling

    from ospo.artifacts import output_folder
    from ospo.errors import InputError

    args.model = args.model or "shapeworld"  # the registered name of the shipped checkpoint
    if args.images_per_prompt < 1 or (args.limit is not None and args.limit < 1):
        raise InputError(f"--images-per-prompt and --limit must be >= 1, got {args.images_per_prompt} and "
                         f"{args.limit}")
    sampling = ImageSampling(cfg_scale=_cfg_scale(args), temperature=args.temperature)
    if args.out is not None:
        output_folder(args.out)  # before the model generates anything
    summary = evaluate_shapeworld(load_model(args), args.set, args.out, args.images_per_prompt, sampling, args.seed,
                                  args.limit)
    print(summary_table(summary))
    print(f"results.json, table.md and contact_sheet.png in {args.out}")


def cmd_eval_export(args) -> int:
    from ospo.evaluate.export import export_command

    args.cfg_scale = _cfg_scale(args)  # the export records its settings before any process loads the model
    return export_command(args, load_model)


def cmd_demo(args) -> None:
    from ospo.demo import run_demo

    info = run_demo(args.out, args.config, args.overrides, images_per_prompt=args.images_per_prompt,
                    limit=args.limit, seed=args.seed, iterations=args.iterations)
    print(info["table"])
    print(f"time: {sum(info['seconds'].values()) / 60:.1f} min; details in {args.out}/demo.json"
          + (f"; report: {info['report']}" if "report" in info else ""))


def cmd_run(args) -> int:
    from ospo import pipeline
    from ospo.config import load_config

    runtime.processes()  # a launcher that started fewer processes than it asked for stops here, before any write
    cfg = load_config(args.config, args.overrides)
    names = pipeline.parse_stages(args.stages)
    if args.iterations < 1:
        from ospo.errors import InputError

        raise InputError(f"--iterations must be >= 1, got {args.iterations}")
    if args.iterations == 1:
        return _run_pipeline(args, args.out, cfg, names)
    if "train" not in names:
        from ospo.errors import InputError

        raise InputError("--iterations > 1 needs the train stage (each iteration generates with the model the "
                         "previous one trained)")
    from pathlib import Path

    if args.num_processes > 1 and "OSPO_RANK" not in os.environ:
        return pipeline.spawn_workers(args.argv, args.num_processes)  # each worker runs every iteration
    for k in range(1, args.iterations + 1):  # iteration k+1 generates its data with the model of iteration k
        sub = Path(args.out) / f"iter-{k}"
        if k > 1:
            cfg = pipeline.next_iteration_config(cfg, Path(args.out) / f"iter-{k - 1}", k)
        rc = _run_pipeline(args, sub, cfg, names, iteration=k)
        if rc:
            return rc
    return 0


def cmd_stage(args) -> int:
    from ospo import pipeline

    return _run_pipeline(args, args.run, pipeline.load_run_config(args.run, args.overrides), [args.name])


def _run_pipeline(args, run_dir, cfg, names, iteration: int = 1) -> int:
    from ospo import pipeline
    from ospo.errors import InputError

    if args.num_processes < 1:
        raise InputError(f"--num-processes must be >= 1, got {args.num_processes}")
    worker = "OSPO_RANK" in os.environ
    if args.num_processes > 1 and int(os.environ.get("WORLD_SIZE", 1)) > 1 and not worker:
        raise InputError("--num-processes and a distributed launcher (WORLD_SIZE > 1) both shard; use one of them")
    pipeline.prepare_run_dir(run_dir, cfg, write=False)  # a run directory of another config fails before any work
    if args.num_processes > 1 and not worker:
        for name in names:  # fail here, not in every worker, when a stage does not exist
            pipeline.stage_module(name)
        return pipeline.spawn_workers(args.argv, args.num_processes)
    rank0 = runtime.processes().rank == 0
    seconds = {}

    def done(folder, manifest, elapsed):
        seconds[folder] = elapsed
        if rank0:
            c = manifest.get("counts", {})
            print(f"{folder}: {c.get('out', 0)} records, {c.get('rejected', 0)} rejected ({elapsed:.1f} s)",
                  flush=True)

    pipeline.run_stages(run_dir, cfg, names, done, iteration=iteration)
    if rank0:
        print(pipeline.summarize(run_dir, cfg, seconds))
    return 0


def cmd_report(args) -> None:
    from ospo.report import write_report

    print(f"wrote {write_report(args.run_dir, args.out)}")


def main(argv=None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # worker processes rerun the same command
    if not args.command or getattr(args, "func", None) is None:
        parser.parse_args([*argv, "--help"])
        return 0
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.debug:
        return args.func(args) or 0
    from ospo.errors import OspoError

    try:
        rc = args.func(args)
    except (OspoError, ValueError) as e:
        print(f"ospo {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ospo {args.command}: interrupted", file=sys.stderr)
        return 130
    return rc or 0


if __name__ == "__main__":
    sys.exit(main())
