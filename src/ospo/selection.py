"""Stage 3.3 selection rules (pure): one prompt's candidates in, a TrainingPair or a Rejected out.

A prompt's candidates are its seed slots (pair i: the image of `d_i` and the image of `d~_i`, same seed) with
the self-VQA answers of stage 3.2. Rules (docs/method.md):

- v2 "model uncertainty": `y_w = argmax S` over positive images passing the v2 chosen filter;
  `y_l = argmin |l(y_w|x) - l(y|x)|` over negative images passing the v2 rejected filter; CoPO's
  `x~ = argmin |l(y_w|x) - l(y_w|x~_i)|` over negatives whose questions `y_w` clearly contradicts.
  The likelihoods come from the model, so v2 runs in two steps: `v2_plan` (which images and texts need `l`),
  then `v2_select` with the computed values.
- v1: same-seed pairs with local and global gaps >= 0, the one of largest preference strength.
- v3: same-seed pairs whose positive passes `S >= tau` with some yes and whose negative has some non-yes; the
  slot with the highest chosen S.
- best-of-n (SILMM-style baseline): best vs worst positive image of the prompt by S (same prompt, other seeds).

Ties go to the smallest id. `scores` of every TrainingPair hold chosen_S and rejected_S (local questions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from ospo.records import Rejected, TrainingPair
from ospo.scoring import (V2_CHOSEN_THRESHOLD, V2_REJECTED_THRESHOLD, V3_TAU, argmax_by, closest, image_score,
                          v1_gaps, v1_strengths, v2_chosen, v2_rejected, v3_chosen, v3_rejected)

STAGE = "select"
RULES = ("v1", "v2", "v3", "best-of-n")


@dataclass(frozen=True)
class Slot:
    """One same-seed pair of a prompt; an image id is None when stage 2.3 produced no such image."""

    pair_id: str
    slot: int
    negative_id: str
    positive_image: str | None
    negative_image: str | None


@dataclass(frozen=True)
class Candidates:
    """Everything selection needs about one prompt. Score tuples are s_k = p_yes - p_no; an absent key = unscored."""

    prompt_id: str
    prompt: str  # the short prompt x
    slots: tuple[Slot, ...]
    negatives: Mapping[str, str] = field(default_factory=dict)  # negative id -> short negative text x~_i
    local: Mapping[str, tuple] = field(default_factory=dict)  # image id -> s_k on the prompt's local questions
    global_: Mapping[str, tuple] = field(default_factory=dict)  # image id -> s_k on the prompt's global question(s)
    contradiction: Mapping[tuple[str, str], tuple] = field(default_factory=dict)  # (image id, negative id) -> s_k
    provenance: Mapping = field(default_factory=dict)

    def S(self, image_id: str | None) -> float | None:
        return image_score(self.local.get(image_id)) if image_id else None

    def positives(self) -> list[str]:
        return [s.positive_image for s in self.slots if s.positive_image]

    def negative_images(self) -> list[str]:
        return [s.negative_image for s in self.slots if s.negative_image]


def _pair(c: Candidates, rule: str, chosen: str, rejected: str, negative_id: str | None, **numbers) -> TrainingPair:
    slot_of = {img: s for s in c.slots for img in (s.positive_image, s.negative_image) if img}
    scores = {"chosen_S": c.S(chosen), "rejected_S": c.S(rejected), **numbers}
    provenance = {**c.provenance, "prompt_id": c.prompt_id, "chosen_pair_id": slot_of[chosen].pair_id,
                  "rejected_pair_id": slot_of[rejected].pair_id, "negative_id": negative_id}
    return TrainingPair(id=c.prompt_id, prompt=c.prompt, negative_prompt=c.negatives.get(negative_id),
                        chosen_image_id=chosen, rejected_image_id=rejected, rule=rule, scores=scores,
                        provenance=provenance)


def _drop(c: Candidates, reason: str, detail: str = "") -> Rejected:
    return Rejected(id=c.prompt_id, stage=STAGE, reason=reason, detail=detail)


# ------------------------------------------------------------------------------------------------ v2
@dataclass(frozen=True)
class V2Plan:
    """v2's choice before likelihoods: y_w, the surviving rejected candidates, the negatives y_w contradicts."""

    chosen: str
    rejected_candidates: tuple[str, ...]
    contradicted_negatives: tuple[str, ...]
    num_chosen_candidates: int = 1

    def requests(self, c: Candidates) -> list[tuple[str, str]]:
        """(text, image id) pairs whose l(image | text) v2_select needs."""
        return ([(c.prompt, self.chosen)] + [(c.prompt, y) for y in self.rejected_candidates]
                + [(c.negatives[n], self.chosen) for n in self.contradicted_negatives])


