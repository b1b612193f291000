"""Mixed precision (issue 23): ``--precision fp32|bf16``.

Parity: for every architecture and compute path, a forward and backward under bf16 autocast against
the same weights in fp32, as the relative L2 error ``|a - b| / |b|`` of the outputs and of all the
parameter gradients (concatenated). The tolerances are about twice the largest error measured over
four initialisation seeds on an AMD EPYC with avx512_bf16 (torch 2.13, CPU), at the shape below
(batch 4, 12 tokens, 2 layers, d_model 32); bf16 has an 8-bit mantissa (relative rounding 2^-9 =
2e-3), so errors of 0.5-5% after two layers and a backward are the expected size. Measured, worst
of seeds 0-3 (outputs / gradients):

    transformer 0.8% / 0.9%, transformer-nope 1.0% / 1.6%, transformer-rope 0.9% / 1.3%,
    conv-transformer 0.7% / 0.8%, lstm 0.5% / 0.7%, mamba1 (scan in fp32) 0.8% / 1.1%,
    mamba2 (fast path) 1.1% / 1.8%, mamba2-allone 1.0% / 1.4%, mamba2-posenc 1.0% / 1.6%,
    mamba2-residual 1.2% / 2.4%, mamba2-gated 1.6% / 4.6%, mamba2-global (modular) 0.9% / 1.6%,
    deltanet (delta rule in fp32) 1.7% / 6.1%, deltanet-noconv 1.6% / 5.7%.

The gradients of the first layer are the least precise (they come through the whole backward):
per parameter, 5-8% on layer 0's weights against 1-2% on the last layer's, and tiny gradients
such as dt_bias's (norm ~6e-3) can be off by more than their size on every bf16 path (they are a
sum of cancelling terms). The fast Mamba2 path in bf16 is as close to fp32 as the modular path in
bf16 (tested below).

The fused GPU paths (mamba_ssm kernels, flash-attn) are checked the same way, marked ``gpu``.
"""

import json

import pytest
import torch
from click.testing import CliRunner

import achilles
from achilles.cli.main import cli
from achilles.errors import ConfigError
from achilles.training.profiles import TrainSettings, settings_for
from achilles.runs.folder import RunFolder
from achilles.models.loading import load_run
from achilles.training.trainer import resume_run, start_run

import toy_plugin

#: (outputs, gradients) relative-error tolerances per architecture (see the module docstring)
TOLERANCE = {"transformer": (0.03, 0.04), "transformer-nope": (0.03, 0.04), "transformer-rope": (0.03, 0.04),
             "conv-transformer": (0.03, 0.04), "lstm": (0.03, 0.04), "mamba1": (0.03, 0.04),
             "mamba2": (0.03, 0.05), "mamba2-allone": (0.03, 0.05), "mamba2-posenc": (0.03, 0.05),
             "mamba2-residual": (0.03, 0.06), "mamba2-gated": (0.04, 0.10), "mamba2-global": (0.03, 0.05),
             "deltanet": (0.04, 0.15), "deltanet-noconv": (0.04, 0.12)}
FIRST_PARTY = sorted(TOLERANCE)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def outputs_and_gradients(model, tokens, bf16: bool):
    model.zero_grad(set_to_none=True)
    with torch.autocast(tokens.device.type, dtype=torch.bfloat16, enabled=bf16):
        out = model(tokens)
    out.float().square().mean().backward()  # the loss outside autocast, in fp32
    grads = torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None])
    return out.detach(), grads, [p.grad.dtype for p in model.parameters() if p.grad is not None]


def parity(name: str, device: str = "cpu", length: int = 12, **settings):
    torch.manual_seed(0)
    model = achilles.create_model(name, vocab_size=16, max_len=512, n_layers=2, d_model=32, **settings).to(device)
    tokens = torch.randint(0, 16, (4, length), device=device)
    out32, g32, _ = outputs_and_gradients(model, tokens, bf16=False)
    out16, g16, dtypes = outputs_and_gradients(model, tokens, bf16=True)
    assert all(d == torch.float32 for d in dtypes)  # fp32 master weights: fp32 gradients
    assert torch.isfinite(out16.float()).all() and torch.isfinite(g16).all()
    return relative(out16, out32), relative(g16, g32), model


