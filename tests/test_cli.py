"""The CLI as a user runs it: versions, listings, and one-line errors."""

import os
import subprocess
import sys

from click.testing import CliRunner

import achilles
from achilles.cli.main import cli

import toy_plugin


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_version():
    result = run("--version")
    assert result.exit_code == 0 and achilles.__version__ in result.output


def test_list_shows_a_table_with_plugin_and_description():
    achilles.register_plugin(toy_plugin, "toy")
    result = run("list", "archs", "toy-*")
    assert result.exit_code == 0, result.output
    header, rule, row = result.output.splitlines()[:3]
    assert header.split() == ["name", "params", "(default)", "plugin", "description"]
    assert row.split()[0] == "toy-mixer" and "toy" in row and "toy model for foundation tests" in row


def test_plugins_lists_versions_registrations_and_failures():
    achilles.register_plugin(toy_plugin, "toy")
    result = run("plugins")
    assert result.exit_code == 0
    assert "toy" in result.output and "tasks: toy-count" in result.output
    assert "tasks" in result.output and achilles.__version__ in result.output


def test_bad_kind_exits_non_zero_without_traceback():
    result = run("list", "widgets")
    assert result.exit_code != 0 and "Traceback" not in result.output


def test_console_script_reports_errors_in_one_line():
    env = {**os.environ, "ACHILLES_PLUGINS": "achilles"}
    proc = subprocess.run([sys.executable, "-m", "achilles.cli.main", "list", "widgets"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "Invalid value" in proc.stderr
