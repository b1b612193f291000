"""Test-suite setup: only first-party plugins load, figures render headless, no network."""

import os
import signal

# Set before achilles loads anything: stray plugins installed on this machine stay out.
os.environ["ACHILLES_PLUGINS"] = "achilles"
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ["HF_HUB_OFFLINE"] = os.environ.get("HF_HUB_OFFLINE", "1")
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
# A shell that starts the suite in the background (`cmd &`, no job control) makes every child ignore
# SIGINT; the Ctrl-C tests send one to achilles subprocesses, which must see it as from a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import pytest  # noqa: E402
import torch  # noqa: E402

import achilles  # noqa: E402


def pytest_collection_modifyitems(config, items):
    opted_in = (os.environ.get("ACHILLES_TRITON_INTERPRET") == "1"
                or "triton_interpret" in (config.getoption("markexpr") or ""))
    skip_interpret = pytest.mark.skip(reason="opt-in (triton + the kernels' sources): ACHILLES_TRITON_INTERPRET=1 "
                                             "or pytest -m triton_interpret; see benchmarks/README.md")
    skip_gpu = pytest.mark.skip(reason="needs CUDA (run on a GPU machine: pytest -m gpu)")
    for item in items:
        if "triton_interpret" in item.keywords and not opted_in:
            item.add_marker(skip_interpret)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _single_thread():
    """The suite's models are tiny: intra-op threads gain nothing, and on a loaded 2-core
    machine every parallel region waits for a descheduled thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _fresh_plugin_state():
    """Each test sees freshly loaded first-party plugins; in-process registrations don't leak."""
    achilles.reload_plugins()
    yield
    achilles.reload_plugins()
