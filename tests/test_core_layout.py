"""The shape of core/ (issue 21): folders by concern, each importing only the folders below it, no
import cycle (imports inside functions count; only ``if TYPE_CHECKING:`` blocks, which never run,
are left out), and no module in core/ or plugins/ above 400 lines. docs/architecture.md draws it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "core"
#: each folder of core/ (and the top-level modules) and the folders it may import, bottom up
LAYERS = {
    "errors": set(),
    "logs": set(),
    "contract": {"errors"},
    "runs": {"errors", "contract"},
    "models": {"errors", "contract", "runs"},
    "zoo": {"errors", "contract", "runs", "models"},
    "training": {"errors", "contract", "runs", "models", "zoo"},
    "sweep": {"errors", "contract", "runs", "models", "zoo", "training"},
    "recipes": {"errors", "contract", "runs", "models", "zoo", "training", "sweep"},
    "api": {"errors", "contract", "runs", "models", "zoo"},
    "cli": {"errors", "contract", "runs", "models", "zoo", "training", "sweep", "recipes", "api"},
}
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for path in CORE.rglob("*.py"):
        parts = list(path.relative_to(CORE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(["achilles", *parts])] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> dict[str, int]:
    """The core modules ``path`` imports when it runs (anywhere in it), with a line of each."""
    tree = ast.parse(path.read_text())
    type_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                 and getattr(block.test, "id", getattr(block.test, "attr", None)) == "TYPE_CHECKING"
                 for stmt in block.body for n in ast.walk(stmt)}
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            if target in modules:
                found.setdefault(target, node.lineno)
    return found


def _graph() -> dict[str, dict[str, int]]:
    modules = _modules()
    # the package face (achilles/__init__.py) loads its names lazily; core takes only __version__ from it
    return {name: {t: line for t, line in _imports(path, modules).items() if t not in (name, "achilles")}
            for name, path in modules.items() if name != "achilles"}


def test_core_takes_only_the_version_from_the_package_face():
    taken = set()
    for path in CORE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "achilles" and path.name != "__init__.py":
                taken |= {a.name for a in node.names if f"achilles.{a.name}" not in _modules()}
    assert taken <= {"__version__"}, f"core imports {taken - {'__version__'}} through the package face"


def _layer(module: str) -> str:
    return module.split(".")[1]


def test_no_import_cycle_among_core_modules():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert not cycles, f"import cycles among core modules: {cycles}"


def test_each_folder_imports_only_the_folders_below_it():
    wrong = []
    for module, targets in _graph().items():
        layer = _layer(module)
        assert layer in LAYERS, f"{module}: core/{layer} is a folder docs/architecture.md and LAYERS do not know"
        for target, line in targets.items():
            other = _layer(target)
            if other != layer and other not in LAYERS[layer] | {"errors", "logs"}:  # used by every folder
                wrong.append(f"{module} imports {target} (line {line})")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_every_core_folder_says_what_it_owns_and_may_import():
    for folder in sorted(p for p in CORE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()):
        doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text())) or ""
        assert doc, f"core/{folder.name}/__init__.py has no docstring"
        assert "import" in doc, f"core/{folder.name}/__init__.py does not say what the folder may import"
        unnamed = [m.name for m in folder.glob("*.py") if m.name != "__init__.py" and f"``{m.name}``" not in doc]
        assert not unnamed, f"core/{folder.name}/__init__.py does not say what these modules own: {unnamed}"
    layered = {p.name for p in CORE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert layered <= set(LAYERS)


def test_no_two_core_modules_share_a_name():
    """A newcomer never meets two ``results.py``: module names are unique across core/, except the
    command modules of cli/commands/, each named after the command it implements."""
    seen: dict[str, list[str]] = {}
    for p in CORE.rglob("*.py"):
        if p.name != "__init__.py" and p.parent.name != "commands":
            seen.setdefault(p.name, []).append(str(p.relative_to(CORE)))
    twins = {name: paths for name, paths in seen.items() if len(paths) > 1}
    assert not twins, f"modules with the same name in core/: {twins}"


def test_no_module_above_400_lines():
    long = [f"{p.relative_to(ROOT)}: {n}" for folder in ("core", "plugins") for p in (ROOT / folder).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert not long, f"modules above {MAX_LINES} lines: {long}"


def test_the_layering_test_sees_a_cycle_and_a_wrong_import(tmp_path, monkeypatch):
    """The checks above can fail: a module importing upwards (in a function) is found."""
    fake = tmp_path / "core"
    (fake / "contract").mkdir(parents=True)
    (fake / "training").mkdir()
    (fake / "contract" / "a.py").write_text("def f():\n    from achilles.training.b import g\n")
    (fake / "training" / "b.py").write_text("from achilles.contract.a import f\n")
    monkeypatch.setattr(__import__(__name__), "CORE", fake)
    graph = _graph()
    assert graph["achilles.contract.a"] == {"achilles.training.b": 2}
    assert graph["achilles.training.b"] == {"achilles.contract.a": 1}
