"""ShapeWorld captions: the structured spec, its canonical text, and the exact parser.

Grammar of a caption (canonical text: lowercase, single spaces, no final period):

    caption := [ "on a" BACKGROUND "background," ] clause [ RELATION clause ] { "and" clause }
    clause  := DETERMINER [ TEXTURE ] [ COLOR ] SHAPE [ "in the" REGION ]
    DETERMINER := "a" | "an" (count 1, "an" before a vowel) | "two" | "three" | "four" (plural SHAPE)
    RELATION := "left of" | "right of" | "above" | "below" | "next to"

A relation always links the first two clauses (subject, then object); both have count 1. Each
shape appears in at most one clause of a prompt, so a clause is identified by its shape (this
keeps GenEval's per-class scoring sound). Background and region phrases are the "dense" context
that a positive and a negative prompt can share word for word.

Categories (from OSPO stage 1): attribute (color1, color2, texture1, texture2), layout (spatial,
numeracy1, numeracy2) and complex. ShapeWorld is flat and has no actions, so OSPO's 3D-spatial
and non-spatial categories do not exist here. Attribute-free prompts ("a circle", "a circle and
a square") form the extra category object (object1, object2), used by GenEval's single_object
and two_object tasks and produced by "drop" perturbations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ospo.shapeworld.world import (
    BACKGROUNDS, COLORS, MAX_COUNT, NUMBER_WORDS, PLURALS, REGIONS, RELATIONS, SHAPES, TEXTURES,
)

SUBCATEGORIES = {
    "object1": "object", "object2": "object",
    "color1": "attribute", "color2": "attribute", "texture1": "attribute", "texture2": "attribute",
    "spatial": "layout", "numeracy1": "layout", "numeracy2": "layout",
    "complex": "complex",
}
_COUNT_WORDS = {NUMBER_WORDS[n]: n for n in range(2, MAX_COUNT + 1)}
_SINGULARS = {plural: shape for shape, plural in PLURALS.items()}


class CaptionError(ValueError):
    """Text or a spec outside ShapeWorld's grammar."""


def check_word(kind: str, name: str | None, allowed) -> None:
    """Raise CaptionError naming `kind` when `name` is not in `allowed` (None passes)."""
    if name is not None and name not in allowed:
        raise CaptionError(f"unknown {kind} {name!r}; expected one of {', '.join(allowed)}")


@dataclass(frozen=True)
class ObjectClause:
    """`count` objects of `shape`; colour, texture and region are None when the text omits them."""

    shape: str
    count: int = 1
    color: str | None = None
    texture: str | None = None
    region: str | None = None

    def __post_init__(self) -> None:
        check_word("shape", self.shape, SHAPES)
        check_word("colour", self.color, COLORS)
        check_word("texture", self.texture, TEXTURES)
        check_word("region", self.region, REGIONS)
        if not (isinstance(self.count, int) and 1 <= self.count <= MAX_COUNT):
            raise CaptionError(f"count must be an int in 1..{MAX_COUNT}, got {self.count!r}")


@dataclass(frozen=True)
class Relation:
    """`objects[subject]` is `kind` `objects[object]`."""

    kind: str
    subject: int = 0
    object: int = 1

    def __post_init__(self) -> None:
        check_word("relation", self.kind, RELATIONS)


@dataclass(frozen=True)
class Spec:
    """A prompt's meaning: object clauses, an optional relation, an optional background."""

    objects: tuple[ObjectClause, ...]
    relation: Relation | None = None
    background: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "objects", tuple(self.objects))
        if not self.objects:
            raise CaptionError("a spec needs at least one object clause")
        shapes = [c.shape for c in self.objects]
        repeated = sorted({s for s in shapes if shapes.count(s) > 1})
        if repeated:
            raise CaptionError(f"shape {repeated[0]!r} appears in two clauses; each shape may appear once")
        check_word("background", self.background, BACKGROUNDS)
        rel = self.relation
        if rel is not None:
            if (rel.subject, rel.object) != (0, 1) or len(self.objects) < 2:
                raise CaptionError("a relation must link the first two object clauses (subject=0, object=1)")
            if self.objects[0].count != 1 or self.objects[1].count != 1:
                raise CaptionError("related objects must have count 1")

    @property
    def subcategory(self) -> str:
        """Derived from the structure, so a spec's category can never disagree with its text."""
        n = len(self.objects)
        has_attr = any(c.color or c.texture for c in self.objects)
        counted = any(c.count > 1 for c in self.objects)
        if self.relation is not None:
            return "spatial" if n == 2 else "complex"
        if n > 2 or (counted and has_attr):
            return "complex"
        if counted:
            return f"numeracy{n}"
        if any(c.texture for c in self.objects):
            return f"texture{n}"
        return f"color{n}" if has_attr else f"object{n}"

    @property
    def category(self) -> str:
        return SUBCATEGORIES[self.subcategory]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def clause_text(clause: ObjectClause, determiner: str | None = None) -> str:
    """Canonical text of one clause; `determiner` ("the") overrides the count word."""
    noun = clause.shape if clause.count == 1 else PLURALS[clause.shape]
    words = [w for w in (clause.texture, clause.color, noun) if w]
    if determiner is None:
        determiner = _article(words[0]) if clause.count == 1 else NUMBER_WORDS[clause.count]
    region = f" in the {clause.region}" if clause.region else ""
    return f"{determiner} {' '.join(words)}{region}"


