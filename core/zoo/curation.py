"""Curating the zoo: add a run to the index (bundled inside the package and/or already on the
Hub) and publish the bundled entries, pinning each one's Hub commit (``achilles zoo add|publish``).

The index file is rewritten atomically after each change, so it is always a consistent index:
an interrupted ``publish`` leaves every entry either published and pinned or untouched.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from achilles.errors import CheckpointError
from achilles.runs.layout import INIT_WEIGHTS, WEIGHTS
from achilles.runs.folder import RunFolder
from achilles.runs.files import file_sha256
from achilles.zoo.index import (COMMIT, BUNDLE_DIR, MAX_REPO_NAME, ZooEntry, check_zoo_id, first_party_entries,
                                registry_path, suggest_zoo_id, write_entry, zoo_index)
from achilles.zoo.pull import verified_bundle


#: In a bundle folder: the files ``zoo add`` wrote there (all an interrupted add may remove later)
BUNDLE_MARKER = ".achilles-bundle"


# -- adding entries -----------------------------------------------------------------------
def _budget(training: dict[str, Any]) -> dict[str, Any] | None:
    keys = ("epochs", "train_samples", "batch_size", "lr_peak")
    budget = {k: training[k] for k in keys if training.get(k) is not None}
    return budget or None


def entry_from_run(run_dir: str | Path, zoo_id: str | None = None, **where: Any) -> ZooEntry:
    """The index entry describing a local run; ``where`` gives repo_id/revision and/or bundled."""
    from achilles.contract.declarations import task_variant

    run = RunFolder(run_dir)
    config = run.read_config()
    if config.get("status") != "finished":
        raise CheckpointError(f"{run.path} is not a finished run (status {config.get('status')!r}); only finished "
                              "runs enter the zoo")
    if not (run.path / WEIGHTS).is_file():
        raise CheckpointError(f"{run.path} has no {WEIGHTS}")
    sha = file_sha256(run.path / WEIGHTS)
    if sha != config.get("weights_sha256"):
        raise CheckpointError(f"{run.path}/{WEIGHTS} does not match the sha256 recorded in its run record; "
                              "an entry must describe the weights as recorded")
    headline = dict(config.get("headline") or {}) or None
    if headline and isinstance(headline.get("value"), float):
        headline["value"] = round(headline["value"], 4)  # float32 noise is not information
    metric = (headline or {}).get("metric")
    metrics = {split: round(values[metric], 4) for split, values in (config.get("final_metrics") or {}).items()
               if split != "train" and isinstance(values, dict) and isinstance(values.get(metric), (int, float))}
    training = config.get("training") or {}
    return ZooEntry(id=zoo_id or suggest_zoo_id(config), sha256=sha, arch=config.get("arch"),
                    task=config.get("task"), variant=task_variant(str(config.get("task")), config.get("task_config")),
                    seed=config.get("seed"), profile=training.get("profile"), budget=_budget(training),
                    headline=headline, metrics=metrics or None, added=_dt.date.today().isoformat(), **where)


def add_entry(run_dir: str | Path, repo_id: str | None = None, revision: str | None = None, *,
              bundle: bool = False, zoo_id: str | None = None, sha256: str | None = None, verify: bool = True,
              report: str | None = None, with_init: bool = False) -> ZooEntry:
    """Add the entry of a run to the index file and return it.

    ``bundle``: copy the finished run into ``bundled/<id>/`` beside the index (shipped with the
    package; ``achilles zoo publish`` pushes it later). ``repo_id``/``revision``: the run is
    already published there; ``revision`` may be a branch or tag and is pinned to its commit,
    and ``verify`` downloads the published weights to check they are the local ones.
    ``sha256``, if given, must equal the weights' hash (a guard against the wrong run)."""
    from achilles.models.hub_refs import HubRef, check_repo_id
    from achilles.zoo.hub import download_run, publish_problems, resolve_revision

    if not bundle and not repo_id:
        raise CheckpointError("say where the weights are: --bundle (ship them with achilles) and/or "
                              "--repo-id ORG/NAME --revision COMMIT (already published)")
    if bool(repo_id) != bool(revision):
        raise CheckpointError("--repo-id and --revision go together")
    if zoo_id is not None:
        check_zoo_id(zoo_id)
    run = RunFolder(run_dir)
    config = run.read_config()
    if bundle:
        problems = publish_problems(run, config)
        if problems:
            raise CheckpointError(f"refusing to bundle {run.path}: {'; '.join(problems)}")
    if report is not None:
        report = _check_report(report)
    where: dict[str, Any] = {}
    if repo_id:
        check_repo_id(repo_id)
        if not COMMIT.match(revision):
            if not verify:
                raise CheckpointError(f"revision {revision!r} is not a commit hash; pass the 40-hex commit "
                                      "(it is printed by `achilles push`) or let achilles resolve it (drop --no-verify)")
            revision = resolve_revision(HubRef(repo_id, revision))
        where.update(repo_id=repo_id, revision=revision, published=_dt.date.today().isoformat())
    entry = entry_from_run(run.path, zoo_id, report=report, **where)
    if sha256 is not None and sha256.lower() != entry.sha256:
        raise CheckpointError(f"--sha256 {sha256[:12]}… is not the sha256 of {run_dir}/{WEIGHTS} "
                              f"({entry.sha256[:12]}…)")
    path = registry_path()
    if entry.id in zoo_index().entries:
        raise CheckpointError(f"zoo id {entry.id!r} is already listed; choose another with --id or edit {path}")
    if repo_id and verify:
        published = file_sha256(download_run(entry.hub_ref) / WEIGHTS)
        if published != entry.sha256:
            raise CheckpointError(f"the weights at {entry.hub_ref} (sha256 {published[:12]}…) are not the ones in "
                                  f"{run_dir} ({entry.sha256[:12]}…); push the run first or pick its commit")
    if bundle:
        folder = f"{BUNDLE_DIR}/{entry.id}"
        bundle_run(run.path, path.parent / folder, entry.id, report=report, with_init=with_init)
        entry = replace(entry, bundled=folder)
    write_entry(entry, path)
    return entry


