"""`reproduce` starts from the zoo: a recipe's run that is exactly a bundled zoo entry (same
architecture, task, every setting, seed, data seed, profile and weights' sha256) is copied into
the run store, never linked, and --dry-run counts it as done; anything less trains as usual."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from achilles.recipes import RunGroup
from achilles.runs.folder import RunFolder
from achilles.runs.files import file_sha256
from achilles.training.trainer import finalize_run, start_run
from achilles.zoo.curation import add_entry
from hub_fixtures import zoo_registry  # noqa: F401  (fixture: an empty zoo index in tmp_path)

sys.path.insert(0, str(Path(__file__).parent))
from test_recipes import TOY_TRAIN, invoke, register_toy, toy_recipe  # noqa: E402


def trained(path: Path, seed: int, **settings) -> Path:
    trainer = start_run("toy-mixer", "toy-count", profile="quick", seed=seed, out=path, device="cpu",
                        model_config={"gamma": 0.5}, progress=False, **{**TOY_TRAIN, **settings})
    finalize_run(trainer.fit())
    return path


@pytest.fixture
def recipe_and_zoo(tmp_path, zoo_registry):  # noqa: F811
    """A toy recipe of two runs (seeds 0 and 1) and a zoo holding seed 0's run exactly, plus a run of
    seed 1 with another data seed (not the recipe's run)."""
    group = RunGroup("mixer", "toy-mixer", "toy-count", grid={"gamma": [0.5]}, seeds=2, train=TOY_TRAIN)
    register_toy([toy_recipe(groups=(group,))])
    same = add_entry(trained(tmp_path / "made" / "seed0", 0), bundle=True, zoo_id="toy-seed0")
    other = add_entry(trained(tmp_path / "made" / "seed1-data5", 1, data_seed=5), bundle=True,
                      zoo_id="toy-seed1-data5")
    return same, other


def _to_train(output: str) -> int:
    row = next(line for line in output.splitlines() if line.startswith("mixer"))
    return int(row.split()[-4])  # ... seeds, runs, to train, samples x epochs ("64 x 2": 3 words)


def test_dry_run_counts_a_bundled_run_as_done(tmp_path, recipe_and_zoo):
    out = tmp_path / "out"
    result = invoke("toy-count", "--out", str(out), "--dry-run")
    assert result.exit_code == 0, result.output
    assert _to_train(result.output) == 1  # seed 0 comes from the zoo; seed 1's data seed differs: trained
    assert not list(out.glob("runs/*/*/model.safetensors"))  # a plan writes nothing


def test_reproduce_copies_the_bundled_run_and_trains_the_rest(tmp_path, recipe_and_zoo):
    same, other = recipe_and_zoo
    bundle = same.bundle_path()
    before = {p.name: p.read_bytes() for p in bundle.iterdir() if p.is_file()}
    out = tmp_path / "out"
    result = invoke("toy-count", "--out", str(out))
    assert result.exit_code == 0, result.output
    runs = {json.loads((p / "run.json").read_text())["seed"]: p for p in out.glob("runs/*/*") if (p / "run.json").is_file()}
    assert sorted(runs) == [0, 1]
    copied = RunFolder(runs[0])
    config = copied.read_config()
    assert config["from_zoo"] == {"id": "toy-seed0", "sha256": same.sha256}
    assert file_sha256(runs[0] / "model.safetensors") == same.sha256
    assert not any(p.is_symlink() for p in [runs[0], *runs[0].rglob("*")])  # a copy, never a link
    assert (runs[0] / "model.safetensors").stat().st_ino != (bundle / "model.safetensors").stat().st_ino
    assert "reports" in config  # the report link went to the copy ...
    assert {p.name: p.read_bytes() for p in bundle.iterdir() if p.is_file()} == before  # ... not the bundle
    trained_here = RunFolder(runs[1]).read_config()
    assert "from_zoo" not in trained_here and trained_here["training"]["data_seed"] == 1
    assert file_sha256(runs[1] / "model.safetensors") != other.sha256


def test_a_bundle_whose_weights_fail_their_sha256_is_not_copied(tmp_path, recipe_and_zoo):
    same, _ = recipe_and_zoo
    weights = same.bundle_path() / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    result = invoke("toy-count", "--out", str(tmp_path / "out"))
    assert result.exit_code != 0 and "sha256" in result.output
    assert not list((tmp_path / "out").glob("runs/*/*/model.safetensors"))


def test_matching_is_strict_every_setting_counts():
    from achilles.recipes.from_zoo import differences

    base = {"arch": "a", "task": "t", "seed": 0, "model": {"gamma": 0.5}, "task_config": {"n": 3},
            "training": {"epochs": 2, "data_seed": 0, "precision": "fp32"}}
    assert differences(base, json.loads(json.dumps(base))) == []
    for section, key, value in (("training", "data_seed", 1), ("training", "epochs", 3), ("model", "gamma", 1.0),
                                ("task_config", "n", 4), ("training", "precision", "bf16")):
        changed = json.loads(json.dumps(base))
        changed[section][key] = value
        assert differences(base, changed) == [f"{section}.{key}"]
    assert differences(base, {**base, "seed": 1}) == ["seed"]


def test_a_bundle_trained_before_the_no_decay_marks_were_honoured_is_not_reused(tmp_path, recipe_and_zoo):
    from achilles.recipes.from_zoo import NO_DECAY_MARKS_HONOURED_SINCE

    same, _ = recipe_and_zoo
    folder = RunFolder(same.bundle_path())
    record = json.loads((folder.path / "run.json").read_text())
    record["created"] = "2026-11-30T10:35:15+00:00"  # before AdamW left A_log, D and dt_bias undecayed
    assert record["created"] < NO_DECAY_MARKS_HONOURED_SINCE
    (folder.path / "run.json").write_text(json.dumps(record))
    result = invoke("toy-count", "--out", str(tmp_path / "out"), "--dry-run")
    assert result.exit_code == 0, result.output
    assert _to_train(result.output) == 2  # both seeds train: the old bundle is not today's run
