"""The first-party probes (blocking, substitution, conv-similarity, information-flow) and
``achilles probe``, on tiny untrained models: each result is checked against a computation
that does not go through the probe."""

import json

import pytest
import torch
from click.testing import CliRunner

import achilles
from achilles import ProbeContext
from achilles.cli.main import cli
from achilles.plugins.probes._common import pair_sets, run_chunks
from achilles.plugins.probes.blocking import block_mask, blocked_run, filler_mask
from achilles.plugins.probes.conv_similarity import tap_cosine
from achilles.plugins.probes.substitution import substituted_run
from achilles.runs.layout import INIT_WEIGHTS
from achilles.runs.folder import RunFolder

import toy_plugin

TINY = {"mamba2": dict(n_layers=2, d_model=16, d_state=16), "mamba2-allone": dict(n_layers=2, d_model=16, d_state=16),
        "transformer": dict(n_layers=2, d_model=16)}


@pytest.fixture
def task():
    return achilles.get_task("composite")


def tiny(arch, task, seed=0):
    torch.manual_seed(seed)
    return achilles.create_model(arch, vocab_size=task.vocab_size, max_len=task.seq_len, **TINY[arch])


def make_run(path, arch, task_name="composite", init_seed=1):
    """A run folder as the trainer leaves it: config, weights and (different) initial weights."""
    task = achilles.get_task(task_name, **({"n_layers": 2} if task_name == "inverse" else {}))
    model = tiny(arch, task)
    run = RunFolder(path)
    run.save_weights(tiny(arch, task, seed=init_seed).state_dict(), name=INIT_WEIGHTS)
    sha = run.save_weights(model.state_dict())
    run.write_config({"arch": arch, "model": dict(model.config), "task": task_name,
                      "task_config": dict(task.config), "seed": 0, "status": "finished",
                      "weights_sha256": sha})
    return path, model


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


# -- blocking ---------------------------------------------------------------------------------
def test_block_mask_is_the_key_and_anchor_columns_below_the_diagonal():
    key_pos = torch.tensor([0, 3, 5])  # 0-based: anchors at +1, +2 (the last sample ends on anchor 2)
    mask = block_mask(key_pos, 8)
    for n, p in enumerate(key_pos.tolist()):
        expected = torch.zeros(8, 8, dtype=torch.bool)
        for s in (p, p + 1, p + 2):
            expected[s + 1:, s] = True
        assert torch.equal(mask[n], expected)
    downstream = block_mask(key_pos, 8, targets="downstream")
    assert torch.equal(downstream[1, :, 3], torch.tensor([0, 0, 0, 0, 0, 0, 1, 1], dtype=torch.bool))
    assert not downstream[2].any()  # nothing follows the anchors


def test_filler_control_cuts_as_many_columns_never_the_key_or_anchors():
    key_pos = torch.tensor([0, 2, 5, 5])  # 0-based; at 5 the anchors take the last two positions
    for seed in range(5):
        mask = filler_mask(key_pos, 8, count=3, seed=seed)
        columns = mask.any(1)  # columns cut in some row (the last column has no later row to cut)
        for n, p in enumerate(key_pos.tolist()):
            assert not columns[n, p:p + 3].any() and int(columns[n].sum()) <= 3
            assert not mask[n].triu().any()  # only later rows t > s, never the diagonal
        assert torch.equal(columns[2:].sum(1), torch.tensor([3, 3]))  # filler 0..4: all three are cut
    assert not torch.equal(filler_mask(key_pos, 8, 3, seed=0), filler_mask(key_pos, 8, 3, seed=1))


