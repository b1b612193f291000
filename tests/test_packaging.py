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
SOURCES = ("core", "plugins", "cards", "registry", "examples/reports")  # examples/reports: package data (achilles.reports)


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


def test_torch_is_a_range_and_the_tested_build_a_constraint():
    """pyproject declares the torch versions the code works with; constraints.txt pins the CPU build
    the project is tested with, inside that range, and both README quick-start commands use it."""
    base = {canonical(Requirement(r).name): Requirement(r).specifier for r in requires("achilles")
            if "extra ==" not in r}
    torch = base["torch"]
    assert "2.4.0" in torch and "2.13.0" in torch and "3.0.0" not in torch
    for name in ("huggingface-hub", "httpx2"):  # capped below the next major version
        assert "2.99" in base[name] and "3.0.0" not in base[name] and "1.99" not in base[name]
    pins = [Requirement(line) for line in (ROOT / "constraints.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    torch_pin = next(p for p in pins if canonical(p.name) == "torch")
    assert str(torch_pin.specifier).startswith("==")
    assert str(torch_pin.specifier)[2:] in torch  # the tested build lies inside the declared range
    readme = (ROOT / "README.md").read_text()
    quick_start = [line for line in readme.splitlines() if line.startswith("python3.11 -m venv .venv && ")]
    assert len(quick_start) == 2 and all(" -c constraints.txt " in line for line in quick_start)


def test_optional_writers_and_python_classifiers():
    deps = declared()
    assert deps["wandb"] == {"wandb", "test"} and deps["tensorboard"] == {"tensorboard", "test"}
    from importlib.metadata import metadata

    meta = metadata("achilles")
    versions = {c.rsplit(":: ", 1)[1] for c in meta.get_all("Classifier") if c.startswith("Programming Language :: Python :: 3.")}
    assert versions and all(tuple(map(int, v.split("."))) >= (3, 10) for v in versions)
    assert "3.11" in versions  # CI's Python; requires-python's floor stays below what is listed
    assert meta["Requires-Python"] == ">=3.10"


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
    assert "achilles/py.typed" in names  # PEP 561
    metadata = zipfile.ZipFile(wheel).read("achilles-0.1.0.dist-info/METADATA").decode()
    assert "License-Expression: MIT" in metadata and "achilles-0.1.0.dist-info/licenses/LICENSE" in names
