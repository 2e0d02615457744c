"""Pretraining recipes: a chain of stages is the same as running its commands by hand, resumes, and refuses
mistakes with one clear line."""

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from ospo.errors import InputError, OspoError
from ospo.shapeworld.pretrain import (
    PretrainConfig, assemble, load_recipe, pretrain, recipe_names, run_recipe, saved_config, shapeworld_spec, stage_dir,
)

TINY = dict(vq_batch=2, vision_steps=1, vision_batch=2, batch_t2i=3, batch_vqa=2, batch_text=2, checkpoint_every=1,
            eval_every=0, warmup_steps=1)

RECIPE = """
stages:
  - name: vq
    set: {vq_steps: 4, vq_stop_at: 2, lm_steps: 0, vision_steps: 0, vq_batch: 2, checkpoint_every: 1,
          eval_every: 0}
  - name: lm
    set: {vq_steps: 0, lm_steps: 2, vision_steps: 1, vision_batch: 2, batch_t2i: 3, batch_vqa: 2, batch_text: 2,
          checkpoint_every: 1, eval_every: 0, warmup_steps: 1, lr: 1e-3}
  - name: joined
    assemble: {vq: vq, rest: lm}
  - name: text
    set: {init_from: joined, vq_steps: 0, lm_steps: 2, vision_steps: 0, text_steps: 2, text_batch: 2, batch_t2i: 3,
          batch_vqa: 2, batch_text: 2, checkpoint_every: 1, eval_every: 0, warmup_steps: 1}
"""


def small_spec():
    return replace(shapeworld_spec(), hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                   vision_hidden_size=32, vision_layers=1)


def _weights(path):
    return load_file(str(path / "model.safetensors"))


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def recipe_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(RECIPE)
    return path


def test_a_recipe_is_its_stages_run_by_hand_and_resumes_after_a_crash(tmp_path, recipe_file):
    spec = small_spec()
    # by hand: the commands the recipe stands for
    hand = tmp_path / "hand"
    pretrain(hand / "vq", PretrainConfig(vq_steps=4, vq_stop_at=2, lm_steps=0, vision_steps=0, vq_batch=2,
                                         checkpoint_every=1, eval_every=0), spec=spec)
    pretrain(hand / "lm", PretrainConfig(vq_steps=0, lm_steps=2, lr=1e-3, **TINY), spec=spec)
    assemble(hand / "vq" / "model.safetensors", hand / "lm" / "model.safetensors", hand / "joined", {}, spec=spec)
    pretrain(hand / "text", replace(PretrainConfig(vq_steps=0, lm_steps=2, text_steps=2, text_batch=2, **TINY),
                                 vision_steps=0, init_from=str(hand / "joined")), spec=spec)

    recipe = load_recipe(str(recipe_file))
    out = tmp_path / "out"

    def crash(stage, phase, step, total, metrics):
        if stage == "text" and phase == "text" and step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_recipe(out, recipe, progress=crash, spec=spec)
    assert not (out / "model.safetensors").exists()
    seen = []
    info = run_recipe(out, recipe, progress=lambda stage, phase, *_: seen.append((stage, phase)), spec=spec)
    assert set(seen) == {("text", "text"), ("text", "lm")}  # finished stages are not redone
    assert _same(_weights(out), _weights(hand / "text"))
    assert _same(_weights(stage_dir(out, "joined")), _weights(hand / "joined"))
    vq = _weights(stage_dir(out, "vq"))
    assert [json.loads(r)["step"] for r in (stage_dir(out, "vq") / "pretrain_log.jsonl").read_text().splitlines()] \
        == [1, 2]  # vq_stop_at: two steps of a four-step schedule
    assert _same({k: v for k, v in vq.items() if k.startswith("model.vqmodel.")},
                 {k: v for k, v in _weights(out).items() if k.startswith("model.vqmodel.")})
    assert list(info["stages"]) == ["vq", "lm", "joined", "text"] and info["recipe_yaml"] == RECIPE
    assert info["final"] == info["stages"]["text"]["final"]
    assert (out / "config.json").exists() and (out / "tokenizer.json").exists()
    # a finished recipe run again changes nothing
    before = (out / "model.safetensors").read_bytes()
    run_recipe(out, recipe, progress=lambda *a: pytest.fail(f"retrained {a[:2]}"), spec=spec)
    assert (out / "model.safetensors").read_bytes() == before


