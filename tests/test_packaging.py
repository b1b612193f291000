"""Packaging: what the package declares and ships, and the README's commands that depend on it."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import packages_distributions, requires
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("core", "plugins", "cards", "registry")


def declared() -> dict[str, set[str]]:
    """Distribution name -> the extras that declare it ("" for the base dependencies)."""
    out: dict[str, set[str]] = {}
    for line in requires("achilles") or []:
        req = Requirement(line)
        extra = re.search(r'extra == "([^"]+)"', str(req.marker)) if req.marker else None
        out.setdefault(canonical(req.name), set()).add(extra.group(1) if extra else "")
    return out


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_modules() -> set[str]:
    names = set()
    for folder in SOURCES:
        for source in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(source.read_text())
            names |= {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            names |= {n.module.split(".")[0] for n in ast.walk(tree)
                      if isinstance(n, ast.ImportFrom) and n.module and not n.level}
    return names - set(sys.stdlib_module_names) - {"achilles", "__future__"}


def test_every_imported_package_is_declared():
    dists = packages_distributions()
    deps = declared()
    for module in sorted(imported_modules()):
        dist = canonical((dists.get(module) or [module])[0])
        assert dist in deps, f"achilles imports {module!r} but does not declare {dist!r}"
    assert deps["huggingface-hub"] == {""} and deps["httpx2"] == {""}
    assert "" not in deps["ray"] and "test" not in deps["ray"]  # Ray has its own extra
    for gpu_only in ("mamba-ssm", "causal-conv1d", "flash-attn"):
        assert deps[gpu_only] == {"cuda"}


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = next(line for line in ci.splitlines() if "pytest" in line and "pip install" in line)
    assert f"\n{command}\n" in readme


def test_readme_lists_every_dependency_for_another_torch():
    readme = (ROOT / "README.md").read_text()
    line = next(line for line in readme.splitlines() if line.strip().startswith('pip install "pluggy'))
    listed = {canonical(Requirement(r).name): r for r in re.findall(r'"([^"]+)"', line)}
    base = {canonical(Requirement(r).name): str(Requirement(r).specifier)
            for r in requires("achilles") if "extra ==" not in r}
    assert base.pop("torch") == "==2.13.0"
    assert {name: str(Requirement(r).specifier) for name, r in listed.items()} == base


def test_a_wheel_ships_the_bundled_checkpoints(tmp_path):
    """Built as `pip install .` builds it: the zoo's bundled run folders are package data."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    for folder in SOURCES:
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    bundle = src / "registry" / "bundled" / "some-id"
    (bundle / "probes" / "blocking").mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "run.json", "model.safetensors", "README.md", "metrics.jsonl",
                 "training_curves.png", "probes/blocking/blocking.json"):
        (bundle / name).write_bytes(b"x")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, capture_output=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("achilles-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n.removeprefix("achilles/registry/bundled/some-id/") for n in names
               if n.startswith("achilles/registry/bundled/some-id/")}
    assert shipped == {"config.json", "run.json", "model.safetensors", "README.md", "metrics.jsonl",
                       "training_curves.png", "probes/blocking/blocking.json"}
    assert "achilles/registry/zoo.json" in names and "achilles/cards/model_card.md" in names
    metadata = zipfile.ZipFile(wheel).read("achilles-0.1.0.dist-info/METADATA").decode()
    assert "License-Expression: MIT" in metadata and "achilles-0.1.0.dist-info/licenses/LICENSE" in names
