"""How the sampling of hard negatives and dense pairs changes what the shipped ShapeWorld model writes.

For each sampling setting, the model perturbs (or densifies) the same prompts of a finished run, and the oracle of
ShapeWorld checks each output: for perturbation, whether it is exactly one edit of the kind asked and distinct from
the prompt's earlier slots; for densification, whether both dense prompts keep their short prompt and share one
scene. Prints one table per task.

    python -m experiments.negative_sampling --run runs/demo --num 160
"""

from __future__ import annotations

import argparse
import random
from collections import Counter, defaultdict

from ospo.artifacts import read_jsonl
from ospo.model import JanusAdapter
from ospo.parsing import prompt_key
from ospo.records import DensePair, Negative, Prompt
from ospo.registry import resolve_model_path
from ospo.sampling import TextSampling
from ospo.shapeworld.captions import CaptionError
from ospo.shapeworld.tasks import check_densified, check_perturbation
from ospo.stages.densify import densify_negatives
from ospo.stages.perturb import perturb_prompts
from ospo.templates import load_templates

SETTINGS = ((0.0, 1.0), (0.7, 0.9), (1.0, 0.9), (1.2, 0.9))  # (temperature, top-p); 1.2 / 0.9 is the reference's


def perturbation_table(prompts, model, templates, settings, max_redraws: int) -> list[dict]:
    rows = []
    for temperature, top_p in settings:
        records = perturb_prompts(prompts, templates, model, TextSampling(64, temperature, 0, top_p), 0, 3,
                                  max_redraws)
        text = {p.id: p.text for p in prompts}
        seen, c = defaultdict(set), Counter()
        for r in records:
            if not isinstance(r, Negative):
                c[f"rejected {r.reason}"] += 1
                continue
            key = prompt_key(r.text)
            c["distinct" if key not in seen[r.prompt_id] else "repeat"] += 1
            seen[r.prompt_id].add(key)
            try:
                good, _ = check_perturbation(text[r.prompt_id], r.edit, r.text)
            except CaptionError:  # the prompt itself does not parse: the oracle cannot say
                c["prompt unparseable"] += 1
                continue
            c["valid edit"] += good
        rows.append({"temperature": temperature, "top_p": top_p, "slots": len(records), **c})
    return rows


def densify_table(negatives, positives, model, templates, settings) -> list[dict]:
    rows = []
    for temperature, top_p in settings:
        records = densify_negatives(negatives, positives, templates, model, TextSampling(80, temperature, 0, top_p), 0)
        c = Counter()
        for r, n in zip(records, negatives):
            if not isinstance(r, DensePair):
                c[f"rejected {r.reason}"] += 1
                continue
            try:
                good, _ = check_densified(positives[n.prompt_id], n.text, r.dense_positive, r.dense_negative)
            except CaptionError:
                c["prompt unparseable"] += 1
                continue
            c["valid"] += good
        rows.append({"temperature": temperature, "top_p": top_p, "pairs": len(records), **c})
    return rows


def print_table(title: str, rows: list[dict]) -> None:
    keys = sorted({k for r in rows for k in r} - {"temperature", "top_p"})
    print(f"\n{title}\n| temperature | top-p | " + " | ".join(keys) + " |")
    print("|---|---|" + "---|" * len(keys))
    for r in rows:
        print(f"| {r['temperature']} | {r['top_p']} | " + " | ".join(str(r.get(k, 0)) for k in keys) + " |")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a finished ShapeWorld run (its prompts/ and perturb/ records)")
    ap.add_argument("--num", type=int, default=160, help="prompts (and 300 / 160 x as many negatives) drawn")
    ap.add_argument("--max-redraws", type=int, default=0)
    args = ap.parse_args(argv)
    model = JanusAdapter.from_pretrained(resolve_model_path("shapeworld"), batch_size=128)
    templates = load_templates("shapeworld")
    prompts = [r for r in read_jsonl(f"{args.run}/prompts/records.jsonl") if isinstance(r, Prompt)]
    negatives = [r for r in read_jsonl(f"{args.run}/perturb/records.jsonl") if isinstance(r, Negative)]
    random.Random(0).shuffle(prompts)
    random.Random(0).shuffle(negatives)
    positives = {p.id: p.text for p in prompts}
    print_table("perturbation (3 slots a prompt)",
                perturbation_table(prompts[:args.num], model, templates, SETTINGS, args.max_redraws))
    print_table("densification", densify_table(negatives[:args.num * 300 // 160], positives, model, templates,
                                               (SETTINGS[0], SETTINGS[-1])))


if __name__ == "__main__":
    main()
