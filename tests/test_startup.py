"""Commands that need no model start without torch: --version, --help, shell completion.

Each runs the real entry point (``achilles.cli.main:main``) in a fresh interpreter and reports which
heavy modules were imported. A plugin installed beside achilles may import torch itself, so the
first-party plugins only (``ACHILLES_PLUGINS=achilles``)."""

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "huggingface_hub", "numpy", "matplotlib")

PROBE = """
import json, sys
sys.argv = ["achilles", *json.loads(sys.argv[1])]
from achilles.cli.main import main
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print(json.dumps({"code": code, "heavy": [m for m in %r if m in sys.modules]}), file=sys.stderr)
""" % (HEAVY,)


def run_cli(args, **env):
    full = {**os.environ, "ACHILLES_PLUGINS": "achilles", **env}
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True, text=True,
                          env=full, timeout=120)
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    return proc.stdout, report


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["train", "--help"], ["sweep", "--help"]])
def test_commands_that_need_no_model_import_no_torch(args):
    out, report = run_cli(args)
    assert report["code"] == 0
    assert report["heavy"] == []
    assert ("version" in out) if args == ["--version"] else ("Usage: achilles" in out)


def test_help_still_lists_every_builtin_command():
    out, _ = run_cli(["--help"])
    for name in ("train", "eval", "sweep", "list", "plugins", "probe", "zoo"):
        assert f"  {name} " in out


def test_shell_completion_of_a_command_name_imports_no_torch():
    out, report = run_cli([], _ACHILLES_COMPLETE="bash_complete", COMP_WORDS="achilles tr", COMP_CWORD="1")
    assert report["heavy"] == []
    assert "plain,train" in out.splitlines()  # bash_complete prints TYPE,VALUE per completion


def test_an_omp_wait_policy_is_chosen_before_torch_loads():
    """The CLI asks idle OpenMP threads to spin only briefly (a shared machine), before torch
    loads libgomp, unless the user chose a wait policy."""
    code = ("import os, sys; sys.argv = ['achilles', '--version']\n"
            "from achilles.cli.main import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules, "
            "file=sys.stderr)")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    chosen = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert chosen.stderr.split()[-3:] == ["1000", "None", "False"]
    kept = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**env, "OMP_WAIT_POLICY": "PASSIVE"}, timeout=120)
    assert kept.stderr.split()[-3:-1] == ["None", "PASSIVE"]
