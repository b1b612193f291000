"""A recipe's subject swapped for another architecture, and the atlas of recipes x subjects."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import achilles
from achilles.cli.main import cli
from achilles.recipes import RunGroup, get_recipe
from achilles.recipes.atlas import table, with_earlier, write_atlas
from achilles.recipes.subject import with_subject

from test_recipes import TOY_TRAIN, register_toy, toy_recipe


def test_swapping_the_subject_keeps_the_controls():
    recipe = with_subject(get_recipe("achilles-fig9"), "transformer-rope")
    arches = {g.name: g.arch for g in recipe.plan("quick").runs}
    assert arches["mamba2"] == arches["mamba2-40k"] == "transformer-rope"  # the subject's groups
    assert arches["transformer"] == "transformer" and arches["mamba2-residual"] == "mamba2-residual"  # controls
    assert recipe.tested_subject == "transformer-rope" and "in place of the paper's mamba2" in recipe.subject_note
    assert [c.statement for c in recipe.claims] == [c.statement for c in get_recipe("achilles-fig9").claims]


def test_a_swapped_report_names_the_architecture_it_measured_not_the_papers():
    """In a deltanet cell, "mamba2 test accuracy" would read as Mamba2's: the measurement texts name
    deltanet (and the swapped width group deltanet-width), the controls and the paper's quotes stay."""
    from achilles.recipes.subject import name_subject

    recipe = with_subject(get_recipe("copy-length"), "deltanet")
    assert recipe.swapped_groups == ("mamba2", "mamba2-width")
    claim = {"id": "larger-mamba-copies-longer", "statement": "A larger Mamba copies long strings better",
             "paper_value": "mamba2 copies", "rule": "≥ 0.1",
             "measured_as": "exact-match: mamba2 d_model 128 minus 32; mamba2-width, mamba2-global and transformer",
             "measurement": {"method": "mamba2's runs", "per_run": [
                 {"run": "transformer[seed=0] − mamba2[seed=0]", "pair": "mamba2|x", "value": 0.5}]}}
    named = name_subject(claim, recipe)
    assert named["measured_as"] == ("exact-match: deltanet d_model 128 minus 32; deltanet-width, mamba2-global "
                                    "and transformer")
    assert named["measurement"]["method"] == "deltanet's runs"
    assert named["measurement"]["per_run"][0]["run"] == "transformer[seed=0] − deltanet[seed=0]"
    assert named["measurement"]["per_run"][0]["pair"] == "mamba2|x"  # keys the recomputation: untouched
    assert (named["statement"], named["paper_value"]) == (claim["statement"], claim["paper_value"])
    assert name_subject(claim, get_recipe("copy-length")) is claim  # the paper's own subject: nothing renamed
    rope = with_subject(get_recipe("shortcuts-position"), "transformer-rope")
    assert rope.swapped_groups == ("mamba2",)  # the rotary control group is not the subject
    assert name_subject({"measured_as": "transformer-rope minus mamba2"}, rope) == {
        "measured_as": "transformer-rope minus transformer-rope"}  # a comparison with itself shows as one


def test_settings_the_new_subject_lacks_are_dropped_and_said():
    recipe = with_subject(get_recipe("shortcuts-position"), "transformer-nope")
    group = recipe.plan("quick").group("mamba2")
    assert group.arch == "transformer-nope" and "n_heads" in group.model  # the Transformer has heads too
    fig9 = get_recipe("achilles-fig9")
    assert with_subject(fig9, "mamba2") is fig9 and with_subject(fig9, None) is fig9  # its own subject: unchanged


