"""Threads of a CPU training: the CPUs the process may use, the knob, and giving threads up to
other processes' work (``achilles.training.threads``)."""

import os
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from achilles import ConfigError

from achilles.training import threads as cpu_threads
from achilles.cli.main import cli
from achilles.training.threads import ThreadGovernor, apply_threads, cgroup_cpu_limit, parse_threads, usable_cpus


@pytest.fixture(autouse=True)
def keep_torch_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(cpu_threads, "_adaptive", False)
    yield
    torch.set_num_threads(before)


def write(root, relative, text):
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_cgroup_v2_quota_caps_the_cpus(tmp_path):
    write(tmp_path, "cpu.max", "150000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.5
    assert usable_cpus(tmp_path) == min(len(os.sched_getaffinity(0)), 2)
    write(tmp_path, "cpu.max", "50000 100000\n")
    assert usable_cpus(tmp_path) == 1  # half a CPU still runs one thread
    write(tmp_path, "cpu.max", "max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    assert usable_cpus(tmp_path) == len(os.sched_getaffinity(0))


def test_a_cgroup_v1_quota_caps_the_cpus(tmp_path):
    write(tmp_path, "cpu/cpu.cfs_quota_us", "100000\n")
    write(tmp_path, "cpu/cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.0 and usable_cpus(tmp_path) == 1
    write(tmp_path, "cpu/cpu.cfs_quota_us", "-1\n")  # no quota
    assert cgroup_cpu_limit(tmp_path) is None


def test_no_cgroup_files_means_the_affinity(tmp_path):
    assert usable_cpus(tmp_path) == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("value, expected", [(None, None), ("", None), ("auto", None), ("3", 3), (2, 2)])
def test_thread_counts_parse(value, expected):
    assert parse_threads(value) == expected


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_bad_thread_count_is_a_config_error(value):
    with pytest.raises(ConfigError, match="ACHILLES_THREADS"):
        parse_threads(value)


def test_a_fixed_count_is_set_and_not_adapted():
    assert apply_threads(1) == 1 and torch.get_num_threads() == 1
    assert ThreadGovernor.for_training("cpu") is None


def test_the_environment_fixes_the_count(monkeypatch):
    monkeypatch.setenv("ACHILLES_THREADS", "1")
    assert apply_threads(None) == 1
    assert ThreadGovernor.for_training("cpu") is None


def test_the_default_adapts_on_a_cpu_only(monkeypatch):
    monkeypatch.delenv("ACHILLES_THREADS", raising=False)
    monkeypatch.setattr(cpu_threads, "usable_cpus", lambda root="/sys/fs/cgroup": 2)
    assert apply_threads(None) == 2
    assert isinstance(ThreadGovernor.for_training("cpu"), ThreadGovernor)
    assert ThreadGovernor.for_training("cuda") is None


@pytest.mark.parametrize("others, threads", [(0.0, 2), (0.4, 2), (0.7, 1), (1.0, 1), (5.0, 1)])
def test_threads_are_the_cpus_other_work_leaves(others, threads):
    assert ThreadGovernor(2).choose(others) == threads
    assert ThreadGovernor(4).choose(1.0) == 3


def test_a_busy_neighbour_takes_a_thread_and_gives_it_back(monkeypatch):
    """Others' use is the CPUs' busy time minus this process's own: a neighbour that kept one CPU
    busy for the whole interval leaves one thread; once it stops, both come back."""
    clock = {"t": 0.0, "own": 0.0, "busy": 0.0}
    monkeypatch.setattr(cpu_threads, "_busy_seconds", lambda cpus: clock["busy"])
    governor = ThreadGovernor(2, interval=1.0)
    monkeypatch.setattr(governor, "_sample", lambda: (clock["t"], clock["own"], clock["busy"]))
    governor._mark = governor._sample()

    def interval(own, others):
        clock["t"] += 1.0
        clock["own"] += own
        clock["busy"] += own + others
        governor.tick()

    assert torch.get_num_threads() == 2
    interval(own=1.3, others=0.7)
    interval(own=1.0, others=1.0)
    assert governor.threads == 1 and torch.get_num_threads() == 1
    for _ in range(3):
        interval(own=1.0, others=0.0)
    assert governor.threads == 2 and torch.get_num_threads() == 2


def test_train_refuses_a_bad_thread_count_in_one_line():
    result = CliRunner().invoke(cli, ["train", "--arch", "mamba2", "--task", "composite", "--threads", "0"])
    assert result.exit_code == 2 and "--threads" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["train", "--arch", "mamba2", "--task", "composite"],
                                env={"ACHILLES_THREADS": "many"})
    assert result.exit_code == 2
    assert "Error: invalid setting ACHILLES_THREADS" in result.output


def test_sweep_workers_inherit_the_wait_policy(monkeypatch):
    from achilles.sweep.worker import worker_env

    monkeypatch.setenv("GOMP_SPINCOUNT", "1000")
    assert worker_env(1, "cpu", "auto")["env"]["GOMP_SPINCOUNT"] == "1000"


def test_the_cli_default_stops_adapting_when_the_command_ends(tmp_path, monkeypatch):
    """`achilles train` without --threads follows the machine's load while it runs; once the command
    returns (an in-process call: a notebook, a test), later Python-API runs keep a fixed count."""
    import achilles.training.trainer as trainer

    seen = []

    def record(*args, **kwargs):
        seen.append(cpu_threads._adaptive)
        raise SystemExit(0)  # stop before training: the flag is what is checked

    monkeypatch.setattr(trainer, "start_run", record)
    result = CliRunner().invoke(cli, ["train", "--arch", "mamba2", "--task", "inverse", "--out", str(tmp_path / "r")])
    assert seen == [True], result.output  # adaptive while the command ran
    assert cpu_threads._adaptive is False and ThreadGovernor.for_training("cpu") is None
