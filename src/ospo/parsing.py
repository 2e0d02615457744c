"""Pure parsers of the text the model writes for the OSPO text tasks.

They know formats (markers, separators), never a world: the same functions read the tiny ShapeWorld
model's short answers and Janus-Pro's long stepwise ones. A TemplateSet passes its own markers
(`TemplateSet.parse_perturbation` ...). Every failure is a `ParseError` whose message is a short,
fixed reason ("no result marker", "empty result", ...) that the pipeline stores on the rejected
record and counts in the stage manifest.

Matching is tolerant of case and of spacing around punctuation ("result :" matches "Result:"),
because detokenisers differ in how they join punctuation to words.
"""

from __future__ import annotations

import re

# Leading list decoration a model may put before an item: "1.", "2)", "-", "*", "•".
_BULLET = re.compile(r"^\s*(?:\d+\s*[.)]|[-*\u2022])(?:\s+|$)")
# Quotes and markdown emphasis around a result: '"a red circle"', "**a red circle**".
_WRAPPERS = "\"'`*"


class ParseError(ValueError):
    """Model output that does not have the expected form; `reason` is short and fixed, for counting."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def marker_pattern(marker: str) -> re.Pattern:
    """A case-insensitive regex for `marker` with free spacing between its words and punctuation."""
    tokens = re.findall(r"\w+|[^\w\s]", marker)
    if not tokens:
        raise ValueError(f"a marker needs at least one word or punctuation mark, got {marker!r}")
    pattern = re.escape(tokens[0])
    for prev, tok in zip(tokens, tokens[1:]):
        gap = r"\s+" if prev[-1].isalnum() and tok[0].isalnum() else r"\s*"
        pattern += gap + re.escape(tok)
    if tokens[0][0].isalnum():
        pattern = r"(?<!\w)" + pattern
    return re.compile(pattern, re.IGNORECASE)


def _after_marker(text: str, marker: str, name: str, last: bool = False) -> str:
    """The text after the first (or last) occurrence of `marker`; ParseError 'no {name} marker' if absent."""
    found = list(marker_pattern(marker).finditer(text))
    if not found:
        raise ParseError(f"no {name} marker")
    return text[found[-1 if last else 0].end():]


def _has_words(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def _clean(text: str) -> str:
    """`text` with whitespace collapsed and surrounding quotes or emphasis removed."""
    return " ".join(text.split()).strip(_WRAPPERS).strip()


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip(_WRAPPERS + " \t"):
            return line
    return ""


def _check_text(text) -> str:
    if not isinstance(text, str):
        raise TypeError(f"expected model output as str, got {type(text).__name__}")
    return text


def parse_elements(text: str, separator: str = ",", marker: str | None = None) -> list[str]:
    """Items of a list such as "red , green , blue" (or one per line with separator "\\n").

    Items lose list bullets, surrounding quotes and a final period. Reasons: "no elements marker",
    "empty list", "empty element", "repeated element".
    """
    text = _check_text(text)
    if marker is not None:
        text = _after_marker(text, marker, "elements")
    sep = separator.strip() or separator
    body = text.strip()
    if body.endswith(".") and sep != ".":
        body = body[:-1]
    if not _has_words(body):
        raise ParseError("empty list")
    items = [_clean(_BULLET.sub("", item)) for item in body.split(sep)]
    if sep == "\n":
        items = [item for item in items if item]  # blank lines between items are layout, not items
    if not all(_has_words(item) for item in items):
        raise ParseError("empty element")
    if len({item.lower() for item in items}) != len(items):
        raise ParseError("repeated element")
    return items


def parse_prompt(text: str, marker: str | None = None) -> str:
    """The prompt a model wrote: its first non-empty line (after `marker` when given).

    Reasons: "no prompt marker", "empty prompt".
    """
    text = _check_text(text)
    if marker is not None:
        text = _after_marker(text, marker, "prompt")
    prompt = _clean(_BULLET.sub("", _first_line(text)))
    if not _has_words(prompt):
        raise ParseError("empty prompt")
    return prompt


def parse_perturbation(text: str, marker: str = "result :") -> str:
    """The perturbed prompt: the first non-empty line after the last `marker`.

    The reasoning steps before the marker are free-form and ignored (the last marker wins, since
    reasoning may name it). Reasons: "no result marker", "empty result".
    """
    result = _clean(_first_line(_after_marker(_check_text(text), marker, "result", last=True)))
    if not _has_words(result):
        raise ParseError("empty result")
    return result


def parse_densified(text: str, positive_marker: str = "positive :", negative_marker: str = "negative :"
                    ) -> tuple[str, str]:
    """(dense positive, dense negative): the text between the two markers, and the first line after
    the negative marker. A period that separates the two parts is dropped.

    Reasons: "no positive marker", "no negative marker" (none after the positive one),
    "empty positive", "empty negative".
    """
    text = _check_text(text)
    start = marker_pattern(positive_marker).search(text)
    if start is None:
        raise ParseError("no positive marker")
    end = marker_pattern(negative_marker).search(text, start.end())
    if end is None:
        raise ParseError("no negative marker")
    positive = _clean(_clean(text[start.end():end.start()]).removesuffix("."))
    negative = _clean(_clean(_first_line(text[end.end():])).removesuffix("."))
    if not _has_words(positive):
        raise ParseError("empty positive")
    if not _has_words(negative):
        raise ParseError("empty negative")
    return positive, negative


def parse_questions(text: str, marker: str | None = None) -> list[str]:
    """Yes/no questions, each ending with "?", in order (bullets and numbering removed).

    Text after the last question mark means the model stopped mid-question. Reasons:
    "no questions marker", "no question mark", "empty question", "unfinished question",
    "repeated question".
    """
    text = _check_text(text)
    if marker is not None:
        text = _after_marker(text, marker, "questions")
    if "?" not in text:
        raise ParseError("no question mark")
    *pieces, rest = text.split("?")
    if _clean(rest).strip(".,;"):
        raise ParseError("unfinished question")
    questions = []
    for piece in pieces:
        body = _clean(_BULLET.sub("", piece.strip().lstrip(",;").strip()))
        if not _has_words(body):
            raise ParseError("empty question")
        questions.append(body + (" ?" if piece[-1:].isspace() else "?"))  # keep the writer's spacing
    keys = [" ".join(q.lower().replace("?", " ").split()) for q in questions]
    if len(set(keys)) != len(keys):
        raise ParseError("repeated question")
    return questions


def normalize_prompt(text: str) -> str:
    """A prompt as stored: whitespace collapsed, no final period ("a red  circle ." -> "a red circle")."""
    return " ".join(_check_text(text).split()).removesuffix(".").rstrip()


def prompt_key(text: str) -> str:
    """What two prompts share when they say the same: case, spacing around punctuation and a final period ignored
    ("On a gray background , a Red circle." and "on a gray background, a red circle" have one key)."""
    text = re.sub(r"\s+([.,;:!?])", r"\1", normalize_prompt(text).lower())
    return text.removesuffix(".").rstrip()