def v2_plan(c: Candidates, chosen_threshold: float = V2_CHOSEN_THRESHOLD,
            rejected_threshold: float = V2_REJECTED_THRESHOLD) -> V2Plan | Rejected:
    """Filters (v2) and y_w = argmax S over surviving chosen candidates; Rejected if a side has no survivor."""
    if not c.slots:
        return _drop(c, "no-images")
    chosen = [y for y in c.positives() if v2_chosen(c.local.get(y), chosen_threshold)]
    rejected = tuple(sorted(y for y in c.negative_images() if v2_rejected(c.local.get(y), rejected_threshold)))
    if not chosen:
        return _drop(c, "no-chosen-candidate", f"none of {len(c.positives())} positive images passes")
    if not rejected:
        return _drop(c, "no-rejected-candidate", f"none of {len(c.negative_images())} negative images passes")
    y_w = argmax_by(chosen, key=c.S, tie=str)
    negatives = tuple(n for n in sorted(c.negatives)
                      if v2_rejected(c.contradiction.get((y_w, n)), rejected_threshold))
    return V2Plan(y_w, rejected, negatives, len(chosen))


def v2_select(c: Candidates, plan: V2Plan, logp: Mapping[tuple[str, str], float]) -> TrainingPair:
    """y_l = argmin_y |l(y_w|x) - l(y|x)|; x~ = argmin_i |l(y_w|x) - l(y_w|x~_i)| (None if no negative qualifies).
    `logp[(text, image id)]` is the length-averaged log-likelihood l(image | text) under the current model."""
    l_w = logp[(c.prompt, plan.chosen)]
    y_l = closest(l_w, {y: logp[(c.prompt, y)] for y in plan.rejected_candidates})
    x_neg = closest(l_w, {n: logp[(c.negatives[n], plan.chosen)] for n in plan.contradicted_negatives})
    return _pair(c, "v2", plan.chosen, y_l, x_neg, l_chosen=l_w, l_rejected=logp[(c.prompt, y_l)],
                 l_chosen_given_negative=logp[(c.negatives[x_neg], plan.chosen)] if x_neg else None,
                 num_chosen_candidates=plan.num_chosen_candidates,
                 num_rejected_candidates=len(plan.rejected_candidates))


# ------------------------------------------------------------------------------------------------ v1, v3, best-of-n
def select_v1(c: Candidates) -> TrainingPair | Rejected:
    """Same-seed pairs with local gap >= 0 and global gap >= 0; the one maximising the v1 preference strength."""
    if not c.slots:
        return _drop(c, "no-images")
    if not any(c.global_.get(s.positive_image) for s in c.slots):
        return _drop(c, "no-global-scores", "v1 needs global question sets: run the questions and score stages "
                     "with select.rule=v1")
    kept = []
    for s in c.slots:
        if s.positive_image and s.negative_image:
            gaps = v1_gaps(c.local.get(s.positive_image), c.local.get(s.negative_image),
                           c.global_.get(s.positive_image), c.global_.get(s.negative_image))
            if gaps is not None and gaps[0] >= 0 and gaps[1] >= 0:
                kept.append((s, gaps))
    if not kept:
        return _drop(c, "no-pair-with-nonnegative-gaps")
    strengths = v1_strengths([g for _, g in kept])
    k = argmax_by(range(len(kept)), key=lambda k: strengths[k], tie=lambda k: kept[k][0].pair_id)
    s, (local_gap, global_gap) = kept[k]
    return _pair(c, "v1", s.positive_image, s.negative_image, s.negative_id, local_gap=local_gap,
                 global_gap=global_gap, strength=strengths[k], num_pairs=len(kept))


