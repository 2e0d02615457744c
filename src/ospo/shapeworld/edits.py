"""Object-level edits of a ShapeWorld spec (OSPO stage 2 perturbation), enumerated exactly.

For a spec and an edit type, `candidate_edits` lists every spec that one edit produces:
- replace: a colour or texture with another, a shape with one the prompt does not use, a number
  word with another count (1..MAX_COUNT), the relation with another relation;
- swap: two clauses trade their colours, textures, shapes or counts;
- drop: remove a colour or texture, a whole object clause (its relation goes with it), or the
  relation (the two clauses are then joined by "and").
Background and regions (the dense context) are never edited. A candidate must be a valid Spec and
must *mean* something else than the input (`meaning`), so e.g. swapping the shapes of "a circle and
a square" is no edit at all. Sampling a perturbation and checking one use the same list, so the
generator and the checker cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from ospo.shapeworld.captions import CaptionError, ObjectClause, Relation, Spec
from ospo.shapeworld.world import COLORS, MAX_COUNT, NUMBER_WORDS, PLURALS, RELATIONS, SHAPES, TEXTURES

EDITS = ("replace", "swap", "drop")
TARGETS = ("color", "texture", "shape", "count", "relation", "object")
# "B right of A" means "A left of B" (world.relations_between is antisymmetric on these pairs).
_CONVERSE = {"right of": "left of", "below": "above"}


@dataclass(frozen=True)
class Edit:
    """One edit. replace: `old` becomes `new`; swap: the two clauses' values `old` and `new` trade
    places; drop: `old` is removed and `new` is "". Values are caption words ("red", "left of",
    "two", "blue square")."""

    edit: str
    target: str
    old: str
    new: str = ""

    def __post_init__(self) -> None:
        if self.edit not in EDITS:
            raise ValueError(f"unknown edit {self.edit!r}; expected one of {', '.join(EDITS)}")
        if self.target not in TARGETS:
            raise ValueError(f"unknown edit target {self.target!r}; expected one of {', '.join(TARGETS)}")


def check_edit(edit: str) -> None:
    if edit not in EDITS:
        raise ValueError(f"unknown edit {edit!r}; expected one of {', '.join(EDITS)}")


def meaning(spec: Spec) -> tuple:
    """A key equal for specs that say the same thing: clause order outside the relation does not
    matter, "B right of A" is "A left of B", and "next to" is symmetric."""
    rest = frozenset(spec.objects[2:] if spec.relation else spec.objects)
    if spec.relation is None:
        return (None, rest, spec.background)
    a, b, kind = spec.objects[0], spec.objects[1], spec.relation.kind
    if kind in _CONVERSE:
        a, b, kind = b, a, _CONVERSE[kind]
    pair = (frozenset((a, b)), kind) if kind == "next to" else (a, kind, b)
    return (pair, rest, spec.background)


def clause_words(clause: ObjectClause) -> str:
    """A clause as the stepwise answers list it: "red circle", "two blue squares" (no article)."""
    number, noun = (None, clause.shape) if clause.count == 1 else (NUMBER_WORDS[clause.count], PLURALS[clause.shape])
    region = f" in the {clause.region}" if clause.region else ""
    return " ".join(w for w in (number, clause.texture, clause.color, noun) if w) + region


def _with_clause(spec: Spec, i: int, clause: ObjectClause, j: int | None = None, other: ObjectClause | None = None
                 ) -> Spec:
    """`spec` with clause i (and j) replaced, built in one step so a swap never passes an invalid state."""
    objects = list(spec.objects)
    objects[i] = clause
    if j is not None:
        objects[j] = other
    return Spec(tuple(objects), spec.relation, spec.background)


def _replacements(spec: Spec) -> list[tuple[Edit, Callable[[], Spec]]]:
    out = []
    used = {c.shape for c in spec.objects}
    for i, c in enumerate(spec.objects):
        for key, values in (("color", COLORS), ("texture", TEXTURES)):
            if getattr(c, key) is not None:
                out += [(Edit("replace", key, getattr(c, key), v), lambda i=i, c=c, key=key, v=v:
                         _with_clause(spec, i, replace(c, **{key: v}))) for v in values if v != getattr(c, key)]
        out += [(Edit("replace", "shape", c.shape, s), lambda i=i, c=c, s=s: _with_clause(spec, i, replace(c, shape=s)))
                for s in SHAPES if s not in used]
        if c.count > 1:
            out += [(Edit("replace", "count", NUMBER_WORDS[c.count], NUMBER_WORDS[n]),
                     lambda i=i, c=c, n=n: _with_clause(spec, i, replace(c, count=n)))
                    for n in range(1, MAX_COUNT + 1) if n != c.count]
    if spec.relation is not None:
        out += [(Edit("replace", "relation", spec.relation.kind, k),
                 lambda k=k: Spec(spec.objects, Relation(k), spec.background))
                for k in RELATIONS if k != spec.relation.kind]
    return out


def _swaps(spec: Spec) -> list[tuple[Edit, Callable[[], Spec]]]:
    out = []
    n = len(spec.objects)
    for i in range(n):
        for j in range(i + 1, n):
            a, b = spec.objects[i], spec.objects[j]
            for key in ("color", "texture", "shape", "count"):
                va, vb = getattr(a, key), getattr(b, key)
                if va is None or vb is None or va == vb:
                    continue
                words = (NUMBER_WORDS[va], NUMBER_WORDS[vb]) if key == "count" else (va, vb)

                def build(i=i, j=j, a=a, b=b, key=key, va=va, vb=vb) -> Spec:
                    return _with_clause(spec, i, replace(a, **{key: vb}), j, replace(b, **{key: va}))
                out.append((Edit("swap", key, *words), build))
    return out


def _drops(spec: Spec) -> list[tuple[Edit, Callable[[], Spec]]]:
    out = []
    for i, c in enumerate(spec.objects):
        for key in ("color", "texture"):
            if getattr(c, key) is not None:
                out.append((Edit("drop", key, getattr(c, key)), lambda i=i, c=c, key=key:
                            _with_clause(spec, i, replace(c, **{key: None}))))
    if len(spec.objects) > 1:
        for i, c in enumerate(spec.objects):
            keeps_relation = spec.relation is not None and i >= 2
            out.append((Edit("drop", "object", clause_words(c)), lambda i=i, keep=keeps_relation: Spec(
                spec.objects[:i] + spec.objects[i + 1:], spec.relation if keep else None, spec.background)))
    if spec.relation is not None:
        out.append((Edit("drop", "relation", spec.relation.kind), lambda: Spec(spec.objects, None, spec.background)))
    return out


def candidate_edits(spec: Spec, edit: str) -> list[tuple[Edit, Spec]]:
    """Every (Edit, result) one `edit` of `spec` produces; results are valid and mean something new."""
    check_edit(edit)
    builders = {"replace": _replacements, "swap": _swaps, "drop": _drops}[edit](spec)
    key, out = meaning(spec), []
    for description, build in builders:
        try:
            result = build()
        except CaptionError:  # e.g. a count >= 2 moved onto a related clause
            continue
        if meaning(result) != key:
            out.append((description, result))
    return out


def perturb(spec: Spec, edit: str, rng: np.random.Generator) -> Spec | None:
    """One random `edit` of `spec`, or None when that edit is impossible for it.

    The target (colour, shape, relation ...) is drawn uniformly among those the spec offers, then
    the value, so e.g. a relation is replaced as often as a colour although there are fewer options.
    """
    found = candidate_edits(spec, edit)
    if not found:
        return None
    targets = sorted({e.target for e, _ in found}, key=TARGETS.index)
    target = targets[int(rng.integers(len(targets)))]
    options = [result for e, result in found if e.target == target]
    return options[int(rng.integers(len(options)))]


def find_edits(original: Spec, result: Spec) -> list[Edit]:
    """Every single edit (of any type) that turns `original` into a spec meaning the same as `result`."""
    key = meaning(result)
    return [e for edit in EDITS for e, candidate in candidate_edits(original, edit) if meaning(candidate) == key]
