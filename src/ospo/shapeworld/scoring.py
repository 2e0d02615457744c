"""Scoring a model on ShapeWorld prompts with the exact oracle: generate images and score them by GenEval's rules
(or CompBench-style graded scores), and measure yes/no answers against the truth (on renders or on the model's own
images). The evaluation harness (`ospo.evaluate.shapeworld`: sets, summaries, files) and pretraining's dev
evaluation build on these; the oracle is never part of the loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ospo.sampling import ImageSampling, item_seed
from ospo.shapeworld import evalsets, oracle


@dataclass(frozen=True)
class ScoredImage:
    prompt_id: str
    task: str
    prompt: str
    seed: int
    score: float
    reasons: tuple[str, ...]


def score_image(record: evalsets.EvalPrompt, pixels: np.ndarray) -> tuple[float, tuple[str, ...]]:
    """GenEval verdict (1/0) for GenEval-style sets, a graded CompBench score for the compbench set."""
    scene = oracle.read_scene(pixels)
    if record.benchmark == "compbench":
        return oracle.compbench_score(record.spec, scene), ()
    verdict = oracle.evaluate_metadata(record.metadata, scene)
    return float(verdict.correct), verdict.reasons


def generate_image_codes(model, prompts: list[str], seeds: list[int], sampling: ImageSampling, desc: str = "images"):
    """`model.generate_image_tokens(prompts, seeds, sampling).codes`, asked for one `model.batch_size` batch at a
    time so that a progress bar (stderr, shown on a terminal only) can follow; the adapter batches the same way,
    so the codes are those of one call."""
    import torch
    from tqdm import tqdm

    size = getattr(model, "batch_size", None) or len(prompts)
    if not prompts:
        return model.generate_image_tokens(prompts, seeds, sampling).codes
    parts = []
    with tqdm(total=len(prompts), desc=desc, unit="image", leave=False, disable=None) as bar:
        for i in range(0, len(prompts), size):
            parts.append(model.generate_image_tokens(prompts[i:i + size], seeds[i:i + size], sampling).codes)
            bar.update(len(parts[-1]))
    return torch.cat(parts)


def generate_and_score(model, records, images_per_prompt: int, sampling: ImageSampling, seed: int = 0,
                       desc: str = "images"):
    """Returns (scored images, PIL images), `images_per_prompt` per record, seeds from (seed, prompt id, k)."""
    jobs = [(r, k) for r in records for k in range(images_per_prompt)]
    seeds = [item_seed(seed, r.id, k) for r, k in jobs]
    images = model.decode_images(generate_image_codes(model, [r.prompt for r, _ in jobs], seeds, sampling, desc))
    scored = []
    for (record, _), s, image in zip(jobs, seeds, images):
        score, reasons = score_image(record, np.asarray(image))
        scored.append(ScoredImage(record.id, record.task, record.prompt, s, score, reasons))
    return scored, images


def vqa_margins(model, images: list, questions: list[list[str]], answers: list[list[str]]
                ) -> tuple[np.ndarray, np.ndarray]:
    """Per (image, question) pair, in order: the model's p(yes) - p(no), and whether the true answer is yes."""
    scores = model.yes_no_scores(images, questions)
    margins = [float(y) - float(n) for s in scores for y, n in zip(s.p_yes, s.p_no)]
    truth = [a == "yes" for ans in answers for a in ans]
    return np.asarray(margins, dtype=np.float64), np.asarray(truth, dtype=bool)


def vqa_hits(model, images: list, questions: list[list[str]], answers: list[list[str]]) -> list[bool]:
    """Per (image, question) pair, in order: does the model's p(yes) > p(no) agree with the true answer?"""
    margins, truth = vqa_margins(model, images, questions, answers)
    return [bool(h) for h in (margins > 0) == truth]


def vqa_accuracy(model, images: list, questions: list[list[str]], answers: list[list[str]]) -> float:
    """Share of (image, question) pairs where the model's p(yes) > p(no) agrees with the true answer."""
    hits = vqa_hits(model, images, questions, answers)
    return float(np.mean(hits)) if hits else float("nan")


def roc_auc(margins: np.ndarray, truth: np.ndarray) -> float:
    """Probability that a true-yes pair gets a larger margin than a true-no pair (ties count half): how well the
    judge ranks, whatever its yes/no bias. NaN when either class is absent."""
    margins, truth = np.asarray(margins, dtype=np.float64), np.asarray(truth, dtype=bool)
    pos, neg = margins[truth], margins[~truth]
    if not len(pos) or not len(neg):
        return float("nan")
    greater, ties = pos[:, None] > neg[None, :], pos[:, None] == neg[None, :]
    return float(greater.mean() + 0.5 * ties.mean())


def own_image_questions(records, scored: list[ScoredImage], images: list, vqa_format
                        ) -> tuple[list[list[str]], list[list[str]]]:
    """The prompt's atomic questions about each generated image, and their true answers from the oracle."""
    from ospo.shapeworld import questions as world_questions

    by_id = {r.id: r for r in records}
    qs, ans = [], []
    for item, image in zip(scored, images):
        scene = oracle.read_scene(np.asarray(image))
        atoms = world_questions.decompose(by_id[item.prompt_id].spec)
        qs.append([vqa_format(world_questions.question_text(q)) for q in atoms])
        ans.append([world_questions.answer_question(q, scene) for q in atoms])
    return qs, ans


def self_vqa_on_generated(model, records, scored: list[ScoredImage], images: list, vqa_format) -> float:
    """Self-VQA accuracy on the model's own generated images: the prompt's atomic questions, truth from the
    oracle's reading of each image."""
    qs, ans = own_image_questions(records, scored, images, vqa_format)
    return vqa_accuracy(model, images, qs, ans)
