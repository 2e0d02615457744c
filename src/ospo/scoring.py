"""Self-VQA score aggregation, filtering and the selection math of stage 3 (pure functions, no I/O).

Notation (docs/method.md): for image `y` and question `q_k`, `s_k(y) = p(yes) - p(no)` in [-1, 1]; the image
score is `S(y) = mean_k s_k(y)`.

The zero-question rule: a question set with no questions gives no evidence, so `S` is undefined (`None`) and
every filter below is False for it — such an image can be neither chosen nor rejected. (Without this rule
"every s_k > 0.5" would hold vacuously and an image nobody asked about could become the chosen one.)
An answer counts as "yes" when `s_k > 0` (p(yes) > p(no)).
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence, TypeVar

T = TypeVar("T")

V1_EPSILON = 1e-8


def question_scores(p_yes: Sequence[float], p_no: Sequence[float]) -> tuple[float, ...]:
    """s_k = p_yes[k] - p_no[k] for every question k."""
    if len(p_yes) != len(p_no):
        raise ValueError(f"p_yes and p_no differ in length ({len(p_yes)} vs {len(p_no)})")
    return tuple(float(y) - float(n) for y, n in zip(p_yes, p_no))


def image_score(s: Sequence[float] | None) -> float | None:
    """S(y) = (1/K) * sum_k s_k(y); None when there are no questions (K = 0) or no scores at all."""
    if not s:
        return None
    return math.fsum(s) / len(s)


# ------------------------------------------------------------------------------------------------ filters
# the rules' default thresholds (the paper's; SelectConfig's defaults are these)
V2_CHOSEN_THRESHOLD = 0.5  # v2: every s_k of a chosen image above this
V2_REJECTED_THRESHOLD = -0.5  # v2: some s_k of a rejected image below this
V3_TAU = 0.6  # v3: chosen needs S >= tau


def v2_chosen(s: Sequence[float] | None, threshold: float = V2_CHOSEN_THRESHOLD) -> bool:
    """v2: a positive image may be chosen only if every question is answered yes clearly: all k, s_k > threshold."""
    return bool(s) and all(x > threshold for x in s)


def v2_rejected(s: Sequence[float] | None, threshold: float = V2_REJECTED_THRESHOLD) -> bool:
    """v2: a negative image may be rejected only if some question is answered no clearly: exists k, s_k < threshold."""
    return bool(s) and any(x < threshold for x in s)


def v3_chosen(s: Sequence[float] | None, tau: float = V3_TAU) -> bool:
    """v3: chosen if S >= tau and at least one answer is yes (some s_k > 0)."""
    score = image_score(s)
    return score is not None and score >= tau and any(x > 0 for x in s)


def v3_rejected(s: Sequence[float] | None) -> bool:
    """v3: rejected if not every answer is yes (some s_k <= 0)."""
    return bool(s) and not all(x > 0 for x in s)


# ------------------------------------------------------------------------------------------------ v1
def v1_gaps(local_positive: Sequence[float] | None, local_negative: Sequence[float] | None,
            global_positive: Sequence[float] | None, global_negative: Sequence[float] | None
            ) -> tuple[float, float] | None:
    """Gaps of a same-seed pair: (S_local(y+) - S_local(y-), S_global(y+) - S_global(y-)); None if any is undefined."""
    scores = [image_score(s) for s in (local_positive, local_negative, global_positive, global_negative)]
    if any(x is None for x in scores):
        return None
    return scores[0] - scores[1], scores[2] - scores[3]


def v1_strengths(gaps: Sequence[tuple[float, float]], eps: float = V1_EPSILON) -> list[float]:
    """Preference strength of each pair among a prompt's candidates (v1):

        strength_i = (|L_i| / max_j |L_j|) / (|G_i| / max_j |G_j| + eps)

    with L the local gap and G the global gap: large where the local questions separate the pair while the
    global question does not. A normaliser of 0 (all gaps 0) makes that term 0 for every pair.
    """
    max_local = max((abs(g[0]) for g in gaps), default=0.0)
    max_global = max((abs(g[1]) for g in gaps), default=0.0)
    out = []
    for local, glob in gaps:
        num = abs(local) / max_local if max_local else 0.0
        den = (abs(glob) / max_global if max_global else 0.0) + eps
        out.append(num / den)
    return out


# ------------------------------------------------------------------------------------------------ choosing
def argmax_by(items: Iterable[T], key: Callable[[T], float], tie: Callable[[T], str]) -> T | None:
    """The item with the largest key; ties go to the smallest `tie` string (an id). None for no items."""
    return min(items, key=lambda x: (-key(x), tie(x)), default=None)


def argmin_by(items: Iterable[T], key: Callable[[T], float], tie: Callable[[T], str]) -> T | None:
    """The item with the smallest key; ties go to the smallest `tie` string (an id). None for no items."""
    return min(items, key=lambda x: (key(x), tie(x)), default=None)


def closest(target: float, candidates: dict[str, float]) -> str | None:
    """argmin_id |target - candidates[id]|, ties to the smallest id: the candidate the model finds hardest to tell
    apart from the target (v2's y_l and CoPO's x~). None for no candidates."""
    return argmin_by(candidates, key=lambda k: abs(target - candidates[k]), tie=lambda k: k)


def histogram(values: Sequence[float], lo: float = -1.0, hi: float = 1.0, bins: int = 10) -> list[int]:
    """Counts of values in `bins` equal bins over [lo, hi]; the last bin includes hi, values outside are clipped."""
    counts = [0] * bins
    width = (hi - lo) / bins
    for v in values:
        counts[min(bins - 1, max(0, math.floor((v - lo) / width + 1e-9)))] += 1
    return counts
