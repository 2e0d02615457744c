"""Measures the shipped (or a given) ShapeWorld Janus against the targets of the ShapeWorld issue, with the oracle.

    python -m benchmarks.shapeworld_targets [--model DIR] [--images-per-prompt 4] [--json out.json]

Rows: oracle accuracy on clean renders and on render -> codes -> decoded pixels; text-to-image on
ShapeWorld-GenEval (per task, bootstrap 95% intervals); self-VQA on held-out renders and on the model's own
images; validity of the model's perturbations and coverage of its question decompositions. The renders are
asked the mixture's questions and, in a second row, form-balanced ones (`mixture.balanced_question`: the answer
cannot be told from the question), each beside a blind judge's accuracy on the same questions. Held-out data
comes from seeds the pretraining mixture never uses (stream 7), the prompts of text tasks from the dev split.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch

from ospo.evaluate import shapeworld as sw_eval
from ospo.shapeworld import scoring as sw_scoring
from ospo.evaluate.compare import ImageResult, summarize
from ospo.model import JanusAdapter
from ospo.sampling import ImageSampling, TextSampling, item_seed
from ospo.shapeworld import checkpoint_path, evalsets, oracle, sampler, tasks
from ospo.shapeworld import codes as world_codes
from ospo.shapeworld.captions import SUBCATEGORIES
from ospo.shapeworld.pretrain import mixture
from ospo.shapeworld.render import render
from ospo.templates import load_templates

HELD_OUT = 7  # seed stream no pretraining draw uses


def oracle_accuracy(model, num_scenes: int) -> tuple[float, float]:
    """Object-level accuracy of the oracle on clean renders and on VQ-decoded renders of the same scenes."""
    rng = np.random.default_rng([HELD_OUT, 1])
    scenes = [mixture.random_scene(rng) if i % 2 else
              sampler.sample_scene(sampler.sample_spec(rng, list(SUBCATEGORIES)[i % len(SUBCATEGORIES)]), rng)
              for i in range(num_scenes)]
    decoded = model.decode_images(torch.tensor(np.stack([world_codes.scene_to_codes(s) for s in scenes])))

    def accuracy(images):
        hits = total = 0
        for scene, image in zip(scenes, images):
            read = oracle.read_scene(np.asarray(image))
            truth, found = set(scene.objects), set(read.objects)
            hits += len(truth & found)
            total += len(truth | found)  # misses and false detections both count against
        return hits / total

    return accuracy([render(s) for s in scenes]), accuracy(decoded)


def vqa_held_out(model, num: int, balanced: bool = False) -> tuple[float, dict[str, float]]:
    """Self-VQA accuracy on held-out renders of the mixture's VQA sampler (`balanced`: its form-balanced
    questions, `mixture.balanced_question`), overall, by question kind and by true answer, the ranking AUC, and
    the accuracy of a blind judge on the same questions (`blind_accuracy`)."""
    from PIL import Image

    from ospo.shapeworld.questions import parse_question

    rng = np.random.default_rng([HELD_OUT, 2] + ([1] if balanced else []))
    examples = [mixture.sample_vqa(rng, balanced=balanced) for _ in range(num)]
    questions = [parse_question(e.question.split("?")[0] + "?") for e in examples]
    kinds = [q.kind for q in questions]
    margins, truth = sw_scoring.vqa_margins(model, [Image.fromarray(e.image) for e in examples],
                                         [[e.question] for e in examples], [[e.answer] for e in examples])
    hits = (margins > 0) == truth
    by_kind = {f"{k} questions": float(np.mean(hits[np.asarray(kinds) == k])) for k in sorted(set(kinds))}
    blind = {"a blind judge (the question's form only)": blind_accuracy(questions, truth, balanced)}
    return float(np.mean(hits)), {**by_kind, **judge_rows(margins, truth), **blind}


def _form(question) -> tuple:
    """`mixture.question_form` of a Question or of a question's text (the VQA suffix after "?" ignored)."""
    from ospo.shapeworld.questions import parse_question

    return mixture.question_form(parse_question(question.split("?")[0] + "?") if isinstance(question, str)
                                 else question)


def _votes(questions, truth) -> dict[tuple, list[int]]:
    """[no, yes] counts of the true answers by question form."""
    votes: dict = {}
    for q, t in zip(questions, truth):
        votes.setdefault(_form(q), [0, 0])[bool(t)] += 1
    return votes


