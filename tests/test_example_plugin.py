"""The example third-party plugin, installed with pip as a user would, then removed."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "achilles-example-plugin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    # --no-build-isolation/--no-deps: offline, and achilles itself is already installed
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps",
                    "--target", str(target), str(EXAMPLE)], check=True, capture_output=True)
    return target


def achilles_cmd(args, site=None):
    env = {**os.environ, "ACHILLES_PLUGINS": "achilles,achilles-example-plugin"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site) if site else "", env.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", "from achilles.cli.main import main; main()", *args],
                          capture_output=True, text=True, env=env)


def test_installed_plugin_shows_in_list_and_plugins(installed):
    listing = achilles_cmd(["list"], installed)
    assert listing.returncode == 0, listing.stderr
    assert "example-successor" in listing.stdout and "example-mlp" in listing.stdout
    assert "example-residual-norm" in listing.stdout
    plugins = achilles_cmd(["plugins"], installed)
    assert "achilles-example-plugin:example" in plugins.stdout and "0.1.0" in plugins.stdout
    assert "commands: example-samples" in plugins.stdout  # every hook, commands included


def test_installed_plugin_command_runs(installed):
    result = achilles_cmd(["example-samples", "-n", "2"], installed)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2


def test_installed_plugin_is_usable_from_the_python_api(installed):
    code = ("import achilles, torch; t = achilles.get_task('example-successor'); "
            "m = achilles.create_model('example-mlp', vocab_size=t.vocab_size); "
            "b = t.generate('train', 4); print(m(b.tokens).shape, sorted(achilles.list_tasks('example-*')))")
    env = {**os.environ, "ACHILLES_PLUGINS": "achilles,achilles-example-plugin",
           "PYTHONPATH": str(installed)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "torch.Size([4, 8, 16]) ['example-successor']" in proc.stdout


def test_uninstalled_plugin_is_gone():
    listing = achilles_cmd(["list"])
    assert listing.returncode == 0
    assert "example-successor" not in listing.stdout and "example-mlp" not in listing.stdout


def test_allow_list_keeps_an_installed_plugin_out(installed):
    env = {**os.environ, "ACHILLES_PLUGINS": "achilles", "PYTHONPATH": str(installed)}
    proc = subprocess.run([sys.executable, "-c", "from achilles.cli.main import main; main()", "list", "tasks"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and "example-successor" not in proc.stdout


def test_a_third_party_architecture_joins_the_atlas(installed, tmp_path):
    """docs/plugins.md: register an architecture, then `achilles atlas --subjects yours,...`."""
    out = tmp_path / "atlas"
    args = ["atlas", "--recipes", "shortcuts-position", "--subjects", "example-mlp", "--seeds", "1",
            "--train-set", "epochs=1", "--train-set", "train_samples=64", "--train-set", "eval_samples=32", "--out", str(out),
            "--workers", "0", "--no-progress", "-q"]
    result = achilles_cmd(args, installed)
    assert result.returncode == 0, result.stderr
    page = (out / "README.md").read_text()
    assert "| recipe | claim | example-mlp |" in page and "(example-mlp/shortcuts-position/report.md)" in page
    report = (out / "example-mlp" / "shortcuts-position" / "report.md").read_text()
    assert "Subject: example-mlp in place of the paper's mamba2" in report
    assert (out / "atlas.png").is_file()
