"""Hostile cases (issue 11): what a careless user or an attacker tries, and what must happen.

``CASES`` is the table of command-line cases: each runs ``achilles ARGS`` (in-process, on a copy of
a small trained run) after an optional ``prepare`` step, and checks the exit code, the one error
line and what must hold afterwards (``then``: no user file touched, nothing written outside the
run). Cases that need more than one command line (two writers at once, installed plugins, a Hub,
a pipe) are the test functions below the table. tests/HOSTILE.md lists every case with its outcome.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
from click.testing import CliRunner

import achilles
from achilles import hookimpl
from achilles.runs.folder import RunFolder
from achilles.runs.ownership import claim

import huggingface_hub.file_download  # noqa: F401  (the hub fixture quiets its progress bars)
import toy_plugin
from hub_fixtures import *  # noqa: F401,F403  (fixtures: hub, zoo_registry)

HERE = Path(__file__).resolve().parent
TOY = ["--arch", "toy-mixer", "--task", "toy-count"]
TINY = ["--epochs", "1", "--train-samples", "64", "--eval-samples", "16", "--batch-size", "16", "--no-progress", "-q"]
#: more than any machine has: 10^11 samples of the toy task are 10 TiB
HUGE = "100000000000"


def achilles_cli(*args, color: bool = False, env: dict | None = None):
    from achilles.cli.main import get_cli

    return CliRunner().invoke(get_cli(), [str(a) for a in args], color=color, env=env)


def assert_one_line_error(result, *needles: str) -> str:
    """A refusal: non-zero exit, exactly one line on stderr, starting 'Error: ', naming the problem."""
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output and "internal error" not in lines[0], lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(autouse=True)
def toy():
    achilles.register_plugin(toy_plugin, "toy")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished two-epoch toy run (copied for each case)."""
    from achilles.training.trainer import finalize_run, start_run

    achilles.register_plugin(toy_plugin, "toy")
    path = tmp_path_factory.mktemp("trained") / "run"
    trainer = start_run("toy-mixer", "toy-count", out=path, profile="quick", epochs=2, train_samples=64,
                        eval_samples=16, batch_size=16, progress=False)
    assert trainer.fit().status == "finished"
    finalize_run(path)
    return path


# -- helpers for the table -------------------------------------------------------------------
def user_folder(tmp: Path) -> Path:
    """A folder of the user's, with files achilles also writes in a run."""
    folder = tmp / "mine"
    folder.mkdir(exist_ok=True)
    (folder / "README.md").write_text("my notes\n")
    (folder / "metrics.jsonl").write_text('{"mine": 1}\n')
    return folder


def user_folder_intact(tmp: Path, *_) -> None:
    folder = tmp / "mine"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "metrics.jsonl"]
    assert (folder / "README.md").read_text() == "my notes\n"
    assert (folder / "metrics.jsonl").read_text() == '{"mine": 1}\n'


def precious(tmp: Path) -> Path:
    folder = tmp / "precious"
    folder.mkdir(exist_ok=True)
    (folder / "thesis.tex").write_text("years of work\n")
    return folder


def precious_intact(tmp: Path, *_) -> None:
    assert [p.name for p in (tmp / "precious").iterdir()] == ["thesis.tex"]
    assert (tmp / "precious" / "thesis.tex").read_text() == "years of work\n"


def link(run: Path, name: str, target: Path) -> None:
    entry = run / name
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry)
    elif entry.exists() or entry.is_symlink():
        entry.unlink()
    entry.symlink_to(target.resolve())


def interrupted(run: Path, **record) -> None:
    RunFolder(run).update_config(status="interrupted", **record)


def edit_state(run: Path, **changes) -> None:
    file = run / "checkpoint" / "state.json"
    state = json.loads(file.read_text())
    state.update(changes)
    file.write_text(json.dumps(state))


def drop_record_key(run: Path, key: str) -> None:
    """Hand-edit the run record (run.json) as a user might, removing ``key``."""
    from achilles.runs.layout import RECORD

    record = json.loads((run / RECORD).read_text())
    del record[key]
    (run / RECORD).write_text(json.dumps(record))


def no_folder(name: str) -> Callable:
    def check(tmp: Path, *_) -> None:
        assert not (tmp / name).exists(), f"{name} was created before the settings were refused"
    return check


def unchanged_status(status: str) -> Callable:
    def check(tmp: Path, run: Path) -> None:
        assert RunFolder(run).read_config()["status"] == status
    return check


def users_files_in_run(tmp: Path, run: Path) -> None:
    """A user's figure and a user's dot-file that end like the leftover of an atomic write, in a run."""
    (run / "photo.png").write_bytes(b"my photo")
    (run / ".draft.tmp").write_text("my draft")


def users_files_kept(tmp: Path, run: Path) -> None:
    assert (run / "photo.png").read_bytes() == b"my photo" and (run / ".draft.tmp").read_text() == "my draft"
    assert (run / "training_curves.png").is_file()  # the run's own figure, written again


def user_sweep_folder(tmp: Path, run: Path) -> None:
    user_folder(tmp)
    (tmp / "mine" / "metrics.jsonl").unlink()
    (tmp / "mine" / "results.csv").write_text("mine,1\n")


def user_sweep_folder_intact(tmp: Path, *_) -> None:
    assert sorted(p.name for p in (tmp / "mine").iterdir()) == ["README.md", "results.csv"]
    assert (tmp / "mine" / "results.csv").read_text() == "mine,1\n"


SWEEP_ARGS = ("--epochs", "1", "--train-samples", "32", "--eval-samples", "16", "--batch-size", "16")


def sweep_with_a_linked_cell(tmp: Path, run: Path) -> None:
    """A sweep folder (sweep.json) whose first cell's run folder is a link to a user's folder."""
    from achilles import sweep

    spec = sweep.make_spec("toy-mixer", "toy-count", ["gamma=0.5,0.6"], 1, "quick", "cpu", epochs=1, train_samples=32,
                           eval_samples=16, batch_size=16)
    folder = tmp / "sweep"
    folder.mkdir()
    sweep.prepare_folder(spec, folder)
    cell = sweep.plan_cells(spec, folder)[0]
    cell.path.symlink_to(precious(tmp).resolve())


def replace_by_folder(run: Path, name: str) -> None:
    (run / name).unlink()
    (run / name).mkdir()


def summary_folder(claim_changes: dict) -> Callable:
    """A folder of reproductions whose one report.json has a claim with ``claim_changes``."""
    def prepare(tmp: Path, run: Path) -> None:
        claim = {"statement": "s", "paper": "Toy", "where": "Fig. 1", "paper_value": "", "measured": "0.5",
                 "verdict": "held", **claim_changes}
        (tmp / "sum" / "x").mkdir(parents=True)
        (tmp / "sum" / "x" / "report.json").write_text(json.dumps({"recipe": "x", "profile": "quick",
                                                                   "claims": [claim]}))
    return prepare


def settings_for_new_run(tmp: Path, run: Path) -> None:
    """A run folder made by a long-gone training, not finished yet."""
    interrupted(run)


@dataclass(frozen=True)
class Case:
    point: int  # of issue 11
    id: str
    what: str
    argv: tuple  # {run}: the copy of the trained run; {tmp}: the case's folder
    exit_code: int
    says: tuple = ()  # in the error line (in stdout when the exit code is 0)
    prepare: Callable | None = None  # (tmp, run) before the command
    then: Callable | None = None  # (tmp, run) afterwards


