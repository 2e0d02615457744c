"""Instruction templates for the text tasks the OSPO stages ask of the model, loaded from YAML.

Templates are data: one file per model family under `ospo/templates/` (`shapeworld.yaml` holds the
short formats the tiny ShapeWorld model was pretrained on; a Janus-Pro set holds long stepwise
instructions with few-shot examples). A file looks like this (every task is required):

    name: shapeworld
    description: optional free text
    tasks:
      elements:  {instruction: "list {kind} :", separator: " , ", kinds: {numbers: number words}}
      prompt:    {instruction: "write a new prompt : {examples}", example: "{text}", example_separator: " . "}
      perturb:   {instruction: "{edit} : {prompt}", marker: "result :",
                  answer: "objects : {objects} . edit : {change} . result : {result}"}
      densify:   {instruction: "dense : {positive} . {negative}", positive_marker: "positive :",
                  negative_marker: "negative :", answer: "positive : {positive} . negative : {negative}"}
      decompose: {instruction: "questions : {prompt}", separator: " ",
                  global_question: "does this image accurately show {prompt} ?"}   # optional (v1 rule)
      vqa:       {instruction: "{question} please answer yes or no ."}
    subcategories:                       # optional; a stage that needs an entry says which
      color2:
        category: attribute              # Prompt.category of the sub-category's prompts
        slots: [replace, swap, drop]     # the edit of each negative slot (stage 2.1)
        seeds: ["a red circle and a blue square", ...]   # in-context examples the pool starts from
        compose: ["{a} {colors} {shapes} and {a} {colors} {shapes}"]   # v1 patterns (ospo.compose)

Keys per task: `instruction` (required; named {placeholders} below); `marker`, `positive_marker`,
`negative_marker`: the text after which the parser reads a result; `separator`: between list items
(elements; questions in an answer); `example` / `example_separator`: how in-context examples are
written and joined; `answer`: the answer format a model is trained on or shown (where the output
needs parsing it must parse back, which is checked at load); `kinds` / `subcategories` / `edits`:
the text substituted for {kind} / {subcategory} / {edit} (without one, the key itself is used).
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Mapping


from ospo import parsing
from ospo.errors import OspoError
from ospo.schema import read_yaml

EDITS = ("replace", "swap", "drop")
TASKS = ("elements", "prompt", "perturb", "densify", "decompose", "vqa")
_TOP_KEYS = ("name", "description", "tasks", "subcategories")
_SUBCATEGORY_KEYS = ("category", "slots", "seeds", "compose")
_NAMES_KEY = {"elements": "kinds", "prompt": "subcategories", "perturb": "edits"}
# task -> {template key: (required placeholders, optional placeholders)}; keys absent here are plain strings.
_FIELDS = {
    "elements": {"instruction": ({"kind"}, set()), "separator": None, "marker": None, "kinds": None},
    "prompt": {"instruction": ({"examples"}, {"subcategory"}), "example": ({"text"}, {"index"}),
               "example_separator": None, "marker": None, "subcategories": None},
    "perturb": {"instruction": ({"prompt", "edit"}, set()), "marker": None, "edits": None,
                "answer": ({"result"}, {"objects", "change"})},
    "densify": {"instruction": ({"positive", "negative"}, set()), "positive_marker": None, "negative_marker": None,
                "answer": ({"positive", "negative"}, set())},
    "decompose": {"instruction": ({"prompt"}, set()), "separator": None, "marker": None,
                  "global_question": ({"prompt"}, set())},
    "vqa": {"instruction": ({"question"}, set())},
}
_REQUIRED = {"perturb": ("marker",), "densify": ("positive_marker", "negative_marker")}


class TemplateError(OspoError, ValueError):
    """A template file or a call that does not fit the schema; the message names the key."""


@dataclass(frozen=True)
class TaskTemplate:
    """One task's templates (see the module docstring for each key)."""

    instruction: str
    marker: str | None = None
    positive_marker: str | None = None
    negative_marker: str | None = None
    separator: str | None = None
    example: str = "{text}"
    example_separator: str = "\n"
    answer: str | None = None
    global_question: str | None = None
    names: Mapping[str, str] | None = None  # kinds / subcategories / edits -> instruction text