def test_vq_stop_at_ends_the_phase_early_on_the_full_schedule(tmp_path):
    spec = small_spec()
    cfg = PretrainConfig(vq_steps=4, vq_batch=2, lm_steps=0, vision_steps=0, checkpoint_every=1, eval_every=0)
    pretrain(tmp_path / "full", cfg, spec=spec)
    pretrain(tmp_path / "stop", replace(cfg, vq_stop_at=2), spec=spec)
    pretrain(tmp_path / "short", replace(cfg, vq_steps=2), spec=spec)
    lr = [json.loads(r)["lr"] for r in (tmp_path / "full" / "pretrain_log.jsonl").read_text().splitlines()]
    lr_stop = [json.loads(r)["lr"] for r in (tmp_path / "stop" / "pretrain_log.jsonl").read_text().splitlines()]
    lr_short = [json.loads(r)["lr"] for r in (tmp_path / "short" / "pretrain_log.jsonl").read_text().splitlines()]
    assert lr_stop == lr[:2] and lr_short != lr[:2]  # the first steps of the long schedule, not a short one
    with pytest.raises(InputError, match="vq_stop_at"):
        PretrainConfig(vq_steps=4, vq_stop_at=5)


def test_the_shipped_recipe_loads_and_names_the_chain_that_made_the_checkpoint():
    import importlib.resources

    assert "shipped" in recipe_names()
    recipe = load_recipe("shipped")
    assert [s.name for s in recipe.stages] == ["vq-decoder", "mixture", "assembled", "align-to-words", "find-shapes",
                                               "bind-colours", "find-many-objects", "perturbations"]
    assert recipe.stages[2].assemble == ("vq-decoder", "mixture")
    # the last stage is the shipped checkpoint's own last command (read back from its pretrain.json)
    shipped = json.loads(importlib.resources.files("ospo.shapeworld").joinpath("checkpoint", "pretrain.json")
                         .read_text())["last_command"]["pretrain_config"]
    last = PretrainConfig(**{**recipe.stages[-1].fields, "init_from": shipped["init_from"]})
    shipped = saved_config(shipped)
    # bf16: the chain ran with bf16 autocast (on CPUs that run it natively); the recipe leaves it to "auto", which
    # chooses the same there and fp32 where bf16 would be emulated
    assert shipped.bf16 == "true" and last.bf16 == "auto"
    assert replace(last, bf16="true") == shipped
    for stage in recipe.stages:
        if not stage.assemble:
            PretrainConfig(**stage.fields)  # every stage is a valid config


@pytest.mark.parametrize("text, message", [
    ("stages: []", "non-empty list"),
    ("stages:\n  - name: a\n    set: {lm_stpes: 3}",
     "stage 'a': unknown pretraining field 'lm_stpes' \\(did you mean 'lm_steps'\\?\\)"),
    ("stages:\n  - name: a\n    set: {lm_steps: many}", "stage 'a': lm_steps must be int, got str 'many'"),
    ("stages:\n  - name: a\n    set: {freeze_vision: 3}",
     "stage 'a': freeze_vision must be bool, got int 3; use true or false"),
    ("stages:\n  - name: no", "quote names"),
    ("stages:\n  - name: a\n    set: {init_from: b}", "must name an earlier stage"),
    ("stages:\n  - name: a\n  - name: a", "unique"),
    ("stages:\n  - name: a\n    sett: {}", "unknown key"),
    ("stages:\n  - name: a\n    set: {seed: 3}", "--seed"),
    ("stages:\n  - name: a\n    assemble: {vq: a, rest: b}", "earlier stages"),
    ("stages:\n  - name: a\n    set: {vq_steps: 2, vq_stop_at: 3}", "stage 'a': vq_stop_at"),
    ("stages: [", "not valid YAML"),
])