@pytest.mark.parametrize("args, message", [
    (["reproduce", "achilles-fig7", "--subject", "transformer", "--dry-run"], "cannot take another subject"),
    (["reproduce", "achilles-fig9", "--subject", "deltanett", "--dry-run"], "did you mean: deltanet"),
    (["atlas", "--recipes", "achilles-fig8", "--dry-run"], "cannot take another subject"),
    (["atlas", "--subjects", "mamba2,mamba2", "--dry-run"], "given twice"),
])
def test_bad_subjects_are_refused_in_one_line_before_anything_is_made(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert not any(tmp_path.iterdir())


def test_a_subject_that_cannot_serve_the_task_is_refused_before_training(tmp_path):
    import types

    import toy_plugin
    from achilles.errors import ConfigError
    from achilles.recipes.reproduction import plan_reproduction, train_together
    from achilles.sweep import SweepOptions

    class TinyVocab(toy_plugin.TwoLayerToy):  # an architecture that serves at most 3 tokens
        def __init__(self, vocab_size=3, n_layers=2, d_model=8, gamma=0.5, max_len=16, backend="torch"):
            if vocab_size > 3:
                raise ConfigError("vocab_size", f"at most 3 tokens, the task needs {vocab_size}")
            super().__init__(vocab_size, n_layers, d_model, gamma, max_len, backend)

    module = types.ModuleType("tiny_vocab_arch")

    @achilles.hookimpl
    def register_architectures(register):
        register("tiny-vocab", TinyVocab)

    module.register_architectures = register_architectures
    achilles.register_plugin(module, "tiny_vocab_arch")
    recipe = toy_recipe("toy-serve", groups=(RunGroup("mixer", "toy-mixer", "toy-count", seeds=1, train=TOY_TRAIN),))
    register_toy([recipe])
    from dataclasses import replace

    swapped = with_subject(replace(recipe, subject="toy-mixer"), "tiny-vocab")
    with pytest.raises(achilles.AchillesError, match="cannot serve recipe 'toy-serve'.*at most 3 tokens"):
        train_together([plan_reproduction(swapped, out=tmp_path / "out", training=SweepOptions(workers=0))])
    assert not (tmp_path / "out").exists()


def test_the_atlas_page_marks_each_cell_and_links_its_report(tmp_path):
    from dataclasses import replace

    from achilles.recipes.report import REPORT_JSON

    recipe = replace(toy_recipe("toy-atlas"), subject="toy-mixer")
    subjects = ["toy-mixer", "other", "broken"]
    claims = [{"id": "impossible", "verdict": "not held", "measured": "0.5 [0.4, 0.6]",
               "measurement": {"value": 0.5}},
              {"id": "trivial", "verdict": "held", "measured": "0.5 [0.4, 0.6]", "measurement": {"value": 0.5}}]
    for subject, status in (("toy-mixer", "finished"), ("broken", "failed")):
        folder = tmp_path / subject / "toy-atlas"
        folder.mkdir(parents=True)
        (folder / REPORT_JSON).write_text(json.dumps({
            "claims": claims, "subject": {"arch": subject, "groups": ["mixer"]},
            "runs": [{"group": "mixer", "status": status}]}))
    page = write_atlas(tmp_path, [recipe], subjects, "quick").read_text()
    assert "| toy-atlas | accuracy above one | [❌ 0.50](toy-mixer/toy-atlas/report.md) | · | [💥](broken/" in page
    rows = table(tmp_path, [recipe], subjects)
    assert [r["cells"]["broken"]["verdict"] for r in rows] == ["failed", "failed"]
    assert (tmp_path / "atlas.png").is_file() and json.loads((tmp_path / "atlas.json").read_text())["rows"]
    (tmp_path / "README.md").write_text("my notes")  # a user's page is never overwritten
    with pytest.raises(achilles.AchillesError, match="not an atlas page"):
        write_atlas(tmp_path, [recipe], subjects, "quick")


def test_a_comparison_of_the_subject_with_itself_gets_no_verdict_on_the_page(tmp_path):
    """transformer-rope in Mamba2's place, compared with the rotary control, reads the same runs on
    both sides: the cell says so (=) instead of showing a verdict the comparison cannot carry."""
    from dataclasses import replace
    from pathlib import Path

    from achilles.recipes.report import REPORT_JSON, compares_runs_with_themselves

    paths = {"mamba2[seed=0]": Path("runs/rope-s0"), "transformer-rope[seed=0]": Path("runs/rope-s0"),
             "mamba2[seed=1]": Path("runs/rope-s1"), "transformer-rope[seed=1]": Path("runs/rope-s1"),
             "transformer[seed=0]": Path("runs/abs-s0")}

    def claim(a, b, metric_a="test acc_last", metric_b="test acc_last"):
        return {"measurement": {"sides": {
            "a": {"per_run": [{"run": r} for r in a], "method": f"{a[0].split('[')[0]} {metric_a}; mean"},
            "b": {"per_run": [{"run": r} for r in b], "method": f"{b[0].split('[')[0]} {metric_b}; mean"}}}}

    assert compares_runs_with_themselves(claim(["transformer-rope[seed=0]", "transformer-rope[seed=1]"],
                                               ["mamba2[seed=0]", "mamba2[seed=1]"]), paths)
    # the same runs at two string lengths (copy accuracy falls with length) are a real comparison
    assert not compares_runs_with_themselves(claim(["mamba2[seed=0]"], ["mamba2[seed=0]"], "exact for sizes 1-5",
                                                   "exact for sizes 16-20"), paths)
    assert not compares_runs_with_themselves(claim(["transformer[seed=0]"], ["mamba2[seed=0]"]), paths)
    assert not compares_runs_with_themselves(claim(["gone[seed=0]"], ["gone[seed=0]"]), paths)  # unknown runs
    assert not compares_runs_with_themselves({"measurement": {"per_run": []}}, paths)  # not a difference

    recipe = replace(toy_recipe("toy-self"), subject="toy-mixer")
    folder = tmp_path / "toy-mixer" / "toy-self"
    folder.mkdir(parents=True)
    (folder / REPORT_JSON).write_text(json.dumps({
        "claims": [{"id": "impossible", "verdict": "not held", "measured": "0.0 [0.0, 0.0]", "same_runs": True,
                    "measurement": {"value": 0.0}},
                   {"id": "trivial", "verdict": "held", "measured": "0.5", "measurement": {"value": 0.5}}],
        "subject": {"arch": "toy-mixer", "groups": ["mixer"]}, "runs": []}))
    page = write_atlas(tmp_path, [recipe], ["toy-mixer"], "quick").read_text()
    assert "| toy-atlas" not in page and "[=](toy-mixer/toy-self/report.md)" in page
    assert "1 compared with itself" in page and "0 not held" in page


def test_a_corrupt_cell_report_is_one_line_naming_it_and_nothing_is_overwritten(tmp_path):
    from dataclasses import replace

    recipe = replace(toy_recipe("toy-corrupt"), subject="toy-mixer")
    cell = tmp_path / "toy-mixer" / "toy-corrupt"
    cell.mkdir(parents=True)
    (cell / "report.json").write_text("{not json")
    with pytest.raises(achilles.AchillesError, match="toy-corrupt/report.json is not a readable report"):
        write_atlas(tmp_path, [recipe], ["toy-mixer"], "quick")
    assert (cell / "report.json").read_text() == "{not json" and not (tmp_path / "README.md").exists()


def test_an_atlas_run_a_few_cells_at_a_time_keeps_the_earlier_columns_and_rows(tmp_path):
    """An atlas too long for one sitting: a second ``atlas`` into the same OUT adds its cells to the
    page instead of dropping the first one's; a recipe no longer registered is left off."""
    from dataclasses import replace

    first = replace(toy_recipe("toy-first"), subject="toy-mixer")
    write_atlas(tmp_path, [first], ["toy-mixer", "other"], "quick")
    page = json.loads((tmp_path / "atlas.json").read_text())
    page["recipes"].insert(0, "no-such-recipe")
    (tmp_path / "atlas.json").write_text(json.dumps(page))
    second = replace(toy_recipe("toy-second"), subject="toy-mixer")
    register_toy([first])
    recipes, subjects = with_earlier(tmp_path, [second], ["third", "toy-mixer"])
    assert [r.name for r in recipes] == ["toy-first", "toy-second"]
    assert subjects == ["toy-mixer", "other", "third"]
    (tmp_path / "atlas.json").write_text("{not json")  # unreadable: only the new cells
    recipes, subjects = with_earlier(tmp_path, [second], ["third"])
    assert [r.name for r in recipes] == ["toy-second"] and subjects == ["third"]


def test_the_atlas_page_says_how_many_seeds_each_recipe_ran(tmp_path):
    """Rows may be run at different ``--seeds``: the page says so per recipe, read from the cells."""
    from dataclasses import replace

    from achilles.recipes.report import REPORT_JSON

    recipes = [replace(toy_recipe(name), subject="toy-mixer") for name in ("toy-five", "toy-three")]
    for recipe, seeds in zip(recipes, (5, 3)):
        folder = tmp_path / "toy-mixer" / recipe.name
        folder.mkdir(parents=True)
        (folder / REPORT_JSON).write_text(json.dumps({
            "claims": [], "subject": {"arch": "toy-mixer", "groups": ["mixer"]},
            "budget": [{"group": "mixer", "seeds": seeds}, {"group": "control", "seeds": seeds}],
            "runs": [{"group": "mixer", "status": "finished"}]}))
    page = write_atlas(tmp_path, recipes, ["toy-mixer", "other"], "quick").read_text()
    assert "Seeds per run group: toy-five 5; toy-three 3." in page


def test_a_cell_report_with_a_malformed_budget_leaves_the_seeds_line_out(tmp_path):
    from dataclasses import replace

    recipe = replace(toy_recipe("toy-odd-budget"), subject="toy-mixer")
    folder = tmp_path / "toy-mixer" / recipe.name
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps({"claims": [], "budget": 5, "runs": []}))
    page = write_atlas(tmp_path, [recipe], ["toy-mixer"], "quick").read_text()
    assert "Seeds per run group" not in page and "| toy-odd-budget |" in page