CASES = [
    # 1. No file outside a run is ever written or deleted
    Case(1, "out-user-folder", "train --out into a user's folder holding README.md and metrics.jsonl",
         ("train", *TOY, *TINY, "--out", "{tmp}/mine"), 2, ("not an achilles run folder", "README.md"),
         lambda tmp, run: user_folder(tmp), user_folder_intact),
    Case(1, "overwrite-user-folder", "train --out USER_FOLDER --overwrite",
         ("train", *TOY, *TINY, "--out", "{tmp}/mine", "--overwrite"), 2, ("not an achilles run folder",),
         lambda tmp, run: user_folder(tmp), user_folder_intact),
    Case(1, "overwrite-checkpoint-link", "--overwrite a run whose checkpoint/ is a link to a user folder",
         ("train", *TOY, *TINY, "--out", "{run}", "--overwrite"), 0, (),
         lambda tmp, run: link(run, "checkpoint", precious(tmp)),
         lambda tmp, run: (precious_intact(tmp), not (run / "checkpoint").is_symlink() or pytest.fail("link kept"))),
    Case(1, "overwrite-probes-link", "--overwrite a run whose probes/ is a link to a user folder",
         ("train", *TOY, *TINY, "--out", "{run}", "--overwrite"), 0, (),
         lambda tmp, run: link(run, "probes", precious(tmp)), precious_intact),
    Case(1, "overwrite-weights-link", "--overwrite a run whose model.safetensors links to a user file",
         ("train", *TOY, *TINY, "--out", "{run}", "--overwrite"), 0, (),
         lambda tmp, run: link(run, "model.safetensors", precious(tmp) / "thesis.tex"), precious_intact),
    Case(1, "overwrite-clears-stale-probes", "--overwrite removes the old run's probes/",
         ("train", *TOY, *TINY, "--out", "{run}", "--overwrite"), 0, (),
         lambda tmp, run: ((run / "probes" / "old").mkdir(parents=True), claim(run, "probes")),  # as a probe does
         lambda tmp, run: not (run / "probes").exists() or pytest.fail("stale probes/ kept")),
    Case(1, "overwrite-keeps-user-file", "--overwrite keeps a user's notes.txt inside the run folder",
         ("train", *TOY, *TINY, "--out", "{run}", "--overwrite"), 0, (),
         lambda tmp, run: (run / "notes.txt").write_text("mine\n"),
         lambda tmp, run: (run / "notes.txt").read_text() == "mine\n" or pytest.fail("notes.txt lost")),
    Case(1, "out-empty-folder", "train --out an existing empty folder",
         ("train", *TOY, *TINY, "--out", "{tmp}/empty"), 0, (),
         lambda tmp, run: (tmp / "empty").mkdir(), lambda tmp, run: RunFolder(tmp / "empty").exists() or pytest.fail()),
    Case(1, "out-is-a-file", "train --out an existing file",
         ("train", *TOY, *TINY, "--out", "{tmp}/file.txt"), 2, (),
         lambda tmp, run: (tmp / "file.txt").write_text("x"),
         lambda tmp, run: (tmp / "file.txt").read_text() == "x" or pytest.fail()),
    Case(1, "resume-checkpoint-link", "--resume a run whose checkpoint/ links out of the folder",
         ("train", "--resume", "{run}", "--no-progress"), 2, ("symbolic link", "checkpoint"),
         lambda tmp, run: (interrupted(run), shutil.copytree(run / "checkpoint", precious(tmp) / "ck"),
                           link(run, "checkpoint", tmp / "precious" / "ck")),
         lambda tmp, run: sorted(p.name for p in (tmp / "precious").iterdir()) == ["ck", "thesis.tex"] or pytest.fail()),
    Case(1, "resume-user-folder", "--resume a user's folder: refused, and no lock file left in it",
         ("train", "--resume", "{tmp}/mine"), 2, ("not a run folder",),
         lambda tmp, run: user_folder(tmp), user_folder_intact),
    Case(1, "probe-probes-link", "probe a run whose probes/ links out of the folder",
         ("probe", "{run}", "--probe", "conv-similarity"), 2, ("symbolic link", "probes"),
         lambda tmp, run: link(run, "probes", precious(tmp)), precious_intact),
    Case(1, "probe-out-user-folder", "probe --out into a user's folder",
         ("probe", "{run}", "--probe", "conv-similarity", "--out", "{tmp}/mine"), 2,
         ("not an earlier conv-similarity output",), lambda tmp, run: user_folder(tmp), user_folder_intact),
    Case(1, "out-root", "train --out /", ("train", *TOY, *TINY, "--out", "/"), 2, ("not an achilles run folder",)),
    Case(1, "out-cwd", "train --out . in a project folder", ("train", *TOY, *TINY, "--out", "{tmp}/mine/."), 2,
         ("not an achilles run folder",), lambda tmp, run: user_folder(tmp), user_folder_intact),
    Case(1, "resume-checkpoint-is-file", "--resume a run whose checkpoint is a file",
         ("train", "--resume", "{run}", "--no-progress"), 2, ("should be a folder",),
         lambda tmp, run: (interrupted(run), shutil.rmtree(run / "checkpoint"), (run / "checkpoint").write_text("x"))),

    # Hostile round two (issue 19), point 1: nothing of a user's is deleted or overwritten, by any command
    Case(19, "overwrite-keeps-user-png", "--overwrite a run holding a user's photo.png and .draft.tmp",
         ("train", *TOY, *TINY, "--out", "{run}", "--overwrite"), 0, (), users_files_in_run, users_files_kept),
    Case(19, "overwrite-old-run-keeps-user-png", "--overwrite a run from before the manifest, holding a user's photo.png",
         ("train", *TOY, *TINY, "--out", "{run}", "--overwrite"), 0, (),
         lambda tmp, run: ((run / ".achilles-files").unlink(), users_files_in_run(tmp, run)), users_files_kept),
    Case(19, "sweep-out-user-folder", "sweep --out into a user's folder holding results.csv",
         ("sweep", *TOY, "--grid", "gamma=0.5", *SWEEP_ARGS, "--out", "{tmp}/mine", "--workers", "0"), 2,
         ("not a sweep folder", "results.csv"), user_sweep_folder, user_sweep_folder_intact),
    Case(19, "sweep-cell-link", "sweep --resume a sweep whose cell folder is a link to a user folder",
         ("sweep", "--resume", "{tmp}/sweep", "--workers", "0", "--no-progress"), 2, ("symbolic link",),
         sweep_with_a_linked_cell, precious_intact),
    Case(19, "probe-name-link", "probe a run whose probes/conv-similarity links to a user folder",
         ("probe", "{run}", "--probe", "conv-similarity"), 2, ("symbolic link", "conv-similarity"),
         lambda tmp, run: ((run / "probes").mkdir(), link(run, "probes/conv-similarity", precious(tmp))),
         precious_intact),

    # Hostile round two (issue 19), point 5: settings checked before any folder exists, everywhere
    Case(19, "reproduce-eps-negative", "reproduce --train-set eps=-1: refused before any folder exists",
         ("reproduce", "toy-one", "--train-set", "eps=-1", "--out", "{tmp}/out", "--workers", "0"), 2,
         ("invalid setting eps", "positive"), lambda tmp, run: _one_run_recipe(), no_folder("out")),
    Case(19, "reproduce-betas-out-of-range", "reproduce --train-set betas=[2,2]: refused before any folder exists",
         ("reproduce", "toy-one", "--train-set", "betas=[2,2]", "--out", "{tmp}/out", "--workers", "0"), 2,
         ("invalid setting betas",), lambda tmp, run: _one_run_recipe(), no_folder("out")),
    Case(19, "reproduce-weight-decay-negative", "reproduce --train-set weight_decay=-1: refused before any folder exists",
         ("reproduce", "toy-one", "--train-set", "weight_decay=-1", "--out", "{tmp}/out", "--workers", "0"), 2,
         ("invalid setting weight_decay",), lambda tmp, run: _one_run_recipe(), no_folder("out")),
    Case(19, "reproduce-lr-infinite", "reproduce --train-set lr_peak=1e999 (infinite): refused before any folder exists",
         ("reproduce", "toy-one", "--train-set", "lr_peak=1e999", "--out", "{tmp}/out", "--workers", "0"), 2,
         ("invalid setting lr_peak", "finite"), lambda tmp, run: _one_run_recipe(), no_folder("out")),
    Case(19, "sweep-eps-grid-negative", "sweep --grid train.eps=-1: refused before the sweep folder exists",
         ("sweep", *TOY, "--grid", "train.eps=-1", *SWEEP_ARGS, "--out", "{tmp}/sweep", "--workers", "0"), 2,
         ("invalid setting eps",), then=no_folder("sweep")),
    Case(19, "attention-length-huge", "train a Transformer with --set length=100000 (attention's length² scores)",
         ("train", "--arch", "transformer", "--task", "toy-count", *TINY, "--set", "length=100000", "--out",
          "{tmp}/big"), 2, ("attention scores", "lower the task's sequence length"), then=no_folder("big")),

    # Hostile round two (issue 19), point 6: no internal error for a user-caused state
    Case(19, "run-record-is-a-folder", "eval a run whose run.json is a folder",
         ("eval", "{run}"), 2, ("run.json is a folder", "restore run.json"),
         lambda tmp, run: replace_by_folder(run, "run.json")),
    Case(19, "config-is-a-folder", "train --resume a run whose config.json is a folder",
         ("train", "--resume", "{run}"), 2, ("config.json is a folder",),
         lambda tmp, run: replace_by_folder(run, "config.json")),
    Case(19, "summary-verdict-a-list", "reproduce --summary over a report.json whose claim verdict is a list",
         ("reproduce", "--summary", "{tmp}/sum"), 2, ("report.json: claims[0].verdict is [1], not text",),
         summary_folder({"verdict": [1]}), no_folder("sum/README.md")),
    Case(19, "summary-measurement-a-string", "reproduce --summary over a report.json whose measurement is a string",
         ("reproduce", "--summary", "{tmp}/sum"), 2, ("claims[0].measurement is \"x\", not an object or null",),
         summary_folder({"measurement": "x"}), no_folder("sum/README.md")),
    Case(19, "summary-measurement-a-list", "reproduce --summary over a report.json whose measurement is a list",
         ("reproduce", "--summary", "{tmp}/sum"), 2, ("claims[0].measurement is [0.5]",),
         summary_folder({"measurement": [0.5]}), no_folder("sum/README.md")),

    # 4. Failure is a state: push refuses what is not finished or not what was recorded
    Case(4, "push-interrupted", "push an interrupted run",
         ("push", "{run}", "--repo-id", "org/name"), 2, ("refusing to push", "never finished"),
         lambda tmp, run: interrupted(run)),
    Case(4, "push-failed", "push a failed run",
         ("push", "{run}", "--repo-id", "org/name"), 2, ("refusing to push", "'failed'"),
         lambda tmp, run: RunFolder(run).update_config(status="failed")),
    Case(4, "push-tampered-weights", "push a run whose model.safetensors changed after training",
         ("push", "{run}", "--repo-id", "org/name"), 2, ("model.safetensors does not match",),
         lambda tmp, run: (run / "model.safetensors").write_bytes((run / "model.safetensors").read_bytes()[:-1] + b"0")),
    Case(4, "push-tampered-init", "push a run whose init.safetensors changed after training",
         ("push", "{run}", "--repo-id", "org/name"), 2, ("init.safetensors does not match",),
         lambda tmp, run: (run / "init.safetensors").write_bytes((run / "init.safetensors").read_bytes()[:-1] + b"0")),
    Case(4, "zoo-add-unfinished", "zoo add an interrupted run",
         ("zoo", "add", "{run}", "--repo-id", "org/name", "--revision", "a" * 40, "--no-verify"), 2,
         ("not a finished run",), lambda tmp, run: interrupted(run)),

    # 5. push publishes only the run's own regular files (checked before any network)
    Case(5, "push-weights-link", "push a run whose model.safetensors is a link",
         ("push", "{run}", "--repo-id", "org/name"), 2, ("model.safetensors is a link",),
         lambda tmp, run: (shutil.copy(run / "model.safetensors", tmp / "w.safetensors"),
                           link(run, "model.safetensors", tmp / "w.safetensors"))),
    Case(5, "push-config-link", "push a run whose config.json is a link",
         ("push", "{run}", "--repo-id", "org/name"), 2, ("config.json is a link",),
         lambda tmp, run: (shutil.copy(run / "config.json", tmp / "c.json"), link(run, "config.json", tmp / "c.json"))),

    # 7. --resume refuses flags it cannot honour; checkpoint/state.json is validated
    Case(7, "resume-lr", "--resume with another --lr", ("train", "--resume", "{run}", "--lr", "5"), 2,
         ("cannot honour --lr 5.0",), settings_for_new_run, unchanged_status("interrupted")),
    Case(7, "resume-arch", "--resume with another --arch", ("train", "--resume", "{run}", "--arch", "mamba2"), 2,
         ("--arch mamba2 (the run's: toy-mixer)",), settings_for_new_run),
    Case(7, "resume-task", "--resume with another --task", ("train", "--resume", "{run}", "--task", "inverse"), 2,
         ("--task inverse",), settings_for_new_run),
    Case(7, "resume-seed", "--resume with another --seed", ("train", "--resume", "{run}", "--seed", "7"), 2,
         ("--seed 7",), settings_for_new_run),
    Case(7, "resume-epochs", "--resume with another --epochs", ("train", "--resume", "{run}", "--epochs", "50"), 2,
         ("--epochs 50",), settings_for_new_run),
    Case(7, "resume-layers", "--resume with another --layers", ("train", "--resume", "{run}", "--layers", "3"), 2,
         ("--layers 3",), settings_for_new_run),
    Case(7, "resume-task-setting", "--resume with another task setting",
         ("train", "--resume", "{run}", "--set", "length=9"), 2, ("--set length=9",), settings_for_new_run),
    Case(7, "resume-model-setting", "--resume with a model setting the run does not have",
         ("train", "--resume", "{run}", "--model-set", "d_state=4"), 2, ("--model-set d_state=4",), settings_for_new_run),
    Case(7, "resume-overwrite", "--resume together with --overwrite",
         ("train", "--resume", "{run}", "--overwrite"), 2, ("contradict",), settings_for_new_run),
    Case(7, "resume-other-out", "--resume with another --out",
         ("train", "--resume", "{run}", "--out", "{tmp}/elsewhere"), 2, ("--out",), settings_for_new_run,
         no_folder("elsewhere")),
    Case(7, "resume-same-flags", "--resume with flags equal to the run's: accepted",
         ("train", "--resume", "{run}", "--lr", "0.001", "--epochs", "2", "--seed", "0", "--no-progress"), 0, (),
         settings_for_new_run, unchanged_status("finished")),
    Case(7, "state-path-escape", "checkpoint/state.json names a file outside the folder",
         ("train", "--resume", "{run}", "--no-progress"), 2, ("not a file inside",),
         lambda tmp, run: (interrupted(run), edit_state(run, model="../../../etc/passwd"))),
    Case(7, "state-absolute-path", "checkpoint/state.json names an absolute path",
         ("train", "--resume", "{run}", "--no-progress"), 2, ("not a file inside",),
         lambda tmp, run: (interrupted(run), edit_state(run, optimizer=str(run / "model.safetensors")))),
    Case(7, "state-link-inside", "checkpoint/state.json names a link inside checkpoint/ pointing out",
         ("train", "--resume", "{run}", "--no-progress"), 2, ("not a file inside",),
         lambda tmp, run: (interrupted(run), (run / "checkpoint" / "x.safetensors").symlink_to(run / "init.safetensors"),
                           edit_state(run, model="x.safetensors"))),
    Case(7, "state-epoch-too-large", "checkpoint/state.json epoch beyond the run's epochs",
         ("train", "--resume", "{run}", "--no-progress"), 2, ("epoch 999", "0..2"),
         lambda tmp, run: (interrupted(run), edit_state(run, epoch=999))),
    Case(7, "state-epoch-negative", "checkpoint/state.json epoch -1",
         ("train", "--resume", "{run}", "--no-progress"), 2, ("epoch -1",),
         lambda tmp, run: (interrupted(run), edit_state(run, epoch=-1))),
    Case(7, "state-epoch-string", "checkpoint/state.json epoch as a string",
         ("train", "--resume", "{run}", "--no-progress"), 2, ("epoch '1'",),
         lambda tmp, run: (interrupted(run), edit_state(run, epoch="1"))),
    Case(7, "state-not-json", "checkpoint/state.json is not JSON",
         ("train", "--resume", "{run}", "--no-progress"), 2, ("state.json is corrupt",),
         lambda tmp, run: (interrupted(run), (run / "checkpoint" / "state.json").write_text("{nope"))),
    Case(7, "state-bad-sha", "checkpoint/state.json model_sha256 is not a hash",
         ("train", "--resume", "{run}", "--no-progress"), 2, ("model_sha256 is not a sha256",),
         lambda tmp, run: (interrupted(run), edit_state(run, model_sha256=1))),

    # 9. Limits before allocation, with the estimated size; no folder is created
    Case(9, "samples-huge", "train --train-samples 10^11",
         ("train", *TOY, *TINY, "--train-samples", HUGE, "--out", "{tmp}/big"),
         2, ("of memory", "training data", "lower --train-samples"), then=no_folder("big")),
    Case(9, "eval-samples-huge", "train --eval-samples 10^11",
         ("train", *TOY, *TINY, "--eval-samples", HUGE, "--out", "{tmp}/big"), 2, ("lower --eval-samples",),
         then=no_folder("big")),
    Case(9, "layers-huge", "train --layers 10^10 (refused without building the layers)",
         ("train", *TOY, *TINY, "--layers", "10000000000", "--out", "{tmp}/big"), 2, ("parameters", "--layers"),
         then=no_folder("big")),
    Case(9, "d-model-huge", "train --d-model 10^7", ("train", *TOY, *TINY, "--d-model", "10000000", "--out", "{tmp}/big"),
         2, ("model and optimizer", "--d-model"), then=no_folder("big")),
    Case(9, "length-huge", "train --set length=10^9 (the task's sequence length)",
         ("train", *TOY, *TINY, "--set", "length=1000000000", "--out", "{tmp}/big"), 2, ("1,000,000,000 positions",),
         then=no_folder("big")),
    Case(9, "sweep-samples-huge", "sweep --train-samples 10^11: refused before the sweep folder exists",
         ("sweep", *TOY, "--grid", "gamma=0.5,0.6", "--train-samples", HUGE, "--out", "{tmp}/sweep", "--workers", "0"),
         2, ("cannot be built", "lower --train-samples"), then=no_folder("sweep")),
    Case(9, "data-show-n-huge", "data show -n 10^12", ("data", "show", "--task", "toy-count", "-n", "1000000000000"),
         2, ("of memory", "lower -n")),
    Case(9, "eval-samples-flag-huge", "eval --eval-samples 10^11", ("eval", "{run}", "--eval-samples", HUGE), 2,
         ("lower --eval-samples",)),

    # 10. No internal error for user-caused states; settings validated before any folder exists
    Case(10, "config-wrong-type", "a run record whose 'task_config' is a string", ("eval", "{run}"), 2,
         ("run.json", "'task_config' should be an object"),
         lambda tmp, run: RunFolder(run).update_config(task_config="oops")),
    Case(10, "config-not-utf8", "config.json that is not UTF-8", ("eval", "{run}"), 2, ("config.json", "not valid JSON"),
         lambda tmp, run: (run / "config.json").write_bytes(b"\xff\xfe{}")),
    Case(10, "config-not-json", "config.json that is not JSON", ("eval", "{run}"), 2, ("config.json", "not valid JSON"),
         lambda tmp, run: (run / "config.json").write_text("{")),
    Case(10, "record-no-task", "a run record without 'task' (hand-edited run.json)", ("train", "--resume", "{run}"), 2,
         ("run.json has no 'task'",), lambda tmp, run: drop_record_key(run, "task")),
    Case(10, "training-settings-malformed", "resume a run whose training settings were hand-edited",
         ("train", "--resume", "{run}", "--no-progress"), 2, ("training settings are malformed",),
         lambda tmp, run: interrupted(run, training={**RunFolder(run).read_config()["training"], "epochs": "many"})),
    Case(10, "metrics-broken-line", "resume a run whose metrics.jsonl has a broken line",
         ("train", "--resume", "{run}", "--no-progress"), 2, ("metrics.jsonl: line 3",),
         lambda tmp, run: (interrupted(run), open(run / "metrics.jsonl", "a").write("garbage\n"))),
    Case(10, "name-too-long", "train --out with a 300-character name",
         ("train", *TOY, *TINY, "--out", "{tmp}/" + "x" * 300), 2, ("file name is too long",)),
    Case(10, "epochs-zero", "train --epochs 0: refused before any folder",
         ("train", *TOY, *TINY, "--epochs", "0", "--out", "{tmp}/new"), 2, ("epochs",), then=no_folder("new")),
    Case(10, "eval-samples-zero", "train --eval-samples 0: refused before any folder",
         ("train", *TOY, *TINY, "--eval-samples", "0", "--out", "{tmp}/new"), 2, ("eval_samples",),
         then=no_folder("new")),
    Case(10, "sweep-epochs-zero", "sweep --epochs 0: refused before the sweep folder exists",
         ("sweep", *TOY, "--grid", "gamma=0.5", "--epochs", "0", "--out", "{tmp}/sweep", "--workers", "0"), 2,
         ("epochs",), then=no_folder("sweep")),
    Case(10, "vocab-too-small", "train --model-set vocab_size smaller than the task's",
         ("train", *TOY, *TINY, "--model-set", "vocab_size=2", "--out", "{tmp}/new"), 2, ("fewer tokens",),
         then=no_folder("new")),
    Case(10, "seed-too-large", "train --seed 2^70", ("train", *TOY, *TINY, "--seed", str(2**70), "--out", "{tmp}/new"),
         2, ("invalid setting seed",), then=no_folder("new")),
    Case(10, "seed-negative", "train --seed -1", ("train", *TOY, *TINY, "--seed", "-1", "--out", "{tmp}/new"),
         2, ("invalid setting seed",), then=no_folder("new")),
    Case(10, "unknown-setting", "train --model-set with a setting the architecture lacks",
         ("train", *TOY, *TINY, "--model-set", "d_modle=8", "--out", "{tmp}/new"), 2, ("d_modle",),
         then=no_folder("new")),

    # 11. The plugin contract: a run records who provided its task and architecture
    Case(11, "missing-plugin-says-what-to-install", "eval a run whose architecture's plugin is not installed",
         ("eval", "{run}"), 2, ("pip install 'achilles-gone-plugin==1.2.3'",),
         lambda tmp, run: RunFolder(run).update_config(
             arch="gone-arch", provided_by={"arch": {"plugin": "achilles-gone-plugin:gone",
                                                     "distribution": "achilles-gone-plugin", "version": "1.2.3"}})),

    # 12. CLI hygiene
    Case(12, "quiet-and-verbose", "train -q -v", ("train", *TOY, *TINY, "-v", "--out", "{tmp}/new"), 2,
         ("contradict",)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.point}-{c.id}")
def test_hostile_case(case: Case, trained: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(trained, run, symlinks=True)
    if case.prepare:
        case.prepare(tmp_path, run)
    result = achilles_cli(*[str(a).format(run=run, tmp=tmp_path) for a in case.argv])
    if case.exit_code == 0:
        assert result.exit_code == 0, result.output
        for needle in case.says:
            assert needle in result.stdout
    else:
        assert result.exit_code == case.exit_code, result.output
        if case.says or result.stderr.startswith("Error: "):
            assert_one_line_error(result, *case.says)
    if case.then:
        case.then(tmp_path, run)


def test_hostile_md_lists_every_case():
    text = (HERE / "HOSTILE.md").read_text()
    missing = [c.id for c in CASES if f"`{c.id}`" not in text]
    assert not missing, f"tests/HOSTILE.md does not list {missing}"


# -- 1. ownership: what --overwrite removes ---------------------------------------------------
def test_overwrite_removes_only_what_the_run_owns(trained, tmp_path):
    from achilles.runs.ownership import clear_run_folder

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "notes.txt").write_text("mine")
    (run / "data").mkdir()
    removed = clear_run_folder(run)
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith(".achilles")) == ["data", "notes.txt"]
    assert {"config.json", "model.safetensors", "checkpoint", "metrics.jsonl"} <= set(removed)


