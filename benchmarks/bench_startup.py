"""How long a TAB and ``achilles --help`` take, with and without a third-party plugin installed.

    python benchmarks/bench_startup.py                  # 7 interleaved rounds
    python benchmarks/bench_startup.py --rounds 11

Each measurement is a fresh process of the installed ``achilles`` console script, as a shell
runs it: ``--help``, and click's ``bash_complete`` protocol for a command name (``achilles tr``),
an architecture name (``train --arch ma``) and a zoo id (``eval mamba2.co``). Each runs twice,
once with achilles' own plugins only (``ACHILLES_PLUGINS=achilles``) and once with the example
plugin (``examples/achilles-example-plugin``, installed into a temporary folder on
``PYTHONPATH``) allowed; the completion-name cache lives in a temporary ``XDG_CACHE_HOME``, warmed
once per setup before timing (a user's first TAB after installing a plugin fills it). Rows are
timed in interleaved rounds; the table gives the fastest and the median wall time of each and
the load average before and after. Target (issue 22): a TAB under 0.3 s with the plugin.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "achilles-example-plugin"
TARGET_S = 0.3

#: (row name, argv after ``achilles`` or None for completion, the completion line or None)
CASES = [("--help", ["--help"], None),
         ("TAB: achilles tr", None, "tr"),
         ("TAB: train --arch ma", None, "train --arch ma"),
         ("TAB: eval mamba2.co (zoo ids)", None, "eval mamba2.co")]


def achilles_script() -> str:
    """The console script beside this interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("achilles")
    found = str(beside) if beside.is_file() else shutil.which("achilles")
    if not found:
        sys.exit("bench_startup: no `achilles` console script found; pip install -e . first")
    return found


def environment(site: Path | None, cache: Path, line: str | None) -> dict[str, str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache),
           "ACHILLES_PLUGINS": "achilles,achilles-example-plugin" if site else "achilles"}
    if site:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH", "")]))
    if line is not None:
        words = line.split(" ")
        env.update(_ACHILLES_COMPLETE="bash_complete", COMP_WORDS=" ".join(["achilles", *words]),
                   COMP_CWORD=str(len(words)))
    return env


def timed(script: str, argv: list[str] | None, env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run([script, *(argv or [])], capture_output=True, text=True, env=env, timeout=120)
    return time.perf_counter() - start, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds over all rows")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds must be 1 or more (got {args.rounds})")
    script = achilles_script()
    with tempfile.TemporaryDirectory() as tmp:
        site, cache = Path(tmp) / "site", Path(tmp) / "cache"
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps",
                        "--target", str(site), str(EXAMPLE)], check=True, capture_output=True, timeout=300)
        setups = [("achilles only", None), ("+ example plugin", site)]
        rows = [(case, setup) for case in CASES for setup in setups]
        for (_, argv, line), (_, where) in rows:  # warm: the plugin's names go into the cache once
            _, out = timed(script, argv, environment(where, cache, line))
            if line is not None and not out.strip():
                sys.exit(f"bench_startup: `achilles {line}<TAB>` offered nothing; is achilles installed?")
        load_before = os.getloadavg()
        times: dict[int, list[float]] = {i: [] for i in range(len(rows))}
        for _ in range(args.rounds):
            for i, ((_, argv, line), (_, where)) in enumerate(rows):
                times[i].append(timed(script, argv, environment(where, cache, line))[0])
        load_after = os.getloadavg()
    print(f"achilles startup, {args.rounds} interleaved rounds; load average before {load_before[0]:.2f}, "
          f"after {load_after[0]:.2f}; Python {sys.version.split()[0]}")
    print(f"{'command':32} {'plugins':18} {'best s':>7} {'median s':>9}  target < {TARGET_S} s")
    for i, ((name, _, line), (setup, _)) in enumerate(rows):
        best, median = min(times[i]), statistics.median(times[i])
        verdict = ("met" if median < TARGET_S else "not met") if line is not None else ""
        print(f"{name:32} {setup:18} {best:7.3f} {median:9.3f}  {verdict}")


if __name__ == "__main__":
    main()
