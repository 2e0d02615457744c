"""Fixed ShapeWorld evaluation sets (GenEval and T2I-CompBench mirrors), a dev split, and summaries.

ShapeWorld-GenEval has GenEval's six tasks; its metadata uses GenEval's include/exclude form with
"shape" for "class". Some task spaces are small (five shapes give five single-object prompts), so
every task takes at most half of its distinct prompts (and at most 100): the other half stays
available to training, which must not see any evaluation prompt (`eval_prompt_texts`).
ShapeWorld-CompBench has 100 prompts per category: color (color2), texture (texture2), spatial,
numeracy (numeracy2) and complex; the 3D-spatial and non-spatial categories do not exist here.
The shipped files in data/ are exactly what `build_eval_set` (geneval.jsonl, compbench.jsonl) and `dev_split`
(dev_prompts.txt) return for the default seeds.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ospo.shapeworld.captions import SUBCATEGORIES, ObjectClause, Relation, Spec, caption, parse_caption
from ospo.shapeworld.sampler import sample_spec
from ospo.shapeworld.world import COLORS, MAX_COUNT, SHAPES

DATA_DIR = Path(__file__).parent / "data"
EVAL_SEED = 20250602
DEV_SEED = 7
EVAL_SETS = ("geneval", "compbench")
GENEVAL_TASKS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
COMPBENCH_TASKS = {  # category -> the sub-category its prompts are sampled from
    "color": "color2", "texture": "texture2", "spatial": "spatial", "numeracy": "numeracy2", "complex": "complex",
}
MAX_PROMPTS = 100
_DIRECTIONS = ("left of", "right of", "above", "below")  # GenEval's position relations


@dataclass(frozen=True)
class EvalPrompt:
    """One evaluation prompt. `metadata` holds GenEval's {"include": [...], "exclude": [...]}."""

    id: str
    benchmark: str
    task: str
    prompt: str
    metadata: dict

    @property
    def spec(self) -> Spec:
        return parse_caption(self.prompt)


def geneval_metadata(spec: Spec) -> dict:
    """GenEval metadata of a spec: {"include": [...], "exclude": [...]} (+ "background").

    One include clause per object clause ({"shape", "count"} plus "color", "texture", "region"
    when given). A relation puts its object clause first and gives the subject
    "position": [kind, 0], as GenEval's position prompts do. Counted clauses (count >= 2, written
    with a number word) get GenEval's counting exclude {"shape", "count": N + 1}, i.e. exactly N;
    a clause with the article "a" means at least one, as in GenEval's other tags.
    """
    order = list(range(len(spec.objects)))
    rel = spec.relation
    if rel is not None:
        order.remove(rel.object)
        order.insert(0, rel.object)
    include = []
    for i in order:
        clause = spec.objects[i]
        entry = {"shape": clause.shape, "count": clause.count}
        entry.update({k: v for k in ("color", "texture", "region") if (v := getattr(clause, k)) is not None})
        if rel is not None and i == rel.subject:
            entry["position"] = [rel.kind, 0]
        include.append(entry)
    exclude = [{"shape": e["shape"], "count": e["count"] + 1} for e in include if e["count"] > 1]
    metadata = {"include": include, "exclude": exclude}
    if spec.background is not None:
        metadata["background"] = spec.background
    return metadata


def _geneval_space(task: str) -> list[Spec]:
    """Every distinct spec of a GenEval task, in a fixed order."""
    pairs = list(itertools.permutations(SHAPES, 2))
    if task == "single_object":
        return [Spec((ObjectClause(s),)) for s in SHAPES]
    if task == "two_object":
        return [Spec((ObjectClause(a), ObjectClause(b))) for a, b in pairs]
    if task == "counting":
        return [Spec((ObjectClause(s, n),)) for s in SHAPES for n in range(2, MAX_COUNT + 1)]
    if task == "colors":
        return [Spec((ObjectClause(s, color=c),)) for s in SHAPES for c in COLORS]
    if task == "position":
        return [Spec((ObjectClause(a), ObjectClause(b)), Relation(r)) for a, b in pairs for r in _DIRECTIONS]
    if task == "color_attr":
        colors = list(itertools.permutations(COLORS, 2))
        return [Spec((ObjectClause(a, color=ca), ObjectClause(b, color=cb))) for a, b in pairs for ca, cb in colors]
    raise ValueError(f"unknown GenEval task {task!r}; expected one of {', '.join(GENEVAL_TASKS)}")


def _record(benchmark: str, task: str, index: int, spec: Spec) -> EvalPrompt:
    return EvalPrompt(f"{benchmark}/{task}/{index:03d}", benchmark, task, caption(spec), geneval_metadata(spec))


def _distinct_samples(rng: np.random.Generator, subcategory: str, wanted: int, excluded: set[str]) -> list[Spec]:
    """Up to `wanted` distinct specs not in `excluded`, in sampling order.

    Fewer when the space runs out: sampling stops after 500 draws in a row bring nothing new.
    """
    found: dict[str, Spec] = {}
    misses = 0
    while len(found) < wanted and misses < 500:
        spec = sample_spec(rng, subcategory)
        text = caption(spec)
        if text in excluded or text in found:
            misses += 1
            continue
        found[text] = spec
        misses = 0
    return list(found.values())