def blind_accuracy(questions, truth: np.ndarray, balanced: bool, num_fit: int = 20000) -> float:
    """Accuracy on `questions` of a judge that never looks at the image: it answers each question's form
    (`mixture.question_form`: kind, the attributes named, relation word, count) with that form's majority answer
    among `num_fit` questions of a pretraining stream of the same sampler ("yes" for a form never seen or tied)."""
    rng = np.random.default_rng([0, 2, 99])
    fit = [mixture.vqa_question(rng, balanced=balanced) for _ in range(num_fit)]
    votes = _votes([q for _, q, _ in fit], [yes for _, _, yes in fit])
    guess = np.array([votes.get(_form(q), [0, 0])[1] >= votes.get(_form(q), [0, 0])[0] for q in questions])
    return float(np.mean(guess == truth))


def blind_in_sample(questions, truth: np.ndarray, min_count: int = 1) -> float:
    """Accuracy of answering each question form (`mixture.question_form`) with its majority true answer among these
    same questions, over the forms asked at least `min_count` times: the most a judge that never looks at the
    images could score on them (fitted in-sample, so an optimistic bound)."""
    kept = [v for v in _votes(questions, truth).values() if sum(v) >= min_count]
    return sum(max(v) for v in kept) / max(1, sum(sum(v) for v in kept))


RELATION_SETS = ("line~0", "line~1", "relation~0", "relation~1", "relation")


def relation_sets(model, num: int) -> dict[str, float]:
    """Self-VQA accuracy on relation questions of rising difficulty, `num` held-out renders each: pretraining's
    find kinds (`mixture.sample_find`: two objects on one row asked "left of" ("line~0") or "right of" ("line~1");
    two of 2-4 objects of distinct shapes anywhere asked "left of" / "above" ("relation~0"), "right of" / "below"
    ("relation~1"), any relation with a fair coin between it and its reverse ("relation")), then the mixture's own
    relation questions ("vqa relation": colour clauses, repeated shapes, near misses), the ones `vqa_held_out`
    counts."""
    from PIL import Image

    from ospo.shapeworld.questions import parse_question

    sets = {}
    for i, kind in enumerate(RELATION_SETS):
        rng = np.random.default_rng([HELD_OUT, 3, i])
        sets[kind] = [mixture.sample_find(rng, 1, kind) for _ in range(num)]
    rng, rows = np.random.default_rng([HELD_OUT, 4]), []
    while len(rows) < num:
        e = mixture.sample_vqa(rng)
        if parse_question(e.question.split("?")[0] + "?").kind == "relation":
            rows.append(e)
    sets["vqa relation"] = rows
    out = {}
    for kind, examples in sets.items():
        margins, truth = sw_scoring.vqa_margins(model, [Image.fromarray(e.image) for e in examples],
                                             [[e.question] for e in examples], [[e.answer] for e in examples])
        out[kind] = float(np.mean((margins > 0) == truth))
    return out