def _check_report(report: str) -> str:
    """A report is a URL or an existing file, recorded as a path relative to the current folder."""
    if "://" in report:
        return report
    path = Path(report).expanduser()
    if not path.is_file():
        raise CheckpointError(f"--report {report}: no such file")
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def bundle_run(run_dir: Path, target: Path, zoo_id: str, *, report: str | None = None,
               with_init: bool = False) -> Path:
    """Copy a run into ``target`` in the current layout: record, weights (re-hashed after the
    copy), metrics, figures, probe outputs and a card rendered for ``zoo_id``. Written into a
    temporary folder and renamed, so ``target`` is complete or absent."""
    from achilles.zoo.hub import run_files
    from achilles.zoo.card import write_card

    run = RunFolder(run_dir)
    expected = run.read_config()["weights_sha256"]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        for name, data in run.export_record().items():
            (tmp / name).write_bytes(data)
        for name in run_files(run.path):
            if name == INIT_WEIGHTS and not with_init:
                continue
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run.path / name, tmp / name)
        copied = file_sha256(tmp / WEIGHTS)
        if copied != expected:
            raise CheckpointError(f"copying {run.path / WEIGHTS} gave sha256 {copied}, not the recorded {expected}")
        write_card(tmp, zoo_id=zoo_id, report=report)
        written = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        (tmp / BUNDLE_MARKER).write_text(json.dumps(written) + "\n")  # what zoo add wrote: all it may remove
        if os.path.lexists(target):  # an orphan of an interrupted add: only what zoo add wrote goes
            remove_orphan_bundle(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def remove_orphan_bundle(target: Path) -> None:
    """Remove a bundle folder that is not in the index (left by an interrupted ``zoo add``): only the
    files its marker lists as written by zoo add, then the folders they leave empty. A folder
    without the marker, a link, or one holding anything else is the user's: refused, untouched."""
    marker = target / BUNDLE_MARKER
    if target.is_symlink() or not target.is_dir() or marker.is_symlink() or not marker.is_file():
        raise CheckpointError(f"{target} exists and was not written by `achilles zoo add` (no {BUNDLE_MARKER}); "
                              "move it away, or choose another --id")
    try:
        listed = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        listed = None
    if not isinstance(listed, list) or not all(isinstance(n, str) for n in listed):
        raise CheckpointError(f"{marker} is not a list of files; move {target} away, or choose another --id")
    ours = {name for name in listed if ".." not in Path(name).parts and not Path(name).is_absolute()}
    others = sorted(p.relative_to(target).as_posix() for p in target.rglob("*")
                    if not p.is_dir() or p.is_symlink())
    others = [name for name in others if name not in ours and name != BUNDLE_MARKER]
    if others:
        raise CheckpointError(f"{target} holds files `achilles zoo add` did not write ({', '.join(others[:4])}); "
                              "move them away, or choose another --id")
    shutil.rmtree(target)  # only zoo add's own files are left in it (checked above)


def bundled_size(entries: list[ZooEntry] | None = None) -> int:
    """Bytes of every bundled folder of the first-party index."""
    total = 0
    for entry in entries if entries is not None else first_party_entries().values():
        folder = entry.bundle_path()
        if folder is not None and folder.is_dir():
            total += sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return total


# -- publishing ---------------------------------------------------------------------------
@dataclass
class PublishReport:
    published: list[ZooEntry]
    skipped: list[str]  # ids already published


def publish(org: str, *, private: bool = False, token: str | None = None,
            log: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> PublishReport:
    """Push every bundled, unpublished first-party entry to ``ORG/<zoo id>`` and pin the commit.

    The index is rewritten (atomically) after each entry, so a failure half-way leaves every
    entry either published and pinned or untouched; running it again publishes the rest."""
    from achilles.models.hub_refs import check_repo_id, is_offline
    from achilles.zoo.hub import commit_upload, has_token, run_upload
    from achilles.zoo.card import render_card

    path = registry_path()
    entries = first_party_entries(path)
    todo = [e for e in entries.values() if not e.is_published and e.bundled]
    skipped = [e.id for e in entries.values() if e.is_published]
    if not todo:
        return PublishReport([], skipped)
    if is_offline():
        raise CheckpointError("cannot publish: HF_HUB_OFFLINE is set, so the Hub is not contacted; nothing changed")
    if not has_token(token):
        raise CheckpointError("cannot publish without a Hub token: set HF_TOKEN or run `hf auth login`; "
                              "nothing changed")
    for entry in todo:
        check_repo_id(f"{org}/{entry.id}")
        if len(entry.id) > MAX_REPO_NAME:
            raise CheckpointError(f"zoo id {entry.id!r} is longer than a Hub repository name may be "
                                  f"({MAX_REPO_NAME}); nothing changed")
    done: list[ZooEntry] = []
    for entry in todo:
        repo_id = f"{org}/{entry.id}"
        try:
            folder = verified_bundle(entry)
            upload = run_upload(folder, render_card(folder, repo_id=repo_id, zoo_id=entry.id,
                                                    report=entry.report).encode())
            _, oid = commit_upload(repo_id, upload, private=private, token=token,
                                   message=f"achilles zoo: {entry.id} ({entry.profile or '?'} profile)")
        except CheckpointError as exc:
            state = (f"{len(done)} of {len(todo)} published and pinned before it ({', '.join(e.id for e in done)}); "
                     "run it again to publish the rest" if done else "nothing changed")
            raise CheckpointError(f"publishing {entry.id} failed: {exc}; {state}") from None
        pinned = replace(entry, repo_id=repo_id, revision=oid, published=_dt.date.today().isoformat())
        write_entry(pinned, path)
        done.append(pinned)
        log(f"published {entry.id} -> hf-hub:{repo_id}@{oid}")
    return PublishReport(done, skipped)
