"""The pretraining config (ospo.shapeworld.pretrain.config): read by the run config's loader (ospo.config), resolved
once per run and kept on resume, and saved configs of earlier versions still load."""

import json

import pytest

from ospo.errors import InputError
from ospo.shapeworld.pretrain import PretrainConfig, config_fields

SMALL = PretrainConfig(vq_steps=2, vq_batch=2, vision_steps=2, vision_batch=2, lm_steps=3, batch_t2i=3, batch_vqa=2,
                       batch_text=2, checkpoint_every=1, eval_every=0, warmup_steps=1)


def test_bf16_auto_is_resolved_once_per_run_and_kept_on_resume(tmp_path, monkeypatch):
    """"auto" follows the CPU for a new run (emulated bf16 is ~10x slower than fp32) and is written resolved into
    the run's config; a resume asked for "auto" keeps what the run started with, even on another CPU; configs saved
    when bf16 was a bool still load; a bad value is refused by name."""
    from ospo.errors import OspoError
    from ospo.shapeworld.pretrain import config as pt

    monkeypatch.setattr(pt, "native_bf16", lambda: False)
    cfg = pt.resume_config(tmp_path / "a", PretrainConfig())
    assert cfg.bf16 == "false"
    assert json.loads((tmp_path / "a/pretrain-state/pretrain_config.json").read_text())["bf16"] == "false"
    monkeypatch.setattr(pt, "native_bf16", lambda: True)
    assert pt.resume_config(tmp_path / "a", PretrainConfig()).bf16 == "false"  # resumed: kept
    assert pt.resume_config(tmp_path / "b", PretrainConfig()).bf16 == "true"  # new: this CPU's
    assert pt.resume_config(tmp_path / "c", PretrainConfig(bf16="false")).bf16 == "false"  # asked: as asked
    with pytest.raises(OspoError, match="another config"):
        pt.resume_config(tmp_path / "a", PretrainConfig(bf16="true"))
    old = tmp_path / "old/pretrain-state/pretrain_config.json"
    old.parent.mkdir(parents=True)
    old.write_text(json.dumps({"bf16": True}))
    assert pt.resume_config(tmp_path / "old", PretrainConfig()).bf16 == "true"
    assert pt.config_fields({"bf16": False}, "")["bf16"] == "false"  # a YAML bool
    assert [pt.config_fields({"bf16": v}, "")["bf16"] for v in (" True", "1", "no", "AUTO")] == [
        "true", "true", "false", "auto"]
    with pytest.raises(InputError, match="bf16 must be one of auto, true, false, got 'maybe'"):
        pt.config_fields({"bf16": "maybe"}, "")
    with pytest.raises(InputError, match="bf16 takes auto, true or false, not 'fp32'"):
        PretrainConfig(bf16="fp32")


def test_a_saved_config_with_removed_options_at_their_off_value_loads_and_any_other_value_is_named():
    from dataclasses import asdict

    from ospo.shapeworld.pretrain import REMOVED_FIELDS, saved_config

    old = {**asdict(SMALL), **REMOVED_FIELDS}  # a config written before the options were removed
    assert saved_config(old) == SMALL
    with pytest.raises(InputError, match="removed pretraining option\\(s\\) \\['rewarm'\\].*notebook-2026-12-07"):
        saved_config({**old, "rewarm": True})
    with pytest.raises(InputError, match="a saved pretraining config: unknown pretraining field 'no_such_field'"):
        saved_config({**old, "no_such_field": 1})
    with pytest.raises(InputError, match="run.json: lm_steps must be int, got str 'many'"):
        saved_config({**old, "lm_steps": "many"}, "run.json")


def test_config_fields_types_values_from_the_command_line_and_yaml():
    assert config_fields({"lr": "1e-3", "lm_steps": "800", "factor_head": "true", "find_stages": "name"}, "") == \
        {"lr": 1e-3, "lm_steps": 800, "factor_head": True, "find_stages": "name"}
    assert config_fields({"lr": 1, "lm_steps": 8.0, "factor_head": False}, "") == \
        {"lr": 1.0, "lm_steps": 8, "factor_head": False}
    for bad in ({"lm_steps": 2.5}, {"lm_steps": True}, {"factor_head": "maybe"}, {"find_stages": 3}):
        with pytest.raises(InputError):
            config_fields(bad, "")


def test_config_fields_read_values_as_the_run_configs_set_does_with_the_same_messages():
    """One loader for run and pretraining configs (ospo.config): the same YAML reading of `--set` texts, the same
    type checks and messages, unknown fields named with the closest one."""
    from ospo.config import load_config
    from ospo.schema import ConfigError

    for run_key, field, text in (("seed", "seed", "1.5"), ("model.batch_size", "lm_steps", "true"),
                                 ("images.cfg_scale", "lr", "abc")):
        with pytest.raises(ConfigError) as run:
            load_config(None, [f"{run_key}={text}"])
        with pytest.raises(ConfigError) as pre:
            config_fields({field: text}, "--set ")
        assert str(run.value).replace(run_key, "X") == str(pre.value).removeprefix("--set: ").replace(field, "X")
    with pytest.raises(InputError, match="stage 'a': unknown pretraining field 'lm_stpes' \\(did you mean 'lm_steps"):
        config_fields({"lm_stpes": 3}, "stage 'a': ")
    with pytest.raises(InputError, match="factor_head must be bool, got int 3; use true or false"):
        config_fields({"factor_head": 3})
    assert config_fields({"init_from": "no", "find_stages": "name,color+name"}) == {
        "init_from": "no", "find_stages": "name,color+name"}  # a string field keeps its text
