"""Core knows the first-party plugins only through their declarations: its code imports no plugin
and spells no first-party task, probe or capability name, so adding a task or a probe touches the
plugin and its test, never core."""

import ast
from pathlib import Path

import achilles
from achilles.contract.loader import get_state

CORE = Path(achilles.__file__).resolve().parent


def code_strings(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, value) of the string constants in ``tree`` that are not docstrings."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def first_party_names() -> set[str]:
    registered = {name for plugin in ("tasks", "probes")
                  for names in get_state().plugins[plugin].registered.values() for name in names}
    capabilities = {c for name in achilles.list_tasks() for c in achilles.get_task(name).capabilities}
    return registered | capabilities


def core_modules() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


def test_core_spells_no_first_party_task_probe_or_capability():
    names = first_party_names()
    assert {"composite", "blocking", "pair_shift"} <= names  # the check looks for real names
    found = [f"{path.relative_to(CORE)}:{line}: {value!r}" for path in core_modules()
             for line, value in code_strings(ast.parse(path.read_text())) if value in names]
    assert not found, "core names first-party plugins:\n" + "\n".join(found)


def test_core_imports_no_plugin():
    found = []
    for path in core_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            modules = ([a.name for a in node.names] if isinstance(node, ast.Import)
                       else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.relative_to(CORE)}:{node.lineno}: {m}" for m in modules if "plugins" in m.split(".")]
    assert not found, "core imports plugins:\n" + "\n".join(found)


def test_the_check_sees_a_name_in_code_but_not_in_a_docstring():
    tree = ast.parse('"""composite in a docstring."""\nTASKS = ("composite",)\n')
    assert code_strings(tree) == [(2, "composite")]
