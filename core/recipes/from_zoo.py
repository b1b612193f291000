"""``reproduce`` starts from the zoo: a recipe's run that is a bundled zoo entry is copied, not
trained again.

A cell of a recipe's sweep matches a bundled entry only when everything that defines the run is
the same: architecture, task, seed and profile (the index), then, from the bundle's run record,
every model setting, every task setting and every training setting as the trainer would resolve
them for that cell (the data seed and the precision included), a finished status, and the sha256
of the weights equal to the one the index pins. Anything else (another data seed, another
budget, another setting) trains as usual.

``zoo_cells`` tells a plan (``reproduce --dry-run``) which pending cells the zoo covers, without
writing anything; ``adopt`` copies those bundles (never a link: the report links written into
the run record later go to the copy, not the shipped package) into the run store's cell folders,
after checking the bundle's weights against the index, before the sweep trains what is left.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from achilles.errors import AchillesError, CheckpointError
from achilles.runs.layout import WEIGHTS
from achilles.runs.folder import RunFolder
from achilles.runs.files import file_sha256

log = logging.getLogger("achilles.recipes")

#: what a bundle holds that a run folder of the store does not need (zoo add's own list of files)
_NOT_COPIED = (".achilles-bundle",)


def _normal(value: Any) -> Any:
    """``value`` as a run record stores it (JSON: tuples are lists)."""
    return json.loads(json.dumps(value, default=str))


def expected_record(spec, cell, device: str = "auto") -> dict[str, Any]:
    """The model, task and training settings the trainer would record for ``cell`` of ``spec``
    (nothing is trained; the model is built once to resolve its settings)."""
    from achilles.contract.lookup import registry
    from achilles.training.precision import default_precision
    from achilles.training.profiles import settings_for
    from achilles.training.trainer import build_task_and_model, resolve_device

    task_defaults = getattr(registry("task").get(spec.task).factory, "training_defaults", {})
    settings = settings_for(spec.profile, task_defaults, **dict(cell.settings)).resolved(cell.seed)
    training = settings.to_dict()
    if training.get("precision") is None:  # the device's default, as start_run resolves it
        training["precision"] = default_precision(spec.profile, resolve_device(device))
    _, _, model, task = build_task_and_model(spec.arch, spec.task, dict(cell.model_config), dict(cell.task_config),
                                             cell.seed)
    return _normal({"arch": spec.arch, "task": spec.task, "seed": cell.seed, "model": model, "task_config": task,
                    "training": training})


def recorded(config: dict[str, Any]) -> dict[str, Any]:
    """The same facts from a run record (a record without a precision trained in fp32)."""
    training = dict(config.get("training") or {})
    training.setdefault("precision", "fp32")
    return _normal({"arch": config.get("arch"), "task": config.get("task"), "seed": config.get("seed"),
                    "model": config.get("model") or {}, "task_config": config.get("task_config") or {},
                    "training": training})


def differences(expected: dict[str, Any], record: dict[str, Any]) -> list[str]:
    """What differs, ``section.key`` by key (empty: the same run)."""
    out = []
    for section in ("arch", "task", "seed", "model", "task_config", "training"):
        want, have = expected.get(section), record.get(section)
        if isinstance(want, dict) and isinstance(have, dict):
            out += [f"{section}.{k}" for k in sorted(set(want) | set(have)) if want.get(k) != have.get(k)]
        elif want != have:
            out.append(section)
    return out


#: when AdamW began to honour the ``_no_weight_decay`` marks (A_log, D, dt_bias): a run trained before
#: then, with the same settings, decayed those parameters, so it is not the run a recipe asks for
#: today. run.json records no optimizer grouping, so the record's creation time is what tells.
NO_DECAY_MARKS_HONOURED_SINCE = "2026-12-06T02:57:27+00:00"


def trained_by_todays_optimizer(config: dict[str, Any]) -> bool:
    """Whether a run record was trained after AdamW began to honour the no-decay marks."""
    from datetime import datetime

    try:
        created = datetime.fromisoformat(str(config.get("created")))
        return created >= datetime.fromisoformat(NO_DECAY_MARKS_HONOURED_SINCE)
    except ValueError:
        return False


def bundled_candidates(spec, seed: int) -> list:
    """Bundled zoo entries with the cell's architecture, task, seed and profile (the index alone)."""
    from achilles.zoo.index import zoo_index

    try:
        entries = zoo_index().entries.values()
    except CheckpointError as exc:  # a broken index never stops a reproduction: it trains instead
        log.warning(f"the zoo index cannot be read ({exc}); every run is trained")
        return []
    return [e for e in entries if e.bundled and e.arch == spec.arch and e.task == spec.task and e.seed == seed
            and e.profile == spec.profile]