# -- round two (issue 19), point 1: what a command may remove or write through ------------------
def test_zoo_add_removes_only_an_orphan_it_wrote(zoo_registry, trained, tmp_path):
    """An orphan bundle folder (not in the index) is replaced only when it holds nothing but what zoo add
    wrote there (its .achilles-bundle list); a user's folder of that name, or a user's file in an
    orphan, is refused and left untouched."""
    folder = zoo_registry.parent / "bundled" / "toy-b"
    folder.mkdir(parents=True)
    (folder / "thesis.tex").write_text("years of work\n")
    add = ("zoo", "add", trained, "--bundle", "--id", "toy-b")
    assert_one_line_error(achilles_cli(*add), "was not written by `achilles zoo add`")
    assert [p.name for p in folder.iterdir()] == ["thesis.tex"]
    (folder / "config.json").write_text("{}")  # an interrupted add's own file, listed, beside the user's
    (folder / ".achilles-bundle").write_text('["config.json"]')
    assert_one_line_error(achilles_cli(*add), "did not write (thesis.tex)")
    assert (folder / "thesis.tex").read_text() == "years of work\n"
    (folder / "thesis.tex").unlink()  # now only what zoo add wrote: replaced by the new bundle
    result = achilles_cli(*add)
    assert result.exit_code == 0, result.output
    assert (folder / "model.safetensors").is_file() and "config.json" in json.loads((folder / ".achilles-bundle").read_text())