@dataclass(frozen=True)
class Subcategory:
    """What a template set says about one prompt sub-category (see `subcategories` in the module docstring)."""

    category: str
    slots: tuple[str, ...] = ()
    seeds: tuple[str, ...] = ()
    compose: tuple[str, ...] = ()


@dataclass(frozen=True)
class TemplateSet:
    """All task templates of one model family; methods format instructions, answers and parse outputs."""

    name: str
    tasks: Mapping[str, TaskTemplate] = field(repr=False)
    description: str = ""
    subcategories: Mapping[str, Subcategory] = field(default_factory=lambda: MappingProxyType({}), repr=False)

    # ------------------------------------------------------------------ sub-category data
    def subcategory(self, name: str, needs: str | None = None) -> Subcategory:
        """The entry of sub-category `name`; with `needs` ("slots", "seeds", "compose"), that key must be non-empty."""
        if name not in self.subcategories:
            raise TemplateError(f"template set {self.name!r} has no sub-category {name!r} under 'subcategories'; "
                                f"defined: {', '.join(self.subcategories) or 'none'}")
        entry = self.subcategories[name]
        if needs is not None and not getattr(entry, needs):
            raise TemplateError(f"template set {self.name!r}: subcategories.{name}.{needs} is missing or empty")
        return entry

    def global_question(self, prompt: str) -> str:
        """The v1 global question about a whole prompt."""
        template = self.tasks["decompose"].global_question
        if template is None:
            raise TemplateError(f"template set {self.name!r} has no tasks.decompose.global_question (the v1 rule "
                                "needs one)")
        return template.format(prompt=prompt)

    # ------------------------------------------------------------------ instructions
    def elements(self, kind: str) -> str:
        return self.tasks["elements"].instruction.format(kind=self._name("elements", kind))

    def prompt(self, subcategory: str, examples) -> str:
        t = self.tasks["prompt"]
        examples = list(examples)
        if not examples:
            raise TemplateError("the prompt task needs at least one example prompt")
        shown = t.example_separator.join(t.example.format(text=x, index=i + 1) for i, x in enumerate(examples))
        needs_name = "subcategory" in _placeholders(t.instruction)
        return t.instruction.format(examples=shown,
                                    subcategory=self._name("prompt", subcategory) if needs_name else subcategory)

    def perturb(self, prompt: str, edit: str) -> str:
        if edit not in EDITS:
            raise TemplateError(f"unknown edit {edit!r}; expected one of {', '.join(EDITS)}")
        return self.tasks["perturb"].instruction.format(prompt=prompt, edit=self._name("perturb", edit))

    def densify(self, positive: str, negative: str) -> str:
        return self.tasks["densify"].instruction.format(positive=positive, negative=negative)

    def decompose(self, prompt: str) -> str:
        return self.tasks["decompose"].instruction.format(prompt=prompt)

    def vqa(self, question: str) -> str:
        return self.tasks["vqa"].instruction.format(question=question)

    # ------------------------------------------------------------------ answers (the trained / shown formats)
    def elements_answer(self, items) -> str:
        return self.tasks["elements"].separator.join(items)

    def perturb_answer(self, result: str, objects: str = "", change: str = "") -> str:
        return self._answer("perturb").format(result=result, objects=objects, change=change)

    def densify_answer(self, positive: str, negative: str) -> str:
        return self._answer("densify").format(positive=positive, negative=negative)

    def decompose_answer(self, questions) -> str:
        return self.tasks["decompose"].separator.join(questions)

    # ------------------------------------------------------------------ parsers bound to this set's markers
    def parse_elements(self, text: str) -> list[str]:
        t = self.tasks["elements"]
        return parsing.parse_elements(text, separator=t.separator, marker=t.marker)

    def parse_prompt(self, text: str) -> str:
        return parsing.parse_prompt(text, marker=self.tasks["prompt"].marker)

    def parse_perturbation(self, text: str) -> str:
        return parsing.parse_perturbation(text, marker=self.tasks["perturb"].marker)

    def parse_densified(self, text: str) -> tuple[str, str]:
        t = self.tasks["densify"]
        return parsing.parse_densified(text, t.positive_marker, t.negative_marker)

    def parse_questions(self, text: str) -> list[str]:
        return parsing.parse_questions(text, marker=self.tasks["decompose"].marker)

    # ------------------------------------------------------------------ helpers
    def _name(self, task: str, key: str) -> str:
        names = self.tasks[task].names
        if names is None:
            return key
        if key not in names:
            raise TemplateError(f"template set {self.name!r}: {task}.{_NAMES_KEY[task]} has no entry {key!r}; "
                                f"known: {', '.join(names)}")
        return names[key]

    def _answer(self, task: str) -> str:
        answer = self.tasks[task].answer
        if answer is None:
            raise TemplateError(f"template set {self.name!r} has no answer format for {task}")
        return answer


