"""The user's guide and the manual stay true: README commands parse, links resolve, and only docs/experiments/
narrates history."""

import argparse
import importlib
import re
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MANUAL = sorted((ROOT / "docs").rglob("*.md"))
LINKED = [README, ROOT / "CHANGELOG.md", ROOT / "benchmarks" / "README.md", *MANUAL]

# History labels: "session 12", "stop 3", and run letters ("run G", "model M1", "runs B, C") that name an experiment
# by when it ran instead of by what it is.
HISTORY = re.compile(r"\b(?:session|stop) \d+\b|(?<![-\w])(?:runs?|models?) [A-Z](?:\d|')?(?![\w])"
                     r"|\b(?:M1|H3|T2)\b", re.IGNORECASE)


def _history_in(text: str) -> list[str]:
    # case-insensitive for the words, exact for the letters: "run a" is English, "run A" a label
    return [m.group(0) for m in HISTORY.finditer(text)
            if re.search(r"\d|[A-Z](?:\d|')?$", m.group(0).split()[-1]) and not m.group(0).islower()
            or re.match(r"(?i)(session|stop) \d", m.group(0))]


def _code_blocks(text: str) -> list[str]:
    return re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, flags=re.S)


def _commands(text: str) -> list[str]:
    """Shell commands of the code blocks: continuation lines joined, comments dropped, `&&` chains split."""
    out = []
    for block in _code_blocks(text):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                out += [part.strip() for part in line.split("&&") if part.strip()]
    return out


class _Parsed(Exception):
    pass


def _parse_module_args(module_name: str, argv: list[str], monkeypatch) -> None:
    """Runs `module.main` with argv until argparse has parsed it, then stops: flags are checked, nothing runs."""
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        original(self, args, namespace)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    monkeypatch.setattr(sys, "argv", [module_name, *argv])
    module = importlib.import_module(module_name)
    try:
        main = module.main
        try:
            main(argv)
        except TypeError:  # a main() that reads sys.argv
            main()
    except _Parsed:
        return
    raise AssertionError(f"{module_name} {' '.join(argv)}: argparse never ran")


def _ospo_argv(words: list[str]) -> list[str] | None:
    if words[:1] == ["ospo"]:
        return words[1:]
    if "-m" in words and words[words.index("-m") + 1] == "ospo.cli":
        return words[words.index("-m") + 2:]
    return None


def test_every_command_in_the_readme_parses(monkeypatch):
    from ospo.cli import build_parser

    commands = _commands(README.read_text())
    assert any(c.startswith("ospo demo") for c in commands) and any("ospo run" in c for c in commands)
    checked = 0
    for command in commands:
        words = shlex.split(command)
        argv = _ospo_argv(words)
        if argv is not None:
            try:
                build_parser().parse_args(argv)
            except SystemExit:
                pytest.fail(f"README command does not parse: {command}")
            checked += 1
        elif words[:2] == ["python", "-m"] and words[2].split(".")[0] in ("benchmarks", "experiments"):
            with monkeypatch.context() as m:
                try:
                    _parse_module_args(words[2], words[3:], m)
                except SystemExit:
                    pytest.fail(f"README command does not parse: {command}")
            checked += 1
    assert checked >= 5


def test_the_readmes_set_up_commands_are_what_ci_runs():
    readme = README.read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = 'python -m pip install torch==2.13.0 && python -m pip install -e ".[test]" && python -m pytest -q'
    assert test_command in readme
    assert test_command in ci.replace("install -q ", "install ")
    assert "python -m pip install torch==2.13.0 && python -m pip install -e . && ospo demo --out runs/demo" in readme


def test_the_readme_is_a_guide_with_the_janus_pro_section_early():
    lines = README.read_text().splitlines()
    assert len(lines) <= 220
    heading = next(i for i, line in enumerate(lines) if line.startswith("## ") and "Janus-Pro" in line)
    assert heading < 100


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lowercase, punctuation dropped, spaces to '-'."""
    anchors = set()
    for line in path.read_text().splitlines():
        m = re.match(r"#{1,6} (.*)", line)
        if m:
            title = re.sub(r"[`*_]", "", m.group(1).strip().lower())
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("doc", LINKED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc):
    assert doc.is_file(), doc
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (doc.parent / path).resolve() if path else doc
        if not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(target)
    assert not broken, f"{doc.relative_to(ROOT)}: {broken}"


def test_the_manual_exists():
    for name in ("method", "real-models", "benchmarks", "shapeworld", "results"):
        assert (ROOT / "docs" / f"{name}.md").is_file(), name
    assert (ROOT / "CHANGELOG.md").is_file()


def _product_files():
    for folder in ("src", "tests", "benchmarks"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".yaml", ".md", ".json") and "egg-info" not in str(path) \
                    and path.name != "test_docs.py":
                yield path
    yield README
    yield from (p for p in MANUAL if "experiments" not in p.relative_to(ROOT / "docs").parts)


DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")


def test_nothing_outside_docs_experiments_narrates_history():
    found = {}
    for path in _product_files():
        text = path.read_text(errors="replace")
        if path.name == "tokenizer.json":
            continue
        hits = _history_in(text)
        if path.suffix in (".py", ".yaml") or path.name == "README.md" and path.parent == ROOT:
            # code, configs and the guide state the present; dated records live in docs/results.md, the
            # experiments and the changelog (the tag that keeps the notebook's code is a name, not a date)
            hits += [d for d in DATE.findall(text.replace("notebook-2026-12-07", ""))]
        if hits:
            found[str(path.relative_to(ROOT))] = sorted(set(hits))[:5]
    assert not found, found


def test_the_history_check_finds_labels_and_leaves_english_alone():
    assert _history_in("as in session 12, run G and model M1 showed; runs B, C and stop 3")
    assert not _history_in("rerun the same command to resume; a run directory; --model M; the model a user runs")