def select_v3(c: Candidates, tau: float = V3_TAU) -> TrainingPair | Rejected:
    """Slots whose positive passes the v3 chosen filter and whose negative the v3 rejected filter; highest chosen S."""
    if not c.slots:
        return _drop(c, "no-images")
    ok_pos = {s.pair_id for s in c.slots if v3_chosen(c.local.get(s.positive_image), tau)}
    ok_neg = {s.pair_id for s in c.slots if v3_rejected(c.local.get(s.negative_image))}
    if not ok_pos:
        return _drop(c, "no-chosen-candidate")
    if not ok_neg:
        return _drop(c, "no-rejected-candidate")
    both = [s for s in c.slots if s.pair_id in ok_pos & ok_neg]
    if not both:
        return _drop(c, "no-slot-with-both", "chosen and rejected candidates exist only in different slots")
    s = argmax_by(both, key=lambda s: c.S(s.positive_image), tie=lambda s: s.pair_id)
    return _pair(c, "v3", s.positive_image, s.negative_image, s.negative_id, num_slots=len(both))


def select_best_of_n(c: Candidates) -> TrainingPair | Rejected:
    """SILMM-style: the best and the worst positive image of the prompt by S (same prompt, different seeds)."""
    scored = [y for y in c.positives() if c.S(y) is not None]
    if len(scored) < 2:
        return _drop(c, "too-few-images", f"{len(scored)} scored positive images, need 2")
    best = argmax_by(scored, key=c.S, tie=str)
    worst = argmax_by(scored, key=lambda y: -c.S(y), tie=str)
    if c.S(best) == c.S(worst):
        return _drop(c, "equal-scores", "every image of the prompt has the same S")
    return _pair(c, "best-of-n", best, worst, None, num_images=len(scored))


# ------------------------------------------------------------------------------------------------ filter statistics
def filter_stats(candidates: list[Candidates], rule: str, chosen_threshold: float = V2_CHOSEN_THRESHOLD,
                 rejected_threshold: float = V2_REJECTED_THRESHOLD, tau: float = V3_TAU) -> dict[str, list[int]]:
    """How many candidates pass the rule's filters: {name: [passed, total]}."""
    pos = [(c, y) for c in candidates for y in c.positives()]
    neg = [(c, y) for c in candidates for y in c.negative_images()]
    if rule in ("v2", "v3"):
        fc = (lambda s: v2_chosen(s, chosen_threshold)) if rule == "v2" else (lambda s: v3_chosen(s, tau))
        fr = (lambda s: v2_rejected(s, rejected_threshold)) if rule == "v2" else v3_rejected
        return {"chosen": [sum(fc(c.local.get(y)) for c, y in pos), len(pos)],
                "rejected": [sum(fr(c.local.get(y)) for c, y in neg), len(neg)]}
    if rule == "v1":
        slots = [(c, s) for c in candidates for s in c.slots if s.positive_image and s.negative_image]
        gaps = [v1_gaps(c.local.get(s.positive_image), c.local.get(s.negative_image),
                        c.global_.get(s.positive_image), c.global_.get(s.negative_image)) for c, s in slots]
        return {"pairs": [sum(g is not None and min(g) >= 0 for g in gaps), len(slots)]}
    return {"scored": [sum(c.S(y) is not None for c, y in pos), len(pos)]}
