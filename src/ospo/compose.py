"""Composing prompts from element lists: the v1 way of writing stage-1 prompts (pure functions).

The model lists elements of each kind (objects, colours, relations ...); a template set holds, per
sub-category, patterns that say how elements combine. A pattern is text with fields:

    {kind}          one element of that kind; a kind used twice in a pattern gives two different elements
    {kind:plural}   the same, in plural form (English rules: circle -> circles, cross -> crosses)
    {a}             the indefinite article agreeing with the next word ("a red cup", "an orange cup")
    {two|three}     one of the listed words

e.g. "{a} {colors} {shapes} and {two|three} {shapes:plural}". Draws come from a numpy Generator in
the order the fields appear, so a (pattern, elements, seed) triple always composes the same text.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

ARTICLE = "a"
FORMS = ("", "plural")
_ARTICLE_MARK = "\x00"


class ComposeError(ValueError):
    """A pattern that cannot be filled from the elements at hand; `reason` is fixed, `detail` names the kind."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Field:
    literal: str  # text before the field
    kind: str | None  # element kind; None for an article or a choice (or the trailing literal)
    form: str = ""  # "" or "plural"
    choices: tuple[str, ...] = ()  # {two|three}
    article: bool = False


def parse_pattern(pattern: str) -> list[Field]:
    """The fields of a pattern, in order; the last Field may carry only trailing text. Raises ValueError."""
    fields = []
    try:
        parsed = list(string.Formatter().parse(pattern))
    except ValueError as err:
        raise ValueError(f"bad braces in pattern {pattern!r} ({err})") from None
    for literal, name, spec, conversion in parsed:
        if name is None:
            fields.append(Field(literal, None))
            continue
        if conversion or (spec and spec not in FORMS):
            raise ValueError(f"pattern {pattern!r}: unknown form '{spec or '!' + conversion}' in {{{name}}}; "
                             f"allowed: {{kind:plural}}")
        if not name.strip():
            raise ValueError(f"pattern {pattern!r} has an empty field {{}}")
        if "|" in name:
            choices = tuple(c.strip() for c in name.split("|"))
            if not all(choices):
                raise ValueError(f"pattern {pattern!r}: empty choice in {{{name}}}")
            fields.append(Field(literal, None, spec, choices=choices))
        elif name == ARTICLE:
            fields.append(Field(literal, None, article=True))
        else:
            fields.append(Field(literal, name, spec))
    return fields


def element_kinds(pattern: str) -> set[str]:
    return {f.kind for f in parse_pattern(pattern) if f.kind is not None}


def pluralize(phrase: str) -> str:
    """English plural of the last word: box -> boxes, berry -> berries, "traffic light" -> "traffic lights"."""
    head, _, word = phrase.rpartition(" ")
    lower = word.lower()
    if lower.endswith(("s", "x", "z", "ch", "sh")):
        word += "es"
    elif lower.endswith("y") and len(lower) > 1 and lower[-2] not in "aeiou":
        word = word[:-1] + "ies"
    else:
        word += "s"
    return f"{head} {word}" if head else word


def _resolve_articles(text: str) -> str:
    def article(match: re.Match) -> str:
        return ("an" if match.group(2)[:1].lower() in "aeiou" else "a") + match.group(1) + match.group(2)

    return re.sub(_ARTICLE_MARK + r"(\W*)(\w*)", article, text)


def compose(pattern: str, elements: Mapping[str, Sequence[str]], rng: np.random.Generator) -> str:
    """Fills `pattern` with elements drawn by `rng`.

    Raises ComposeError("missing elements" | "too few elements", kind) when a kind has no or too few elements."""
    used: dict[str, set[str]] = {}
    parts = []
    for f in parse_pattern(pattern):
        parts.append(f.literal)
        if f.article:
            parts.append(_ARTICLE_MARK)
        elif f.choices:
            word = f.choices[int(rng.integers(len(f.choices)))]
            parts.append(pluralize(word) if f.form == "plural" else word)
        elif f.kind is not None:
            if not elements.get(f.kind):
                raise ComposeError("missing elements", f.kind)
            seen = used.setdefault(f.kind, set())
            left = [e for e in elements[f.kind] if e.lower() not in seen]
            if not left:
                raise ComposeError("too few elements", f.kind)
            word = left[int(rng.integers(len(left)))]
            seen.add(word.lower())
            parts.append(pluralize(word) if f.form == "plural" else word)
    return _resolve_articles("".join(parts))
