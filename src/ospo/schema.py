"""The loader of ospo's configs: frozen dataclasses built from mappings (YAML files, `--set a.b=c` overrides), every
value type-checked, unknown keys named with the closest known one. The run config (ospo.config) and ShapeWorld
pretraining's config (ospo.shapeworld.pretrain.config) are both read with it.

Data file paths in a config take two forms: `package:NAME/PATH`, a file inside the installed Python package NAME
(dotted, e.g. `package:ospo.shapeworld/data/geneval.jsonl`), or a filesystem path.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import field
from importlib import resources
from pathlib import Path

import yaml

from ospo.errors import InputError


class ConfigError(InputError):
    """A config file or override that does not fit the schema; the message names the key."""


def one_of(default: str, *choices: str):
    """A string field that takes one of `choices` (checked at load). Where the choices are "true" and "false" (and
    more), YAML booleans, 0/1 and yes/no read as "true"/"false"; words are read case-insensitively."""
    return field(default=default, metadata={"choices": choices})


def field_choices(cls) -> dict[str, tuple[str, ...]]:
    """{field name: its choices} of the `one_of` fields of a config dataclass."""
    return {f.name: f.metadata["choices"] for f in dataclasses.fields(cls) if "choices" in f.metadata}


_TRUE_WORDS, _FALSE_WORDS = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _check_choice(key: str, value, choices: tuple[str, ...]) -> str:
    """`value` as one of `choices` (see `one_of`), else ConfigError."""
    word = value
    if "true" in choices and "false" in choices and (isinstance(value, bool) or value in (0, 1)):
        word = "true" if value else "false"  # YAML reads `bf16: false` as a boolean
    if isinstance(word, str):
        word = word.strip().lower()
        if "true" in choices and "false" in choices:
            word = "true" if word in _TRUE_WORDS else "false" if word in _FALSE_WORDS else word
    if word not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}, got {value!r}")
    return word


def _check_type(key: str, value, annotation, choices: tuple[str, ...] | None = None):
    """Returns value coerced to the annotated type (int -> float and integral float -> int allowed), else raises
    ConfigError naming the key, the type wanted and the value given."""
    hint = annotation if not isinstance(annotation, str) else eval(annotation, vars(typing), globals())
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
    if choices:
        return _check_choice(key, value, choices)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads `1e-5` (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if hint is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if typing.get_origin(hint) is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key} must be a list of strings, got {type(value).__name__} {value!r}")
        return list(value)
    if hint in (int, float, str, bool, dict) and not (isinstance(value, hint) and not
                                                      (hint is int and isinstance(value, bool))):
        use = "; use true or false" if hint is bool else ""
        raise ConfigError(f"{key} must be {hint.__name__}, got {type(value).__name__} {value!r}{use}")
    if hint is float and not math.isfinite(value):  # NaN passes every range check and inf breaks arithmetic
        raise ConfigError(f"{key} must be a finite number, got {value!r}")
    return value


def typed_fields(cls, data: dict, prefix: str = "", noun: str = "config key") -> dict:
    """The fields `data` sets, typed and checked against the dataclass `cls` (nested dataclasses built): an unknown
    key is named with the closest known one (`noun` names what a key is in the message), a value of the wrong type
    or outside the field's `one_of` choices is refused naming the key and the value."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'the config'} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), fields, n=1)
        hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f"; known keys: {', '.join(fields)}"
        raise ConfigError(f"unknown {noun} '{prefix}{unknown[0]}'{hint}")
    kwargs = {}
    hints = typing.get_type_hints(cls)
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = build_config(hint, value, f"{prefix}{name}.", noun)
        else:
            kwargs[name] = _check_type(f"{prefix}{name}", value, hint, fields[name].metadata.get("choices"))
    return kwargs


