"""Stage 3.2 — self-VQA scores.

Every image is asked the yes/no questions of its short prompt's question sets through the model's own
understanding branch; `p(yes)` and `p(no)` of every question are stored (`Score` records, one per image and
question set), so any rule of stage 3.3 can be applied later without asking again. Which sets an image is asked:

- every image: its prompt's local set (role "positive", kind "local") — for a negative image this asks whether
  it contradicts the positive prompt — and its prompt's global set(s) (kind "global", v1);
- positive images also: the set of every negative `x~_i` of the prompt (role "negative"), which CoPO's
  negative-text choice needs ("some s_k(y_w) < -0.5 on x~_i's questions").

All questions of one image go in one `yes_no_scores` call, so the image and chat preamble are encoded once.
An unreadable preview or an image whose prompt has no question set is a Rejected record with its reason.
"""

from __future__ import annotations

from collections import defaultdict

from ospo.errors import InputError
from ospo.records import Image, QuestionSet, Rejected, Score
from ospo.scoring import histogram, image_score
from ospo.stages import RunContext, chunked, run_chunked
from ospo.stages._shared import finish, start

NAME = "score"


# ------------------------------------------------------------------------------------------------ pure core
def score_id(image_id: str, question_set_id: str) -> str:
    return f"{image_id}@{question_set_id}"


def question_sets_for(image: Image, sets_of_prompt: list[QuestionSet]) -> tuple[QuestionSet, ...]:
    """The question sets `image` is asked (see the module docstring), sorted by id."""
    wanted = [q for q in sets_of_prompt if q.role == "positive" or image.role == "positive"]
    return tuple(sorted(wanted, key=lambda q: q.id))


def split_scores(image_id: str, sets: tuple[QuestionSet, ...], p_yes: list[float], p_no: list[float]) -> list[Score]:
    """One Score per question set from the flat answers to all of an image's questions (sets in order)."""
    total = sum(len(q.questions) for q in sets)
    if len(p_yes) != total or len(p_no) != total:
        raise ValueError(f"{image_id}: got {len(p_yes)} answers for {total} questions")
    out, start = [], 0
    for qs in sets:
        end = start + len(qs.questions)
        out.append(Score(score_id(image_id, qs.id), image_id, qs.id, tuple(p_yes[start:end]), tuple(p_no[start:end])))
        start = end
    return out


def local_score_summary(images: list[Image], scores: list[Score], question_sets: list[QuestionSet]) -> dict:
    """Mean and histogram of S on the prompt's local questions, for positive and for negative images."""
    local = {q.id for q in question_sets if q.role == "positive" and q.kind == "local"}
    role = {i.id: i.role for i in images}
    values = defaultdict(list)
    for s in scores:
        S = image_score(s.s) if s.question_set_id in local else None
        if S is not None:
            values[role[s.image_id]].append(S)
    return {r: {"n": len(v), "mean_S": round(sum(v) / len(v), 4) if v else None, "histogram": histogram(v)}
            for r, v in sorted(values.items())}


# ------------------------------------------------------------------------------------------------ shell
def _score_chunk(ctx: RunContext, items: list[tuple[Image, tuple[QuestionSet, ...]]], pictures) -> list:
    out, asked = [], []
    for image, sets in items:
        if not sets:
            out.append(Rejected(image.id, NAME, "no-question-set", detail=f"prompt {image.prompt_id} has none"))
            continue
        if not any(q.questions for q in sets):  # nothing to ask: empty scores (S undefined, see ospo.scoring)
            out += split_scores(image.id, sets, [], [])
            continue
        try:
            asked.append((image, sets, pictures(image.id, image.preview_sha)))
        except InputError as e:
            out.append(Rejected(image.id, NAME, "unreadable-preview", detail=str(e)))
    if asked:
        questions = [[ctx.templates.vqa(q) for qs in sets for q in qs.questions] for _, sets, _ in asked]
        answers = ctx.model.yes_no_scores([picture for *_, picture in asked], questions)
        for (image, sets, _), yn in zip(asked, answers):
            out += split_scores(image.id, sets, yn.p_yes.tolist(), yn.p_no.tolist())
    return out


def run(ctx: RunContext) -> dict:
    """Scores every image of stage 'images' on the question sets of stage 'questions'; returns the manifest."""
    from ospo.stages.images import Pictures, model_identity

    cfg = ctx.config
    stage = start(ctx, NAME, [model_identity(cfg.model)], ["images", "questions"], True, chunk_size=cfg.chunk_size)
    if stage.complete:
        return stage.manifest()
    images = sorted((r for r in ctx.stage("images").records() if isinstance(r, Image)), key=lambda r: r.id)
    question_sets = [r for r in ctx.stage("questions").records() if isinstance(r, QuestionSet)]
    by_prompt = defaultdict(list)
    for qs in question_sets:
        by_prompt[qs.prompt_id].append(qs)
    plan = [(image, question_sets_for(image, by_prompt[image.prompt_id])) for image in images]
    chunks = chunked(plan, cfg.chunk_size)
    pictures = Pictures(ctx.stage("images"), ctx.model, cfg.images.previews)
    run_chunked(ctx, stage, chunks, lambda items: _score_chunk(ctx, items, pictures), desc="score")

    def manifest() -> dict:
        scores = [r for r in stage.read_parts() if isinstance(r, Score)]
        return {"counts": {"in": len(images), "questions_asked": sum(len(s.p_yes) for s in scores)},
                "local_S": local_score_summary(images, scores, question_sets)}

    return finish(ctx, stage, manifest)
