"""No import cycle between afictl's modules.

Every module of the package is read with :mod:`ast` (nothing is imported) and each import
becomes an edge of the module graph, by these rules:

- every ``import`` statement counts, at module level or inside a function, a method or an
  ``if TYPE_CHECKING:`` block: an import moved into a function still makes the two modules
  depend on each other, it only hides the cycle from the interpreter;
- relative imports are resolved against the importing module (``from ..models import x`` in
  ``afictl.train.run`` is ``afictl.models``);
- an edge goes to the module named, never to its parent packages: ``from .flops import f`` is
  an edge to ``afictl.profiling.flops``, not to ``afictl.profiling``;
- ``from pkg import name`` is an edge to the submodule ``pkg.name`` when there is one (a
  package ``__init__`` that re-exports submodules with ``from . import x`` therefore has an
  edge to each of them), else to ``pkg`` itself;
- a package ``__init__`` with a lazy map (a module-level ``{"Name": "submodule"}`` dict read by
  a PEP 562 ``__getattr__``) has no edge to the submodules it maps: nothing is imported until a
  name is used. ``from pkg import Name`` elsewhere is then an edge to ``pkg.<submodule>`` that
  the map names for ``Name``, as that is the module the import runs.

The test fails listing every cycle (the modules of each strongly connected component).
"""

from __future__ import annotations

import ast
from pathlib import Path

import afictl

ROOT = Path(afictl.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _lazy_map(tree: ast.Module) -> dict[str, str]:
    """``{"Name": "submodule"}`` of a package whose ``__getattr__`` imports on first use."""
    if not any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in tree.body):
        return {}
    out: dict[str, str] = {}
    for node in tree.body:
        value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
        if isinstance(value, ast.Dict) and value.keys:
            pairs = list(zip(value.keys, value.values, strict=True))
            if all(
                isinstance(k, ast.Constant)
                and isinstance(k.value, str)
                and isinstance(v, ast.Constant)
                and isinstance(v.value, str)
                for k, v in pairs
            ):
                out.update({k.value: v.value.lstrip(".") for k, v in pairs})
    return out


def _read_package() -> tuple[dict[str, ast.Module], dict[str, bool]]:
    trees: dict[str, ast.Module] = {}
    packages: dict[str, bool] = {}
    for path in sorted(ROOT.rglob("*.py")):
        name = _module_name(path)
        trees[name] = ast.parse(path.read_text(), filename=str(path))
        packages[name] = _is_package(path)
    return trees, packages


def _base(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names before its imported names."""
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    if not is_package:
        parts = parts[:-1]  # a plain module's package
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """Module -> the afictl modules it imports, by the rules of this file's docstring."""
    trees, packages = _read_package()
    lazy = {m: _lazy_map(t) for m, t in trees.items() if packages[m]}
    graph: dict[str, set[str]] = {m: set() for m in trees}

    def target(name: str) -> str | None:
        # the deepest afictl module that `name` names (an attribute path stops at its module)
        while name and name not in trees:
            name = name.rpartition(".")[0]
        return name or None

    for module, tree in trees.items():
        edges = graph[module]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "afictl" and (t := target(alias.name)):
                        edges.add(t)
            elif isinstance(node, ast.ImportFrom):
                base = _base(module, packages[module], node)
                if base.split(".")[0] != "afictl":
                    continue
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    if sub in trees:
                        edges.add(sub)
                    elif alias.name in lazy.get(base, {}):
                        edges.add(f"{base}.{lazy[base][alias.name]}")
                    elif t := target(base):
                        edges.add(t)
        edges.discard(module)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_the_graph_sees_relative_function_level_and_lazy_imports():
    graph = import_graph()
    assert len(graph) > 50
    # module level, relative: afictl.profiling.compare imports .flops
    assert "afictl.profiling.flops" in graph["afictl.profiling.compare"]
    # `from . import resnet` in a package __init__ re-exports a submodule: an edge
    assert "afictl.models.resnet" in graph["afictl.models"]
    # a lazy map is no edge by itself
    assert not graph["afictl.train"]


def test_cycles_finds_a_cycle_and_names_its_modules():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def _describe(graph: dict[str, set[str]], component: list[str]) -> str:
    """The modules of one cycle and the imports between them."""
    inside = set(component)
    edges = [f"{a} -> {b}" for a in component for b in sorted(graph[a] & inside)]
    return " <-> ".join(component) + "\n    " + "; ".join(edges)


def test_no_import_cycle_in_afictl():
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles in afictl:\n" + "\n".join(
        _describe(graph, component) for component in found
    )
