"""The architecture's rules, checked: dependencies point one way, small signatures, a torch-free server."""

import ast
import functools
import subprocess
import sys
from pathlib import Path

import pytest

import cnnkit

PACKAGE = Path(cnnkit.__file__).parent
MAX_PARAMETERS = 8


@functools.cache
def _modules() -> dict[str, ast.Module]:
    return {".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts): ast.parse(path.read_text())
            for path in PACKAGE.rglob("*.py")}


def _unit(module: str) -> str:
    """The architectural unit of a module: its subpackage (cnnkit.training), or the top-level module itself."""
    parts = module.split(".")
    return ".".join(parts[:2]).removesuffix(".__init__")


def import_graph() -> dict[str, set[str]]:
    """Unit -> the units it imports, counting imports inside functions too (a lazy import is still a dependency)."""
    graph: dict[str, set[str]] = {}
    for name, tree in _modules().items():
        source = _unit(name)
        targets = graph.setdefault(source, set())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cnnkit"):
                modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                targets |= {_unit(m) for m in modules if m in _modules_names()} or {_unit(node.module)}
            elif isinstance(node, ast.Import):
                targets |= {_unit(a.name) for a in node.names if a.name.startswith("cnnkit")}
        targets.discard(source)
        targets.discard("cnnkit")
    return graph


@functools.cache
def _modules_names() -> set[str]:
    names = set(_modules())
    return names | {n.removesuffix(".__init__") for n in names}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_package_import_graph_has_no_cycle() -> None:
    graph = import_graph()
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_dependencies_point_one_way() -> None:
    graph = import_graph()
    assert "cnnkit.training" not in graph["cnnkit.evaluate"] | graph["cnnkit.runtime"] | graph["cnnkit.deploy"]
    assert "cnnkit.evaluate" not in graph["cnnkit.runtime"]
    assert {"cnnkit.training", "cnnkit.evaluate", "cnnkit.models"}.isdisjoint(graph["cnnkit.serving"])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_function_takes_more_than_eight_parameters() -> None:
    offenders = []
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args
                params = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs if a.arg not in ("self", "cls")]
                if len(params) > MAX_PARAMETERS:
                    offenders.append(f"{name}.{node.name} ({len(params)})")
    assert not offenders


@pytest.mark.parametrize("code", [
    "import cnnkit",
    "import cnnkit.cli",
    "from cnnkit.serving.app import create_app; from cnnkit.serving.main import build_repository; "
    "from cnnkit.config import ServeConfig; import sys; "
    "config = ServeConfig(paths=(sys.argv[1],)); create_app(build_repository(config), config)",
])
def test_the_server_and_the_package_root_do_not_import_torch(code: str, exported_run: Path) -> None:
    probe = f"{code}\nimport sys\nassert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)"
    result = subprocess.run([sys.executable, "-c", probe, str(exported_run)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
