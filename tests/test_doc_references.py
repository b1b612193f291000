"""Every Markdown file the code and the docs cite is in the repository (a docstring once cited a
``TASKS.md`` that was not)."""

import functools
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("core", "plugins", "cards", "tests", "benchmarks", "examples")
#: a cited Markdown file: an optional relative folder path, then NAME.md
REFERENCE = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.md)\b")


def cited_files() -> list[Path]:
    files = [p for folder in SOURCES for p in (ROOT / folder).rglob("*.py") if p != Path(__file__).resolve()]
    return files + [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]


@functools.cache
def markdown_names() -> frozenset[str]:
    """Names of the repository's Markdown files (virtual environments and git data left out)."""
    names = set()
    for folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = [d for d in subfolders if not d.startswith(".") and not d.endswith(".egg-info")]
        names.update(f for f in files if f.endswith(".md"))
    return frozenset(names)


def missing_references(text: str, where: Path) -> list[str]:
    """The Markdown paths cited in ``text`` (from the file ``where``) that name no repository file.
    A path with a folder counts when the folder is one of the repository's (``docs/x.md``) or
    relative (``../x.md``); ``runs/NAME/README.md`` names a run folder's file, not a source."""
    top = {p.name for p in ROOT.iterdir() if p.is_dir()} | {"docs"}
    names = markdown_names()
    missing = []
    for cited in REFERENCE.findall(text):
        first = cited.split("/")[0]
        if "/" not in cited:
            found = cited in names
        elif first in ("..", "."):
            found = (where.parent / cited).exists()
        elif first in top:
            found = (ROOT / cited).exists() or (where.parent / cited).exists()
        else:
            continue
        if not found:
            missing.append(cited)
    return missing


def test_every_cited_markdown_file_exists():
    problems = [f"{path.relative_to(ROOT)}: {cited}" for path in cited_files()
                for cited in missing_references(path.read_text(encoding="utf-8"), path)]
    assert not problems, "cited files that are not in the repository:\n" + "\n".join(problems)


def test_the_check_catches_a_missing_file():
    where = ROOT / "plugins" / "tasks" / "composite.py"
    assert missing_references('"""Defined in TASKS.md and docs/tasks.md."""', where) == ["TASKS.md"]
    assert missing_references("see docs/nowhere.md, runs/x/README.md, ../../README.md", where) == [
        "docs/nowhere.md"]  # a run folder's card is no citation; ../../README.md is the repository's
    assert missing_references("../../README.md", ROOT / "core" / "api.py") == ["../../README.md"]
