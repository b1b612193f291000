"""docs/plugins.md's "A complete plugin, step by step", followed literally: the fenced blocks
headed ``# file: PATH`` are written out, installed with pip as a user installs a package, and
what the page says the commands show is what they show."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"
PLUGINS = "achilles,my-achilles-plugin"


def documented_files() -> dict[str, str]:
    """PATH -> content of every fenced block whose first line is ``# file: PATH``."""
    files = {}
    for body in re.findall(r"^```[a-z]*\n(.*?)^```", DOC.read_text(), flags=re.S | re.M):
        first, _, rest = body.partition("\n")
        match = re.fullmatch(r"# file: (\S+)", first.strip())
        if match:
            files[match.group(1)] = body
    return files


def section() -> str:
    text = DOC.read_text()
    start = text.index("## A complete plugin, step by step")
    return text[start:text.index("\n## ", start + 5)]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("doc") / "my-achilles-plugin"
    files = documented_files()
    assert set(files) == {"pyproject.toml", "my_plugin/__init__.py", "my_plugin/components.py"}
    for path, content in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(content)
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps",
                    "--target", str(target), str(root)], check=True, capture_output=True, timeout=300)
    return target


def achilles(site, *args, code=None):
    env = {**os.environ, "ACHILLES_PLUGINS": PLUGINS,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH", "")]))}
    program = code or "from achilles.cli.main import main; main()"
    return subprocess.run([sys.executable, "-c", program, *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_the_documented_plugin_installs_and_lists_what_the_page_says(site):
    listing = achilles(site, "list")
    assert listing.returncode == 0, listing.stderr
    tasks, archs = listing.stdout.split("architectures (")[0], listing.stdout.split("architectures (")[1]
    assert "my-echo" in tasks and "my-mlp" in archs.split("probes (")[0]
    assert "my-hello" not in listing.stdout  # list shows components, not commands
    plugins = achilles(site, "plugins")
    assert plugins.returncode == 0, plugins.stderr
    for shown in ("my-achilles-plugin:mine", "0.1.0", "tasks: my-echo", "architectures: my-mlp", "commands: my-hello"):
        assert shown in plugins.stdout, shown
    assert "my-echo" in section() and "my-achilles-plugin:mine 0.1.0" in section()
    hello = achilles(site, "my-hello")
    assert hello.returncode == 0 and hello.stdout.strip() == "my-echo", hello.stderr


def test_the_documented_entry_point_imports_no_torch(site):
    probe = achilles(site, code="import sys, my_plugin; print('torch' in sys.modules)")
    assert probe.returncode == 0 and probe.stdout.strip() == "False", probe.stderr


def test_the_documented_plugin_trains(site, tmp_path):
    run = tmp_path / "mine"
    trained = achilles(site, "train", "--arch", "my-mlp", "--task", "my-echo", "--epochs", "1", "--train-samples",
                       "256", "--eval-samples", "64", "--batch-size", "64", "--out", str(run), "--no-progress", "-q")
    assert trained.returncode == 0, trained.stderr
    assert (run / "model.safetensors").is_file()
    rebuilt = achilles(site, str(run), code="import achilles, sys; m = achilles.load(sys.argv[1]).model; "
                       "print(m.config == achilles.create_model('my-mlp', **m.config).config)")
    assert rebuilt.stdout.strip() == "True", rebuilt.stderr
