import re

import pytest
import yaml

from ospo.config import RunConfig, config_dict, config_hash, load_config
from ospo.schema import ConfigError, parse_override


def test_defaults_file_and_overrides_merge(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 3\nimages:\n  cfg_scale: 5\nprompts:\n  counts: {color1: 4}\n")
    cfg = load_config(path, ["images.temperature=0.5", "select.rule=v3"])
    assert cfg.seed == 3 and cfg.images.cfg_scale == 5.0 and cfg.images.temperature == 0.5
    assert cfg.prompts.counts == {"color1": 4}  # a mapping value replaces the default mapping
    assert cfg.select.rule == "v3" and cfg.select.chosen_threshold == 0.5


@pytest.mark.parametrize("overrides,message", [
    (["prompts.countz=3"], "unknown config key 'prompts.countz' (did you mean 'prompts.counts'?)"),
    (["sede=1"], "unknown config key 'sede' (did you mean 'seed'?)"),
    (["select.rule=v9"], "select.rule must be one of v1, v2, v3"),
    (["images.cfg_scale=abc"], "images.cfg_scale must be float, got str"),
    (["seed=1.5"], "seed must be int, got float"),
    (["model.batch_size=true"], "model.batch_size must be int, got bool"),
    (["images=3"], "images must be a mapping"),
    (["seed"], "--set expects key=value"),
    (["train.guidance=0.5"], "train.guidance must be >= 1"),
    (["train.guidance=1", "train.guidance_uncond_grad=false"],
     "train.guidance_uncond_grad=false needs train.guidance > 1"),
    (["images.cfg_scale=1", "train.guidance_uncond_grad=false"],
     "train.guidance_uncond_grad=false needs train.guidance > 1"),
    (["images.cfg_scale=0.5"], "train.guidance follows images.cfg_scale (0.5) and must be >= 1: set train.guidance"),
    (["exclude_eval_prompts=true"], "config key 'exclude_eval_prompts' is gone: use prompts.exclude_files"),
    (["train.bf16=maybe"], "train.bf16 must be one of auto, true, false, got 'maybe'"),
    (["train.steps=true"], "train.steps must be int, got bool True"),
    (["train.merge=3"], "train.merge must be bool, got int 3; use true or false"),
])
def test_bad_config_names_the_key(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert message in str(e.value)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("seed: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_hash_changes_with_values_only():
    assert config_hash(RunConfig()) == config_hash(load_config(None, []))
    assert config_hash(RunConfig()) != config_hash(load_config(None, ["images.cfg_scale=4"]))
    assert parse_override("a.b=[1, 2]") == {"a": {"b": [1, 2]}}


def test_recipes_set_defaults_under_the_file_and_switch_over_a_saved_config(tmp_path):
    import yaml

    from ospo.config import config_dict

    path = tmp_path / "c.yaml"
    path.write_text("recipe: ospo-v3\ntrain: {simpo_beta: 7.0, lr: 1e-4}\n")
    cfg = load_config(path)
    assert cfg.select.rule == "v3" and cfg.train.object_weighting and cfg.train.simpo_beta == 7.0  # file wins
    assert cfg.train.lr == 1e-4  # YAML reads 1e-4 as a string: still a float here
    saved = tmp_path / "saved.yaml"  # a run directory's resolved config holds every key
    saved.write_text(yaml.safe_dump(config_dict(cfg)))
    switched = load_config(saved, ["recipe=ospo-v1", "train.simpo_beta=12"])
    assert switched.select.rule == "v1" and not switched.train.object_weighting and switched.train.sft_weight == 0
    assert switched.train.simpo_beta == 12 and switched.train.lr == 1e-4  # --set wins; keys the recipe leaves stay


def test_train_guidance_follows_the_samplers_scale_unless_set(tmp_path):
    assert load_config(None, ["images.cfg_scale=4"]).train.guidance == 4.0
    assert load_config(None, ["images.cfg_scale=4", "train.guidance=1"]).train.guidance == 1.0
    assert RunConfig().train.guidance == RunConfig().images.cfg_scale  # built in code: resolved the same way
    for name in ("janus-pro-1b", "janus-pro-7b"):  # the paper scores the conditional branch
        cfg = load_config(name)
        assert cfg.images.cfg_scale == 5.0 and cfg.train.guidance == 1.0
    shapeworld = load_config("shapeworld")
    assert shapeworld.train.guidance == shapeworld.images.cfg_scale == 3.0
    # a saved run config holds the resolved value: it stays what the run trained with when the sampler changes
    import yaml

    from ospo.config import config_dict

    saved = tmp_path / "config.yaml"
    saved.write_text(yaml.safe_dump(config_dict(shapeworld)))
    assert load_config(saved, ["images.cfg_scale=5"]).train.guidance == 3.0


def test_the_shipped_shapeworld_train_folder_and_selection_defaults_are_unchanged():
    """The train folder's hash covers the update's TrainConfig (`update_config`: not how often it checkpoints or
    whether it merges) and the selection rule: the shipped config resolves to the values that name its folder; the
    selection defaults are ospo.selection's."""
    from ospo import selection
    from ospo.config import SelectConfig
    from ospo.stages.train import stage_name

    assert stage_name(load_config("shapeworld")) == "train-ospo-v2-59a525ec"
    neutral = ["train.merge=true", "train.save_every=7", "train.keep_last=5", "train.num_previews=0"]
    assert stage_name(load_config("shapeworld", neutral)) == "train-ospo-v2-59a525ec"
    assert stage_name(load_config("shapeworld", ["train.steps=13"])) != "train-ospo-v2-59a525ec"
    default = SelectConfig()
    assert (default.chosen_threshold, default.rejected_threshold, default.v3_tau) == (
        selection.V2_CHOSEN_THRESHOLD, selection.V2_REJECTED_THRESHOLD, selection.V3_TAU) == (0.5, -0.5, 0.6)


def test_choices_read_yaml_booleans_and_words_case_insensitively():
    assert [load_config(None, [f"train.bf16={v}"]).train.bf16 for v in ("false", "True", "1", "no", "AUTO")] == [
        "false", "true", "true", "false", "auto"]
    assert load_config(None, ["select.rule=V3"]).select.rule == "v3"
    assert load_config(None, ["train.steps=12.0"]).train.steps == 12  # an integral float is an int


def test_a_mapping_given_by_set_replaces_the_configs_as_in_a_yaml_file():
    """`--set "prompts.counts={color1: 2}"` asks for 2 color1 prompts and nothing else (a smoke test of a Janus-Pro
    config must not silently keep its 16,000 prompts); keys set after it, and dotted keys alone, still merge."""
    assert load_config("janus-pro-1b", ["prompts.counts={color1: 2}"]).prompts.counts == {"color1": 2}
    both = load_config("janus-pro-1b", ["prompts.counts={color1: 2}", "prompts.counts.color2=5"]).prompts.counts
    assert both == {"color1": 2, "color2": 5}
    one = load_config("janus-pro-1b", ["prompts.counts.color1=2"]).prompts.counts
    assert one["color1"] == 2 and len(one) > 1  # a single key merges into the config's mapping
    written = config_dict(load_config("shapeworld", ["prompts.counts={spatial: 3}"]))
    assert type(written["prompts"]["counts"]) is dict  # plain mappings in what a run saves


# the reference code's v2 (and v3) values, as docs/method.md's table "ospo vs the reference code" lists them
REFERENCE_V2 = {
    "prompts.counts": {"color1": 667, "color2": 667, "shape1": 667, "shape2": 667, "texture1": 666, "texture2": 666,
                       "spatial2d": 1000, "spatial3d": 1000, "numeracy1": 1000, "numeracy2": 1000,
                       "non-spatial": 4000, "complex": 4000},
    "prompts.sampling.temperature": 1.0, "prompts.sampling.top_p": 1.0, "prompts.num_examples": 3,
    "perturb.num_negatives": 3, "perturb.sampling.temperature": 1.2, "perturb.sampling.top_p": 0.9,
    "perturb.sampling.max_new_tokens": 512,
    "densify.enabled": True, "densify.sampling.temperature": 1.2, "densify.sampling.top_p": 0.9,
    "densify.sampling.max_new_tokens": 512,
    "questions.sampling.temperature": 1.2, "questions.sampling.top_p": 0.5, "questions.sampling.max_new_tokens": 256,
    "images.cfg_scale": 5.0, "images.temperature": 1.0, "images.top_k": 0, "images.top_p": 1.0,
    "select.rule": "v2", "select.chosen_threshold": 0.5, "select.rejected_threshold": -0.5,
    "select.require_negative_prompt": True,
    "train.simpo_weight": 0.8, "train.simpo_beta": 3.0, "train.copo_weight": 0.5, "train.copo_beta": 5.0,
    "train.gamma_ratio": 0.5, "train.sft_weight": 1.5, "train.loss_type": "sigmoid", "train.label_smoothing": 0.0,
    "train.guidance": 1.0, "train.lora.enabled": True, "train.lora.r": 32, "train.lora.alpha": 64,
    "train.lora.dropout": 0.05, "train.lr": 1e-5, "train.schedule": "constant", "train.warmup_ratio": 0.0,
    "train.adam_beta1": 0.9, "train.adam_beta2": 0.95, "train.weight_decay": 0.0, "train.max_grad_norm": 1.0,
    "train.steps": 500, "train.batch_size": 128, "train.gradient_checkpointing": True, "train.bf16": "auto",
}
REFERENCE_V3 = {"select.rule": "v3", "select.v3_tau": 0.6, "train.object_weighting": True, "train.simpo_beta": 5.0,
                "train.sft_weight": 2.0, "train.alpha": 1.0, "train.lora.r": 64, "train.lora.alpha": 128,
                "train.lora.dropout": 0.05, "train.schedule": "cosine", "train.warmup_ratio": 0.05,
                "train.steps": 1000, "train.batch_size": 256}


def resolved(cfg, key):
    value = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


@pytest.mark.parametrize("name", ["janus-pro-1b", "janus-pro-7b"])
def test_the_janus_pro_configs_resolve_to_the_reference_values(name, tmp_path):
    from ospo.config import config_dict

    cfg = load_config(name)
    assert {k: resolved(cfg, k) for k in REFERENCE_V2} == REFERENCE_V2
    v3 = load_config(name, ["recipe=ospo-v3"])
    assert {k: resolved(v3, k) for k in REFERENCE_V3} == REFERENCE_V3
    # a saved run config keeps by_recipe: switching its recipe still switches the budget
    saved = tmp_path / "config.yaml"
    saved.write_text(yaml.safe_dump(config_dict(cfg)))
    assert (load_config(saved, ["recipe=ospo-v3"]).train.steps, load_config(saved).train.steps) == (1000, 500)


def test_by_recipe_values_apply_only_under_their_recipe_and_under_set(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {steps: 7}\nby_recipe:\n  ospo-v3: {train: {steps: 9, lr: 0.5}}\n  dpo: {train: {steps: 3}}\n")
    assert load_config(path).train.steps == 7
    assert load_config(path, ["recipe=ospo-v3"]).train.steps == 9
    assert load_config(path, ["recipe=ospo-v3", "train.steps=11"]).train.steps == 11  # --set wins
    assert load_config(path, ["recipe=dpo"]).train.steps == 3
    for text, message in (("by_recipe: {ospo-v9: {train: {steps: 1}}}", "by_recipe: unknown recipe 'ospo-v9' "
                                                                       "(did you mean 'ospo-v3'?)"),
                          ("by_recipe: [1]", "by_recipe must be a mapping from recipe names"),
                          ("by_recipe: {dpo: 3}", "by_recipe.dpo must be a mapping of config values"),
                          ("by_recipe: {dpo: {train: {stepz: 1}}}", "unknown config key 'train.stepz'")):
        path.write_text(text + "\n")
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(path)


def test_a_saved_run_config_reloads_to_its_values_and_switching_recipes_restores_each_budget(tmp_path):
    from ospo.config import config_dict

    saved = tmp_path / "config.yaml"
    cfg = load_config("janus-pro-1b", ["recipe=ospo-v3", "train.steps=20"])  # --set beats by_recipe
    assert (cfg.train.steps, cfg.train.batch_size) == (20, 256)
    saved.write_text(yaml.safe_dump(config_dict(cfg)))
    again = load_config(saved)
    assert again == cfg  # the run's own config reloads unchanged (its train folder keeps its name)
    v2 = load_config(saved, ["recipe=ospo-v2"])
    assert (v2.train.steps, v2.train.batch_size) == (500, 128)  # the budget beneath v3's, not v3's
    saved.write_text(yaml.safe_dump(config_dict(v2)))
    back = load_config(saved, ["recipe=ospo-v3"])
    assert (back.train.steps, back.train.batch_size) == (20, 256)  # what the v3 run used
    # one by_recipe key from --set merges into the file's entry
    one = load_config("janus-pro-1b", ["recipe=ospo-v3", "by_recipe.ospo-v3.train.lr=2e-5"])
    assert (one.train.steps, one.train.batch_size, one.train.lr) == (1000, 256, 2e-5)


@pytest.mark.parametrize("override,message", [("train.lr=nan", "train.lr must be a finite number, got nan"),
                                               ("select.v3_tau=nan", "select.v3_tau must be a finite number"),
                                               ("train.adam_beta2=1", "train.adam_beta2 must be in [0, 1), got 1.0")])
def test_floats_given_as_text_are_checked_too(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [override])
