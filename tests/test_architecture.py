"""One adapter knows the model: no module of src/ospo but model.py reaches into Janus or into the adapter's privates.

Checked on the source (AST), so a new module is covered the day it is added:
- Janus internals: attributes such as `.janus`, `.language_model`, `.vqmodel`, `.generation_config` (also through
  `getattr(x, "name")`), and Janus classes or modules imported from transformers. Exempt: model.py (the adapter)
  and the code that builds checkpoints from parts (tiny.py and the shapeworld/pretrain/
  package), which must do model surgery.
- Private adapter members, everywhere but model.py: `x._name` where `_name` is a private member of JanusAdapter
  (whatever `x` is, except `self`/`cls`), or where `x` holds an adapter: a name or attribute containing "adapter"
  (`adapter`, `self._adapter[0]`), `ctx.model`, or a name the enclosing function binds to one (`model =
  load_model(args)`, `base = JanusAdapter.from_pretrained(...)`, a parameter annotated `UnifiedModel`). Other
  privates (torch's `_C`, a module's own `self._x`, `model._init_weights` on a torch module) are not flagged.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "ospo"
ADAPTER_MODULE = "model.py"
JANUS_CLASSES = frozenset({"JanusForConditionalGeneration", "JanusModel", "JanusVQVAE", "JanusVisionModel"})
JANUS_INTERNALS = JANUS_CLASSES | {
    "janus", "language_model", "vqmodel", "vision_model", "aligner", "generation_head", "generation_config",
    "get_base_model", "lm_head", "prepare_embeddings_for_image_generation", "decode_image_tokens"}
ADAPTER_TYPES = frozenset({"UnifiedModel", "JanusAdapter"})
ADAPTER_FACTORIES = frozenset({"load_model", "JanusAdapter"})  # calls whose result is an adapter


def checkpoint_builder(rel: str) -> bool:
    """Code that builds tiny / ShapeWorld checkpoints from parts (model surgery is its job)."""
    return rel == "tiny.py" or rel.startswith("shapeworld/pretrain/")


def adapter_private_members(source: str) -> set[str]:
    """Private (single-underscore) members of class JanusAdapter in the adapter module's source: its methods and
    class attributes, `self._x = ...` in its methods, and `JanusAdapter._x = ...` at module level."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and node.name == "JanusAdapter":
            for item in ast.walk(node):
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    names.add(item.name)
                elif isinstance(item, ast.Attribute) and isinstance(item.value, ast.Name) and item.value.id == "self":
                    names.add(item.attr)
                elif isinstance(item, ast.Name) and isinstance(item.ctx, ast.Store):
                    names.add(item.id)
        elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
              and isinstance(node.value, ast.Name) and node.value.id == "JanusAdapter"):
            names.add(node.attr)
    return {n for n in names if _private(n)}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _dotted(node) -> str:
    """`a.b.c` of a Name/Attribute chain ('' for anything else)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def _names_adapter_type(annotation) -> bool:
    if annotation is None:
        return False
    text = annotation.value if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str) \
        else ast.unparse(annotation)
    return any(re.search(rf"\b{t}\b", text) for t in ADAPTER_TYPES)


def _makes_adapter(value) -> bool:
    """`load_model(...)`, `JanusAdapter(...)`, `JanusAdapter.from_pretrained(...)`, `ctx.model`."""
    if isinstance(value, ast.Call):
        name = _dotted(value.func)
        return name.split(".")[-1] in ADAPTER_FACTORIES or name == "JanusAdapter.from_pretrained"
    return _dotted(value) == "ctx.model"


def _own_nodes(scope):
    """The nodes of a function or module body, not descending into nested functions, lambdas and classes."""
    todo = list(ast.iter_child_nodes(scope))
    while todo:
        node = todo.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            todo.extend(ast.iter_child_nodes(node))


def _adapter_bindings(scope) -> set[str]:
    """Names the scope binds to an adapter: annotated parameters, and assignments from an adapter source."""
    names = set()
    if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        a = scope.args
        for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]:
            if arg is not None and _names_adapter_type(arg.annotation):
                names.add(arg.arg)
    for node in _own_nodes(scope):
        if isinstance(node, ast.Assign) and _makes_adapter(node.value):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and (
                _names_adapter_type(node.annotation) or (node.value is not None and _makes_adapter(node.value))):
            names.add(node.target.id)
    return names


class _Checker(ast.NodeVisitor):
    def __init__(self, janus_allowed: bool, adapter_privates: set[str]):
        self.janus_allowed, self.adapter_privates = janus_allowed, adapter_privates
        self.scopes: list[set[str]] = [set()]
        self.found: list[tuple[int, str]] = []

    def _scope(self, node):
        self.scopes.append(self.scopes[-1] | _adapter_bindings(node))
        self.generic_visit(node)
        self.scopes.pop()

    visit_Module = visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _scope

    def _holds_adapter(self, node) -> bool:
        if isinstance(node, ast.Subscript):
            return self._holds_adapter(node.value)
        if isinstance(node, ast.Name):
            return "adapter" in node.id.lower() or node.id in self.scopes[-1]
        if isinstance(node, ast.Attribute):
            return "adapter" in node.attr.lower() or _dotted(node) == "ctx.model"
        return False

    def _janus(self, node, name: str) -> None:
        if not self.janus_allowed:
            self.found.append((node.lineno, f"touches Janus internals ({name}); use the adapter's public surface"))

    def visit_Attribute(self, node):
        if node.attr in JANUS_INTERNALS:
            self._janus(node, f".{node.attr}")
        elif _private(node.attr):
            receiver = _dotted(node.value)
            if (node.attr in self.adapter_privates and receiver not in ("self", "cls")) or \
                    self._holds_adapter(node.value):
                self.found.append((node.lineno, f"uses the private adapter member {ast.unparse(node)}"))
        self.generic_visit(node)

    def visit_Name(self, node):  # a class used by name (a local variable may well be called `janus`)
        if node.id in JANUS_CLASSES:
            self._janus(node, node.id)

    def visit_Call(self, node):
        if (_dotted(node.func) in ("getattr", "hasattr", "setattr") and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant) and node.args[1].value in JANUS_INTERNALS):
            self._janus(node, f"{_dotted(node.func)}(..., {node.args[1].value!r})")
        self.generic_visit(node)

    def visit_Import(self, node):
        for alias in node.names:
            if alias.name.startswith("transformers.models.janus"):
                self._janus(node, f"import {alias.name}")

    def visit_ImportFrom(self, node):
        module = node.module or ""
        if module.startswith("transformers.models.janus"):
            self._janus(node, f"from {module} import ...")
        elif module.startswith("transformers"):
            for alias in node.names:
                if alias.name.startswith("Janus"):
                    self._janus(node, f"from {module} import {alias.name}")


def violations(source: str, janus_allowed: bool = False, adapter_privates: set[str] = frozenset()) -> list[str]:
    """'line: message' for every boundary the source crosses."""
    checker = _Checker(janus_allowed, set(adapter_privates))
    checker.visit(ast.parse(source))
    return [f"{line}: {message}" for line, message in sorted(checker.found)]


def _adapter_privates() -> set[str]:
    return adapter_private_members((SRC / ADAPTER_MODULE).read_text())


# ------------------------------------------------------------------------------------------------ the rule
def test_only_the_adapter_touches_janus_internals_and_adapter_privates():
    privates = _adapter_privates()
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel == ADAPTER_MODULE:
            continue
        found += [f"src/ospo/{rel}:{v}" for v in violations(path.read_text(), checkpoint_builder(rel), privates)]
    assert not found, "\n".join(found)


# ------------------------------------------------------------------------------------------------ the checker
def test_the_adapter_privates_are_read_from_the_adapter_module():
    privates = _adapter_privates()
    assert {"_tokenize", "_chat", "_generate_image_batch", "_decode_cache"} <= privates
    assert "image_prompt_ids" not in privates and "__init__" not in privates


FLAGGED = {
    "adapter.janus.save_pretrained(out)": "Janus internals (.janus)",
    "import transformers\ntransformers.JanusForConditionalGeneration": "Janus internals (.JanusForConditional",
    "m = JanusModel(config)": "Janus internals (JanusModel)",
    "def f(m):\n    return m.generation_config.guidance_scale": "Janus internals (.generation_config)",
    "h = model.model.generation_head": "Janus internals (.generation_head)",
    "getattr(m, 'vqmodel')": "Janus internals (getattr(..., 'vqmodel'))",
    "from transformers import JanusForConditionalGeneration": "Janus internals (from transformers import Janus",
    "import transformers.models.janus.modeling_janus": "Janus internals (import transformers.models.janus",
    "from transformers.models.janus.processing_janus import X": "Janus internals (from transformers.models.janus",
    "adapter._tokenize(['a'])": "private adapter member adapter._tokenize",
    "ctx.model._anything": "private adapter member ctx.model._anything",
    "self._adapter[0]._hidden()": "private adapter member self._adapter[0]._hidden",
    "def f(args):\n    model = load_model(args)\n    return model._x": "private adapter member model._x",
    "def f(m: UnifiedModel):\n    return m._y": "private adapter member m._y",
    "def f(m: 'JanusAdapter | None'):\n    return m._y": "private adapter member m._y",
    "def f(p):\n    base = JanusAdapter.from_pretrained(p)\n    g = lambda: base._z\n    return g":
        "private adapter member base._z",
    "def f(x):\n    return x._decode_cache(3)": "private adapter member x._decode_cache",
}

ALLOWED = [
    "import torch\ntorch._C._set_grad_enabled(True)",
    "import numpy as np\nrng = np.random.default_rng(0)\nrng._bit_generator",
    "import os, sys\nsys._getframe(0)\nos._exit",
    "def init(model, module):\n    model._init_weights(module)",  # a torch module, not an adapter
    "def f(args):\n    model = load_model(args)\n\ndef g(model):\n    return model._modules",  # another scope
    "class Layer:\n    def __init__(self):\n        self._k = None\n    def f(self):\n        return self._decode_cache",
    "def f(adapter):\n    return adapter.model.named_parameters(), adapter.__class__, adapter.image_prompt_ids(['a'])",
    "class M:\n    def __init__(self, adapter):\n        self._adapter = [adapter]",
    "def f(x):\n    return x.config.num_hidden_layers, x.language_model_name",
    "def f(janus, lm_head):\n    return janus(lm_head)",  # names of local variables are not attributes
]


def test_the_checker_flags_each_kind_of_crossing():
    privates = {"_decode_cache", "_tokenize"}
    for source, message in FLAGGED.items():
        found = violations(source, adapter_privates=privates)
        assert len(found) == 1 and message in found[0], (source, found)


def test_the_checker_leaves_other_privates_and_the_public_surface_alone():
    for source in ALLOWED:
        assert violations(source, adapter_privates={"_decode_cache", "_tokenize"}) == [], source


def test_checkpoint_builders_may_do_model_surgery_but_not_use_adapter_privates():
    surgery = "model.model.vqmodel.eval()\nfrom transformers import JanusForConditionalGeneration"
    assert violations(surgery, janus_allowed=True) == []
    assert len(violations(surgery)) == 2
    assert violations("adapter._image_prompt_ids(['a'])", janus_allowed=True)
    assert all(checkpoint_builder(p) for p in ("tiny.py", "shapeworld/pretrain/loop.py", "shapeworld/pretrain/lm.py"))
    assert not any(checkpoint_builder(p) for p in ("stages/train.py", "shapeworld/render.py", "training/loop.py",
                                                   "shapeworld/pretrain_speed.py"))
