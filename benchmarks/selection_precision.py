"""Selection precision of the OSPO rules on ShapeWorld, scored by the exact oracle (for this report only: the
pipeline itself never sees the oracle).

For each rule (v1, v2, v3, and the SILMM-style best-of-N baseline) on the same finished run (stages prompts ...
score): how many pairs it keeps, how often the chosen image truly satisfies the prompt, how often the rejected
image truly fails it, and both. A random pick among the same prompt's images is the chance baseline. A second
table splits it by the prompts' sub-category: how often the images drawn for the prompts are truly correct (the
ceiling a selection can work with), how well the judge's score S separates correct from wrong images (AUC over
each prompt's own images and questions), and each rule's chosen precision.

    python -m benchmarks.selection_precision --run runs/demo [--set select.chosen_threshold=-0.4 ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from ospo.shapeworld import oracle
from ospo.shapeworld.captions import CaptionError, parse_caption
from ospo.shapeworld.codes import paint_codes

RULES = ("v1", "v2", "v3", "best-of-n")


def truly_correct(prompt: str, codes) -> bool | None:
    """The oracle's GenEval verdict of the image (painted from its codes) for the short prompt; None when the
    prompt is not a ShapeWorld caption."""
    try:
        spec = parse_caption(prompt)
    except CaptionError:
        return None
    return oracle.score_spec(spec, oracle.read_scene(paint_codes(codes))).correct


def precision(pairs, codes, prompts) -> dict:
    rows = []
    for p in pairs:
        ok_w = truly_correct(prompts[p.provenance.get("prompt_id", p.id)], codes[p.chosen_image_id])
        ok_l = truly_correct(prompts[p.provenance.get("prompt_id", p.id)], codes[p.rejected_image_id])
        if ok_w is not None and ok_l is not None:
            rows.append((ok_w, not ok_l))
    a = np.array(rows, dtype=float).reshape(-1, 2)
    return {"pairs": len(pairs), "scored": len(rows),
            "chosen_correct": float(a[:, 0].mean()) if len(a) else float("nan"),
            "rejected_wrong": float(a[:, 1].mean()) if len(a) else float("nan"),
            "both": float((a[:, 0] * a[:, 1]).mean()) if len(a) else float("nan")}


def auc(pos, neg) -> float:
    """P(a score of `pos` > one of `neg`), ties count half (the Mann-Whitney AUC); nan when either is empty."""
    if not len(pos) or not len(neg):
        return float("nan")
    p, n = np.asarray(pos, float)[:, None], np.asarray(neg, float)[None, :]
    return float((p > n).mean() + 0.5 * (p == n).mean())


def judge_by_subcategory(scores, codes, prompts, subcategory) -> dict[str, dict]:
    """Per sub-category: the images scored on their prompt's own (local) questions, the share truly correct, the
    AUC of S = mean_k s_k between truly correct and truly wrong images (positives and negatives together), and the
    share truly correct among the positive images alone (drawn from the prompt itself: what a chosen image can be)."""
    rows = defaultdict(list)
    for sc in scores:
        pid = sc.question_set_id
        if pid not in prompts or not sc.p_yes:
            continue
        ok = truly_correct(prompts[pid], codes[sc.image_id])
        if ok is not None:
            rows[subcategory[pid]].append((ok, float(np.mean(sc.s)), sc.image_id.endswith("/positive")))
    out = {}
    for sub, r in sorted(rows.items()):
        good = [s for ok, s, _ in r if ok]
        bad = [s for ok, s, _ in r if not ok]
        pos = [ok for ok, _, positive in r if positive]
        out[sub] = {"images": len(r), "correct": len(good) / len(r), "auc": auc(good, bad),
                    "positives": len(pos), "positives_correct": float(np.mean(pos)) if pos else float("nan")}
    return out


def chosen_by_subcategory(pairs, codes, prompts, subcategory) -> dict[str, tuple[int, float]]:
    """Per sub-category: (pairs, share of chosen images truly correct)."""
    rows = defaultdict(list)
    for p in pairs:
        pid = p.provenance.get("prompt_id", p.id)
        ok = truly_correct(prompts[pid], codes[p.chosen_image_id])
        if ok is not None:
            rows[subcategory[pid]].append(ok)
    return {sub: (len(r), float(np.mean(r))) for sub, r in rows.items()}


def chance(images, codes, prompts, seed: int = 0) -> dict:
    """Chosen and rejected drawn at random (without replacement) among each prompt's images."""
    by_prompt = defaultdict(list)
    for im in images:
        by_prompt[im.prompt_id].append(im.id)
    rng = np.random.default_rng(seed)
    rows = []
    for pid, ids in sorted(by_prompt.items()):
        if len(ids) < 2 or pid not in prompts:
            continue
        w, l = rng.choice(sorted(ids), size=2, replace=False)
        ok_w, ok_l = truly_correct(prompts[pid], codes[w]), truly_correct(prompts[pid], codes[l])
        if ok_w is not None and ok_l is not None:
            rows.append((ok_w, not ok_l))
    a = np.array(rows, dtype=float).reshape(-1, 2)
    return {"pairs": len(rows), "scored": len(rows), "chosen_correct": float(a[:, 0].mean()),
            "rejected_wrong": float(a[:, 1].mean()), "both": float((a[:, 0] * a[:, 1]).mean())}