def test_owned_folder_refuses_a_link_or_a_file_at_any_depth(tmp_path):
    """The one check of every write site below a folder achilles owns (run, sweep, reproduction, run
    store): each part below the root must be a real folder; missing ones are created."""
    from achilles.runs.ownership import owned_folder

    root = tmp_path / "run"
    assert owned_folder(root, "evals") == root / "evals" and (root / "evals").is_dir()  # created
    assert owned_folder(root, "probes", "x", create=False) == root / "probes" / "x"
    assert not (root / "probes").exists()  # create=False writes nothing
    (root / "probes").mkdir()
    (root / "probes" / "x").symlink_to(precious(tmp_path).resolve())
    with pytest.raises(achilles.AchillesError, match=r"probes/x is a symbolic link .* never through a link"):
        owned_folder(root, "probes", "x", "deeper")
    (root / "tensorboard").symlink_to(tmp_path / "precious")
    with pytest.raises(achilles.AchillesError, match="tensorboard is a symbolic link"):
        owned_folder(root, "tensorboard")
    (root / "figures").write_text("x")
    with pytest.raises(achilles.AchillesError, match="figures should be a folder but is a file"):
        owned_folder(root, "figures")
    precious_intact(tmp_path)


def test_push_and_the_card_leave_out_a_users_png(hub, trained, tmp_path):
    """A user's photo.png in a run folder is not the run's figure: not published, not in its card."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n my photo")
    assert achilles_cli("push", run, "--repo-id", "test-org/photo").exit_code == 0
    repo = hub.hub.repos["test-org/photo"]
    published = set(repo.commits[repo.branches["main"]])
    assert "photo.png" not in published and "training_curves.png" in published
    assert "photo.png" not in (run / "README.md").read_text()


def test_pull_never_writes_through_a_link_in_the_cache(hub, trained, tmp_path):
    """A link planted at the repository's folder of the Hugging Face cache (its blobs/, or a snapshot)
    is refused before anything is downloaded; the user's folder it points to stays as it was."""
    from huggingface_hub import constants

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    assert achilles_cli("push", run, "--repo-id", "test-org/linked").exit_code == 0
    repo = Path(constants.HF_HUB_CACHE) / "models--test-org--linked"
    for where in ("blobs", "snapshots/0123456789abcdef0123456789abcdef01234567"):
        shutil.rmtree(repo, ignore_errors=True)
        (repo / where).parent.mkdir(parents=True, exist_ok=True)
        (repo / where).symlink_to(precious(tmp_path).resolve())
        assert_one_line_error(achilles_cli("pull", "hf-hub:test-org/linked"), "symbolic link", where.split("/")[0])
        precious_intact(tmp_path)
    shutil.rmtree(repo)
    assert achilles_cli("pull", "hf-hub:test-org/linked").exit_code == 0  # no link: pulled


