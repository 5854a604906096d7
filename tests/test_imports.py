"""The package's import structure: subpackages import only earlier ones in the pipeline and only each other's public
modules, and no modules import each other in a cycle. Imports are read from the source (function-level imports
included, ``if TYPE_CHECKING:`` blocks excluded), so a lazy import that hides a cycle from Python still counts here.

The sanctioned steps by name, which this reader does not see: the layer registry loading ``archsearch.layers``
(``pattern/registry.py``), so that the parser can read the symbols the layer files register, and a layer's
declaration file loading its module ``archsearch.layers.modules.<name>`` when it builds one (the module imports the
declaration for its sizes, as transformers' ``modeling_x`` imports ``configuration_x``).

The modules that ``archsearch pattern``, ``archsearch layers`` and ``--help`` load import no heavy library at module
level (tests/cli/test_startup.py checks the same by running them).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "archsearch"

# Pipeline order: a subpackage may import itself and the ones before it. The top-level package (its version) and
# errors.py come first; __main__ last, with the CLI.
LAYERS = [
    # yamlfile: bounded YAML reading; config_load: the loader
    ["archsearch", "errors", "yamlfile", "config_load"],
    ["stats"],  # statistics of replicates: NumPy only, read by search/ (analysis:) and viz/
    ["pattern"],
    ["layers"],
    ["model"],
    ["cost"],
    ["data"],
    ["train"],
    ["fused"],
    ["search"],
    ["viz"],
    ["export"],
    ["cli", "__main__"],
]


def module_names() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST):
    """Every import statement, at any depth, except those under ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                yield from _import_nodes(ast.Module(body=[child], type_ignores=[]))
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from _import_nodes(node)


def import_graph() -> dict[str, set[str]]:
    """module -> the archsearch modules it imports (a ``from package import name`` counts the submodule when ``name``
    is one, else the package)."""
    modules = module_names()

    def known(name: str) -> str:
        while name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in _import_nodes(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {known(a.name) for a in node.names if a.name.split(".")[0] == "archsearch"}
                continue
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = name if path.name == "__init__.py" else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            if base.split(".")[0] == "archsearch":
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    targets.add(full if full in modules else known(base))
        graph[name] = targets - {name}
    return graph


def subpackage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(component)
    return out


def test_subpackages_import_only_earlier_ones():
    rank = {name: i for i, names in enumerate(LAYERS) for name in names}
    graph = import_graph()
    assert {subpackage(m) for m in graph} <= set(rank), "a new subpackage: give it its place in LAYERS"
    backward = sorted(
        f"{a} -> {b}"
        for a, targets in graph.items()
        for b in targets
        if rank[subpackage(b)] > rank[subpackage(a)]
    )
    assert not backward, "imports against the pipeline order:\n" + "\n".join(backward)


def test_no_subpackage_imports_anothers_private_module():
    private = {
        (a, b)
        for a, targets in import_graph().items()
        for b in targets
        if subpackage(a) != subpackage(b) and b.rpartition(".")[2].startswith("_")
    }
    assert not private, f"import the public API instead: {sorted(private)}"


def test_no_module_import_cycles():
    found = [sorted(c) for c in cycles(import_graph())]
    assert not found, f"import cycles: {found}"


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"a"}, "c": set()}, [{"a", "b"}]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [{"a", "b", "c"}]),
        ({"a": {"b"}, "b": set()}, []),
    ],
)
def test_the_cycle_finder_finds_cycles(graph, expected):
    assert cycles(graph) == expected


# What the parser-building CLI modules, the grammar, the layer declarations and the configs may not import at module
# level (directly or through archsearch modules they import at module level).
HEAVY = {"torch", "lightning", "optuna", "matplotlib", "numpy"}
LIGHT_ROOTS = (
    "archsearch.cli",
    "archsearch.pattern",
    "archsearch.layers",
    "archsearch.model.config",
    "archsearch.model.presets",
    "archsearch.train.config",
)


def _module_level_nodes(tree: ast.AST):
    """Import statements that run when the module is imported: not in functions, not under ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                yield from _module_level_nodes(ast.Module(body=[child], type_ignores=[]))
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from _module_level_nodes(node)


def module_level_imports() -> dict[str, set[str]]:
    """module -> what it imports at module level: archsearch modules (and their parent packages, which run first)
    by full name, other packages by their top-level name."""
    modules = module_names()

    def with_parents(name: str) -> set[str]:
        while name not in modules:
            name = name.rpartition(".")[0]
        parts = name.split(".")
        return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}

    out: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in _module_level_nodes(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif node.level:  # relative
                package = name if path.name == "__init__.py" else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{node.module}" if node.module else package
                names = [f"{base}.{a.name}" for a in node.names] + [base]
            else:
                names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            for full in names:
                targets |= with_parents(full) if full.split(".")[0] == "archsearch" else {full.split(".")[0]}
        out[name] = targets - {name}
    return out


# Files of archsearch/layers/ that are nn.Module code rather than declarations: they import torch, and only the
# modules in layers/modules/ import them.
LAYER_IMPLEMENTATIONS = {
    "archsearch.layers.gdn_ref",
    "archsearch.layers.rope",
    "archsearch.layers.selective_scan_ref",
    "archsearch.layers.ssd_ref",
}


def _light(module: str) -> bool:
    if not any(module == r or module.startswith(r + ".") for r in LIGHT_ROOTS):
        return False
    return not module.startswith("archsearch.layers.modules.") and module not in LAYER_IMPLEMENTATIONS


def test_the_light_modules_import_no_heavy_library_at_module_level():
    graph = module_level_imports()
    modules = module_names()
    via: dict[str, str | None] = {m: None for m in ["archsearch", *filter(_light, modules)]}
    queue = list(via)
    found = []
    while queue:  # breadth-first, remembering how each module was reached
        module = queue.pop(0)
        for target in sorted(graph.get(module, ())):
            if target in HEAVY:
                chain = [module]
                while via[chain[-1]] is not None:
                    chain.append(via[chain[-1]])
                found.append(f"{target} <- " + " <- ".join(chain))
            elif target in modules and target not in via:
                via[target] = module
                queue.append(target)
    assert not found, "heavy imports at module level:\n" + "\n".join(found)


def test_the_heavy_import_check_sees_a_chain():
    graph = module_level_imports()
    assert "torch" in graph["archsearch.layers.modules.attention"]
    assert "archsearch.layers.modules" in graph["archsearch.layers.attention"]  # the helper, not the module
    assert "archsearch.layers.modules.attention" not in graph["archsearch.layers.attention"]
    assert "archsearch.viz" in graph["archsearch.export.source"] and "numpy" not in graph["archsearch.viz"]


def test_the_reader_sees_lazy_imports_and_skips_type_checking_ones():
    graph = import_graph()
    assert "archsearch.search.suggest" in graph["archsearch.export.source"]  # imported inside a function
    assert "archsearch.model.config" not in graph["archsearch.pattern.registry"]  # only for type checkers
    assert (
        "archsearch.layers.mamba2" in graph["archsearch.export.mamba_ssm"]
    )  # from archsearch.layers import ...
