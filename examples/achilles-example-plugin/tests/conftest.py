"""The plugin's tests run against an installed achilles, without installing the plugin: it is
registered in-process, exactly as its entry point would register it."""

import os
import sys
from pathlib import Path

# Before achilles loads: only achilles' own plugins come from entry points, so a copy of this
# plugin installed on the machine (or any other plugin) cannot interfere.
os.environ["ACHILLES_PLUGINS"] = "achilles"
os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pytest  # noqa: E402

import achilles  # noqa: E402
import achilles_example  # noqa: E402


@pytest.fixture(autouse=True)
def example_plugin():
    achilles.reload_plugins()
    assert achilles.register_plugin(achilles_example, "example")
    yield
    achilles.reload_plugins()