@pytest.mark.parametrize("name", FIRST_PARTY)
def test_bf16_outputs_and_gradients_match_fp32_on_cpu(name):
    out_err, grad_err, _ = parity(name)
    out_tol, grad_tol = TOLERANCE[name]
    assert out_err < out_tol and grad_err < grad_tol, (name, out_err, grad_err)


def test_mamba2_fast_path_runs_under_autocast():
    """The fast path's hand-written Function used to fail under autocast (vecdot of fp32 and bf16)."""
    _, _, model = parity("mamba2")
    assert {layer.path for layer in model.layers} == {"fast"}


@pytest.mark.parametrize("name", ["mamba2", "mamba2-residual", "mamba2-gated"])
def test_mamba2_fast_path_in_bf16_is_as_close_to_fp32_as_the_modular_path(name):
    """The fast Function computes its wide work in bf16 (projections, convolution, gate, M @ x) and
    keeps the residual stream, the norms' factors, the SSD mixing (dt, cumulative log-decays, exp)
    and the weight-gradient sums in fp32: its bf16 error is the modular path's, within a factor 2."""
    torch.manual_seed(0)
    model = achilles.create_model(name, vocab_size=16, max_len=512, n_layers=2, d_model=32)
    tokens = torch.randint(0, 16, (4, 12))
    out32, g32, _ = outputs_and_gradients(model, tokens, bf16=False)
    fast_out, fast_g, dtypes = outputs_and_gradients(model, tokens, bf16=True)
    assert {layer.path for layer in model.layers} == {"fast"} and set(dtypes) == {torch.float32}
    for layer in model.layers:
        layer.force_path = "modular"
    mod_out, mod_g, _ = outputs_and_gradients(model, tokens, bf16=True)
    assert relative(fast_out, out32) < 2 * relative(mod_out, out32) + 2e-3
    assert relative(fast_g, g32) < 2 * relative(mod_g, g32) + 2e-3


def test_mamba2_fast_path_computes_in_bf16_under_autocast(monkeypatch):
    """Under autocast the fast path's projections really run in bf16 (the speed), not in fp32."""
    from achilles.plugins.archs import mamba2_fast

    seen = []
    real_mm = torch.mm

    def spy(a, b, *args, **kwargs):
        seen.append(a.dtype)
        return real_mm(a, b, *args, **kwargs)

    torch.manual_seed(0)
    model = achilles.create_model("mamba2", vocab_size=16, max_len=512, n_layers=1, d_model=32)
    monkeypatch.setattr(mamba2_fast.torch, "mm", spy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.randint(0, 16, (2, 8)))
    assert seen and set(seen) == {torch.bfloat16}


@pytest.mark.parametrize("path", ["modular", "chunked"])
def test_mamba2_modular_and_chunked_paths_under_bf16(path):
    settings = {"ssd_form": "chunked", "chunk_size": 8} if path == "chunked" else {}
    torch.manual_seed(0)
    model = achilles.create_model("mamba2-residual", vocab_size=16, max_len=512, n_layers=2, d_model=32, **settings)
    if path == "modular":
        for layer in model.layers:
            layer.force_path = "modular"
    tokens = torch.randint(0, 16, (4, 20))
    out32, g32, _ = outputs_and_gradients(model, tokens, bf16=False)
    out16, g16, _ = outputs_and_gradients(model, tokens, bf16=True)
    assert {layer.path for layer in model.layers} == {"modular"}
    assert relative(out16, out32) < 0.03 and relative(g16, g32) < 0.04