def _placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def _check_template(where: str, template, required: set[str], optional: set[str]) -> None:
    if not isinstance(template, str) or not template.strip():
        raise TemplateError(f"{where} must be a non-empty string")
    try:
        found = _placeholders(template)
    except ValueError as err:
        raise TemplateError(f"{where}: bad braces ({err}); write literal braces as {{{{ and }}}}") from None
    unknown = sorted(found - required - optional)
    if unknown:
        raise TemplateError(f"{where}: unknown placeholder {{{unknown[0]}}}; allowed: "
                            f"{', '.join('{' + p + '}' for p in sorted(required | optional))}")
    missing = sorted(required - found)
    if missing:
        raise TemplateError(f"{where}: missing placeholder {{{missing[0]}}}")


def _task_template(source: str, task: str, raw) -> TaskTemplate:
    where = f"{source}: tasks.{task}"
    if not isinstance(raw, dict):
        raise TemplateError(f"{where} must be a mapping of keys to templates")
    allowed = _FIELDS[task]
    for key in raw:
        if key not in allowed:
            raise TemplateError(f"{where}: unknown key {key!r}; allowed: {', '.join(allowed)}")
    for key in ("instruction",) + _REQUIRED.get(task, ()):
        if raw.get(key) is None:
            raise TemplateError(f"{where}: missing key {key!r}")
    values, names = {}, None
    for key, value in raw.items():
        if key == _NAMES_KEY.get(task):
            if not isinstance(value, dict) or not all(isinstance(v, str) and v.strip() for v in value.values()):
                raise TemplateError(f"{where}.{key} must map each key to non-empty text")
            if task == "perturb" and sorted(value) != sorted(EDITS):
                raise TemplateError(f"{where}.edits must name exactly the edits {', '.join(EDITS)}")
            names = MappingProxyType({str(k): v for k, v in value.items()})
        elif allowed[key] is not None:
            _check_template(f"{where}.{key}", value, *allowed[key])
            values[key] = value
        elif not isinstance(value, str) or (key.endswith("marker") and not value.strip()):
            raise TemplateError(f"{where}.{key} must be a{' non-empty' if key.endswith('marker') else ''} string")
        else:
            values[key] = value
    if task in ("elements", "decompose"):
        values.setdefault("separator", "," if task == "elements" else "\n")
    return TaskTemplate(names=names, **values)


def _text_list(where: str, value) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise TemplateError(f"{where} must be a list of non-empty strings")
    return tuple(value)