def _one_run_recipe(name: str = "toy-one"):
    from test_recipes import TOY_TRAIN, register_toy, toy_recipe
    from achilles.plugins.recipes import figures
    from achilles.recipes import RunGroup

    groups = (RunGroup("mixer", "toy-mixer", "toy-count", grid={"gamma": [0.5]}, seeds=1,
                       train={**TOY_TRAIN, "epochs": 1}),)
    bars = figures.bars([("mixer", "mixer")], [("test", "acc", None, "test")], title="toy")
    register_toy([toy_recipe(name, groups=groups, figures=(achilles.recipes.Figure("bars", bars, "toy bars"),))])
    return name


def test_reproduce_writes_only_into_its_own_folders(tmp_path):
    """A --runs store that is a user's folder is refused untouched; a link at figures/ in the output
    folder, or at probes/ or evals/ of a run, is refused, never written through."""
    recipe = _one_run_recipe()
    precious(tmp_path)
    mine = user_folder(tmp_path)
    reproduce = ("reproduce", recipe, "--workers", "0", "--no-progress", "--out", tmp_path / "out")
    assert_one_line_error(achilles_cli(*reproduce, "--runs", mine), "is not a run store")
    user_folder_intact(tmp_path)
    first = achilles_cli(*reproduce)
    assert first.exit_code == 0, first.output
    link(tmp_path / "out", "figures", tmp_path / "precious")
    assert_one_line_error(achilles_cli(*reproduce), "symbolic link", "figures")
    precious_intact(tmp_path)
    (tmp_path / "out" / "figures").unlink()
    (group,) = (tmp_path / "out" / "runs").iterdir()
    link(tmp_path / "out" / "runs", "elsewhere", group)  # a link among the run store's sweep folders
    assert_one_line_error(achilles_cli(*reproduce), "symbolic link", "run store")