def main(argv=None) -> None:
    from ospo import pipeline
    from ospo.records import Image, Prompt, Score, TrainingPair
    from ospo.stages.images import load_image_codes
    from ospo.stages.select import stage_name

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a ShapeWorld run directory with stages prompts ... score done")
    ap.add_argument("--set", action="append", default=[], dest="overrides",
                    help="config overrides for the selection, e.g. select.chosen_threshold=-0.4")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    run = Path(args.run)
    from ospo.artifacts import StageDir

    codes = load_image_codes(StageDir(run, "images"))
    prompt_records = [p for p in StageDir(run, "prompts").records() if isinstance(p, Prompt)]
    prompts = {p.id: p.text for p in prompt_records}
    subcategory = {p.id: p.subcategory for p in prompt_records}
    images = [i for i in StageDir(run, "images").records() if isinstance(i, Image)]
    results = {"chance (random pick among the prompt's images)": chance(images, codes, prompts)}
    by_sub = {}
    for rule in RULES:
        rcfg = pipeline.load_run_config(run, [*args.overrides, f"select.rule={rule}"])
        pipeline.run_stages(run, rcfg, ["select"], progress=False)
        pairs = [r for r in StageDir(run, stage_name(rcfg.select)).records() if isinstance(r, TrainingPair)]
        results[rule] = precision(pairs, codes, prompts)
        by_sub[rule] = chosen_by_subcategory(pairs, codes, prompts, subcategory)
    scores = [r for r in StageDir(run, "score").records() if isinstance(r, Score)]
    judge = judge_by_subcategory(scores, codes, prompts, subcategory)
    print(f"selection precision on {run} ({len(prompts)} prompts, {len(images)} images), oracle-scored\n")
    print("| rule | pairs | chosen truly correct | rejected truly wrong | both |")
    print("|---|---|---|---|---|")
    for rule, r in results.items():
        print(f"| {rule} | {r['pairs']} | {r['chosen_correct']:.3f} | {r['rejected_wrong']:.3f} | {r['both']:.3f} |")
    print("\nby sub-category: images scored on their prompt's own questions, how many are truly correct, how well S "
          "separates them (AUC), and each rule's pairs with the share of chosen images truly correct\n")
    print("| sub-category | images | truly correct | positives | positives truly correct | judge AUC | "
          + " | ".join(RULES) + " |")
    print("|---|---|---|---|---|---|" + "---|" * len(RULES))
    for sub, j in judge.items():
        cells = [f"{by_sub[r][sub][0]}: {by_sub[r][sub][1]:.2f}" if sub in by_sub[r] else "0" for r in RULES]
        print(f"| {sub} | {j['images']} | {j['correct']:.2f} | {j['positives']} | {j['positives_correct']:.2f} | "
              f"{j['auc']:.2f} | " + " | ".join(cells) + " |")
    pos = [(j["positives"], j["positives_correct"]) for j in judge.values() if j["positives"]]
    n = sum(k for k, _ in pos)
    print(f"\nall positive images: {n}, truly correct {sum(k * c for k, c in pos) / max(n, 1):.3f}")
    if args.json:
        results["by_subcategory"] = {"judge": judge, "chosen": by_sub}
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
