"""The `ospo shapeworld pretrain` command: its arguments turned into a recipe run or one stage's PretrainConfig."""

from __future__ import annotations


def overrides(items: list[str]) -> dict:
    """--set FIELD=VALUE pairs -> typed PretrainConfig fields; unknown fields name the closest one."""
    from ospo.errors import OspoError
    from ospo.shapeworld.pretrain import config_fields

    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise OspoError(f"--set {item!r}: expected FIELD=VALUE")
        pairs[key.strip()] = value
    return config_fields(pairs, "--set ")


def config_from_args(args):
    """One stage's PretrainConfig from --seed, --set, --vq-steps and --lm-steps, built at once so that the checks
    relating fields (e.g. vq_stop_at <= vq_steps) see them all."""
    from ospo.shapeworld.pretrain import PretrainConfig

    fields = overrides(args.set)
    if args.vq_steps is not None:
        fields["vq_steps"] = args.vq_steps
    if args.lm_steps is not None:
        fields["lm_steps"] = args.lm_steps
    return PretrainConfig(**{"seed": args.seed, **fields})


def run_command(args) -> None:
    """`ospo shapeworld pretrain`: a recipe's chain of stages (the shipped one by default), or one stage described by
    --set / --vq-steps / --lm-steps."""
    from pathlib import Path

    from tqdm import tqdm

    from ospo.errors import OspoError
    from ospo.shapeworld.pretrain import check_out_dir, load_recipe, pretrain, run_recipe

    one_stage = bool(args.set) or args.vq_steps is not None or args.lm_steps is not None
    if one_stage and args.recipe not in (None, "single"):
        raise OspoError(f"--recipe {args.recipe} runs its own stages' settings; --set, --vq-steps and --lm-steps "
                        f"describe one stage (--recipe single). Copy the recipe's YAML and edit it instead")
    bars = {}

    def progress(label, step, total, metrics):  # one bar per phase, the finished phase's bar closed
        if label not in bars:
            for bar in bars.values():
                bar.close()
            bars.clear()
            bars[label] = tqdm(total=total, initial=step - 1, desc=label, unit="step")
        bars[label].update(step - bars[label].n)
        bars[label].set_postfix({k: f"{v:.3f}" for k, v in metrics.items() if k not in ("step", "lr")}, refresh=False)

    if not one_stage and args.recipe != "single":
        recipe = load_recipe(args.recipe or "shipped")
        check_out_dir(args.out)
        print(f"pretraining recipe {recipe.name}: stages {', '.join(s.name for s in recipe.stages)} into "
              f"{args.out}/stages/ (rerun the same command to resume)")
        info = run_recipe(args.out, recipe, seed=args.seed, keep_state=args.keep_state,
                          progress=lambda stage, phase, *rest: progress(f"{stage}: {phase}", *rest))
        done = f"recipe {recipe.name}, last stage {recipe.stages[-1].name}"
    else:
        if (Path(args.out) / "stages").exists():
            raise OspoError(f"{args.out} holds a recipe's stages; rerun it without --set/--vq-steps/--lm-steps (and "
                            f"without --recipe single), or use a new --out for a single stage")
        info = pretrain(args.out, config_from_args(args), keep_state=args.keep_state,
                        progress=lambda phase, *rest: progress(f"pretrain {phase}", *rest))
        done = "one stage"
    for bar in bars.values():
        bar.close()
    print(f"saved the ShapeWorld Janus to {args.out} ({done}); final metrics: {info['final']}")
