"""Run configuration: declared once as frozen dataclasses, loaded from YAML, overridden with `--set a.b=c`.

Unknown keys are errors that name the key and suggest the closest one; values are type-checked; the resolved
config (with its hash) is written into every stage directory. The loader (ospo.schema) is shared with the other
configs of ospo (ShapeWorld pretraining's).

Paths of data files (`prompts.exclude_files`) take two forms: `package:NAME/PATH`, a file inside the installed
Python package NAME (dotted, e.g. `package:ospo.shapeworld/data/geneval.jsonl`), which the shipped configs use so that
they work wherever ospo is installed; or a filesystem path, which, when relative, is read from the folder of the
config file that names it (from the working directory for `--set`) and is stored absolute in the resolved config.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ospo.schema import (PACKAGE_PREFIX, ConfigError, build_config, data_path, merge_mappings, one_of, parse_overrides,
                         plain, read_yaml_file)
from ospo.selection import RULES, V2_CHOSEN_THRESHOLD, V2_REJECTED_THRESHOLD, V3_TAU

SHAPEWORLD_COUNTS = {"object1": 6, "object2": 10, "color1": 12, "color2": 24, "texture1": 10, "texture2": 20,
                     "spatial": 30, "numeracy1": 8, "numeracy2": 24, "complex": 30}


@dataclass(frozen=True)
class ModelConfig:
    path: str = "shapeworld"  # hub id, directory, or "shapeworld" (the checkpoint shipped in the package)
    adapter: str | None = None  # PEFT LoRA adapter applied on top
    dtype: str = "auto"  # auto = bfloat16 on GPU, float32 on CPU
    device: str = "auto"  # auto = cuda if available
    batch_size: int = 16  # items per forward pass


@dataclass(frozen=True)
class TextConfig:
    """Sampling for a text task."""

    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0


@dataclass(frozen=True)
class PromptsConfig:
    mode: str = one_of("in-context", "in-context", "elements")  # "in-context" (v2/v3: the model writes prompts
    # from examples) or "elements" (v1)
    counts: dict = field(default_factory=lambda: dict(SHAPEWORLD_COUNTS))  # prompts per sub-category
    num_examples: int = 2  # in-context examples per request
    refresh_every: int = 2  # batches between refreshes of the example pool with the model's own prompts
    round_size: int = 16  # requests per batch (round) of in-context prompt writing, per sub-category
    oversample: float = 2.0  # requests per wanted prompt (duplicates and malformed outputs are dropped)
    sampling: TextConfig = TextConfig(max_new_tokens=40, temperature=1.0)
    # files of prompts training must not write (evaluation and dev prompts): a written prompt whose prompt_key
    # (ospo.parsing) is one of theirs is rejected as "eval-set overlap". `.jsonl`: the "prompt" field of each row;
    # any other file: one prompt a line. Paths: `package:NAME/PATH` or a filesystem path (module docstring)
    exclude_files: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PerturbConfig:
    num_negatives: int = 3  # negative slots per prompt
    # each slot a sampled draw, as the reference (temperature 1.2, top-p 0.9): greedy slots of one plan repeat
    sampling: TextConfig = TextConfig(max_new_tokens=64, temperature=1.0, top_p=0.9)
    max_redraws: int = 3  # fresh draws for a slot whose negative repeats an earlier slot's ("duplicate" after)


@dataclass(frozen=True)
class DensifyConfig:
    enabled: bool = True  # False: images come from the short prompts
    sampling: TextConfig = TextConfig(max_new_tokens=80)


@dataclass(frozen=True)
class ImagesConfig:
    cfg_scale: float = 3.0  # Janus-Pro: 5
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    # PNG previews (images/previews/) for people and the report; false writes none (the codes are the training
    # input, and the judge decodes them in memory to the same pixels): ~25-35 GB less per iteration at paper scale
    previews: bool = True


@dataclass(frozen=True)
class QuestionsConfig:
    decompose_negatives: bool = True  # needed by the conditional (CoPO) loss
    max_questions: int = 12
    sampling: TextConfig = TextConfig(max_new_tokens=64)


@dataclass(frozen=True)
class SelectConfig:
    rule: str = one_of("v2", *RULES)  # v1 | v2 | v3 | best-of-n (SILMM-style baseline: best vs worst image of the
    # same prompt)
    chosen_threshold: float = V2_CHOSEN_THRESHOLD  # v2: every s_k of a chosen image above this
    rejected_threshold: float = V2_REJECTED_THRESHOLD  # v2: some s_k of a rejected image below this
    v3_tau: float = V3_TAU  # v3: chosen needs S >= tau
    # v2: drop a pair when the chosen image clearly contradicts none of its prompt's negatives (no x~ for CoPO), as
    # the reference does; false keeps it with the CoPO term at 0 (SimPO and SFT still train on it)
    require_negative_prompt: bool = True


@dataclass(frozen=True)
class LoraSettings:
    enabled: bool = True  # False: full fine-tuning of the language model
    r: int = 32
    alpha: int = 64
    dropout: float = 0.05
    # regex over module names: every linear projection of the language model only
    target_modules: str = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@dataclass(frozen=True)
class TrainConfig:
    """Stage 4. Defaults are the `ospo-v2` recipe; `recipe` presets (ospo/recipes/*.yaml) change them."""

    simpo_weight: float = 0.8
    simpo_beta: float = 3.0
    copo_weight: float = 0.5  # conditional preference loss: same chosen image, true vs negative prompt
    copo_beta: float = 5.0
    gamma_ratio: float = 0.5  # gamma / beta, for SimPO and CoPO
    sft_weight: float = 1.5
    dpo_weight: float = 0.0
    dpo_beta: float = 0.1
    loss_type: str = one_of("sigmoid", "sigmoid", "hinge")
    label_smoothing: float = 0.0
    object_weighting: bool = False  # v3: SimPO on token weights 1 + alpha * object mask
    alpha: float = 1.0
    mask_skip_layers: int = 5  # attention layers skipped at each end for the object masks
    otsu_scale: float = 0.8
    # the image distribution the losses score: 1 = the conditional branch (the paper); s > 1 = the classifier-free
    # guided one the sampler draws from (at temperature 1 without top-k / top-p), log softmax(u + s * (c - u)) with
    # u the unconditional row; both rows get gradients (u with weight 1 - s), and each forward has twice the rows,
    # so a micro-batch that fits at 1 may need halving. Unset (None): the sampler's images.cfg_scale, resolved when
    # the RunConfig is built, so training scores the distribution the images were drawn from
    guidance: float | None = None
    # with guidance > 1: true (default) trains both rows (u with weight 1 - s); false lets the gradient flow through
    # the conditional logits only (u still changes indirectly, through the weights both rows share)
    guidance_uncond_grad: bool = True
    # the image codes the losses read: "sampled" (the codes as drawn, which the likelihoods of selection were
    # computed on) or "reencoded" (the saved previews through the VQ encoder, as the reference code does: lossy)
    image_codes: str = one_of("sampled", "sampled", "reencoded")
    lora: LoraSettings = LoraSettings()
    lr: float = 1e-5
    schedule: str = one_of("constant", "constant", "cosine")  # constant | cosine (after warm-up)
    warmup_ratio: float = 0.0
    steps: int = 0  # optimizer steps; 0 = `epochs` passes over the pairs
    epochs: float = 1.0
    batch_size: int = 128  # pairs per optimizer step, over all processes
    micro_batch_size: int = 4  # pairs per forward pass per process (gradient accumulation fills the rest)
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    max_grad_norm: float = 1.0
    bf16: str = one_of("auto", "auto", "true", "false")  # auto (on GPU) | true | false: bfloat16 autocast
    gradient_checkpointing: bool = False
    save_every: int = 100  # steps between checkpoints (0 = only at the end)
    keep_last: int = 2  # checkpoints kept
    merge: bool = False  # also save the LoRA-merged model (loads with `--model`, no `--adapter`)
    iteration_lr_scale: float = 0.5  # iteration k trains with lr * scale**(k-1)
    num_previews: int = 8  # v3 mask previews written

    def __post_init__(self):
        if self.guidance is None:  # RunConfig resolves it (and checks again)
            return
        if self.guidance < 1:
            raise ConfigError(f"train.guidance must be >= 1 (1 = the conditional branch), got {self.guidance}")
        if not self.guidance_uncond_grad and self.guidance == 1:
            raise ConfigError("train.guidance_uncond_grad=false needs train.guidance > 1 (at 1 no unconditional row "
                              "is run)")


# (dotted key, lowest, highest, which bounds are allowed: True both, False neither, None the lowest only): checked
# when a RunConfig is built, so a
# value no stage can use is refused before anything is written
RANGES = (
    ("chunk_size", 1, None, True), ("model.batch_size", 1, None, True),
    ("prompts.num_examples", 1, None, True), ("prompts.refresh_every", 1, None, True),
    ("prompts.round_size", 1, None, True), ("prompts.oversample", 0, None, False),
    ("perturb.num_negatives", 1, None, True), ("perturb.max_redraws", 0, None, True),
    ("questions.max_questions", 1, None, True),
    ("select.chosen_threshold", -1, 1, True), ("select.rejected_threshold", -1, 1, True),
    ("select.v3_tau", -1, 1, True),
    ("train.lr", 0, None, False), ("train.batch_size", 1, None, True), ("train.micro_batch_size", 1, None, True),
    ("train.steps", 0, None, True), ("train.epochs", 0, None, False), ("train.warmup_ratio", 0, 1, True),
    ("train.save_every", 0, None, True), ("train.keep_last", 1, None, True), ("train.max_grad_norm", 0, None, False),
    ("train.weight_decay", 0, None, True), ("train.adam_beta1", 0, 1, None), ("train.adam_beta2", 0, 1, None),
    ("train.lora.r", 1, None, True), ("train.lora.alpha", 0, None, False), ("train.lora.dropout", 0, 1, True),
    ("train.iteration_lr_scale", 0, None, False), ("train.num_previews", 0, None, True),
    ("train.label_smoothing", 0, 0.5, True), ("train.alpha", 0, None, True),
) + tuple((f"{section}.sampling.{key}", low, high, closed) for section in ("prompts", "perturb", "densify", "questions")
          for key, low, high, closed in (("max_new_tokens", 1, None, True), ("temperature", 0, None, True)))


def check_ranges(cfg) -> None:
    for key, low, high, closed in RANGES:
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        # closed: [low, high]; False: (low, high); None: [low, high)
        below = value < low if closed is not False else value <= low
        above = high is not None and (value > high if closed else value >= high)
        if below or above:
            sign = (">=" if closed is not False else ">") if high is None else "in"
            brackets = {True: "[]", False: "()", None: "[)"}[closed]
            bound = low if high is None else f"{brackets[0]}{low}, {high}{brackets[1]}"
            raise ConfigError(f"{key} must be {sign} {bound}, got {value!r}")
    for section in ("prompts", "perturb", "densify", "questions"):
        top_p = getattr(cfg, section).sampling.top_p
        if not 0 < top_p <= 1:
            raise ConfigError(f"{section}.sampling.top_p must be in (0, 1], got {top_p!r}")
    for sub, n in cfg.prompts.counts.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(f"prompts.counts.{sub} must be a count >= 0, got {n!r}")


@dataclass(frozen=True)
class RunConfig:
    seed: int = 0
    recipe: str = "ospo-v2"  # training preset (ospo/recipes/<name>.yaml): its values sit under the config's own
    # recipe name -> config values that apply only while that recipe is the run's (over the file's values and the
    # preset, under --set): a config states each recipe's own budget, e.g. {ospo-v3: {train: {steps: 1000}}}
    by_recipe: dict = field(default_factory=dict)
    chunk_size: int = 32  # items per chunk file: the unit of resuming and sharding (results do not depend on it)
    templates: str = "shapeworld"  # template set name or YAML path
    model: ModelConfig = ModelConfig()
    prompts: PromptsConfig = PromptsConfig()
    perturb: PerturbConfig = PerturbConfig()
    densify: DensifyConfig = DensifyConfig()
    images: ImagesConfig = ImagesConfig()
    questions: QuestionsConfig = QuestionsConfig()
    select: SelectConfig = SelectConfig()
    train: TrainConfig = TrainConfig()

    def __post_init__(self):
        check_ranges(self)
        if self.train.guidance is None:
            if self.images.cfg_scale < 1:
                raise ConfigError(f"train.guidance follows images.cfg_scale ({self.images.cfg_scale}) and must be "
                                  ">= 1: set train.guidance (1 = the conditional branch)")
            object.__setattr__(self, "train", dataclasses.replace(self.train, guidance=float(self.images.cfg_scale)))


# keys that configs may still hold, with what replaced them
REMOVED_KEYS = {
    "exclude_eval_prompts": "prompts.exclude_files (files of prompts training must not write; the shipped shapeworld "
                            "config lists the ShapeWorld evaluation and dev prompts, and no exclusion is the default)",
}
RECIPES_DIR = Path(__file__).parent / "recipes"


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_preset(name: str) -> dict:
    """The config fragment a recipe stands for (a name from ospo/recipes, or a YAML path)."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else RECIPES_DIR / f"{name}.yaml"
    if not path.is_file():
        close = difflib.get_close_matches(name, recipe_names(), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"unknown recipe '{name}'{hint}; recipes: {', '.join(recipe_names())}")
    return read_yaml_file(path, f"recipe '{name}'") or {}


def _recipe_values(by_recipe, recipe: str) -> dict:
    """The `by_recipe` values of `recipe` (checked: a mapping from recipe names to config mappings)."""
    if by_recipe is None:
        return {}
    if not isinstance(by_recipe, dict):
        raise ConfigError(f"by_recipe must be a mapping from recipe names to config values, got {by_recipe!r}")
    for name, values in by_recipe.items():
        if name not in recipe_names() and not str(name).endswith((".yaml", ".yml")):
            close = difflib.get_close_matches(str(name), recipe_names(), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"by_recipe: unknown recipe '{name}'{hint}; recipes: {', '.join(recipe_names())}")
        if not isinstance(values, dict) or "recipe" in values or "by_recipe" in values:
            raise ConfigError(f"by_recipe.{name} must be a mapping of config values (not recipe or by_recipe)")
    return by_recipe.get(recipe, {})


PATH_KEYS = (("prompts", "exclude_files"),)  # config keys holding lists of data file paths


def _resolve_paths(data: dict, base: Path) -> dict:
    """`data` with the relative filesystem paths of PATH_KEYS made absolute against `base`."""
    out = dict(data)
    for section, key in PATH_KEYS:
        values = out.get(section, {}).get(key) if isinstance(out.get(section), dict) else None
        if isinstance(values, list):
            resolved = [os.path.abspath(base / v) if isinstance(v, str) and not v.startswith(PACKAGE_PREFIX) else v
                        for v in values]
            out[section] = type(out[section])({**out[section], key: resolved})  # a `Whole` section stays whole
    return out


def _check_paths(cfg: "RunConfig") -> None:
    for section, key in PATH_KEYS:
        for text in getattr(getattr(cfg, section), key):
            if not data_path(text).is_file():
                raise ConfigError(f"{section}.{key}: no such file '{text}' (a relative path is read from the folder of "
                                  f"the config file naming it, from the working directory for --set; "
                                  f"{PACKAGE_PREFIX}NAME/PATH names a file inside an installed package)")


CONFIGS_DIR = Path(__file__).parent / "configs"


def config_names() -> list[str]:
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))


def config_path(name: str | Path) -> Path:
    """A shipped config's name (`shapeworld`, `janus-pro-1b`, `janus-pro-7b`) or a YAML file's path."""
    p = Path(name)
    if not p.suffix and not p.exists() and (CONFIGS_DIR / f"{name}.yaml").is_file():
        return CONFIGS_DIR / f"{name}.yaml"
    return p


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> RunConfig:
    """Defaults <- YAML file (or a shipped config's name) <- `--set` overrides, validated against RunConfig."""
    data: dict = {}
    if path is not None:
        p = config_path(path)
        if not p.is_file():
            raise ConfigError(f"config file '{path}' does not exist (shipped configs: {', '.join(config_names())})")
        data = read_yaml_file(p, f"config file '{path}'") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must be a mapping")
    if path is not None:
        data = _resolve_paths(data, config_path(path).parent)
    extra = _resolve_paths(parse_overrides(overrides), Path.cwd())
    # the recipe's preset sits under the file's values, except when `--set recipe=...` switches recipe: then it
    # replaces the file's values of the keys it sets (a saved run config holds every key) and only --set wins
    recipe = extra.get("recipe", data.get("recipe", RunConfig.recipe))
    if not isinstance(recipe, str):
        raise ConfigError(f"recipe must be str, got {type(recipe).__name__} {recipe!r}")
    preset = recipe_preset(recipe)
    preset.pop("recipe", None)
    data = merge_mappings(data, preset) if "recipe" in extra else merge_mappings(preset, data)
    by_recipe = plain(merge_mappings(data.get("by_recipe") or {}, extra.get("by_recipe") or {}))
    base = data  # the values before any recipe's by_recipe values
    data = merge_mappings(data, _recipe_values(by_recipe, recipe))
    data = plain(merge_mappings(data, extra))
    for key, replaced_by in REMOVED_KEYS.items():
        if key in data:
            raise ConfigError(f"config key '{key}' is gone: use {replaced_by}; delete '{key}' from the config")
    cfg = build_config(RunConfig, data)
    for values in by_recipe.values():  # the other recipes' values are checked now, not when first used
        build_config(RunConfig, plain(merge_mappings(base, values)))
    if by_recipe:
        object.__setattr__(cfg, "by_recipe", _complete_by_recipe(by_recipe, plain(base), config_dict(cfg), recipe))
    _check_paths(cfg)
    return cfg


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _nested(flat: dict) -> dict:
    out: dict = {}
    for key, v in flat.items():
        *parents, last = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = v
    return out


def _complete_by_recipe(by_recipe: dict, base: dict, final: dict, recipe: str) -> dict:
    """`by_recipe` as the resolved config stores it: every recipe gets every key any entry sets (from its own entry,
    else the value beneath all entries), and the run's recipe gets the values the run uses (`--set` included). So a
    saved run config reloads to the same values, and switching its recipe restores what the other recipe had."""
    keys = sorted({k for values in by_recipe.values() for k in _flat(values)})
    flat_base, flat_final = _flat(base), _flat(final)
    out = {}
    for name in sorted(set(by_recipe) | {recipe} | set(recipe_names())):
        own = _flat(by_recipe.get(name, {}))
        source = flat_final if name == recipe else {**flat_base, **own}
        out[name] = _nested({k: source[k] for k in keys if k in source})
    return out


def config_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def config_hash(cfg) -> str:
    """Stable short hash of a (sub-)config: changes whenever a value that shapes the output changes."""
    blob = json.dumps(config_dict(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