def test_ssd_accumulations_stay_fp32_under_autocast():
    """The SSD's decay mask (cumulative sums of log-decays, exp) is computed in fp32 on every path."""
    from achilles.plugins.archs.ssd import decay_mask

    log_a = -torch.rand(2, 3, 10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        L = decay_mask(log_a)
    assert L.dtype == torch.float32  # cumsum and exp are not autocast to bf16


# -- training settings and runs -------------------------------------------------------------------
TINY = dict(profile="quick", epochs=2, train_samples=256, eval_samples=32, batch_size=32, progress=False)


@pytest.fixture
def toy():
    achilles.register_plugin(toy_plugin, "toy")


def test_precision_setting_defaults_and_validation():
    assert settings_for("quick", {}).precision is None
    assert settings_for("quick", {}).resolved(0, torch.device("cpu")).precision == "fp32"
    assert settings_for("paper", {}).resolved(0, torch.device("cpu")).precision == "fp32"  # bf16 only on a GPU
    assert settings_for("quick", {}, precision="bf16").resolved(0, "cpu").precision == "bf16"
    with pytest.raises(ConfigError, match="fp32 or bf16"):
        settings_for("quick", {}, precision="fp16")
    old = TrainSettings.from_dict({k: v for k, v in settings_for("quick", {}).to_dict().items() if k != "precision"})
    assert old.precision is None


def test_a_bf16_run_records_its_precision_keeps_fp32_weights_and_resumes_in_bf16(tmp_path, toy):
    trainer = start_run("toy-mixer", "toy-count", out=tmp_path / "run", precision="bf16", **TINY)
    assert trainer.settings.precision == "bf16"
    result = trainer.fit()
    assert result.status == "finished"
    config = RunFolder(tmp_path / "run").read_config()
    assert config["training"]["precision"] == "bf16"
    assert all(v.dtype == torch.float32 for v in load_run(tmp_path / "run").model.state_dict().values())
    state = trainer.optimizer.state_dict()["state"]
    assert all(s["exp_avg"].dtype == torch.float32 for s in state.values())
    from achilles.training.trainer import finalize_run

    finalize_run(result)  # the card says it
    assert "bf16 precision" in (tmp_path / "run" / "README.md").read_text()
    # an interrupted bf16 run resumes in bf16
    RunFolder(tmp_path / "run").update_config(status="interrupted")
    assert resume_run(tmp_path / "run", progress=False).settings.precision == "bf16"


def test_runs_recorded_before_the_setting_resume_in_fp32(tmp_path, toy):
    start_run("toy-mixer", "toy-count", out=tmp_path / "run", **TINY)
    run = RunFolder(tmp_path / "run")
    config = run.read_config()
    config["training"].pop("precision")
    run.write_config({**config, "status": "interrupted"})
    assert resume_run(tmp_path / "run", progress=False).settings.precision == "fp32"


def test_a_conflicting_precision_on_resume_is_refused(tmp_path, toy):
    start_run("toy-mixer", "toy-count", out=tmp_path / "run", precision="bf16", **TINY)
    RunFolder(tmp_path / "run").update_config(status="interrupted")
    result = CliRunner().invoke(cli, ["train", "--resume", str(tmp_path / "run"), "--precision", "fp32"])
    assert result.exit_code != 0
    assert "--precision fp32 (the run's: bf16)" in result.output and "Traceback" not in result.output


def test_an_unknown_precision_lists_the_choices():
    for command in (["train", "--arch", "x", "--task", "y"], ["sweep", "--arch", "x", "--task", "y"],
                    ["reproduce", "x"]):
        result = CliRunner().invoke(cli, [*command, "--precision", "fp16"])
        assert result.exit_code == 2 and "'fp16' is not one of 'fp32', 'bf16'" in result.output, command


def test_bf16_where_autocast_cannot_is_refused_before_any_folder(tmp_path, toy, monkeypatch):
    import achilles.training.precision as precision

    monkeypatch.setattr(precision, "_bf16_unsupported", lambda device_type: "no bf16 here (test)")
    with pytest.raises(ConfigError, match="bf16 cannot run on cpu"):
        start_run("toy-mixer", "toy-count", out=tmp_path / "run", precision="bf16", **TINY)
    assert not (tmp_path / "run").exists()
    result = CliRunner().invoke(cli, ["train", "--arch", "toy-mixer", "--task", "toy-count", "--device", "cpu",
                                      "--precision", "bf16", "--out", str(tmp_path / "cli")])
    assert result.exit_code != 0 and len([l for l in result.output.splitlines() if l.startswith("Error")]) == 1
    assert not (tmp_path / "cli").exists()


def test_a_non_finite_bf16_loss_ends_the_run_failed(tmp_path, toy):
    trainer = start_run("toy-mixer", "toy-count", out=tmp_path / "run", precision="bf16", **TINY)
    calls = {"n": 0}

    def poison_in_epoch_two(value, site):
        if not trainer.model.training:
            return value
        calls["n"] += 1
        return value * float("nan") if calls["n"] > 8 else value

    with trainer.model.hooks(edit={"resid.1": poison_in_epoch_two}):
        result = trainer.fit()
    assert result.status == "failed" and "loss became nan at epoch 2" in result.reason
    config = RunFolder(tmp_path / "run").read_config()
    assert config["status"] == "failed" and config["training"]["precision"] == "bf16"


@pytest.mark.parametrize("method", ["loop", "vmap"])
def test_an_ensemble_trains_in_bf16(tmp_path, toy, method):
    from achilles.training.ensemble import EnsembleTrainer

    trainers = [start_run("toy-mixer", "toy-count", out=tmp_path / f"s{seed}", seed=seed, precision="bf16", **TINY)
                for seed in (0, 1)]
    results = EnsembleTrainer(trainers, method=method, progress=False).fit()
    assert [r.status for r in results] == ["finished", "finished"]
    assert all(RunFolder(r.path).read_config()["training"]["precision"] == "bf16" for r in results)


def test_bf16_evaluation_is_close_to_fp32(toy):
    from achilles.training.evaluation import evaluate

    torch.manual_seed(0)
    model = achilles.create_model("transformer", vocab_size=16, max_len=32, n_layers=2, d_model=32)
    task = toy_plugin.CountTask(vocab=8, length=6)
    fp32 = evaluate(model, task, ["test"], samples=64)
    bf16 = evaluate(model, task, ["test"], samples=64, precision="bf16")
    assert abs(fp32["test"]["loss"] - bf16["test"]["loss"]) < 0.05 * abs(fp32["test"]["loss"])


def test_cpu_description_names_the_model_and_its_bf16_units():
    from achilles.training.precision import cpu_description, cpu_line

    cpu = cpu_description()
    assert cpu["model"] and isinstance(cpu["bf16_units"], list) and cpu["has_bf16"] == bool(cpu["bf16_units"])
    assert cpu_line().startswith("CPU: ")


# -- GPU: the fused paths -------------------------------------------------------------------------
GPU_CASES = ["mamba2", "mamba2-residual", "mamba2-gated", "mamba2-global", "transformer", "conv-transformer",
             "mamba1", "deltanet"]


@pytest.mark.gpu
@pytest.mark.parametrize("name", GPU_CASES)
def test_bf16_matches_fp32_on_the_gpu_paths(name):
    """The default path on CUDA (the fused kernels where installed) under bf16 autocast against fp32."""
    out_err, grad_err, _ = parity(name, device="cuda", length=29)
    out_tol, grad_tol = TOLERANCE[name]
    assert out_err < 2 * out_tol and grad_err < 2 * grad_tol, (name, out_err, grad_err)


# -- cost estimates per CPU -------------------------------------------------------------------------
def test_cost_estimates_use_this_cpus_table_else_say_which_cpu_measured_them(monkeypatch):
    from achilles.recipes import cost

    entry = {"arch": "a", "task": "t", "n_layers": 2, "d_model": 8, "seq_len": 6}
    table = {"cpu": {"fallback": "Other CPU", "by_model": {
        "Other CPU": {"machine": "x86_64 Other CPU, 2 cores", "cpu_model": "Other CPU", "bf16_units": [],
                      "how": "h", "entries": [{**entry, "samples_per_s": 10.0}]},
        "This CPU": {"machine": "x86_64 This CPU, 8 cores", "cpu_model": "This CPU", "bf16_units": ["amx_bf16"],
                     "how": "h", "entries": [{**entry, "samples_per_s": 40.0},
                                             {**entry, "samples_per_s": 80.0, "precision": "bf16"}]}}}}
    monkeypatch.setattr(cost, "throughput_table", lambda path=None: table)
    shape = cost.Shape("a", "t", 2, 8, 6)
    monkeypatch.setattr("achilles.training.precision.cpu_description",
                        lambda: {"model": "This CPU", "bf16_units": ["amx_bf16"], "has_bf16": True})
    assert cost.samples_per_second(shape, "cpu") == (40.0, False)
    assert cost.samples_per_second(shape, "cpu", "bf16") == (80.0, False)
    assert "measured on this CPU (This CPU)" in cost.how_estimated("cpu") and "amx_bf16" in cost.how_estimated("cpu")
    monkeypatch.setattr("achilles.training.precision.cpu_description",
                        lambda: {"model": "A Third CPU", "bf16_units": [], "has_bf16": False})
    assert cost.samples_per_second(shape, "cpu") == (10.0, False)
    assert cost.samples_per_second(shape, "cpu", "bf16") == (10.0, False)  # no bf16 measured there: fp32
    assert "measured on Other CPU, not on this CPU (A Third CPU)" in cost.how_estimated("cpu")


def test_the_shipped_throughput_table_is_keyed_by_cpu_model():
    from achilles.recipes import cost

    tables, fallback = cost._tables("cpu")
    assert fallback in tables and all(t.get("entries") for t in tables.values())


def test_a_sweep_trains_its_cells_in_the_precision_asked_for(tmp_path, toy):
    from achilles.sweep import SweepOptions, make_spec, plan_cells, run_sweep, sweep_folder

    tiny = dict(epochs=1, train_samples=64, eval_samples=16, batch_size=32)
    spec = make_spec("toy-mixer", "toy-count", {"gamma": [0.5, 1.0]}, 1, "quick", precision="bf16", **tiny)
    plain = make_spec("toy-mixer", "toy-count", {"gamma": [0.5, 1.0]}, 1, "quick", **tiny)
    assert sweep_folder(spec, None, tmp_path) != sweep_folder(plain, None, tmp_path)  # its own folder
    folder = sweep_folder(spec, None, tmp_path)
    result = run_sweep(spec, SweepOptions(folder=folder, workers=0, progress=False, threads=1))
    assert result.trained == 2 and not result.errors
    assert {RunFolder(c.path).read_config()["training"]["precision"] for c in plan_cells(spec, folder)} == {"bf16"}


def test_reproduce_in_bf16_records_it_in_the_report_budget_table(tmp_path):
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from test_recipes import invoke, register_toy, toy_recipe

    register_toy([toy_recipe()])
    out = tmp_path / "out"
    result = invoke("toy-count", "--out", str(out), "--precision", "bf16")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert [b["precision"] for b in report["budget"]] == ["bf16"]
    text = (out / "report.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| group | arch | task |"))
    assert header.rstrip().endswith("| lr | precision |") and "| bf16 |" in text
    configs = [json.loads(p.read_text()) for p in (out / "runs").glob("*/*/run.json")]
    assert configs and {c["training"]["precision"] for c in configs} == {"bf16"}


def test_bench_archs_times_both_precisions_and_names_the_cpu(capsys, monkeypatch):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_archs.py"
    spec = importlib.util.spec_from_file_location("bench_archs", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr("achilles.training.precision.cpu_description",
                        lambda: {"model": "Test CPU", "bf16_units": [], "has_bf16": False})
    assert bench.main(["--shapes", "tiny", "--archs", "transformer", "--rounds", "1", "--steps", "1",
                       "--no-anchor", "--precision", "fp32,bf16", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "# CPU: Test CPU; bf16 units: none" in out and "brings no speed here" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("transformer ")]
    assert [r[3] for r in rows] == ["fp32", "bf16"] and "bf16/fp32" in out


def test_the_paper_profile_defaults_to_bf16_on_a_bf16_gpu_only(monkeypatch):
    from achilles.training.precision import default_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert default_precision("paper", "cuda") == "bf16" and default_precision("quick", "cuda") == "fp32"
    assert default_precision("paper", "cpu") == "fp32"
    assert settings_for("paper", {}).resolved(0, torch.device("cuda")).precision == "bf16"
    assert settings_for("paper", {}, precision="fp32").resolved(0, torch.device("cuda")).precision == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert default_precision("paper", "cuda") == "fp32"