# -- round two (issue 19), point 5: a command whose runs all fail says so in its exit code ----------
def test_a_command_whose_runs_all_fail_exits_non_zero(tmp_path):
    """reproduce and sweep whose every run diverges (lr 1e30): the report is still written, the exit
    code is not 0, and the last line says how many failed and where to look."""
    recipe = _one_run_recipe()
    result = achilles_cli("reproduce", recipe, "--train-set", "lr_peak=1e30", "--out", tmp_path / "out", "--workers", "0",
                          "--no-progress")
    assert result.exit_code == 2 and (tmp_path / "out" / "report.md").is_file()
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: none of the 1 run(s) of toy-one finished (1 failed") and "run.json" in last
    assert "internal error" not in result.output
    sweep = achilles_cli("sweep", *TOY, "--grid", "gamma=0.5", "--lr", "1e30", *SWEEP_ARGS, "--out", tmp_path / "s",
                         "--workers", "0", "--no-progress")
    assert sweep.exit_code == 1 and f"1 cell(s) failed" in sweep.stderr
    assert f"each cell's run.json in {tmp_path / 's'}" in sweep.stderr


# -- round two (issue 19), point 6: a full disk while saving -----------------------------------------
#: what safetensors raises when the disk fills while it writes
DISK_FULL = 'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'


def _last_checkpoint_intact(run: Path, epoch: int) -> None:
    from achilles.runs.layout import CHECKPOINT_DIR
    from achilles.runs.files import load_tensors
    from achilles.runs.folder import read_checkpoint_state

    state = read_checkpoint_state(run, 10)
    assert state["epoch"] == epoch
    for key in ("model", "optimizer"):  # each file there and the bytes it recorded (sha256 checked)
        load_tensors(run / CHECKPOINT_DIR / state[key], state[f"{key}_sha256"])


def test_disk_full_while_saving_a_checkpoint_fails_the_run_and_keeps_the_last(tmp_path, monkeypatch):
    """safetensors reports ENOSPC as a SafetensorError: the run is marked failed saying so, the
    epoch-1 checkpoint stays intact, the error is one line saying what to do, and --resume (with
    space again) finishes the run."""
    from safetensors import SafetensorError

    import achilles.runs.files as runs

    real = runs.save_file

    def full_at_epoch_two(tensors, path, metadata=None):
        if ".epoch-0002." in str(path):
            raise SafetensorError(DISK_FULL)
        return real(tensors, path, metadata=metadata)

    monkeypatch.setattr(runs, "save_file", full_at_epoch_two)
    run = tmp_path / "run"
    result = achilles_cli("train", *TOY, *TINY, "--epochs", "2", "--out", run)
    line = assert_one_line_error(result, "disk full while saving checkpoint/epoch-0002.model.safetensors",
                                 "the last good checkpoint (epoch 1) is kept", f"achilles train --resume {run}")
    assert result.exit_code == 2 and "internal error" not in line
    record = RunFolder(run).read_config()
    assert record["status"] == "failed" and record["failure"].startswith("disk full while saving")
    _last_checkpoint_intact(run, 1)
    assert not list((run / "checkpoint").glob("epoch-0002*")) and not list(run.rglob(".*.tmp"))
    from achilles.sweep.plan import read_status

    assert read_status(run) == ("interrupted", 1)  # a sweep resumes it; a diverged run it would not
    monkeypatch.setattr(runs, "save_file", real)  # space again
    resumed = achilles_cli("train", "--resume", run, "--no-progress", "-q")
    assert resumed.exit_code == 0, resumed.output
    assert RunFolder(run).read_config()["status"] == "finished" and "failure" not in RunFolder(run).read_config()


def test_disk_full_while_saving_the_initial_weights_says_to_train_again(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    import achilles.runs.files as runs

    def full(tensors, path, metadata=None):
        raise SafetensorError(DISK_FULL)

    monkeypatch.setattr(runs, "save_file", full)
    run = tmp_path / "run"
    assert_one_line_error(achilles_cli("train", *TOY, *TINY, "--out", run), "disk full while saving init.safetensors",
                          "no checkpoint was saved yet", f"train it again with --out {run} --overwrite")
    assert RunFolder(run).read_config()["status"] == "failed"
    monkeypatch.undo()  # space again
    again = achilles_cli("train", *TOY, *TINY, "--out", run, "--overwrite")
    assert again.exit_code == 0, again.output


def test_a_record_that_cannot_be_read_back_is_one_line(trained, tmp_path, monkeypatch):
    """run.json that achilles wrote but can no longer read (its permissions changed; simulated: the
    tests run as root, who reads everything): one line naming the file and what to do."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    real = Path.read_text

    def unreadable(self, *args, **kwargs):
        if self.name == "run.json":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", unreadable)
    assert_one_line_error(achilles_cli("eval", run), "run.json cannot be read (Permission denied)",
                          "fix its permissions or restore it")


def test_disk_full_on_a_real_small_file_system(tmp_path):
    """The same on a real 2 MiB tmpfs filled up after the run started (root and mount needed)."""
    from achilles.training.trainer import resume_run, start_run

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip() or 'not root'}); the "
                    "monkeypatched ENOSPC test covers the same path")
    try:
        run = disk / "run"
        trainer = start_run("toy-mixer", "toy-count", out=run, profile="quick", epochs=2, train_samples=64,
                            eval_samples=16, batch_size=16, progress=False)
        filler = open(disk / "filler", "wb", buffering=0)  # fill the disk to its last byte, ...
        try:
            while True:
                filler.write(b"\0" * 4096)
        except OSError:
            pass
        finally:
            filler.close()
        # ... but one page: run.json and metrics.jsonl are rewritten, the epoch's 1-page weights fit,
        # its 9 KB optimizer state does not
        os.truncate(disk / "filler", (disk / "filler").stat().st_size - 4096)
        with pytest.raises(achilles.AchillesError, match="disk full while saving"):
            trainer.fit()
        record = RunFolder(run).read_config()
        assert record["status"] == "failed" and "free some space" in record["failure"].lower()
        _last_checkpoint_intact(run, 0)
        (disk / "filler").unlink()
        assert resume_run(run, progress=False).fit().status == "finished"
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)  # lazy: the run's lock file may be open


# -- 2. one writer per run folder --------------------------------------------------------------
HOLDER = """
import sys, time
import achilles, toy_plugin
from achilles.training.trainer import resume_run
achilles.register_plugin(toy_plugin, "toy")
trainer = resume_run(sys.argv[1], progress=False)  # holds the folder, as a running `achilles train` does
print("held", flush=True)
time.sleep(120)
"""


def test_a_second_writer_is_refused_naming_the_first(trained, tmp_path):
    """Another process trains the folder: train --resume, train --overwrite, probe and push on it are
    refused in one line naming the holder, nothing of theirs gets in, and once the holder is gone
    (killed: the operating system frees its lock) the folder is usable again."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    interrupted(run)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        for argv, action in ((["train", "--resume", run], "train"),
                             (["train", *TOY, *TINY, "--out", run, "--overwrite"], "train"),
                             (["probe", run, "--probe", "conv-similarity"], "probe"),
                             (["push", run, "--repo-id", "org/name"], "push")):
            assert_one_line_error(achilles_cli(*argv), f"run folder {run} is in use by `achilles train` "
                                  f"(pid {holder.pid}", f"run the {action} again")
        assert RunFolder(run).read_config()["status"] == "interrupted"  # nothing of the others got in
        assert len(RunFolder(run).read_metrics()) == 2
    finally:
        holder.kill()
        holder.wait()
    result = achilles_cli("train", "--resume", run, "--no-progress")  # the dead holder blocks nothing
    assert result.exit_code == 0, result.output
    assert RunFolder(run).read_config()["status"] == "finished"


def test_one_process_shares_its_lock(trained, tmp_path):
    """In one process the folder's lock is shared: a library user holding a Trainer can still load,
    resume or probe the same folder."""
    from achilles.training.trainer import resume_run

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    interrupted(run)
    first = resume_run(run, progress=False)
    second = resume_run(run, progress=False)
    assert second.fit().status == "finished"
    first.close()
    assert not (run / ".achilles.lock.owner").exists()  # the last holder gone: the owner note too


# -- 6. Ctrl-C stops a sweep -----------------------------------------------------------------------
def _run_status(cell: Path) -> str | None:
    try:
        return RunFolder(cell).read_config().get("status")
    except achilles.AchillesError:
        return None


def _epochs_done(cell: Path) -> int:
    try:
        return len(RunFolder(cell).read_metrics())
    except achilles.AchillesError:
        return 0


@pytest.mark.slow
def test_ctrl_c_stops_a_pooled_sweep(tmp_path):
    """Ctrl-C (SIGINT to the terminal's process group) while two workers train: no further cell
    starts, every process is gone within seconds, the summary counts what really finished, the
    exit code is 130, and running the sweep again resumes the interrupted cells."""
    site = tmp_path / "site"
    _install_fake_distribution(site, "toy-plugin", "1.0", {"toy": "toy_plugin"}, {})
    env = {**os.environ, "ACHILLES_PLUGINS": "achilles,toy-plugin",
           "PYTHONPATH": os.pathsep.join([str(site), str(HERE), os.environ.get("PYTHONPATH", "")])}
    folder = tmp_path / "sweep"
    sweep = [sys.executable, "-m", "achilles.cli.main", "sweep", *TOY, "--grid", "gamma=0.5,0.6,0.7,0.8,0.9",
             "--epochs", "5", "--train-samples", "12000", "--eval-samples", "16", "--batch-size", "16", "--workers", "2",
             "--out", str(folder), "--no-progress"]
    proc = subprocess.Popen(sweep, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:  # both workers past their first epoch
            cells = [c for c in folder.glob("toy-mixer.*") if _epochs_done(c) >= 1]
            if len(cells) >= 2:
                break
            time.sleep(0.2)
        assert len(cells) == 2 and not any(_run_status(c) == "finished" for c in cells), "cells trained too fast"
        started = sorted(c.name for c in folder.glob("toy-mixer.*") if (c / "init.safetensors").exists())
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 130, out
    time.sleep(1)
    after = sorted(c.name for c in folder.glob("toy-mixer.*") if (c / "init.safetensors").exists())
    assert after == started, f"cells started after Ctrl-C: {sorted(set(after) - set(started))}"
    finished = sum(_run_status(folder / name) == "finished" for name in after)
    assert f"{finished} cell(s) trained" in out
    assert all(_run_status(folder / name) in ("interrupted", "finished") for name in after)
    for _ in range(50):  # the workers (and multiprocessing's resource tracker) go with the driver
        left = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True).stdout.split()
        if not left:
            break
        time.sleep(0.2)
    assert left == [], "processes outlived the sweep"
    plan = subprocess.run([sys.executable, "-m", "achilles.cli.main", "sweep", "--resume", str(folder), "--dry-run"],
                          capture_output=True, text=True, env=env)
    assert plan.returncode == 0, plan.stderr
    assert "interrupted" in plan.stdout and f"{finished} done" in plan.stdout


def test_ctrl_c_outside_training_still_counts_the_unit(trained, tmp_path, monkeypatch):
    """Ctrl-C while a serial sweep sets a cell up or writes its card (outside the epoch loop): no next
    unit starts, and the unit is counted from what its run folder records."""
    import achilles.sweep.executors as executors

    interrupted_cell = tmp_path / "cut"
    shutil.copytree(trained, interrupted_cell)
    interrupted(interrupted_cell)
    payloads = [[{"path": str(trained)}, {"path": str(interrupted_cell)}], [{"path": str(tmp_path / "next")}]]
    calls, reported = [], []

    def ctrl_c(payload, env):
        calls.append(payload)
        raise KeyboardInterrupt

    monkeypatch.setattr(executors, "train_unit", ctrl_c)
    with pytest.raises(executors.Interrupted):
        executors.execute_serial(payloads, {}, lambda payload, results: reported.append(results))
    assert calls == payloads[:1]
    assert reported == [[{"path": str(trained), "status": "finished"},
                         {"path": str(interrupted_cell), "status": "interrupted"}]]


# -- 3. a plugin cannot take what another registered -------------------------------------------
def _install_fake_distribution(site: Path, dist: str, version: str, entry_points: dict[str, str],
                               modules: dict[str, str]) -> None:
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text("[achilles]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
    for name, source in modules.items():
        (site / f"{name}.py").write_text(source)


HIJACKER = '''
import click
from achilles import hookimpl
from achilles.plugins.archs.transformer import build_transformer

@hookimpl
def register_architectures(register):
    register("transformer", build_transformer, description="hijacked")
    register("{own}", build_transformer, description="its own")

@hookimpl
def register_commands(cli):
    @cli.command("train")
    def train():
        click.echo("HIJACKED")

    @cli.command("{own}-cmd")
    def own():
        click.echo("own command")
    cli.commands.pop("list", None)
'''


@pytest.fixture
def hostile_site(tmp_path, monkeypatch):
    """Two third-party distributions whose entry points sort before achilles' own ('aaa' < 'archs'),
    both registering 'transformer'; one names its entry point 'archs' to pass for first-party."""
    site = tmp_path / "site"
    _install_fake_distribution(site, "evil-one", "6.6", {"aaa": "evil_one"},
                               {"evil_one": HIJACKER.replace("{own}", "evil-one")})
    _install_fake_distribution(site, "evil-two", "1.0", {"archs": "evil_two"},
                               {"evil_two": HIJACKER.replace("{own}", "evil-two")})
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("ACHILLES_PLUGINS", "achilles,evil-one,evil-two")
    return site


def test_a_plugin_cannot_take_first_party_names_whatever_it_sorts_to(hostile_site, capsys):
    state = achilles.reload_plugins()
    archs = state.registries["architecture"]
    first_party = ["conv-transformer", "mamba2", "mamba2-allone", "mamba2-gated", "mamba2-global", "mamba2-posenc",
                   "mamba2-residual", "transformer"]
    assert all(archs.get(name).plugin == "archs" for name in first_party)  # all eight stay achilles'
    assert archs.get("evil-one").plugin == "evil-one:aaa" and archs.get("evil-two").plugin == "evil-two:archs"
    assert state.plugins["archs"].distribution == "achilles"  # 'archs' of evil-two is not 'archs'
    err = capsys.readouterr().err
    assert "plugin 'evil-one:aaa' (evil-one 6.6) cannot register architecture 'transformer'" in err
    assert "plugin 'archs' (achilles" in err
    assert {(c.loser, c.name) for c in state.conflicts} == {("evil-one:aaa", "transformer"),
                                                            ("evil-two:archs", "transformer")}


def test_a_plugin_cannot_replace_or_remove_a_command(hostile_site, capsys):
    achilles.reload_plugins()
    result = achilles_cli("train", "--help")
    assert result.exit_code == 0 and "HIJACKED" not in result.output and "--arch" in result.output
    assert "cannot add command 'train': it is a built-in command of achilles" in capsys.readouterr().err
    assert achilles_cli("list", "tasks").exit_code == 0  # 'list' was not removed
    own = achilles_cli("evil-one-cmd")
    assert own.exit_code == 0 and "own command" in own.output  # the rest of the plugin works
    plugins = achilles_cli("plugins")
    assert "commands: evil-one-cmd" in plugins.output and "kept by" in plugins.output


def test_allow_list_matches_distributions(hostile_site, monkeypatch, capsys):
    monkeypatch.setenv("ACHILLES_PLUGINS", "achilles,Evil_One")  # as a user writes it: any case, '_' or '-'
    assert "evil-one:aaa" in achilles.reload_plugins().plugins
    monkeypatch.setenv("ACHILLES_PLUGINS", "achilles,archs")  # an entry-point name is not a distribution
    assert set(achilles.reload_plugins().plugins) == {"tasks", "archs", "probes", "recipes"}
    assert "'archs', which is no installed distribution" in capsys.readouterr().err


def test_a_distribution_calling_itself_achilles_is_not_first_party(tmp_path, monkeypatch):
    site = tmp_path / "site"
    _install_fake_distribution(site, "achilles", "99.0", {"tasks": "fake_tasks"},
                               {"fake_tasks": "raise SystemExit('imported a fake first-party plugin')\n"})
    monkeypatch.syspath_prepend(str(site))
    state = achilles.reload_plugins()  # ACHILLES_PLUGINS=achilles: achilles' own plugins only
    assert state.plugins["tasks"].module == "achilles.plugins.tasks" and not state.failures


# -- 4/5/8. against a Hub ------------------------------------------------------------------------
def test_push_publishes_only_the_runs_own_regular_files(hub, trained, tmp_path):
    from hub_fixtures import LOCAL_HOSTS  # noqa: F401  (the hub fixture keeps everything local)

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"not yours")
    (run / "stolen.png").symlink_to(secret)
    (run / "notes.txt").write_text("mine")
    result = achilles_cli("push", run, "--repo-id", "test-org/run")
    assert result.exit_code == 0, result.output
    repo = hub.hub.repos["test-org/run"]
    published = set(repo.commits[repo.branches["main"]])
    assert "stolen.png" not in published and "notes.txt" not in published
    assert {"config.json", "model.safetensors", "init.safetensors", "README.md"} <= published
    assert not any(name.startswith(("checkpoint", ".achilles")) for name in published)


@pytest.fixture
def zoo_entry(hub, zoo_registry, trained, tmp_path):
    run = tmp_path / "published"
    shutil.copytree(trained, run)
    assert achilles_cli("push", run, "--repo-id", "test-org/run").exit_code == 0
    added = achilles_cli("zoo", "add", run, "--repo-id", "test-org/run", "--revision", "main", "--id", "toy-zoo")
    assert added.exit_code == 0, added.output
    return "toy-zoo"


def test_a_zoo_id_is_not_shadowed_by_a_local_folder(zoo_entry, trained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    impostor = tmp_path / zoo_entry
    shutil.copytree(trained, impostor)
    RunFolder(impostor).update_config(seed=4242)  # a different run, same name as the zoo id
    assert achilles.load(zoo_entry).config["seed"] != 4242  # the zoo entry
    assert achilles.load(f"./{zoo_entry}").config["seed"] == 4242  # the folder, written as a path
    (impostor / "model.safetensors").write_bytes(b"not the zoo's weights")
    zoo_weights = achilles.load(zoo_entry).model.state_dict()
    model = achilles.create_model(zoo_entry, pretrained=True)  # timm-style: the zoo entry too
    assert all(torch.equal(model.state_dict()[k], v) for k, v in zoo_weights.items())


def test_a_corrupted_blob_in_the_hub_cache_is_fetched_again(zoo_entry, tmp_path, monkeypatch):
    from huggingface_hub import constants

    path = achilles.load(zoo_entry).path
    blob = (path / "model.safetensors").resolve()
    blob.write_bytes(blob.read_bytes()[:-1] + b"\x00")  # bit rot in the cache
    assert achilles_cli("pull", zoo_entry).exit_code == 0  # repaired by downloading again
    assert achilles.load(zoo_entry).path == path
    blob.write_bytes(blob.read_bytes()[:-1] + b"\x00")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # offline: the message says how to repair it
    assert_one_line_error(achilles_cli("pull", zoo_entry), "may be corrupt", f"achilles pull {zoo_entry}` online")


# -- 10. the machine's states: disk full, read-only, names the terminal cannot print ----------
@pytest.mark.parametrize("code, says", [(errno.ENOSPC, "the disk is full"), (errno.EROFS, "read-only"),
                                        (errno.EACCES, "permission denied")])
def test_write_failures_are_one_line_naming_the_file(tmp_path, monkeypatch, code, says):
    import achilles.runs.files as runs

    def fail(path, data):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(runs, "atomic_write_bytes", fail)
    result = achilles_cli("train", *TOY, *TINY, "--out", tmp_path / "new")
    assert result.exit_code == 2
    assert_one_line_error(result, says, str(tmp_path / "new" / ""))  # names the file it could not write


def test_a_path_that_is_not_utf8_prints_escaped(tmp_path):
    folder = os.fsdecode(str(tmp_path).encode() + b"/run-\xff")
    env = {**os.environ, "ACHILLES_PLUGINS": "achilles", "PYTHONIOENCODING": "utf-8"}
    proc = subprocess.run([sys.executable, "-m", "achilles.cli.main", "eval", folder], capture_output=True, env=env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.decode("utf-8").splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "\\udcff" in lines[0], lines


# -- 11. the contract's errors name what the plugin author must fix ---------------------------
class NoMaxLen(toy_plugin.TwoLayerToy):
    def __init__(self, vocab_size=8, n_layers=2, d_model=8, gamma=0.5, backend="torch"):
        super().__init__(vocab_size=vocab_size, n_layers=n_layers, d_model=d_model, gamma=gamma, backend=backend)


class NoConfig(toy_plugin.TwoLayerToy):
    def __init__(self, **settings):
        super().__init__(**settings)
        del self.config


class NoConfigTask(toy_plugin.CountTask):
    def __init__(self, vocab: int = 4, length: int = 6):  # forgets super().__init__
        self.vocab, self.length = vocab, length


class NotADict(achilles.Probe):
    def run(self, model, task, out_dir, **options):
        return 0.5


def _broken_plugin():
    plugin = types.SimpleNamespace()
    plugin.register_architectures = hookimpl(lambda register: (register("no-max-len", NoMaxLen),
                                                               register("no-config", NoConfig)))
    plugin.register_tasks = hookimpl(lambda register: register("no-config-task", NoConfigTask))
    plugin.register_probes = hookimpl(lambda register: register("not-a-dict", NotADict))
    return plugin


@pytest.mark.parametrize("argv, says", [
    (["train", "--arch", "no-max-len", "--task", "toy-count", *TINY], "does not accept 'max_len', which achilles passes"),
    (["train", "--arch", "no-config", "--task", "toy-count", *TINY], "built a model without a `config` dict"),
    (["train", "--arch", "toy-mixer", "--task", "no-config-task", *TINY], "must call super().__init__"),
])
def test_a_broken_plugin_is_named_not_the_user(argv, says, tmp_path):
    achilles.register_plugin(_broken_plugin(), "broken")
    result = achilles_cli(*argv, "--out", tmp_path / "new")
    line = assert_one_line_error(result, says, "plugin 'broken'", "docs/plugins.md")
    assert "invalid setting" not in line
    assert not (tmp_path / "new").exists()


def test_a_probe_returning_no_dict_is_named(trained, tmp_path):
    achilles.register_plugin(_broken_plugin(), "broken")
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    assert_one_line_error(achilles_cli("probe", run, "--probe", "not-a-dict"), "returned float", "plugin 'broken'")


def test_a_run_records_the_distribution_of_its_task_and_architecture(trained):
    provided = RunFolder(trained).read_config()["provided_by"]
    assert provided["arch"]["plugin"] == "toy" and provided["task"]["plugin"] == "toy"
    assert set(provided["arch"]) == {"plugin", "distribution", "version"}


def test_plugins_lists_every_hook_a_plugin_implements():
    listener = types.SimpleNamespace(on_trainer_event=hookimpl(lambda event: None))
    achilles.register_plugin(listener, "tracker")
    output = achilles_cli("plugins").output
    row = [line for line in output.splitlines() if line.startswith("tracker")]
    assert row and "(nothing)" in row[0]
    assert "hooks: on_trainer_event" in output


# -- 12. CLI hygiene ---------------------------------------------------------------------------------
def test_list_into_a_closed_pipe_exits_quietly():
    env = {**os.environ, "ACHILLES_PLUGINS": "achilles"}
    proc = subprocess.run(f"{sys.executable} -m achilles.cli.main list | head -1", shell=True, capture_output=True,
                          text=True, env=env)
    assert proc.stdout.strip() == "tasks (7)"
    assert proc.stderr == "", proc.stderr


def test_no_color_is_honoured():
    coloured = achilles_cli("list", color=True)
    assert "\x1b[" in coloured.output  # bold headers on a terminal
    plain = achilles_cli("list", color=True, env={"NO_COLOR": "1"})
    assert plain.exit_code == 0 and "\x1b[" not in plain.output


def test_quiet_keeps_the_result_and_drops_the_chatter(tmp_path):
    loud = achilles_cli("train", *TOY, *[a for a in TINY if a != "-q"], "--out", tmp_path / "loud")
    quiet = achilles_cli("train", *TOY, *TINY, "--out", tmp_path / "quiet")
    assert loud.exit_code == quiet.exit_code == 0
    assert "Run: " in loud.stdout and "Run: " not in quiet.stdout
    assert "Done: " in quiet.stdout and "metric" in quiet.stdout  # the result stays


def test_verbosity_is_one_shared_option_on_long_running_commands():
    from achilles.cli.main import get_cli

    cli = get_cli()
    for name in ("train", "sweep", "probe", "pull", "push"):
        opts = {o for p in cli.commands[name].params for o in p.opts}
        assert {"-q", "--quiet", "-v", "--verbose"} <= opts, name


def test_refusals_are_fast(tmp_path):
    """A refused size is refused up front: no minutes of growth before the message."""
    started = time.perf_counter()
    result = achilles_cli("train", *TOY, *TINY, "--layers", "100000000", "--train-samples", HUGE, "--out", tmp_path / "x")
    assert result.exit_code == 2 and time.perf_counter() - started < 30
