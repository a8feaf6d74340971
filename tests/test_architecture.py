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
    assert "cnnkit.apps" not in graph["cnnkit.serving"], "applications plug into the server through its hooks"


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
    "from cnnkit.rundir import RunDir",  # manifests and checksums, for the torch-free side too
    "from cnnkit.serving.app import create_app; from cnnkit.serving.main import build_repository; "
    "from cnnkit.config import ServeConfig; import sys; "
    "config = ServeConfig(paths=(sys.argv[1],)); create_app(build_repository(config), config)",
])
def test_the_server_and_the_package_root_do_not_import_torch(code: str, exported_run: Path) -> None:
    probe = f"{code}\nimport sys\nassert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)"
    result = subprocess.run([sys.executable, "-c", probe, str(exported_run)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr


SERVING_PROBE = """
import json, sys, tempfile
from pathlib import Path
from PIL import Image
from cnnkit.cli import main
from cnnkit.config import ServeConfig
from cnnkit.serving.app import create_app
from cnnkit.serving.main import build_repository, serve
import cnnkit.apps.phishing.serving, cnnkit.serving.http, cnnkit.serving.memory
export = Path(sys.argv[1]) / "export"
config = ServeConfig(paths=(str(export),))
create_app(build_repository(config), config)
folder = Path(tempfile.mkdtemp())
Image.new("RGB", (40, 40), "red").save(folder / "red.png")
assert main(["predict", str(export), str(folder / "red.png")]) == 0
assert main(["predict", str(export), str(folder), "--csv", str(folder / "out.csv")]) == 0
print(json.dumps(sorted(sys.modules)))
"""


def _third_party(name: str) -> str | None:
    top = name.split(".")[0]
    return None if top in sys.stdlib_module_names or top == "cnnkit" else top


def _with_dependencies(requirements: list[str]) -> set[str]:
    """The distributions that installing `requirements` brings, by canonical name (extras and markers honoured)."""
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found: set[str] = set()
    seen: set[tuple[str, frozenset[str]]] = set()
    pending = [(line, frozenset[str]()) for line in requirements]  # a requirement, and its parent's extras
    while pending:
        line, parent_extras = pending.pop()
        requirement = Requirement(line)
        if requirement.marker is not None and not any(
                requirement.marker.evaluate({"extra": extra}) for extra in parent_extras or {""}):
            continue
        name, extras = canonicalize_name(requirement.name), frozenset(requirement.extras)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        found.add(name)
        try:
            pending += [(dependency, extras) for dependency in requires(name) or []]
        except PackageNotFoundError:
            continue
    return found


def test_the_serving_image_installs_every_package_serving_imports(exported_run: Path) -> None:
    """docker/requirements-serve.txt against the packages that cnnkit's code imports in a process that sets up the
    server and predicts with an export (what the torch-free image runs): a package missing there breaks the image.
    What those packages import in turn, pip installs with them."""
    import json
    from importlib.metadata import packages_distributions

    from packaging.utils import canonicalize_name

    result = subprocess.run([sys.executable, "-c", SERVING_PROBE, str(exported_run)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    loaded = {_third_party(m) for m in json.loads(result.stdout.strip().splitlines()[-1])} - {None}
    assert "torch" not in loaded
    ours = set()  # every package cnnkit's code imports somewhere, at module level or inside a function
    for tree in _modules().values():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                ours |= {_third_party(a.name) for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                ours.add(_third_party(node.module))
    owners = packages_distributions()
    needed = {canonicalize_name(d) for top in loaded & ours for d in owners.get(top, [top])}
    lines = (PACKAGE.parent / "docker" / "requirements-serve.txt").read_text().splitlines()
    installed = _with_dependencies([line.split("#")[0] for line in lines if line.split("#")[0].strip()])
    assert {"numpy", "onnxruntime", "fastapi", "uvicorn", "tqdm"} <= needed  # the probe saw serving's imports
    assert needed <= installed, sorted(needed - installed)
    assert "torch" not in installed
