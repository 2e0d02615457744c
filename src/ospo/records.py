"""Typed records: the contract between stages.

Frozen dataclasses with stable string ids. A child's id extends its parent's (`color2-00012` ->
`color2-00012/n1` -> `color2-00012/n1/negative`), joins are by id, and roles are fields. Every record
serialises to one JSON line (`to_json` / `from_json`). Ids contain only [A-Za-z0-9_./-] and never `..`,
so they are safe inside file names once '/' is mapped (see `id_to_filename`).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field

_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-/]*$")


def check_id(item_id: str) -> str:
    if not isinstance(item_id, str) or not _ID.match(item_id) or ".." in item_id or len(item_id) > 200:
        raise ValueError(f"invalid record id {item_id!r}")
    return item_id


def id_to_filename(item_id: str) -> str:
    """A flat, safe file name for a record id ('/' -> '__')."""
    return check_id(item_id).replace("/", "__")


@dataclass(frozen=True)
class Prompt:
    """Stage 1 output: a short positive prompt `x` written by the model."""

    id: str
    text: str
    category: str
    subcategory: str
    source: str  # "in-context" | "elements"
    raw: str = ""  # the model's raw output


@dataclass(frozen=True)
class Negative:
    """Stage 2 output: a hard negative `x~` of a prompt, made by one edit in slot `slot`."""

    id: str  # f"{prompt_id}/n{slot}"
    prompt_id: str
    slot: int
    edit: str  # "replace" | "swap" | "drop"
    text: str
    raw: str = ""
    draw: int = 0  # 0 = the slot's first draw; k = its k-th redraw (the earlier draws repeated another slot)


@dataclass(frozen=True)
class DensePair:
    """Stage 2.2 output: both prompts of a slot rewritten densely with a shared scene."""

    id: str  # same as the Negative's id
    prompt_id: str
    slot: int
    dense_positive: str
    dense_negative: str
    raw: str = ""


@dataclass(frozen=True)
class Image:
    """Stage 2.3 output: one generated image; its codes live in the stage's code arrays under `id`."""

    id: str  # f"{pair_id}/positive" | f"{pair_id}/negative"
    pair_id: str
    prompt_id: str
    slot: int
    role: str  # "positive" (from the dense positive) | "negative"
    prompt: str  # the text the image was generated from
    seed: int
    mean_logp: float  # l(y | prompt) under the generating model (cond branch)
    preview_sha: str = ""  # sha256 (16 hex) of the PNG preview as written; "" when the stage wrote none


@dataclass(frozen=True)
class QuestionSet:
    """Stage 3.1 output: atomic yes/no questions decomposing a short prompt (positive or a negative)."""

    id: str  # the prompt's id, or the negative's id
    prompt_id: str
    role: str  # "positive" | "negative"
    text: str  # the short prompt decomposed
    questions: tuple[str, ...]
    kind: str = "local"  # "local" (decomposition) | "global" (v1: "does this image accurately show ...")
    raw: str = ""


@dataclass(frozen=True)
class Score:
    """Stage 3.2 output: self-VQA answers of one image to one question set; s_k = p_yes[k] - p_no[k]."""

    id: str  # f"{image_id}|{question_set_id}" with '|' -> '@'
    image_id: str
    question_set_id: str
    p_yes: tuple[float, ...]
    p_no: tuple[float, ...]

    @property
    def s(self) -> tuple[float, ...]:
        return tuple(y - n for y, n in zip(self.p_yes, self.p_no))


@dataclass(frozen=True)
class TrainingPair:
    """Stage 3.3 output: one preference example `(x, x~, y_w, y_l)`; training conditions on short prompts."""

    id: str  # the prompt's id (one pair per prompt) or f"{prompt_id}/{tag}"
    prompt: str  # x
    negative_prompt: str | None  # x~ for the conditional loss (None when no negative qualifies)
    chosen_image_id: str  # y_w
    rejected_image_id: str  # y_l
    rule: str  # "v1" | "v2" | "v3" | "best-of-n"
    scores: dict = field(default_factory=dict)  # the selection rule's numbers
    provenance: dict = field(default_factory=dict)  # prompt/negative/slot ids, category


@dataclass(frozen=True)
class Rejected:
    """An item a stage refused, with the reason (counted in the manifest) and the raw model output."""

    id: str
    stage: str
    reason: str
    raw: str = ""
    detail: str = ""


RECORD_TYPES = {cls.__name__: cls for cls in (Prompt, Negative, DensePair, Image, QuestionSet, Score, TrainingPair,
                                              Rejected)}


def to_json(record) -> str:
    """One JSON line: the fields plus the record type under '_type'."""
    return json.dumps({"_type": type(record).__name__, **dataclasses.asdict(record)}, ensure_ascii=False)


def from_json(line: str):
    data = json.loads(line)
    cls = RECORD_TYPES[data.pop("_type")]
    for f in dataclasses.fields(cls):  # JSON has lists where records hold tuples
        if f.name in data and isinstance(data[f.name], list) and "tuple" in str(f.type):
            data[f.name] = tuple(data[f.name])
    return cls(**data)