def test_blocking_zeroes_exactly_the_intended_entries_in_every_layer_and_head(task):
    model = tiny("mamba2", task)
    data = pair_sets(task, ["34"], 32, "test", seed=0)["34"]
    sites = model.hook_points("layers.*.ssm.matrix")
    mask = block_mask(data.key_pos, 8)
    _, plain = blocked_run(model, data.tokens, torch.zeros_like(mask), sites, read=sites)
    _, edited = blocked_run(model, data.tokens, mask, sites, read=sites)  # a read sees the edit
    first = sites[0]
    assert torch.equal(edited[first][mask.unsqueeze(1).expand_as(edited[first])],
                       torch.zeros(int(mask.sum()) * edited[first].shape[1]))
    assert torch.equal(edited[first][~mask.unsqueeze(1).expand_as(edited[first])],
                       plain[first][~mask.unsqueeze(1).expand_as(plain[first])])  # layer 0 sees the same input
    assert (plain[first][mask.unsqueeze(1).expand_as(plain[first])] != 0).any()  # the cut removed something


def test_blocking_matches_an_independent_computation(task, tmp_path):
    model = tiny("mamba2", task)
    result = achilles.get_probe("blocking").run(model, task, ProbeContext(tmp_path), samples=40, pair="12,34")
    for pair in ("12", "34"):
        data = pair_sets(task, [pair], 40, "test", seed=0)[pair]

        def cut(value, site):  # per-sample loop, no shared helpers
            value = value.clone()
            for n, p in enumerate(data.key_pos.tolist()):
                for s in (p, p + 1, p + 2):
                    value[n, :, s + 1:, s] = 0
            return value

        with torch.no_grad():
            plain = model(data.tokens)[:, -1].argmax(-1)
            with model.hooks(edit={"layers.*.ssm.matrix": cut}):
                blocked = model(data.tokens)[:, -1].argmax(-1)
        assert result["per_pair"][pair]["same"] == pytest.approx((plain == blocked).float().mean().item())
    assert result["mean_same"] < 1  # the cut is live: an untrained model does read the key through S
    assert (tmp_path / "blocking.png").stat().st_size > 0
    assert json.loads((tmp_path / "blocking.json").read_text())["per_pair"].keys() == {"12", "34"}


def test_blocking_nothing_leaves_every_output_unchanged(task, tmp_path):
    result = achilles.get_probe("blocking").run(tiny("mamba2", task), task, ProbeContext(tmp_path), samples=16,
                                                sources=[], pair="11,34,43")
    assert len(result["per_pair"]) == 3 and all(v["same"] == 1.0 for v in result["per_pair"].values())


def test_blocking_on_a_transformer_cuts_the_attention(task, tmp_path):
    result = achilles.get_probe("blocking").run(tiny("transformer", task), task, ProbeContext(tmp_path),
                                                samples=16, pair="34")
    assert result["settings"]["site"] == "attn.scores" and 0 <= result["mean_same"] <= 1


# -- substitution -----------------------------------------------------------------------------
def test_substitution_with_the_twin_itself_always_gives_the_twin_output(task, tmp_path):
    result = achilles.get_probe("substitution").run(tiny("mamba2", task), task, ProbeContext(tmp_path),
                                                    samples=24, pair="43")
    entry = result["per_pair"]["43"]
    assert {k: entry[k] for k in ("to_twin", "already_twin", "kept", "n")} == {
        "to_twin": 1.0, "already_twin": 1.0, "kept": 1.0, "n": 24}


def test_substitution_reports_a_random_twin_control_beside_the_finding(task, tmp_path):
    result = achilles.get_probe("substitution").run(tiny("mamba2", task), task, ProbeContext(tmp_path),
                                                    samples=24, pair="12,34")
    for pair, entry in result["per_pair"].items():
        assert entry["control_pair"] not in (pair, "43") and 0.0 <= entry["to_twin_control"] <= 1.0
    assert result["mean_to_twin_control"] == pytest.approx(
        sum(e["to_twin_control"] for e in result["per_pair"].values()) / 2)
    off = achilles.get_probe("substitution").run(tiny("mamba2", task), task, ProbeContext(tmp_path / "off"),
                                                 samples=24, pair="12", control=False)
    assert "mean_to_twin_control" not in off and "to_twin_control" not in off["per_pair"]["12"]