def _subcategories(source: str, raw, kinds: Mapping[str, str] | None) -> Mapping[str, Subcategory]:
    from ospo import compose

    if not isinstance(raw, dict):
        raise TemplateError(f"{source}: subcategories must map each sub-category to its entry")
    out = {}
    for name, entry in raw.items():
        where = f"{source}: subcategories.{name}"
        if not isinstance(entry, dict):
            raise TemplateError(f"{where} must be a mapping with the keys {', '.join(_SUBCATEGORY_KEYS)}")
        for key in entry:
            if key not in _SUBCATEGORY_KEYS:
                raise TemplateError(f"{where}: unknown key {key!r}; allowed: {', '.join(_SUBCATEGORY_KEYS)}")
        category = entry.get("category")
        if not isinstance(category, str) or not category.strip():
            raise TemplateError(f"{where}.category must be a non-empty string")
        slots = _text_list(f"{where}.slots", entry.get("slots", []))
        bad = [e for e in slots if e not in EDITS]
        if bad:
            raise TemplateError(f"{where}.slots: unknown edit {bad[0]!r}; expected {', '.join(EDITS)}")
        patterns = _text_list(f"{where}.compose", entry.get("compose", []))
        for pattern in patterns:
            try:
                used = compose.element_kinds(pattern)
            except ValueError as err:
                raise TemplateError(f"{where}.compose: {err}") from None
            unknown = sorted(used - set(kinds)) if kinds is not None else []  # without names any kind goes
            if unknown:
                raise TemplateError(f"{where}.compose: unknown element kind {{{unknown[0]}}}; "
                                    f"tasks.elements.kinds has {', '.join(kinds)}")
        out[str(name)] = Subcategory(category, slots, _text_list(f"{where}.seeds", entry.get("seeds", [])), patterns)
    return MappingProxyType(out)


def _check_answers_parse(templates: TemplateSet, source: str) -> None:
    """An answer format must be readable by its own parser, or training teaches an unparseable format."""
    probe = ("sentinel one", "sentinel two")
    checks = {
        "perturb": (lambda: templates.perturb_answer(probe[0], "x", "y"), templates.parse_perturbation, probe[0]),
        "densify": (lambda: templates.densify_answer(*probe), templates.parse_densified, probe),
    }
    for task, (write, read, expected) in checks.items():
        if templates.tasks[task].answer is None:
            continue
        try:
            got = read(write())
        except parsing.ParseError as err:
            got = f"ParseError({err.reason})"
        if got != expected:
            raise TemplateError(f"{source}: tasks.{task}.answer does not parse back with its markers (got {got!r})")


def packaged_template_names() -> list[str]:
    folder = resources.files("ospo") / "templates"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_templates(name_or_path: str | Path) -> TemplateSet:
    """A TemplateSet from a packaged name ("shapeworld") or a YAML file path. Raises TemplateError."""
    text_path = str(name_or_path)
    if isinstance(name_or_path, Path) or text_path.endswith((".yaml", ".yml")) or "/" in text_path:
        path = Path(name_or_path)
        if not path.is_file():
            raise TemplateError(f"template file {path} does not exist")
        text, source = path.read_text(), str(path)
    else:
        resource = resources.files("ospo") / "templates" / f"{text_path}.yaml"
        if not resource.is_file():
            raise TemplateError(f"unknown template set {text_path!r}; packaged: {', '.join(packaged_template_names())}"
                                " (or pass a path to a .yaml file)")
        text, source = resource.read_text(), f"{text_path}.yaml"
    raw = read_yaml(text, source, TemplateError)
    if not isinstance(raw, dict):
        raise TemplateError(f"{source} must be a mapping with the keys {', '.join(_TOP_KEYS)}")
    for key in raw:
        if key not in _TOP_KEYS:
            raise TemplateError(f"{source}: unknown key {key!r}; allowed: {', '.join(_TOP_KEYS)}")
    tasks = raw.get("tasks")
    if not isinstance(tasks, dict):
        raise TemplateError(f"{source}: missing key 'tasks' (a mapping of task name to templates)")
    for task in tasks:
        if task not in TASKS:
            raise TemplateError(f"{source}: unknown task {task!r}; tasks are {', '.join(TASKS)}")
    for task in TASKS:
        if task not in tasks:
            raise TemplateError(f"{source}: missing task {task!r}")
    built = {task: _task_template(source, task, tasks[task]) for task in TASKS}
    name = raw.get("name", Path(source).stem)
    subcategories = _subcategories(source, raw.get("subcategories", {}), built["elements"].names)
    templates = TemplateSet(str(name), MappingProxyType(built), str(raw.get("description", "")), subcategories)
    _check_answers_parse(templates, source)
    return templates
