"""The package's layering: config → flavors → backends → kernels, with no import cycles.

Read from the source (every ``import`` statement, module level or inside a
function), so a cycle hidden in a function body counts too.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

SRC = pathlib.Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "rmsprop"


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: pathlib.Path) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) for each import statement of ours in ``path``."""
    found = []
    package = module_name(path)
    package = package if path.name == "__init__.py" else package.rpartition(".")[0]
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names if alias.name.startswith("rmsprop")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            if base.startswith("rmsprop"):
                found.append((base, [alias.name for alias in node.names]))
    return found


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node but those under ``if TYPE_CHECKING:`` (annotations only: never run) and in a
    module's ``__getattr__`` (the aliases of moved names, imported only when asked for)."""
    found, todo = [], [tree]
    while todo:
        node = todo.pop()
        found.append(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                todo += child.orelse
            elif not (isinstance(child, ast.FunctionDef) and child.name == "__getattr__"):
                todo.append(child)
    return found


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def edges() -> dict[str, set[str]]:
    """Module → the modules of ours it imports (a name that is a submodule counts as it)."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for target, names in imports(path):
            for taken in names or [""]:
                sub = f"{target}.{taken}"
                graph[name].add(sub if sub in MODULES else target)
    return graph


def test_there_are_no_import_cycles():
    graph = edges()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt == node or nxt not in graph:
                continue
            # A package's __init__ may import its own submodules (its public names).
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_no_private_name_is_imported_across_modules():
    crossing = [
        f"{name} takes {taken} from {target}"
        for name, path in MODULES.items()
        for target, names in imports(path)
        for taken in names
        if taken.startswith("_") and f"{target}.{taken}" not in MODULES
    ]
    assert crossing == []


# Layers, bottom up: a module may import only from its own layer or below.
LAYERS = [
    ("core", ["rmsprop._config", "rmsprop._not_given", "rmsprop._versions", "rmsprop._lowering"]),
    ("flavors", ["rmsprop.flavors", "rmsprop.translation"]),
    ("kernels", ["rmsprop.kernels"]),
    ("backends", ["rmsprop.numpy", "rmsprop.quantization", "rmsprop.jax", "rmsprop.torch"]),
    ("package", ["rmsprop"]),
    ("tools", ["rmsprop.benchmark", "rmsprop.cli", "rmsprop.__main__"]),
]


def layer_of(module: str) -> int:
    best, depth = -1, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > depth:
                best, depth = index, len(prefix)
    assert best >= 0, f"{module} is in no layer"
    return best


def test_each_module_imports_only_its_layer_and_below():
    upward = [
        f"{name} ({LAYERS[layer_of(name)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for name, targets in edges().items()
        for target in targets
        if target in MODULES and layer_of(target) > layer_of(name)
    ]
    assert upward == []


def test_the_kernels_import_no_framework():
    for name, path in MODULES.items():
        if name.startswith("rmsprop.kernels"):
            source = path.read_text()
            for framework in ("torch", "jax", "tensorflow"):
                assert f"import {framework}" not in source, f"{name} imports {framework}"


def test_the_rule_is_written_once_and_inserted_where_a_docstring_states_it():
    from rmsprop._config import RULE, Config

    distinctive = "v̂, m̂ ← v/(1 - ρᵗ), m/(1 - ρᵗ)"
    assert distinctive in RULE
    holders = [name for name, path in MODULES.items() if distinctive in path.read_text()]
    assert holders == ["rmsprop._config"]
    assert RULE.splitlines()[0] in (Config.__doc__ or "")
    # Each line of the rule, indented as the docstring's block (with_rule's work).
    assert "        " + RULE.splitlines()[-1] in (Config.__doc__ or "")
    jax = pytest.importorskip("rmsprop.jax", reason="the jax backend needs the jax extra")
    assert "        " + RULE.splitlines()[-1] in (jax.rmsprop.__doc__ or "")
    triton = pytest.importorskip("rmsprop.kernels.triton")
    assert "    " + RULE.splitlines()[-1] in (triton.__doc__ or "")


def test_moved_public_names_still_import_from_their_old_module():
    import rmsprop.tables
    import rmsprop.translation

    for name in ("translation_table", "flavor_details"):
        with pytest.warns(DeprecationWarning, match=f"rmsprop.tables.{name}"):
            assert getattr(rmsprop.translation, name) is getattr(rmsprop.tables, name)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        rmsprop.translation.nothing  # noqa: B018