def test_substitution_replaces_only_the_downstream_states(task):
    model = tiny("mamba2", task)
    data = pair_sets(task, ["12"], 24, "test", seed=0)["12"]
    twin = data.with_pair("43")
    sites = model.hook_points("layers.*.conv.out")
    _, own = run_chunks(model, data.tokens, read=sites)
    _, twin_states = run_chunks(model, twin.tokens, read=sites)
    _, edited = substituted_run(model, data.tokens, data.key_pos, twin_states, read=sites)
    for n, p in enumerate(data.key_pos.tolist()):
        for site in sites:
            assert torch.equal(edited[site][n, p + 3:], twin_states[site][n, p + 3:])
        # layer 0's states up to the anchors are the sequence's own (later layers may differ via S)
        assert torch.equal(edited[sites[0]][n, :p + 3], own[sites[0]][n, :p + 3])
    assert not torch.equal(edited[sites[0]], twin_states[sites[0]])  # the anchors keep their own states


# -- conv-similarity --------------------------------------------------------------------------
def test_tap_cosine_is_symmetric_with_unit_diagonal():
    kernel = torch.randn(40, 4)
    cos = tap_cosine(kernel)
    assert cos.shape == (4, 4) and torch.allclose(cos, cos.T) and torch.allclose(cos.diag(), torch.ones(4, dtype=cos.dtype))
    assert cos[0, 1].item() == pytest.approx(torch.nn.functional.cosine_similarity(kernel[:, 0], kernel[:, 1], dim=0).item(),
                                             abs=1e-6)


def test_conv_similarity_of_the_all_ones_kernel_is_one_everywhere(task, tmp_path):
    model = tiny("mamba2-allone", task)
    result = achilles.get_probe("conv-similarity").run(model, task, ProbeContext(tmp_path),
                                                       init_weights=model.state_dict())
    for layer in result["layers"]:
        assert torch.allclose(torch.tensor(layer["final"]), torch.ones(4, 4))
        assert torch.allclose(torch.tensor(layer["init"]), torch.ones(4, 4))
        assert layer["final_mean_abs_off_diagonal"] == pytest.approx(1.0)


def test_conv_similarity_reads_the_initial_weights_from_the_run_folder(tmp_path):
    run_dir, model = make_run(tmp_path / "run", "mamba2", init_seed=1)
    result = invoke("probe", run_dir, "--probe", "conv-similarity")
    assert result.exit_code == 0, result.output
    assert "mean |cos| between taps at init" in result.output
    saved = json.loads((run_dir / "probes" / "conv-similarity" / "conv-similarity.json").read_text())
    init_model = tiny("mamba2", achilles.get_task("composite"), seed=1)
    for layer, init_kernel, final_kernel in zip(saved["layers"], init_model.conv_kernels(), model.conv_kernels()):
        assert torch.allclose(torch.tensor(layer["init"]), tap_cosine(init_kernel).float(), atol=1e-4)
        assert torch.allclose(torch.tensor(layer["final"]), tap_cosine(final_kernel).float(), atol=1e-4)
        assert torch.allclose(torch.tensor(layer["final"]), torch.tensor(layer["final"]).T)
    assert (run_dir / "probes" / "conv-similarity" / "conv-similarity.png").is_file()


