"""Atomic yes/no questions about a ShapeWorld scene: grammar, decomposition and exact truth.

Canonical questions (lowercase, single spaces, "?" as its own final token):

    exists:     "is there a striped red circle ?"             at least one matching object
    count:      "are there three circles ?"                   exactly that many matching objects
    relation:   "is the red circle left of the blue square ?" some matching pair is so placed
    background: "is the background beige ?"

Object descriptions may carry a region ("is there a red circle in the upper left ?").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from ospo.shapeworld.captions import (
    CaptionError, ObjectClause, Spec, Words, check_word, clause_text, read_clause, read_relation,
)
from ospo.shapeworld.world import BACKGROUNDS, RELATIONS, Scene, region_of, relations_between

QUESTION_KINDS = ("exists", "count", "relation", "background")


@dataclass(frozen=True)
class Question:
    """One atomic yes/no question; `kind` says which fields are set."""

    kind: str
    subject: ObjectClause | None = None
    relation: str | None = None
    object: ObjectClause | None = None
    background: str | None = None

    def __post_init__(self) -> None:
        check_word("question kind", self.kind, QUESTION_KINDS)
        check_word("relation", self.relation, RELATIONS)
        check_word("background", self.background, BACKGROUNDS)
        wanted = {
            "exists": ("subject",), "count": ("subject",),
            "relation": ("subject", "relation", "object"), "background": ("background",),
        }[self.kind]
        for name in ("subject", "relation", "object", "background"):
            if (getattr(self, name) is not None) != (name in wanted):
                raise CaptionError(f"a {self.kind} question needs exactly the fields {', '.join(wanted)}")
        counts = [c.count for c in (self.subject, self.object) if c is not None]
        if self.kind == "count" and counts[0] < 2:
            raise CaptionError("a count question needs a count of two or more; ask an exists question")
        if self.kind != "count" and any(n != 1 for n in counts):
            raise CaptionError(f"a {self.kind} question is about single objects (count 1)")


def question_text(question: Question) -> str:
    """Canonical text of `question`; `parse_question` inverts it exactly."""
    if question.kind == "exists":
        return f"is there {clause_text(question.subject)} ?"
    if question.kind == "count":
        return f"are there {clause_text(question.subject)} ?"
    if question.kind == "relation":
        subject, obj = clause_text(question.subject, "the"), clause_text(question.object, "the")
        return f"is {subject} {question.relation} {obj} ?"
    return f"is the background {question.background} ?"


def parse_question(text: str) -> Question:
    """Question of a canonical question text (case and spacing tolerant). Raises CaptionError."""
    tokens = Words(text)
    if tokens.words[-1:] != ["?"]:
        raise tokens.error("a question must end with '?'")
    tokens.words.pop()
    opening = f"{tokens.next('is or are')} {tokens.next('there or the')}"
    if opening == "is there":
        subject = read_clause(tokens)
        question = Question("exists", subject) if subject.count == 1 else None
    elif opening == "are there":
        subject = read_clause(tokens)
        question = Question("count", subject) if subject.count > 1 else None
    elif opening == "is the" and tokens.peek() == "background":
        tokens.expect("background")
        question = Question("background", background=tokens.next("a background colour"))
    elif opening == "is the":
        tokens.pos -= 1
        subject = read_clause(tokens, definite=True)
        relation = read_relation(tokens)
        if relation is None:
            raise tokens.error(f"expected a relation ({', '.join(RELATIONS)}) after the first object")
        question = Question("relation", subject, relation, read_clause(tokens, definite=True))
    else:
        raise tokens.error(f"a question starts with 'is there', 'are there' or 'is the', not {opening!r}")
    if question is None:
        raise tokens.error(f"{opening!r} does not agree with the count")
    if tokens.peek() is not None:
        raise tokens.error(f"unexpected word {tokens.peek()!r}")
    return question


def decompose(spec: Spec) -> tuple[Question, ...]:
    """The atomic questions whose conjunction is `spec`: one per clause, relation and background."""
    questions = [Question("exists" if c.count == 1 else "count", c) for c in spec.objects]
    if spec.relation is not None:
        rel = spec.relation
        questions.append(Question("relation", spec.objects[rel.subject], rel.kind, spec.objects[rel.object]))
    if spec.background is not None:
        questions.append(Question("background", background=spec.background))
    return tuple(questions)


def matches(obj, clause: ObjectClause) -> bool:
    """Whether an object (Obj or Detected) fits a clause's shape, colour, texture and region."""
    return (
        obj.shape == clause.shape
        and clause.color in (None, obj.color)
        and clause.texture in (None, obj.texture)
        and clause.region in (None, region_of(obj.row, obj.col))
    )


def truth(question: Question, scene: Scene | Sequence) -> bool:
    """Exact answer of `question` about a Scene, or about a list of objects (Obj or Detected).

    Background questions need a Scene (the oracle's `read_scene` gives one for pixels).
    """
    if question.kind == "background":
        if not isinstance(scene, Scene):
            raise TypeError("a background question needs a Scene, not a list of objects")
        return scene.background == question.background
    objects = scene.objects if isinstance(scene, Scene) else tuple(scene)
    subjects = [o for o in objects if matches(o, question.subject)]
    if question.kind == "exists":
        return bool(subjects)
    if question.kind == "count":
        return len(subjects) == question.subject.count
    targets = [o for o in objects if matches(o, question.object)]
    return any(
        question.relation in relations_between((a.row, a.col), (b.row, b.col))
        for a in subjects for b in targets if a is not b
    )


def answer_question(question: Question | str, scene: Scene | Sequence) -> str:
    """ "yes" or "no": the exact answer, for a Question or its text."""
    if isinstance(question, str):
        question = parse_question(question)
    return "yes" if truth(question, scene) else "no"


def presence_question(clause: ObjectClause) -> Question:
    """ "is there a <clause> ?" for a clause of any count (used for partial credit)."""
    return Question("exists", replace(clause, count=1))
