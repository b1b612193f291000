"""Shell completion completes architecture, task, probe and recipe names and zoo ids, through
click's bash_complete protocol as the shell runs it, without importing torch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "achilles-example-plugin"

PROBE = """
import json, sys
from achilles.cli.main import main
try:
    main([])
except SystemExit:
    pass
print(json.dumps({"torch": "torch" in sys.modules, "numpy": "numpy" in sys.modules}), file=sys.stderr)
"""


def complete(line: str, site=None, plugins="achilles", **env):
    """What `achilles LINE<TAB>` offers (bash_complete: one TYPE,VALUE per line), and whether torch loaded."""
    words = line.split(" ")
    full = {**os.environ, "ACHILLES_PLUGINS": plugins, "_ACHILLES_COMPLETE": "bash_complete",
            "COMP_WORDS": " ".join(["achilles", *words]), "COMP_CWORD": str(len(words)), **env}
    if site:
        full["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), full.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=full, timeout=120)
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    values = [line.split(",", 1)[1] for line in proc.stdout.splitlines() if "," in line]
    return values, report


def test_arch_names_complete_without_torch(tmp_path):
    values, report = complete("train --arch ma", XDG_CACHE_HOME=str(tmp_path))
    assert {"mamba2", "mamba2-residual", "mamba1"} <= set(values)
    assert all(v.startswith("ma") for v in values)
    assert report == {"torch": False, "numpy": False}


@pytest.mark.parametrize("line, expected", [
    ("train --task in", {"inverse"}),
    ("sweep --arch transformer-r", {"transformer-rope"}),
    ("data show --task mq", {"mqar"}),
    ("probe RUN --probe bl", {"blocking"}),
    ("reproduce achilles-fig", {"achilles-fig4", "achilles-fig9"}),
    ("reproduce --subject lst", {"lstm"}),
    ("atlas --subjects mamba2,trans", {"mamba2,transformer", "mamba2,transformer-rope"}),
    ("list archs delta", {"deltanet", "deltanet-noconv"}),
])
def test_names_complete_on_every_command_that_takes_them(line, expected, tmp_path):
    values, report = complete(line, XDG_CACHE_HOME=str(tmp_path))
    assert expected <= set(values), values
    assert not report["torch"]


def test_zoo_ids_complete(tmp_path):
    from achilles.registry import registry_path

    ids = [e["id"] for e in json.loads(registry_path().read_text())["entries"]]
    assert ids
    values, report = complete(f"zoo show {ids[0][:4]}", XDG_CACHE_HOME=str(tmp_path))
    assert ids[0] in values and not report["torch"]
    values, _ = complete(f"eval {ids[0][:4]}", XDG_CACHE_HOME=str(tmp_path))
    assert ids[0] in values


def test_the_first_party_names_completion_knows_are_the_registries():
    """completion.FIRST_PARTY_NAMES answers a TAB without loading torch: a first-party component
    added to the registries must be added there too."""
    from achilles.cli.completion import FIRST_PARTY_NAMES
    from achilles.contract.entry_points import FIRST_PARTY
    from achilles.contract.loader import get_state

    state = get_state()
    for kind, names in FIRST_PARTY_NAMES.items():
        registered = sorted(e.name for e in state.registries[kind].entries()
                            if state.plugins.get(e.plugin) is not None
                            and state.plugins[e.plugin].distribution == FIRST_PARTY)
        assert sorted(names) == registered, f"update achilles.cli.completion.FIRST_PARTY_NAMES[{kind!r}]"


@pytest.fixture(scope="module")
def example_site(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps",
                    "--target", str(target), str(EXAMPLE)], check=True, capture_output=True, timeout=300)
    return target


def test_with_the_example_plugin_help_and_completion_stay_without_torch(example_site, tmp_path):
    """The example plugin imports torch only inside its hooks: `achilles --help` and a command
    name's TAB load none; its names complete, the second TAB from the cache, without torch."""
    plugins = "achilles,achilles-example-plugin"
    values, report = complete("tr", site=example_site, plugins=plugins, XDG_CACHE_HOME=str(tmp_path))
    assert "train" in values and not report["torch"]
    env = {**os.environ, "ACHILLES_PLUGINS": plugins, "PYTHONPATH": str(example_site)}
    code = ("import sys\nfrom achilles.cli.main import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, file=sys.stderr)")
    helped = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "example-samples" in helped.stdout and helped.stderr.split()[-1] == "False"
    first, _ = complete("train --arch ex", site=example_site, plugins=plugins, XDG_CACHE_HOME=str(tmp_path))
    assert first == ["example-mlp"]
    again, report = complete("train --arch ex", site=example_site, plugins=plugins, XDG_CACHE_HOME=str(tmp_path))
    assert again == ["example-mlp"] and not report["torch"]
    recipes, report = complete("reproduce example-", site=example_site, plugins=plugins, XDG_CACHE_HOME=str(tmp_path))
    assert recipes == ["example-successor-mlp"] and not report["torch"]