def caption(spec: Spec) -> str:
    """Canonical text of `spec`; `parse_caption` inverts it exactly."""
    clauses = [clause_text(c) for c in spec.objects]
    if spec.relation is not None:
        clauses[:2] = [f"{clauses[0]} {spec.relation.kind} {clauses[1]}"]
    body = " and ".join(clauses)
    if spec.background is None:
        return body
    return f"on {_article(spec.background)} {spec.background} background, {body}"


class Words:
    """A cursor over the lowercase words and punctuation marks of `text` (shared with questions)."""

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise CaptionError(f"expected text, got {type(text).__name__}")
        self.text = text
        self.words = re.findall(r"[a-z]+|[^\sa-z]", text.lower())
        self.pos = 0

    def peek(self, ahead: int = 0) -> str | None:
        i = self.pos + ahead
        return self.words[i] if i < len(self.words) else None

    def next(self, expected: str) -> str:
        word = self.peek()
        if word is None:
            raise self.error(f"expected {expected} but the text ended")
        self.pos += 1
        return word

    def expect(self, word: str) -> None:
        got = self.next(repr(word))
        if got != word:
            raise self.error(f"expected {word!r}, got {got!r}")

    def take_if(self, allowed) -> str | None:
        word = self.peek()
        if word in allowed:
            self.pos += 1
            return word
        return None

    def error(self, message: str) -> CaptionError:
        return CaptionError(f"{message} (in {self.text!r})")


def _read_noun(tokens: Words, count: int) -> str:
    word = tokens.next("a shape")
    if word in SHAPES and count == 1 or word in _SINGULARS and count > 1:
        return _SINGULARS.get(word, word)
    if word in SHAPES or word in _SINGULARS:
        number = "singular" if count == 1 else "plural"
        raise tokens.error(f"count {count} needs the {number} shape, got {word!r}")
    if word in TEXTURES:
        raise tokens.error(f"texture {word!r} must come before the colour")
    if word in COLORS:
        raise tokens.error(f"only one colour per object, got a second colour {word!r}")
    if tokens.peek() in SHAPES or tokens.peek() in _SINGULARS:
        raise tokens.error(f"unknown colour or texture {word!r}; colours are {', '.join(COLORS)}")
    raise tokens.error(f"unknown shape {word!r}; shapes are {', '.join(SHAPES)}")


def _read_region(tokens: Words) -> str | None:
    if tokens.take_if(("in",)) is None:
        return None
    tokens.expect("the")
    two_words = f"{tokens.peek()} {tokens.peek(1)}"
    if two_words in REGIONS:
        tokens.pos += 2
        return two_words
    word = tokens.next("a region")
    if word not in REGIONS:
        raise tokens.error(f"unknown region {word!r}; regions are {', '.join(REGIONS)}")
    return word


def read_clause(tokens: Words, definite: bool = False) -> ObjectClause:
    """One clause at the cursor; `definite` reads "the <description>" (count 1) as in questions."""
    if definite:
        tokens.expect("the")
        count = 1
    else:
        determiner = tokens.next("an object (a, an, two, three or four)")
        if determiner not in ("a", "an") and determiner not in _COUNT_WORDS:
            raise tokens.error(f"bad count {determiner!r}; expected a, an, two, three or four")
        count = _COUNT_WORDS.get(determiner, 1)
        if count == 1 and tokens.peek() is not None and determiner != _article(tokens.peek()):
            raise tokens.error(f"use {_article(tokens.peek())!r} before {tokens.peek()!r}, not {determiner!r}")
    texture = tokens.take_if(TEXTURES)
    color = tokens.take_if(COLORS)
    shape = _read_noun(tokens, count)
    return ObjectClause(shape, count, color, texture, _read_region(tokens))


def read_relation(tokens: Words) -> str | None:
    """The relation at the cursor, or None when the next words are not one."""
    pair = f"{tokens.peek()} {tokens.peek(1)}"
    for kind in RELATIONS:
        if kind == pair or kind == tokens.peek():
            tokens.pos += len(kind.split())
            return kind
    if tokens.peek() in ("left", "right", "next"):
        raise tokens.error(f"incomplete relation after {tokens.peek()!r}; relations are {', '.join(RELATIONS)}")
    return None


def parse_caption(text: str) -> Spec:
    """Spec of a caption; tolerant of case, spacing and one final period. Raises CaptionError."""
    tokens = Words(text)
    if tokens.words[-1:] == ["."]:
        tokens.words.pop()
    if not tokens.words:
        raise tokens.error("empty caption")
    background = None
    if tokens.take_if(("on",)):
        article = tokens.next("'a'")
        background = tokens.next("a background colour")
        if background not in BACKGROUNDS:
            raise tokens.error(f"unknown background {background!r}; backgrounds are {', '.join(BACKGROUNDS)}")
        if article != _article(background):
            raise tokens.error(f"use {_article(background)!r} before {background!r}, not {article!r}")
        tokens.expect("background")
        tokens.expect(",")
    clauses = [read_clause(tokens)]
    relation = None
    kind = read_relation(tokens)
    if kind is not None:
        if tokens.peek() is None:
            raise tokens.error(f"relation {kind!r} has no object")
        clauses.append(read_clause(tokens))
        relation = Relation(kind)
    while tokens.take_if(("and",)):
        clauses.append(read_clause(tokens))
        if read_relation(tokens) is not None:
            raise tokens.error("a relation may only follow the first object clause")
    if tokens.peek() is not None:
        raise tokens.error(f"unexpected word {tokens.peek()!r}")
    try:
        return Spec(tuple(clauses), relation, background)
    except CaptionError as err:
        raise tokens.error(str(err)) from None