def build_config(cls, data: dict, prefix: str = "", noun: str = "config key"):
    """An instance of the config dataclass `cls` from a mapping (`typed_fields`); defaults fill what it leaves."""
    return cls(**typed_fields(cls, data, prefix, noun))


class Whole(dict):
    """A mapping given whole as one `--set` value (`--set "prompts.counts={color1: 2}"`): it replaces the mapping
    beneath it, as the same mapping in a YAML file does, instead of merging into it."""


def merge_mappings(base: dict, extra: dict) -> dict:
    """`base` with `extra`'s values, nested mappings merged key by key (a `Whole` mapping replaces; keys set after
    it merge into it)."""
    out = type(base)(base)
    for k, v in extra.items():
        mergeable = isinstance(v, dict) and not isinstance(v, Whole) and isinstance(out.get(k), dict)
        out[k] = merge_mappings(out[k], v) if mergeable else v
    return out


def plain(data):
    """`data` with every `Whole` turned back into a plain dict (what configs and YAML dumps hold)."""
    return {k: plain(v) for k, v in data.items()} if isinstance(data, dict) else data


MAX_YAML_BYTES = 1 << 20  # a config is a few KB; the bound keeps a hostile file from filling memory


def read_yaml(text: str, where: str, error=None):
    """YAML text -> Python values, for configs, recipes and templates. Refuses aliases (`&a` / `*a`: nested ones
    expand exponentially, the "billion laughs"), texts over MAX_YAML_BYTES and invalid YAML, each as one `error`
    (ConfigError unless given) naming `where`."""
    error = error or ConfigError
    if len(text.encode("utf-8", errors="replace")) > MAX_YAML_BYTES:
        raise error(f"{where} is larger than {MAX_YAML_BYTES // 1024} KiB; a config is a few KB")
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                raise error(f"{where} uses a YAML alias (*{event.anchor}); write the values out instead")
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise error(f"{where} is not valid YAML: {str(e).splitlines()[0]}") from None


def read_yaml_file(path, where: str | None = None, error=None):
    """`read_yaml` of a file, with unreadable and non-UTF-8 files refused in one line naming the file."""
    error = error or ConfigError
    where = where or f"'{path}'"
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_YAML_BYTES + 1)
        if len(raw) > MAX_YAML_BYTES:
            raise error(f"{where} is larger than {MAX_YAML_BYTES // 1024} KiB; a config is a few KB")
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{where} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise error(f"cannot read {where}: {e.strerror or e}") from None
    return read_yaml(text, where, error)


def parse_value(raw: str):
    """A `--set` value: its text read as YAML (numbers, booleans, lists, null); empty text is the empty string."""
    return read_yaml(raw, f"--set value {raw!r}") if raw.strip() else ""


def parse_override(text: str) -> dict:
    """'a.b=c' -> {'a': {'b': c}} with c parsed as YAML (numbers, booleans, lists, null; a mapping as `Whole`)."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got '{text}'")
    key, raw = text.split("=", 1)
    value = parse_value(raw)
    if isinstance(value, dict):
        value = Whole(value)
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


def parse_overrides(texts) -> dict:
    """`--set` texts merged into one mapping, later ones winning."""
    extra: dict = {}
    for text in texts:
        extra = merge_mappings(extra, parse_override(text))
    return extra


PACKAGE_PREFIX = "package:"


def data_path(text: str):
    """The file a config's path names: `package:NAME/PATH` (a file inside the installed package NAME) or a
    filesystem path (a Traversable or a Path; both have is_file, read_text and name)."""
    if not text.startswith(PACKAGE_PREFIX):
        return Path(text)
    package, _, inner = text[len(PACKAGE_PREFIX):].partition("/")
    try:
        root = resources.files(package)
    except (ModuleNotFoundError, TypeError, ValueError):
        raise ConfigError(f"'{text}': no installed package '{package}' (the form is package:NAME/PATH, NAME dotted)") \
            from None
    return root.joinpath(*inner.split("/")) if inner else root
