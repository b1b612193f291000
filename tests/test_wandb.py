"""``achilles train --log wandb``: the Weights & Biases writer listens to the same trainer events as
the TensorBoard writer and logs the same scalars, each once, with the epoch as its step. Tested in
W&B's offline mode (no network): the run file W&B writes under RUN/wandb/ is read back."""

import glob
import json
import struct

import pytest
from click.testing import CliRunner

import achilles
from achilles.cli.main import cli
from achilles.training.events import epoch_scalars

import toy_plugin

TRAIN = ["train", "--arch", "toy-mixer", "--task", "toy-count", "--epochs", "2", "--train-samples", "64",
         "--eval-samples", "16", "--batch-size", "32", "--no-progress"]


@pytest.fixture(autouse=True)
def toy():
    achilles.register_plugin(toy_plugin, "toy")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    for key, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off",
                       "WANDB_DISABLE_GIT": "true", "WANDB_DISABLE_CODE": "true", "WANDB_ANONYMOUS": "never",
                       "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
                       "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
                       "WANDB_DATA_DIR": str(tmp_path / "wandb-data")}.items():
        monkeypatch.setenv(key, value)


def read_history(run_file: str) -> list[dict]:
    """The history rows of a W&B run file (the LevelDB-style log W&B writes: a 7-byte header, then
    32 KiB blocks of records, each with a 7-byte header: crc32, length, type full/first/middle/last)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, pieces, records = open(run_file, "rb").read(), 7, b"", []
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # the block's tail is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:
            records.append(chunk)
        elif kind in (2, 3):
            pieces += chunk
        elif kind == 4:
            records.append(pieces + chunk)
            pieces = b""
    rows = []
    for raw in records:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows


@pytest.mark.slow
def test_train_log_wandb_offline_logs_tensorboards_scalars_once_per_epoch(tmp_path, offline):
    pytest.importorskip("wandb", reason='the wandb extra: pip install "achilles[wandb]"')
    result = CliRunner().invoke(cli, TRAIN + ["--out", str(tmp_path / "run"), "--log", "wandb"])
    assert result.exit_code == 0, result.output
    files = glob.glob(str(tmp_path / "run" / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(files) == 1, files
    rows = read_history(files[0])
    assert [row["_step"] for row in rows] == [1, 2]  # the epoch is the step
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    records = [r for r in records if "metrics" in r]
    for row, record in zip(rows, records):
        ours = {k: v for k, v in row.items() if not k.startswith("_")}  # W&B's own: _step, _runtime, ...
        assert ours == pytest.approx(epoch_scalars(record))  # exactly TensorBoard's scalars, each once
    assert {"training/loss", "training/lr", "test/acc", "train/acc"} <= set(rows[-1])
    metrics = achilles.load(tmp_path / "run").config["final_metrics"]
    assert rows[-1]["test/acc"] == pytest.approx(metrics["test"]["acc"])
    assert "wandb" in json.loads((tmp_path / "run" / ".achilles-files").read_text())  # --overwrite removes it


def test_wandb_writer_logs_what_the_tensorboard_writer_logs(tmp_path):
    """Both writers take their scalars from events.epoch_scalars: the same names, no duplicates."""
    from achilles.training.tensorboard import TensorBoardWriter
    from achilles.training.trainer import start_run
    from achilles.training.wandb_writer import WandbWriter

    logged = {"tensorboard": [], "wandb": []}

    class Board:
        def __init__(self, log_dir):
            pass

        def add_scalar(self, tag, value, step):
            logged["tensorboard"].append((step, tag, value))

        def flush(self):
            pass

        def close(self):
            pass

    class Run:
        summary: dict = {}

        def log(self, scalars, step):
            logged["wandb"] += [(step, tag, value) for tag, value in scalars.items()]

        def finish(self, exit_code=0):
            logged["finished"] = exit_code

    class FakeWandb:
        def init(self, **kwargs):
            logged["init"] = kwargs
            return Run()

    achilles.register_plugin(TensorBoardWriter(writer_class=Board), "tensorboard")
    achilles.register_plugin(WandbWriter(wandb=FakeWandb()), "wandb")
    start_run("toy-mixer", "toy-count", out=tmp_path / "run", profile="quick", epochs=2, train_samples=64,
              eval_samples=16, batch_size=32, progress=False).fit()
    assert logged["wandb"] and sorted(logged["wandb"]) == sorted(logged["tensorboard"])
    tags = [(step, tag) for step, tag, _ in logged["wandb"]]
    assert len(tags) == len(set(tags))  # each scalar once per epoch
    assert logged["finished"] == 0 and logged["init"]["name"] == "run" and logged["init"]["config"]["arch"] == "toy-mixer"


def test_log_wandb_without_the_package_is_one_line(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_wandb(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and name.split(".")[0] == "wandb":
            raise ImportError("no wandb")
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    result = CliRunner().invoke(cli, TRAIN + ["--out", str(tmp_path / "run"), "--log", "wandb"])
    assert result.exit_code != 0
    assert result.output.strip() == 'Error: --log wandb needs Weights & Biases: pip install "achilles[wandb]"'
