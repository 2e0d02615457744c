"""The training stage inside a run directory: outputs that load, v3 masks, the DPO reference, iterations."""

import json
import re

import pytest
import torch

from ospo.artifacts import StageDir
from ospo.cli import main
from ospo.config import load_config
from ospo.model import JanusAdapter
from ospo.stages.train import stage_name
from test_pipeline import PERMISSIVE, config_file, write_upstream  # noqa: F401  (fixture)

SMALL = ["--set", "train.steps=2", "--set", "train.batch_size=2", "--set", "train.micro_batch_size=1",
         "--set", "train.lora.r=4", "--set", "train.lora.alpha=8", "--set", "train.lr=1e-2"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, config_file):  # noqa: F811
    run_dir = write_upstream(tmp_path_factory.mktemp("runs") / "run")
    assert main(["run", "--config", str(config_file), "--out", str(run_dir), "--stages",
                 "images,score,select,train", *PERMISSIVE, *SMALL]) == 0
    return run_dir


def _train_dir(run_dir, *overrides):
    cfg = load_config(run_dir / "config.yaml", list(overrides))
    return StageDir(run_dir, stage_name(cfg))


def test_train_stage_writes_an_adapter_that_loads_and_changes_the_model(trained_run, tiny_dir, tiny, capsys):
    stage = _train_dir(trained_run)
    manifest = stage.manifest()
    assert manifest["steps"] == 2 and manifest["pairs"] >= 1 and manifest["select"].startswith("select-v2")
    rows = [json.loads(r) for r in (stage.path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert {"loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
            "logps/rejected", "grad_norm", "learning_rate", "nll_loss"} <= set(rows[-1])
    trained = JanusAdapter.from_pretrained(str(tiny_dir), adapter=manifest["outputs"]["adapter"])
    codes = torch.zeros(1, tiny.num_image_tokens, dtype=torch.long)
    with torch.no_grad():
        assert not torch.allclose(trained.image_token_logps(["a red circle"], codes),
                                  tiny.image_token_logps(["a red circle"], codes))


def test_another_recipe_trains_beside_the_first_and_the_summary_reports_it(trained_run, capsys):
    assert main(["stage", "train", "--run", str(trained_run), "--set", "recipe=sft-only", *SMALL]) == 0
    out = capsys.readouterr().out
    assert "training (sft-only): 2 steps" in out
    names = sorted(p.name for p in trained_run.iterdir() if p.name.startswith("train-"))
    assert len(names) == 2 and names[1].startswith("train-sft-only-")


def test_object_weighting_stores_masks_and_previews(trained_run, tiny):
    over = ["--set", "train.object_weighting=true"]
    assert main(["stage", "train", "--run", str(trained_run), *over, *SMALL]) == 0
    stage = _train_dir(trained_run, "train.object_weighting=true", *[s for s in SMALL if s != "--set"])
    from safetensors.torch import load_file

    w = load_file(str(stage.path / "object_weights.safetensors"))
    assert w["chosen"].shape[1] == tiny.num_image_tokens and w["chosen"].min() >= 1 and w["chosen"].max() <= 2  # 1 + alpha * m
    previews = list((stage.path / "masks").glob("*.png"))
    assert previews and json.loads((stage.path / "masks" / "object_words.json").read_text())


def test_dpo_keeps_the_reference_log_probs_with_the_pairs(trained_run):
    assert main(["stage", "train", "--run", str(trained_run), "--set", "recipe=dpo", *SMALL]) == 0
    stage = _train_dir(trained_run, "recipe=dpo", *[s for s in SMALL if s != "--set"])
    from safetensors.torch import load_file

    ref = load_file(str(stage.path / "reference_logps.safetensors"))
    assert ref["chosen"].shape == ref["rejected"].shape and torch.isfinite(ref["chosen"]).all()
    rows = [json.loads(r) for r in (stage.path / "log.jsonl").read_text().splitlines()]
    assert rows[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-4)  # policy == reference at the first step


def test_the_dpo_reference_scores_the_guided_distribution_training_uses(trained_run, tiny):
    """With train.guidance s the stage's stored reference is the model's log-likelihood under CFG s, not the
    conditional branch's: otherwise DPO's first-step margin would not be 0 and its reward would measure guidance."""
    from safetensors.torch import load_file

    from ospo.stages import RunContext
    from ospo.stages.select import stage_name as select_name
    from ospo.stages.train import load_pair_data
    from ospo.training import reference_logps

    over = ["recipe=dpo", "train.guidance=3.0", *[s for s in SMALL if s != "--set"]]
    assert main(["stage", "train", "--run", str(trained_run), *[a for o in over for a in ("--set", o)]]) == 0
    stage = _train_dir(trained_run, *over)
    ref = load_file(str(stage.path / "reference_logps.safetensors"))
    cfg = load_config(trained_run / "config.yaml", over)
    ctx = RunContext(trained_run, cfg)
    data, _ = load_pair_data(ctx, ctx.stage(select_name(cfg.select)))
    with torch.no_grad():
        guided, plain = reference_logps(tiny, data, 4, guidance=3.0), reference_logps(tiny, data, 4)
    torch.testing.assert_close(ref["chosen"], guided[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(ref["rejected"], guided[1], atol=1e-4, rtol=0)
    assert (ref["chosen"] - plain[0]).abs().max() > 1e-3
    rows = [json.loads(r) for r in (stage.path / "log.jsonl").read_text().splitlines()]
    assert rows[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-4) and "logps/uncond_chosen" in rows[0]


@pytest.mark.parametrize("recipe", ["ospo-v2", "ospo-v3", "dpo"])
def test_a_selection_that_keeps_no_pairs_is_one_clear_line(trained_run, recipe, capsys):
    """v3's masks and DPO's reference are computed before the loop: an empty selection must not reach them."""
    over = ["--set", f"recipe={recipe}", "--set", "select.chosen_threshold=1.0", "--set", "select.v3_tau=1.0"]
    assert main(["stage", "select", "--run", str(trained_run), *over]) == 0
    capsys.readouterr()
    assert main(["stage", "train", "--run", str(trained_run), *over, *SMALL]) == 2
    err = capsys.readouterr().err
    assert "no training pairs: the selection (select-v" in err and "Traceback" not in err
    assert re.search(r"kept none of [1-9]\d* prompts", err)  # the selection's input, not the pairs lacking codes


def test_iterations_train_on_data_from_the_previous_iterations_model(tmp_path, config_file):  # noqa: F811
    out = tmp_path / "iters"
    for k in (1, 2):
        write_upstream(out / f"iter-{k}")
    assert main(["run", "--config", str(config_file), "--out", str(out), "--iterations", "2", "--stages",
                 "images,score,select,train", *PERMISSIVE, *SMALL]) == 0
    cfg1 = load_config(out / "iter-1" / "config.yaml")
    cfg2 = load_config(out / "iter-2" / "config.yaml")
    adapter1 = StageDir(out / "iter-1", stage_name(cfg1)).manifest()["outputs"]["adapter"]
    assert cfg2.model.adapter == adapter1 and cfg2.seed == cfg1.seed + 1
    m2 = StageDir(out / "iter-2", stage_name(cfg2)).manifest()
    assert m2["lr"] == pytest.approx(cfg1.train.lr * cfg1.train.iteration_lr_scale)
    assert json.loads((out / "iter-2" / "images" / "identity.json").read_text())["model"]["adapter"] == adapter1


def test_a_full_disk_during_training_names_the_file_and_keeps_checkpoints(trained_run, monkeypatch, capsys):
    import errno

    from ospo.training import MetricLog

    real = MetricLog.write
    calls = {"n": 0}

    def full_disk(self, row):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
        return real(self, row)

    monkeypatch.setattr(MetricLog, "write", full_disk)
    # a training of its own (another lr: save_every alone does not change the update, so it shares a folder)
    over = ["--set", "recipe=sft-only", *SMALL, "--set", "train.save_every=1", "--set", "train.lr=2e-2"]
    assert main(["stage", "train", "--run", str(trained_run), *over]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "could not write" in err and "log.jsonl: No space left on device" in err
    stage = _train_dir(trained_run, "recipe=sft-only", *[s for s in over[2:] if s != "--set"])
    assert (stage.path / "checkpoints" / "step-000001" / "state.json").exists()
    monkeypatch.setattr(MetricLog, "write", real)
    assert main(["stage", "train", "--run", str(trained_run), *over]) == 0  # the rerun resumes and finishes
    assert stage.manifest()["resumed_from"] == 1


def test_the_run_summary_counts_the_pairs_training_used(trained_run):
    from ospo import pipeline

    cfg = load_config(trained_run / "config.yaml")
    stage = _train_dir(trained_run)
    line = next(ln for ln in pipeline.summarize(trained_run, cfg).splitlines() if ln.startswith(stage.name))
    assert line.split()[1:3] == [str(stage.manifest()["pairs"]), "0"]  # out: the pairs; rejected: none lacked codes


def test_no_pairs_names_the_first_stage_that_kept_nothing(tmp_path):
    """A run whose prompts stage parsed nothing says so, not only that the selection kept no pairs."""
    from ospo.stages import RunContext
    from ospo.stages.select import stage_name as select_name
    from ospo.stages.train import emptied_by

    cfg = load_config("shapeworld")
    ctx = RunContext(tmp_path, cfg)
    manifests = {"prompts": {"in": 13, "out": 0, "rejected_by_reason": {"no prompt marker": 12, "empty prompt": 1}},
                 "perturb": {"in": 0, "out": 0}, select_name(cfg.select): {"in": 0, "out": 0}}
    for name, counts in manifests.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text(json.dumps({"counts": counts}))
    assert emptied_by(ctx, select_name(cfg.select)) == \
        "prompts: 0 of 13 kept (no prompt marker 12, empty prompt 1); every later stage had nothing to do"
    (tmp_path / "prompts" / "manifest.json").write_text(json.dumps({"counts": {"in": 13, "out": 13}}))
    (tmp_path / "perturb" / "manifest.json").write_text(json.dumps({"counts": {"in": 13, "out": 20}}))
    assert emptied_by(ctx, select_name(cfg.select)).startswith(f"the selection ({select_name(cfg.select)}) kept "
                                                                "none of 0 prompts")


def test_merge_and_checkpointing_options_reuse_a_finished_training(trained_run):
    """`train.merge=true` on a finished training merges the saved adapter without training again, and options that
    do not change the update (save_every, keep_last, num_previews) find the same finished folder."""
    stage = _train_dir(trained_run)
    log_before = (stage.path / "log.jsonl").stat().st_mtime_ns
    adapter_before = (stage.path / "adapter" / "adapter_model.safetensors").read_bytes()
    assert _train_dir(trained_run, "train.merge=true", "train.save_every=1", "train.keep_last=9").path == stage.path
    assert main(["stage", "train", "--run", str(trained_run), *SMALL, "--set", "train.merge=true",
                 "--set", "train.save_every=1"]) == 0
    assert (stage.path / "log.jsonl").stat().st_mtime_ns == log_before  # not trained again
    assert (stage.path / "adapter" / "adapter_model.safetensors").read_bytes() == adapter_before
    merged = stage.manifest()["outputs"]["merged"]
    assert merged == str(stage.path / "merged")
    for name in ("tokenizer_config.json", "processor_config.json"):  # saved offline, loadable online
        saved = (stage.path / "merged" / name).read_text()
        assert "local_files_only" not in saved and "is_local" not in saved
    model = JanusAdapter.from_pretrained(merged)  # loads with --model alone
    with_adapter = JanusAdapter.from_pretrained(str(load_config(trained_run / "config.yaml").model.path),
                                                adapter=str(stage.path / "adapter"))
    prompts, seeds = ["a red circle"], [3]
    assert torch.equal(model.generate_image_tokens(prompts, seeds).codes,
                       with_adapter.generate_image_tokens(prompts, seeds).codes)


def test_reencoded_codes_train_on_the_previews_through_the_vq_encoder(trained_run, tiny, capsys):
    """train.image_codes=reencoded reproduces the reference code's input: the saved PNGs re-encoded (lossy), so
    the update differs from training on the sampled codes, in a folder of its own."""
    from ospo.stages import RunContext
    from ospo.stages.train import load_pair_data

    def pairs(*overrides):
        ctx = RunContext(trained_run, load_config(trained_run / "config.yaml", list(overrides)), progress=False)
        ctx._model = tiny
        from ospo.stages.select import stage_name as select_name

        return load_pair_data(ctx, StageDir(trained_run, select_name(ctx.config.select)))[0]

    sampled, reencoded = pairs(), pairs("train.image_codes=reencoded")
    assert reencoded.chosen.shape == sampled.chosen.shape and reencoded.chosen.dtype == torch.long
    assert not torch.equal(reencoded.chosen, sampled.chosen)  # the round trip through pixels is lossy
    assert torch.equal(reencoded.rejected, tiny.encode_images(tiny.decode_images(sampled.rejected)))
    assert main(["stage", "train", "--run", str(trained_run), *SMALL, "--set", "train.image_codes=reencoded"]) == 0
    new = _train_dir(trained_run, "train.image_codes=reencoded")
    assert new.path != _train_dir(trained_run).path
    assert (new.path / "adapter" / "adapter_model.safetensors").read_bytes() != (
        _train_dir(trained_run).path / "adapter" / "adapter_model.safetensors").read_bytes()


def test_a_checkpoint_without_an_image_encoder_refuses_reencoding_in_one_line():
    from ospo.errors import InputError
    from ospo.registry import resolve_model_path

    model = JanusAdapter.from_pretrained(resolve_model_path("shapeworld"))
    with pytest.raises(InputError, match="have no image encoder; train on the sampled codes"):
        model.encode_images([model.decode_images(torch.zeros(1, model.num_image_tokens, dtype=torch.long))[0]])
