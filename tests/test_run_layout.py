"""The run-folder layout: config.json holds the model (architecture and settings at the top level,
what huggingface_hub's mixin and a reader expect), run.json the run record. Folders of the first
format (everything nested in config.json) still load, resume and probe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import achilles
from achilles.cli.main import cli
from achilles.runs.layout import RUN_FORMAT, RUN_FORMAT_V1
from achilles.runs.folder import RunFolder
from achilles.models.loading import load_run
from achilles.training.trainer import finalize_run, resume_run, start_run
from hub_fixtures import make_run, toys  # noqa: F401  (fixture)


def to_format_1(path: Path) -> dict:
    """Rewrite a run folder as achilles 0.1's first format wrote it."""
    config = RunFolder(path).read_config()
    (path / "run.json").unlink()
    (path / "config.json").write_text(json.dumps({**config, "format": RUN_FORMAT_V1}, indent=2))
    return config


def test_config_json_holds_the_model_at_the_top_and_run_json_the_record(toys, tmp_path):
    run_dir = make_run(tmp_path / "run")
    model_config = json.loads((run_dir / "config.json").read_text())
    record = json.loads((run_dir / "run.json").read_text())
    merged = RunFolder(run_dir).read_config()
    assert model_config == {"format": RUN_FORMAT, "arch": toys[0], **merged["model"]}
    assert model_config["d_model"] == 8 and "task" not in model_config and "status" not in model_config
    assert record["format"] == RUN_FORMAT and record["status"] == "finished"
    assert record["weights_sha256"] == merged["weights_sha256"] and "model" not in record

    before = (run_dir / "config.json").read_bytes()
    RunFolder(run_dir).update_config(status="interrupted")  # a record update leaves config.json alone
    assert (run_dir / "config.json").read_bytes() == before
    assert RunFolder(run_dir).read_config() == {**merged, "status": "interrupted"}


def test_first_format_folders_load_and_keep_their_layout(toys, tmp_path):
    run_dir = make_run(tmp_path / "run")
    original = load_run(run_dir)
    config = to_format_1(run_dir)
    assert RunFolder(run_dir).read_config() == {**config, "format": RUN_FORMAT_V1}
    loaded = achilles.load(run_dir)
    tokens = achilles.get_task(toys[1]).generate("test", n=4, seed=1).tokens
    with torch.no_grad():
        assert torch.equal(loaded.model(tokens), original.model(tokens))
    RunFolder(run_dir).update_config(status="finished")
    assert not (run_dir / "run.json").exists()
    assert json.loads((run_dir / "config.json").read_text())["format"] == RUN_FORMAT_V1
    # exported (push, bundle) in the current layout
    exported = RunFolder(run_dir).export_record()
    assert json.loads(exported["config.json"])["arch"] == toys[0]
    assert json.loads(exported["run.json"])["status"] == "finished"


def test_first_format_run_resumes(toys, tmp_path):
    trainer = start_run(toys[0], toys[1], profile="quick", out=tmp_path / "run", device="cpu", epochs=2,
                        batch_size=16, train_samples=64, eval_samples=16, progress=False)
    RunFolder(trainer.run.path).update_config(status="interrupted")
    to_format_1(trainer.run.path)
    resumed = resume_run(trainer.run.path, device="cpu", progress=False)
    result = resumed.fit()
    finalize_run(result)
    assert result.status == "finished" and result.epochs_completed == 2
    config = json.loads((trainer.run.path / "config.json").read_text())
    assert config["format"] == RUN_FORMAT_V1 and config["status"] == "finished"
    assert not (trainer.run.path / "run.json").exists()
    assert load_run(trainer.run.path).config["epochs_completed"] == 2


def test_first_format_run_probes(tmp_path):
    run_dir = make_run(tmp_path / "run", arch="mamba2", task="inverse",
                       model_config=dict(n_layers=1, d_model=16, d_state=8))
    to_format_1(run_dir)
    result = CliRunner().invoke(cli, ["probe", str(run_dir), "--probe", "conv-similarity", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert (run_dir / "probes" / "conv-similarity" / "conv-similarity.json").is_file()


def test_a_model_folder_is_not_a_run(toys, tmp_path):
    model = achilles.create_model(toys[0])
    model.save_pretrained(tmp_path / "saved")
    with pytest.raises(achilles.CheckpointError, match="holds a model .* but no run record"):
        RunFolder(tmp_path / "saved").read_config()
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"model_type": "mamba2", "hidden_size": 8}))
    with pytest.raises(achilles.CheckpointError, match="transformers config .model_type 'mamba2'"):
        load_run(tmp_path / "hf")


def test_the_layout_names_are_defined_once():
    """A run folder's file and folder names (``PROBES_DIR``, ``WEIGHTS``, ...) are defined in
    ``achilles.runs.layout`` alone: core and the plugins import them, none defines its own copy."""
    import ast

    import achilles.runs.layout as layout

    names = {name for name in vars(layout) if name.isupper()}
    root = Path(__file__).resolve().parent.parent
    copies = []
    for folder in ("core", "plugins", "cards"):
        for source in sorted((root / folder).rglob("*.py")):
            if source == Path(layout.__file__).resolve():
                continue
            for node in ast.parse(source.read_text()).body:
                targets = node.targets if isinstance(node, ast.Assign) else \
                    [node.target] if isinstance(node, ast.AnnAssign) else []
                copies += [f"{source.relative_to(root)}: {t.id}" for t in targets
                           if isinstance(t, ast.Name) and t.id in names]
    assert not copies
    from achilles.recipes.recipe_results import PROBES_DIR as recipes_probes
    from achilles.zoo.card import PROBES_DIR as card_probes
    from achilles.zoo.hub import PROBES_DIR as hub_probes

    assert recipes_probes is card_probes is hub_probes is layout.PROBES_DIR