def judge_rows(margins: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Accuracy on true-yes and true-no pairs, and the ranking AUC (blind to a yes/no bias)."""
    hits = (margins > 0) == truth
    return {"true yes": float(np.mean(hits[truth])), "true no": float(np.mean(hits[~truth])),
            "AUC (ranking)": sw_scoring.roc_auc(margins, truth)}


def _interleaved(records) -> list:
    """`records` reordered to take one of each task in turn (the split lists them task by task: its first 100 held
    no numeracy2 or complex prompt, the hardest to perturb)."""
    by_task: dict[str, list] = {}
    for r in records:
        by_task.setdefault(r.task, []).append(r)
    queues = list(by_task.values())
    return [q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)]


def text_tasks(model, templates, num: int) -> tuple[float, float, dict]:
    """Share of valid perturbations and of complete decompositions, on `num` dev prompts.

    Each prompt is asked for every distinct edit of its negative slots (`tasks.perturbation_slots`), i.e. what
    the negative stage asks: never a swap of a one-clause prompt, which no answer satisfies. The prompts are taken
    in turn from the split's sub-categories (`_interleaved`), so every `num` covers them all.
    """
    records = _interleaved(evalsets.dev_split(20))[:num]
    asked = [(r, e) for r in records for e in dict.fromkeys(tasks.perturbation_slots(r.spec))]
    sampling = TextSampling(max_new_tokens=64)
    outputs = model.generate_text([templates.perturb(r.prompt, e) for r, e in asked],
                                  [item_seed(0, f"{r.id}/{e}", 0) for r, e in asked], sampling)
    reasons: dict[str, int] = {}
    valid = 0
    for (r, e), out in zip(asked, outputs):
        try:
            ok, why = tasks.check_perturbation(r.prompt, e, templates.parse_perturbation(out))
        except ValueError as err:
            ok, why = False, getattr(err, "reason", str(err))
        valid += ok
        if not ok:
            reasons[why.split(":")[0]] = reasons.get(why.split(":")[0], 0) + 1
    perturb_ok = valid / len(asked)
    outputs = model.generate_text([templates.decompose(r.prompt) for r in records],
                                  [item_seed(0, r.id, 2) for r in records], sampling)
    covered = 0
    for r, out in zip(records, outputs):
        try:
            covered += tasks.check_decomposition(r.prompt, templates.parse_questions(out))[0]
        except ValueError:
            pass
    return perturb_ok, covered / len(records), reasons


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(checkpoint_path()))
    ap.add_argument("--images-per-prompt", type=int, default=4)
    ap.add_argument("--cfg-scale", type=float, default=None)
    ap.add_argument("--scenes", type=int, default=300)
    ap.add_argument("--vqa", type=int, default=600)
    ap.add_argument("--text", type=int, default=150)
    ap.add_argument("--relations", type=int, default=0,
                    help="also this many questions of each relation set (relation_sets): where relations fail")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(2)
    model = JanusAdapter.from_pretrained(args.model, batch_size=64)
    templates = load_templates("shapeworld")
    cfg_scale = args.cfg_scale or model.default_cfg_scale
    sampling = ImageSampling(cfg_scale=cfg_scale)

    clean, decoded = oracle_accuracy(model, args.scenes)
    records = list(evalsets.load_eval_set("geneval"))
    scored, images = sw_scoring.generate_and_score(model, records, args.images_per_prompt, sampling)
    summary = summarize([ImageResult(s.prompt_id, s.task, s.score) for s in scored])
    own_questions, own_answers = sw_scoring.own_image_questions(records, scored, images, templates.vqa)
    own_margins, own_truth = sw_scoring.vqa_margins(model, images, own_questions, own_answers)
    own = float(np.mean((own_margins > 0) == own_truth))
    renders, render_rows = vqa_held_out(model, args.vqa)
    balanced, balanced_rows = vqa_held_out(model, args.vqa, balanced=True)
    perturb_ok, decompose_ok, reasons = text_tasks(model, templates, args.text)
    relations = relation_sets(model, args.relations) if args.relations else {}

    rows = [("oracle, clean renders (object acc.)", clean, ">= 0.995"),
            ("oracle, render -> codes -> decoded", decoded, ">= 0.99"),
            (f"T2I ShapeWorld-GenEval overall (cfg {cfg_scale})", summary.overall.mean, "0.30 - 0.75"),
            ("self-VQA, held-out renders", renders, ">= 0.85"),
            *((f"  - {name}", value, "") for name, value in render_rows.items()),
            ("self-VQA, held-out renders, form-balanced questions", balanced, ""),
            *((f"  - {name}", value, "") for name, value in balanced_rows.items()),
            ("self-VQA, own generated images", own, ">= 0.80"),
            *((f"  - {name}", value, "") for name, value in judge_rows(own_margins, own_truth).items()),
            ("  - a blind judge (each form's majority answer, in-sample)",
             blind_in_sample([q for qs in own_questions for q in qs], own_truth), ""),
            ("valid perturbations", perturb_ok, ">= 0.80"),
            ("complete decompositions", decompose_ok, ">= 0.80")]
    print(f"\n## ShapeWorld model: {args.model}\n\n| measure | value | target |\n|---|---|---|")
    for name, value, target in rows:
        print(f"| {name} | {value:.3f} | {target} |")
    print("\n" + sw_eval.summary_table(summary))
    print(f"\nperturbation rejections: {reasons}")
    if relations:
        print(f"\nrelation questions ({args.relations} each): " + ", ".join(f"{k} {v:.3f}" for k, v in relations.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": [{"measure": n, "value": v, "target": t} for n, v, t in rows],
                       "geneval": sw_eval.summary_dict(summary), "perturbation_rejections": reasons,
                       "relations": relations}, f, indent=1)


if __name__ == "__main__":
    main()