# -- information-flow -------------------------------------------------------------------------
@pytest.mark.parametrize("arch, site", [("mamba2", "ssm.matrix"), ("transformer", "attn.scores")])
def test_information_flow_writes_per_layer_matrices_and_a_logit_lens(task, tmp_path, arch, site):
    model = tiny(arch, task)
    result = achilles.get_probe("information-flow").run(model, task, ProbeContext(tmp_path), samples=2, pair="34",
                                                       summary_samples=32)
    saved = json.loads((tmp_path / "information-flow.json").read_text())
    assert (tmp_path / "information-flow.png").stat().st_size > 0
    assert saved["settings"]["site"] == site and len(saved["samples"]) == 2
    for sample in saved["samples"]:
        assert sample["pair"] == "34" and [e["layer"] for e in sample["layers"]] == [0, 1]
        assert int(sample["target"]) == int(sample["tokens"][sample["key_pos"]]) - 6  # pair 34's label: key - 6
        for entry in sample["layers"]:
            matrix = torch.tensor(entry["matrix"])
            assert matrix.shape[1:] == (8, 8) and torch.equal(matrix.triu(1), torch.zeros_like(matrix))
        # the last layer's logit lens is the model's own prediction
        assert sample["logit_lens"]["resid.1"][-1] == sample["prediction"]
    assert set(result["headline"]) >= {"layer 0: share of |S| downstream tokens draw from key+anchors"}


# -- achilles probe ---------------------------------------------------------------------------
def test_probe_command_writes_into_the_run_folder_and_prints_the_table(tmp_path):
    run_dir, _ = make_run(tmp_path / "run", "mamba2")
    result = invoke("probe", run_dir, "--probe", "blocking", "--samples", 8, "--pair", "12,43")
    assert result.exit_code == 0, result.output
    assert "same as unblocked, mean over pairs" in result.output and "\n43 " in result.output
    saved = json.loads((run_dir / "probes" / "blocking" / "blocking.json").read_text())
    assert list(saved["per_pair"]) == ["12", "43"] and saved["settings"]["samples"] == 8


def test_probe_command_names_the_missing_hook_points(tmp_path):
    run_dir, _ = make_run(tmp_path / "run", "transformer")
    result = invoke("probe", run_dir, "--probe", "substitution")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "needs hook points layers.*.conv.out" in result.output and "'transformer'" in result.output
    assert not (run_dir / "probes").exists()


def test_probes_without_their_sites_say_so_on_a_toy_model(task):
    achilles.register_plugin(toy_plugin, "toy")
    model = achilles.create_model("toy-mixer")
    for name, needs in [("blocking", "ssm.matrix or layers.*.attn.scores"), ("substitution", "conv.out"),
                        ("information-flow", "ssm.matrix or layers.*.attn.scores"),
                        ("conv-similarity", "conv_kernels()")]:
        with pytest.raises(achilles.AchillesError, match=needs.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
            achilles.get_probe(name).check(model, task)


def test_composite_probes_refuse_other_tasks(tmp_path):
    run_dir, _ = make_run(tmp_path / "run", "mamba2", task_name="inverse")
    result = invoke("probe", run_dir, "--probe", "blocking")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "needs a task with capability 'pair_shift'" in result.output and "'inverse'" in result.output


def test_unknown_probe_and_bad_options_are_one_line_errors(tmp_path):
    result = invoke("probe", tmp_path, "--probe", "blockng")
    assert result.exit_code == 2 and "unknown probe 'blockng'; did you mean: blocking" in result.output
    run_dir, _ = make_run(tmp_path / "run", "mamba2")
    for args, message in [(["--probe-set", "layerz=0"], "probe 'blocking' has no such option"),
                          (["--pair", "55"], "'55' is not an anchor pair"),
                          (["--probe-set", "layers=[7]"], "layer 7 has no site"),
                          (["--probe-set", "seed=x"], "invalid setting seed")]:
        result = invoke("probe", run_dir, "--probe", "blocking", "--samples", 4, *args)
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    for probe, args, message in [("substitution", ["--probe-set", "twin=55"], "invalid setting twin: '55'"),
                                 ("information-flow", ["--probe-set", "threshold=x"], "invalid setting threshold"),
                                 ("conv-similarity", ["--pair", "34"], "'conv-similarity' has no such option")]:
        result = invoke("probe", run_dir, "--probe", probe, *args)
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