def matching_entry(spec, cell, device: str = "auto"):
    """The bundled zoo entry that is exactly ``cell``'s run, or None."""
    candidates = bundled_candidates(spec, cell.seed)
    if not candidates:
        return None
    try:
        expected = expected_record(spec, cell, device)
    except AchillesError:
        return None  # a cell that cannot be built is refused by the sweep's own checks
    for entry in candidates:
        folder = entry.bundle_path()
        if folder is None or not RunFolder(folder).exists():
            continue
        try:
            config = RunFolder(folder).read_config()
        except (AchillesError, OSError, ValueError):
            continue
        if not trained_by_todays_optimizer(config):
            continue
        if config.get("status") != "finished" or config.get("weights_sha256") != entry.sha256:
            continue
        diff = differences(expected, recorded(config))
        if diff:
            log.debug(f"zoo entry {entry.id} is not {cell.path.name}: {', '.join(diff[:6])} differ")
            continue
        return entry
    return None


def zoo_cells(spec, cells: list, device: str = "auto") -> dict[Path, Any]:
    """``{cell path: zoo entry}`` for the pending cells a bundled entry covers (nothing written)."""
    return {cell.path: entry for cell in cells if cell.status == "pending"
            for entry in [matching_entry(spec, cell, device)] if entry is not None}


def as_done(cells: list, covered: dict[Path, Any]) -> list:
    """``cells`` with those the zoo covers shown finished, read from their bundle (for a plan)."""
    from dataclasses import replace

    return [replace(c, status="finished", path=covered[c.path].bundle_path()) if c.path in covered else c
            for c in cells]


def copy_bundle(entry, target: Path) -> Path:
    """Copy the bundled run of ``entry`` into the new run folder ``target`` (a copy, never a link),
    its weights checked against the index before and after; the copy's record says where it came
    from. Written beside ``target`` and renamed: ``target`` is complete or absent."""
    from achilles.zoo.pull import verified_bundle

    source = verified_bundle(entry)  # the bundle's weights are the ones the index pins
    if os.path.lexists(target):
        raise AchillesError(f"{target} exists; a zoo entry is copied only into a new run folder")
    tmp = target.parent / f".{target.name}.zoo-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(source, tmp, symlinks=False, ignore=shutil.ignore_patterns(*_NOT_COPIED))
        links = [p for p in tmp.rglob("*") if p.is_symlink()]
        if links:
            raise CheckpointError(f"the bundled run {source} holds links ({links[0].name}); not copied")
        copied = file_sha256(tmp / WEIGHTS)
        if copied != entry.sha256:
            raise CheckpointError(f"copying {source / WEIGHTS} gave sha256 {copied}, not the pinned {entry.sha256}")
        RunFolder(tmp).update_config(from_zoo={"id": entry.id, "sha256": entry.sha256})
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def adopt(jobs: list[tuple[Any, Path]], device: str = "auto") -> list[str]:
    """Copy every bundled zoo entry that is a pending cell of ``jobs`` ((sweep spec, sweep folder)
    pairs) into its cell folder; returns the zoo ids copied."""
    from achilles import sweep
    from achilles.sweep.sweep_spec import check_sweep_folder

    adopted = []
    for spec, folder in jobs:
        folder = Path(folder)
        covered = zoo_cells(spec, sweep.plan_cells(spec, folder), device)
        if not covered:
            continue
        check_sweep_folder(folder)  # never among a user's files, as the sweep itself checks
        folder.mkdir(parents=True, exist_ok=True)
        with sweep.SweepLock(folder):
            for path, entry in covered.items():
                if RunFolder(path).exists():  # another process copied or trained it meanwhile
                    continue
                copy_bundle(entry, path)
                log.info(f"{path.name}: the bundled zoo entry {entry.id} is this run (same settings, seed, data "
                         "seed and weights' sha256); copied from the zoo instead of training it again")
                adopted.append(entry.id)
    return adopted
