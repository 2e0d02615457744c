"""The layers of the package, read from the import statements (parsed with ast, nothing imported): the loop and the
adapter know nothing of the synthetic world, the pure world imports nothing of the loop, and no two top-level
packages of ospo import each other, directly or through others."""

import ast
from pathlib import Path

import ospo

SRC = Path(ospo.__file__).parent
# the only modules outside ospo.shapeworld that may import it: the entry points that offer the shipped world by name
# (CLI, demo) and the harness that evaluates a model on it; everything else (the loop, the adapter, configs,
# training, the report...) must not
MAY_IMPORT_THE_WORLD = ("ospo.cli", "ospo.demo", "ospo.evaluate.shapeworld")
# the pure world: scenes, text, rendering, the oracle, the evaluation sets, the text tasks (no model, no torch)
PURE_WORLD = tuple(f"ospo.shapeworld.{m}" for m in ("world", "captions", "sampler", "render", "oracle", "evalsets",
                                                     "questions", "codes", "edits", "tasks"))
# what the pure world may import from the rest of ospo, and why
PURE_WORLD_MAY_IMPORT = {
    "ospo.templates": "tasks.py writes the loop's text tasks in the shapeworld template set's own wording, so what "
                      "the model is pretrained on is exactly what the stages ask",
    "ospo.errors": "the one-line errors every package raises",
    "ospo.records": "the typed records the stages exchange",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every module `path` imports anywhere in it (functions included); `from a import b` gives a and a.b."""
    name, names = module_name(path), set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing package
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}
    return {n for n in names if n == "ospo" or n.startswith("ospo.")}


MODULES = {module_name(p): imported(p) for p in sorted(SRC.rglob("*.py"))}


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_the_loop_and_the_adapter_never_import_the_synthetic_world():
    bad = sorted((m, i) for m, imports in MODULES.items()
                 if not within(m, "ospo.shapeworld") and not any(within(m, p) for p in MAY_IMPORT_THE_WORLD)
                 for i in imports if within(i, "ospo.shapeworld"))
    assert not bad, f"the loop imports ospo.shapeworld: {bad}"
    assert any(within(m, "ospo.stages") for m in MODULES)  # the parse found the modules it guards


def test_the_pure_world_imports_only_the_pure_world():
    bad = []
    for module in PURE_WORLD:
        assert module in MODULES, module
        for name in MODULES[module]:
            if name in ("ospo", "ospo.shapeworld") or any(within(name, p) for p in PURE_WORLD):
                continue
            if not any(within(name, p) for p in PURE_WORLD_MAY_IMPORT):
                bad.append((module, name))
    assert not bad, f"the pure world imports outside itself: {bad}"


def test_the_world_package_imports_nothing_of_the_loop_or_the_evaluation_harness():
    """The pretraining loop (ospo.shapeworld.pretrain) drives the model through the adapter and builds the checkpoint;
    no ShapeWorld module imports the stages, the pipeline, the trainer or ospo.evaluate."""
    forbidden = ("ospo.stages", "ospo.pipeline", "ospo.training", "ospo.evaluate", "ospo.cli", "ospo.demo")
    bad = sorted((m, i) for m, imports in MODULES.items() if within(m, "ospo.shapeworld")
                 for i in imports if any(within(i, f) for f in forbidden))
    assert not bad, bad


def top_level_graph() -> dict[str, set[str]]:
    """Top-level ospo packages and modules (ospo.X) -> those they import."""
    graph: dict[str, set[str]] = {}
    for module, imports in MODULES.items():
        if module == "ospo":
            continue
        top = module.split(".")[1]
        graph.setdefault(top, set()).update(
            i.split(".")[1] for i in imports if i.count(".") >= 1 and i.split(".")[1] != top and
            i.split(".")[1] in {m.split(".")[1] for m in MODULES if m != "ospo"})
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected set of more than one node (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_two_top_level_packages_import_each_other():
    graph = top_level_graph()
    assert {"shapeworld", "evaluate", "stages", "config"} <= set(graph)
    assert not cycles(graph), f"import cycles between top-level packages of ospo: {cycles(graph)}"


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