def build_eval_set(name: str, seed: int = EVAL_SEED) -> tuple[EvalPrompt, ...]:
    """The evaluation set `name` ("geneval" or "compbench"), deterministic in `seed`."""
    records = []
    if name == "geneval":
        for t, task in enumerate(GENEVAL_TASKS):
            space = _geneval_space(task)
            order = np.random.default_rng([seed, t]).permutation(len(space))
            size = min(MAX_PROMPTS, math.ceil(len(space) / 2))
            records += [_record(name, task, i, space[j]) for i, j in enumerate(order[:size])]
    elif name == "compbench":
        taken = {r.prompt for r in build_eval_set("geneval", seed)}
        for t, (task, subcategory) in enumerate(COMPBENCH_TASKS.items()):
            rng = np.random.default_rng([seed, 100 + t])
            specs = _distinct_samples(rng, subcategory, MAX_PROMPTS, taken)
            records += [_record(name, task, i, spec) for i, spec in enumerate(specs)]
    else:
        raise ValueError(f"unknown evaluation set {name!r}; expected one of {', '.join(EVAL_SETS)}")
    return tuple(records)


def geneval_dev_split(seed: int = DEV_SEED) -> tuple[EvalPrompt, ...]:
    """Tuning prompts of ShapeWorld-GenEval's six tasks: for each task, the half of its distinct prompts the
    evaluation set leaves (at most `MAX_PROMPTS`, drawn with `seed`), so the tasks are the evaluation's and no prompt
    is. `dev_split` draws the loop's own sub-categories instead, whose spatial prompts bind colours and whose
    numeracy has two counts; neither is a GenEval task. Training may write these prompts (the small tasks' spaces
    leave nothing else): `benchmarks.recipes --split geneval-dev` reports how many a run wrote."""
    test = {r.prompt for r in load_eval_set("geneval")}
    records = []
    for t, task in enumerate(GENEVAL_TASKS):
        space = [spec for spec in _geneval_space(task) if caption(spec) not in test]
        order = np.random.default_rng([seed, 200 + t]).permutation(len(space))
        records += [_record("geneval-dev", task, i, space[j]) for i, j in enumerate(order[:MAX_PROMPTS])]
    return tuple(records)


def _row(record: EvalPrompt) -> dict:
    return {"id": record.id, "tag": record.task, "prompt": record.prompt, **record.metadata}


def write_eval_sets(directory: Path = DATA_DIR, seed: int = EVAL_SEED) -> list[Path]:
    """Write `<name>.jsonl` for every evaluation set into `directory`; returns the paths."""
    paths = []
    for name in EVAL_SETS:
        path = Path(directory) / f"{name}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(_row(r)) + "\n" for r in build_eval_set(name, seed)))
        paths.append(path)
    return paths


def write_dev_split(directory: Path = DATA_DIR) -> Path:
    """Write `dev_prompts.txt`, the prompts of the default `dev_split()` one a line, into `directory`; returns the
    path. The shipped file is what configs list to keep the dev prompts out of training (`prompts.exclude_files`);
    the split itself is rebuilt from its seed wherever it is evaluated."""
    path = Path(directory) / "dev_prompts.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(r.prompt + "\n" for r in dev_split()))
    return path


@lru_cache(maxsize=None)
def load_eval_set(name: str) -> tuple[EvalPrompt, ...]:
    """The shipped evaluation set `name` ("geneval" or "compbench")."""
    if name not in EVAL_SETS:
        raise ValueError(f"unknown evaluation set {name!r}; expected one of {', '.join(EVAL_SETS)}")
    records = []
    for line in (DATA_DIR / f"{name}.jsonl").read_text(encoding="utf-8").split("\n"):  # not splitlines: see
        if not line.strip():  # ospo.artifacts.lines
            continue
        row = json.loads(line)
        metadata = {k: v for k, v in row.items() if k not in ("id", "tag", "prompt")}
        records.append(EvalPrompt(row["id"], name, row["tag"], row["prompt"], metadata))
    return tuple(records)


def eval_prompt_texts() -> frozenset[str]:
    """Every evaluation prompt text; training prompts must avoid all of them."""
    return frozenset(r.prompt for name in EVAL_SETS for r in load_eval_set(name))


def dev_split(num_per_subcategory: int = 50, seed: int = DEV_SEED) -> tuple[EvalPrompt, ...]:
    """Tuning prompts per sub-category, disjoint from the evaluation sets.

    Takes `num_per_subcategory` prompts where the sub-category has at least twice as many unused
    prompts, otherwise half of those left, so small sub-categories keep prompts for training.
    """
    excluded = set(eval_prompt_texts())
    records = []
    for s, subcategory in enumerate(SUBCATEGORIES):
        rng = np.random.default_rng([seed, s])
        specs = _distinct_samples(rng, subcategory, 2 * num_per_subcategory, excluded)
        keep = num_per_subcategory if len(specs) == 2 * num_per_subcategory else len(specs) // 2
        records += [_record("dev", subcategory, i, spec) for i, spec in enumerate(specs[:keep])]
    return tuple(records)


