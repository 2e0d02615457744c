"""Pretraining recipes: a chain of `pretrain` stages run by one command.

The shipped checkpoint is made by a chain: a VQ run, an LM run from scratch, the two joined, then five
continuations, each starting from the one before (docs/shapeworld.md). A recipe writes that chain down as data, and
`run_recipe` runs it:

    stages:
      - name: mixture
        set: {lm_steps: 2400, factor_head: true}              # PretrainConfig fields
      - name: assembled
        assemble: {vq: vq-decoder, rest: mixture}             # the VQ of one stage, everything else of another
      - name: align-to-words
        set: {init_from: assembled, lm_steps: 800}            # init_from names an earlier stage

Each stage runs into OUT/stages/<name>/ as an ordinary pretraining run (resumable, its own log); a finished stage
is skipped when the command is run again, and a stage whose settings changed since it ran is refused rather than
mixed. The last stage's checkpoint is then copied into OUT with a pretrain.json that records every stage.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path


from ospo.artifacts import atomic_write_text, file_hash
from ospo.errors import InputError, OspoError
from ospo.schema import read_yaml
from ospo.shapeworld.pretrain.config import DATA_VERSION, PretrainConfig, config_fields
from ospo.shapeworld.pretrain.loop import pretrain
from ospo.shapeworld.pretrain.surgery import assemble

STAGE_KEYS = ("name", "set", "assemble")


@dataclass(frozen=True)
class Stage:
    name: str
    fields: dict  # typed PretrainConfig fields (init_from: an earlier stage's name)
    assemble: tuple[str, str] | None = None  # (stage whose VQ, stage whose everything else)


@dataclass(frozen=True)
class Recipe:
    name: str
    text: str  # the YAML as read, recorded with the result
    stages: tuple[Stage, ...]


def recipe_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("ospo.shapeworld.pretrain").joinpath("recipes").iterdir()
                  if p.name.endswith(".yaml"))


def load_recipe(name_or_path: str) -> Recipe:
    """A packaged recipe by name (`recipe_names()`) or a YAML file; every mistake is an InputError naming it."""
    path = Path(name_or_path)
    if name_or_path in recipe_names():  # a packaged name wins over a folder of that name (e.g. --out shipped)
        name = name_or_path
        text = resources.files("ospo.shapeworld.pretrain").joinpath("recipes", f"{name}.yaml").read_text()
    elif path.suffix in (".yaml", ".yml") or "/" in name_or_path or os.sep in name_or_path:
        if not path.is_file():
            raise InputError(f"pretraining recipe {name_or_path}: " +
                             ("is a directory" if path.is_dir() else "no such file"))
        name, text = path.stem, path.read_text()
    else:
        raise InputError(f"pretraining recipe {name_or_path!r}: not one of {recipe_names()} and not a .yaml file "
                         f"('single' runs one stage from --set/--vq-steps/--lm-steps)")
    data = read_yaml(text, f"pretraining recipe {name}", InputError)
    if not isinstance(data, dict) or set(data) != {"stages"} or not isinstance(data["stages"], list) \
            or not data["stages"]:
        raise InputError(f"pretraining recipe {name}: expected one key, 'stages', holding a non-empty list")
    stages: list[Stage] = []
    for i, raw in enumerate(data["stages"]):
        where = f"pretraining recipe {name}, stage {i + 1}"
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
            raise InputError(f"{where}: expected a mapping with a 'name' that is a string (quote names such as "
                             f"'no' or 'on', which YAML reads as booleans)")
        where = f"pretraining recipe {name}, stage {raw['name']!r}"
        bad = [k for k in raw if k not in STAGE_KEYS]
        if bad:
            raise InputError(f"{where}: unknown key(s) {bad}; a stage has {STAGE_KEYS}")
        if raw["name"] in {s.name for s in stages} or "/" in raw["name"] or raw["name"] in (".", ".."):
            raise InputError(f"{where}: a stage name must be unique and usable as a folder name")
        earlier = [s.name for s in stages]
        if "assemble" in raw:
            parts = raw["assemble"]
            if "set" in raw or not isinstance(parts, dict) or set(parts) != {"vq", "rest"} \
                    or any(parts[k] not in earlier for k in parts):
                raise InputError(f"{where}: 'assemble' takes {{vq: STAGE, rest: STAGE}} naming earlier stages "
                                 f"{earlier} and no 'set'")
            stages.append(Stage(raw["name"], {}, (parts["vq"], parts["rest"])))
            continue
        values = raw.get("set") or {}
        if not isinstance(values, dict):
            raise InputError(f"{where}: 'set' must map PretrainConfig fields to values")
        if "seed" in values:
            raise InputError(f"{where}: 'seed' comes from the command (--seed), not the recipe")
        fields = config_fields(values, f"{where}: ")
        if fields.get("init_from") and fields["init_from"] not in earlier:
            raise InputError(f"{where}: init_from={fields['init_from']!r} must name an earlier stage {earlier}")
        try:
            PretrainConfig(**fields)
        except InputError as e:
            raise InputError(f"{where}: {e}") from None
        stages.append(Stage(raw["name"], fields))
    return Recipe(name, text, tuple(stages))


def stage_dir(out_dir: str | Path, name: str) -> Path:
    return Path(out_dir) / "stages" / name


def check_out_dir(out_dir: str | Path) -> None:
    """A recipe's OUT must not hold a single-stage run (its pretrain-state would be mixed with the stages')."""
    if (Path(out_dir) / "pretrain-state").exists():
        raise OspoError(f"{out_dir} holds a single-stage pretraining run; resume it with the flags that started it "
                        f"(--set ... or --recipe single), or use a new --out for the recipe")


def run_recipe(out_dir: str | Path, recipe: Recipe, seed: int = 0, progress=None, keep_state: bool = False,
               spec=None) -> dict:
    """Runs (or resumes) every stage of `recipe` into OUT/stages/, then copies the last stage's checkpoint into
    OUT. `progress(stage, phase, step, total, metrics)`. Returns OUT/pretrain.json's content.

    Each stage records what it ran with in OUT/stages/<name>/stage.json: the seed, its fields, and the sha256 of
    the weights it starts from (so a stage redone upstream is not silently built on). A stage whose record
    differs from what the recipe now asks is refused, naming the difference; deleting that stage's folder (and
    the later ones) redoes it."""
    out = Path(out_dir)
    check_out_dir(out)
    names = [s.name for s in recipe.stages]
    for stage in recipe.stages:
        where = stage_dir(out, stage.name)
        inputs = list(stage.assemble or ([stage.fields["init_from"]] if stage.fields.get("init_from") else []))
        planned = {"seed": seed, "set": stage.fields, "assemble": list(stage.assemble) if stage.assemble else None,
                   "inputs": {s: file_hash(stage_dir(out, s) / "model.safetensors") for s in inputs}}
        record = where / "stage.json"
        if record.exists():
            ran = json.loads(record.read_text())
            if isinstance(ran.get("set"), dict):  # typed as today (a bool bf16 recorded before it took "auto")
                ran["set"] = config_fields(ran["set"], f"{record}: ")
            if ran != planned:
                differ = {k: {"ran": ran.get(k), "now": v} for k, v in planned.items() if ran.get(k) != v}
                later = names[names.index(stage.name):]
                raise OspoError(f"stage {stage.name} in {where} ran with other settings or inputs than the recipe "
                                f"and seed now give: {differ}. Rerun with what it ran with, or delete "
                                f"{', '.join(str(stage_dir(out, n)) for n in later)} to redo from there")
        else:
            where.mkdir(parents=True, exist_ok=True)
            atomic_write_text(record, json.dumps(planned, indent=1))
        if (where / "pretrain.json").exists():
            continue  # finished earlier
        if stage.assemble:
            vq, rest = (stage_dir(out, s) / "model.safetensors" for s in stage.assemble)
            assemble(vq, rest, where, {"assembled": {"vq": stage.assemble[0], "rest": stage.assemble[1]}}, spec=spec)
            continue
        fields = dict(stage.fields)
        if fields.get("init_from"):
            fields["init_from"] = str(stage_dir(out, fields["init_from"]).resolve())
        pretrain(where, PretrainConfig(seed=seed, **fields),
                 progress and (lambda phase, step, total, metrics, name=stage.name:
                               progress(name, phase, step, total, metrics)),
                 keep_state=keep_state, spec=spec)
    stages = {s.name: json.loads((stage_dir(out, s.name) / "pretrain.json").read_text()) for s in recipe.stages}
    info = {"data_version": DATA_VERSION, "recipe": recipe.name, "seed": seed, "recipe_yaml": recipe.text,
            "stages": stages, "final": stages[recipe.stages[-1].name].get("final", {})}
    (out / "pretrain.json").unlink(missing_ok=True)  # OUT is complete only once pretrain.json is back
    last = stage_dir(out, recipe.stages[-1].name)
    for f in sorted(last.iterdir()):
        if f.is_file() and f.name not in ("pretrain.json", "stage.json"):
            tmp = out / (f.name + ".tmp")
            shutil.copyfile(f, tmp)
            os.replace(tmp, out / f.name)
    atomic_write_text(out / "pretrain.json", json.dumps(info, indent=1))
    return info