def test_a_bad_recipe_is_refused_with_the_stage_and_the_field(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        load_recipe(str(path))


def test_unknown_recipe_names_and_missing_files_are_refused(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="not one of"):
        load_recipe("shiped")
    with pytest.raises(InputError, match="no such file"):
        load_recipe(str(tmp_path / "nope.yaml"))
    with pytest.raises(InputError, match="is a directory"):
        load_recipe(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shipped").mkdir()  # e.g. `--out shipped`: resuming must still find the packaged recipe
    assert load_recipe("shipped").name == "shipped"


def test_a_changed_stage_is_refused_and_its_work_kept(tmp_path, recipe_file):
    spec = small_spec()
    out = tmp_path / "out"
    run_recipe(out, load_recipe(str(recipe_file)), spec=spec)
    before = (stage_dir(out, "text") / "model.safetensors").read_bytes()
    changed = tmp_path / "changed.yaml"
    changed.write_text(RECIPE.replace("text_steps: 2", "text_steps: 3"))
    with pytest.raises(OspoError, match="stage text .* ran with other settings.*'set'.*delete .*stages/text to redo"):
        run_recipe(out, load_recipe(str(changed)), spec=spec)
    assert (stage_dir(out, "text") / "model.safetensors").read_bytes() == before
    with pytest.raises(OspoError, match="stage vq .*'seed': {'ran': 0, 'now': 1}"):
        run_recipe(out, load_recipe(str(recipe_file)), seed=1, spec=spec)
    # an earlier stage redone with other weights: the stages built on it are not silently reused
    weights = load_file(str(stage_dir(out, "joined") / "model.safetensors"))
    from safetensors.torch import save_file

    save_file({k: v + 1 if v.is_floating_point() else v for k, v in weights.items()},
              str(stage_dir(out, "joined") / "model.safetensors"))
    with pytest.raises(OspoError, match="stage text .*'inputs'.*delete .*stages/text to redo"):
        run_recipe(out, load_recipe(str(recipe_file)), spec=spec)
    assert (stage_dir(out, "text") / "model.safetensors").read_bytes() == before


def test_a_crash_while_copying_the_result_leaves_no_complete_looking_folder(tmp_path, recipe_file, monkeypatch):
    import shutil

    from ospo.shapeworld.pretrain import recipe as recipe_module

    spec, out = small_spec(), tmp_path / "out"
    run_recipe(out, load_recipe(str(recipe_file)), spec=spec)
    before = (out / "model.safetensors").read_bytes()

    copyfile = shutil.copyfile

    def copy_then_die(src, dst):
        if src.name == "model.safetensors":
            copyfile(src, dst)  # the copy got written ...
            raise KeyboardInterrupt  # ... and the process died before putting it in place
        return copyfile(src, dst)

    monkeypatch.setattr(recipe_module.shutil, "copyfile", copy_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(out, load_recipe(str(recipe_file)), spec=spec)
    assert not (out / "pretrain.json").exists()  # not marked finished
    assert (out / "model.safetensors").read_bytes() == before  # and no truncated weights in place
    monkeypatch.undo()
    info = run_recipe(out, load_recipe(str(recipe_file)), spec=spec)
    assert json.loads((out / "pretrain.json").read_text())["stages"].keys() == info["stages"].keys()


def test_cli_refuses_mixing_a_recipe_with_one_stage_flags_and_the_two_kinds_of_run_dirs(tmp_path, capsys):
    from ospo.cli import main

    assert main(["shapeworld", "pretrain", "--out", str(tmp_path / "x"), "--recipe", "shipped",
                 "--set", "lm_steps=3"]) == 2
    assert "describe one stage" in capsys.readouterr().err
    (tmp_path / "r" / "stages").mkdir(parents=True)
    assert main(["shapeworld", "pretrain", "--out", str(tmp_path / "r"), "--lm-steps", "3"]) == 2
    assert "holds a recipe's stages" in capsys.readouterr().err
    (tmp_path / "one" / "pretrain-state").mkdir(parents=True)
    assert main(["shapeworld", "pretrain", "--out", str(tmp_path / "one")]) == 2
    assert "single-stage pretraining run" in capsys.readouterr().err
    assert main(["shapeworld", "pretrain", "--out", str(tmp_path / "y"), "--set", "lm_stpes=3"]) == 2
    assert "did you mean 'lm_steps'" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()


def test_one_stage_flags_build_the_config_at_once():
    import argparse

    from ospo.shapeworld.pretrain.command import config_from_args

    args = argparse.Namespace(seed=3, set=["vq_stop_at=1600", "threads=1"], vq_steps=7000, lm_steps=0)
    cfg = config_from_args(args)
    assert (cfg.seed, cfg.vq_steps, cfg.vq_stop_at, cfg.threads, cfg.lm_steps) == (3, 7000, 1600, 1, 0)


def test_the_shipped_recipe_is_the_commands_the_checkpoint_says_made_it():
    """Each stage equals its command in the checkpoint's `how_it_was_made`, parsed by the CLI (init_from aside,
    which names a stage instead of a run folder; the vq stage adds where its run was stopped)."""
    import importlib.resources
    import re
    import shlex

    from ospo.cli import build_parser
    from ospo.shapeworld.pretrain.command import config_from_args

    made = json.loads(importlib.resources.files("ospo.shapeworld").joinpath("checkpoint", "pretrain.json")
                      .read_text())["how_it_was_made"]
    commands = [c for line in made for c in re.findall(r"`(ospo shapeworld pretrain [^`]*)`", line)]
    stages = {s.name: s for s in load_recipe("shipped").stages}
    assert len(commands) == len([s for s in stages.values() if not s.assemble]) == 7
    names = ["vq-decoder", "mixture", "align-to-words", "find-shapes", "bind-colours", "find-many-objects",
             "perturbations"]
    for command, name in zip(commands, names):
        args = build_parser().parse_args(shlex.split(command)[1:])
        fields = dict(stages[name].fields)
        assert args.out == name  # each command ran into a folder named after its stage
        if name == "vq-decoder":
            assert fields.pop("vq_stop_at") == 1600 and fields.pop("vision_steps") == 0
        ran = config_from_args(args)
        assert PretrainConfig(**{**fields, "init_from": ran.init_from}) == ran, name
        assert bool(fields.get("init_from")) == bool(ran.init_from)


def test_cli_runs_a_recipe_file_and_reruns_it_as_a_no_op(tmp_path, capsys):
    from ospo.cli import main

    path = tmp_path / "one.yaml"
    threads = torch.get_num_threads()  # pretrain sets the process's thread count: leave it as other tests expect
    path.write_text("stages:\n  - name: only\n    set: {vq_steps: 0, lm_steps: 1, vision_steps: 0, batch_t2i: 2, "
                    f"batch_vqa: 2, batch_text: 2, eval_every: 0, checkpoint_every: 1, warmup_steps: 1, threads: {threads}}}\n")
    out = tmp_path / "out"
    assert main(["shapeworld", "pretrain", "--out", str(out), "--recipe", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "pretraining recipe one: stages only" in printed and f"saved the ShapeWorld Janus to {out}" in printed
    info = json.loads((out / "pretrain.json").read_text())
    assert info["recipe"] == "one" and list(info["stages"]) == ["only"] and (out / "model.safetensors").exists()
    before = (out / "model.safetensors").read_bytes()
    assert main(["shapeworld", "pretrain", "--out", str(out), "--recipe", str(path)]) == 0
    assert (out / "model.safetensors").read_bytes() == before
