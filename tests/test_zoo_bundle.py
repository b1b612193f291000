"""The zoo's own checkpoints: bundled inside the package from a finished run (`zoo add --bundle`),
loadable offline and sha256-verified, then published in one step (`zoo publish`) through the
real huggingface_hub client against the local Hub; every failure is one line and leaves the
index consistent."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from huggingface_hub import ModelCard, constants

import achilles
from achilles.cli.main import cli
from achilles.runs.folder import RunFolder
from achilles.training.trainer import finalize_run, start_run
from achilles.zoo.index import get_entry, list_zoo
from hub_fixtures import *  # noqa: F401,F403  (fixtures: hub, zoo_registry, toys)

TINY = dict(n_layers=1, d_model=16, d_state=8)


def achilles_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_one_line_error(result, *needles: str) -> str:
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A tiny mamba2 really trained on inverse (one short epoch), with a probe's output."""
    out = tmp_path_factory.mktemp("trained") / "run"
    torch.set_num_threads(1)
    trainer = start_run("mamba2", "inverse", profile="quick", out=out, device="cpu", model_config=TINY, epochs=1,
                        batch_size=32, train_samples=64, eval_samples=32, progress=False)
    finalize_run(trainer.fit())
    result = achilles_cli("probe", out, "--probe", "conv-similarity", "--device", "cpu")
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def run_dir(trained_run, tmp_path) -> Path:
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


def outputs(model) -> torch.Tensor:
    tokens = achilles.get_task("inverse", n_layers=1).generate("test", n=8, seed=3).tokens
    with torch.no_grad():
        return model(tokens)


def bundle(run_dir: Path, zoo_id: str, *extra) -> dict:
    result = achilles_cli("zoo", "add", run_dir, "--bundle", "--id", zoo_id, *extra)
    assert result.exit_code == 0, result.output
    return {e["id"]: e for e in json.loads(Path(achilles.zoo.index.registry_path()).read_text())["entries"]}[zoo_id]


# -- bundling --------------------------------------------------------------------------------
def test_zoo_add_bundle_ships_a_finished_run(zoo_registry, run_dir, tmp_path):
    report = Path(__file__).resolve().parent.parent / "examples" / "reports" / "achilles-fig9" / "report.md"
    entry = bundle(run_dir, "tiny-inverse", "--report", report)
    record = RunFolder(run_dir).read_config()
    assert entry["sha256"] == record["weights_sha256"] and entry["bundled"] == "bundled/tiny-inverse"
    assert "repo_id" not in entry and "revision" not in entry
    assert entry["profile"] == "quick" and entry["budget"] == {"epochs": 1, "train_samples": 64, "batch_size": 32,
                                                               "lr_peak": 1e-3}
    assert entry["report"].endswith("examples/reports/achilles-fig9/report.md") and "train" not in entry["metrics"]

    folder = zoo_registry.parent / "bundled" / "tiny-inverse"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        ".achilles-bundle", "README.md", "config.json", "metrics.jsonl", "model.safetensors",
        "probes/conv-similarity/conv-similarity.json", "probes/conv-similarity/conv-similarity.png",
        "run.json", "training_curves.png"]  # no checkpoint/, no init weights unless --with-init
    assert json.loads((folder / "config.json").read_text())["d_model"] == 16
    card = ModelCard.load(folder / "README.md")
    assert card.data.model_name == "tiny-inverse" and "achilles-fig9/report.md" in card.text and "conv-similarity" in card.text

    listed = achilles_cli("zoo", "list")
    assert "tiny-inverse" in listed.stdout and "bundled (unpublished)" in listed.stdout
    assert "not published yet" in achilles_cli("zoo", "show", "tiny-inverse").stdout

    loaded = achilles.load("tiny-inverse")  # offline (the suite sets HF_HUB_OFFLINE): the bundled copy
    assert loaded.path == folder and torch.equal(outputs(loaded.model), outputs(achilles.load(run_dir).model))
    evaluated = achilles_cli("eval", "tiny-inverse", "--device", "cpu", "--eval-samples", "16", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    assert "acc" in json.loads(evaluated.stdout)["metrics"]["test"]
    probed = achilles_cli("probe", "tiny-inverse", "--probe", "conv-similarity", "--device", "cpu",
                          "--out", tmp_path / "probe")
    assert probed.exit_code == 0 and (tmp_path / "probe" / "conv-similarity.json").is_file(), probed.output

    assert achilles.list_pretrained("tiny*") == ["tiny-inverse"] and achilles.list_pretrained("mamba2*") == []
    assert torch.equal(outputs(achilles.create_model("tiny-inverse", pretrained=True)), outputs(loaded.model))
    with pytest.raises(achilles.CheckpointError, match="no checkpoint named 'mamba2'"):
        achilles.create_model("mamba2", pretrained=True)


def test_bundle_with_init_weights_serves_conv_similarity_at_init(zoo_registry, run_dir, tmp_path):
    bundle(run_dir, "with-init", "--with-init")
    assert (zoo_registry.parent / "bundled" / "with-init" / "init.safetensors").is_file()
    probed = achilles_cli("probe", "with-init", "--probe", "conv-similarity", "--device", "cpu", "--json",
                          "--out", tmp_path / "probe")
    assert probed.exit_code == 0, probed.output
    result = json.loads(probed.stdout)
    assert result["init_weights"] == "init.safetensors" and "init" in result["layers"][0]  # the bundle's own file


def test_only_finished_runs_are_bundled(zoo_registry, run_dir):
    RunFolder(run_dir).update_config(status="interrupted")
    before = zoo_registry.read_bytes()
    result = achilles_cli("zoo", "add", run_dir, "--bundle")
    assert_one_line_error(result, "refusing to bundle", "never finished")
    assert zoo_registry.read_bytes() == before and not (zoo_registry.parent / "bundled").exists()
    assert_one_line_error(achilles_cli("zoo", "add", run_dir), "--bundle", "--repo-id")


def test_a_tampered_bundle_is_refused_with_the_id_and_both_hashes(zoo_registry, run_dir):
    entry = bundle(run_dir, "tiny-inverse")
    weights = zoo_registry.parent / entry["bundled"] / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    actual = __import__("hashlib").sha256(bytes(data)).hexdigest()
    for command in (("pull", "tiny-inverse"), ("eval", "tiny-inverse", "--device", "cpu")):
        assert_one_line_error(achilles_cli(*command), "'tiny-inverse'", entry["sha256"], actual, "refusing")
    with pytest.raises(achilles.CheckpointError, match=actual):
        achilles.load("tiny-inverse")


def test_packaged_bundles_match_the_index_and_stay_small():
    """Every checkpoint shipped with achilles loads offline (the suite sets HF_HUB_OFFLINE), its
    bytes matching the index; together they stay well under 25 MB."""
    from achilles.registry import REGISTRY_FILE
    from achilles.zoo.index import first_party_entries
    from achilles.zoo.curation import bundled_size

    entries = first_party_entries(REGISTRY_FILE)
    assert bundled_size(list(entries.values())) < 25e6
    for entry in entries.values():
        if entry.bundled:
            assert entry.bundle_path().resolve().parent == (REGISTRY_FILE.parent / "bundled").resolve()
            assert achilles.load(entry.id).config["weights_sha256"] == entry.sha256


def test_the_shipped_zoo_works_offline_as_a_user_runs_it(tmp_path):
    """The checkpoints the reports rest on: listed, evaluated and probed by zoo id with no network;
    the index says which profile trained each and links the report it backs."""
    from achilles.registry import REGISTRY_FILE
    from achilles.zoo.index import first_party_entries

    entries = first_party_entries(REGISTRY_FILE)
    repo = REGISTRY_FILE.parent.parent
    assert len(entries) >= 10
    for entry in entries.values():
        assert entry.bundled and entry.profile in ("quick", "paper") and entry.budget
        assert entry.report and (repo / entry.report).is_file(), entry.report
    listed = achilles_cli("zoo", "list")
    assert listed.exit_code == 0 and all(zoo_id in listed.output for zoo_id in entries)
    for zoo_id in ("mamba2-residual.inverse-l2-g0.5-s0-quick", "mamba2.composite-l3-g1.0-s0-quick"):
        entry = entries[zoo_id]
        evaluated = achilles_cli("eval", zoo_id, "--split", entry.headline["split"], "--samples", 256,
                                 "--device", "cpu", "--json")
        assert evaluated.exit_code == 0, evaluated.output
        measured = json.loads(evaluated.stdout)["metrics"][entry.headline["split"]][entry.headline["metric"]]
        assert abs(measured - entry.headline["value"]) < 0.15, (zoo_id, measured, entry.headline)
    probed = achilles_cli("probe", "mamba2.composite-l2-g1.0-s0-quick", "--probe", "conv-similarity",
                          "--device", "cpu", "--json", "--out", tmp_path / "probe")
    assert probed.exit_code == 0, probed.output
    assert "init" in json.loads(probed.stdout)["layers"][0]  # the at-initialization half of figure 12


# -- publishing --------------------------------------------------------------------------------
def two_bundles(run_dir: Path) -> None:
    bundle(run_dir, "zoo-a")
    RunFolder(run_dir).update_config(seed=1)  # the same weights under a second id
    bundle(run_dir, "zoo-b")


def commits(hub) -> list:
    return [r for r in hub.hub.requests if r[0] == "POST" and "/commit/" in r[1]]


def test_publish_pushes_unpublished_entries_and_pins_them(hub, zoo_registry, run_dir, monkeypatch):
    two_bundles(run_dir)
    result = achilles_cli("zoo", "publish", "--org", "test-org")
    assert result.exit_code == 0, result.output
    for zoo_id in ("zoo-a", "zoo-b"):
        entry = get_entry(zoo_id)
        repo = hub.hub.repos[f"test-org/{zoo_id}"]
        assert entry.repo_id == f"test-org/{zoo_id}" and entry.revision == repo.branches["main"]
        files = repo.commits[entry.revision]
        assert {"config.json", "run.json", "model.safetensors", "README.md",
                "probes/conv-similarity/conv-similarity.json"} <= set(files)
        assert __import__("hashlib").sha256(files["model.safetensors"]).hexdigest() == entry.sha256
        card = ModelCard(files["README.md"].decode())
        assert f'achilles.load("hf-hub:test-org/{zoo_id}")' in card.text and card.data.model_name == zoo_id
    assert "hf-hub:test-org/zoo-a@" in achilles_cli("zoo", "list").stdout

    hub.hub.requests.clear()  # a re-run skips what is published
    again = achilles_cli("zoo", "publish", "--org", "test-org")
    assert again.exit_code == 0 and "nothing to publish" in again.stdout and commits(hub) == []

    # published: loads the pinned Hub commit (into the HF cache), not the bundled copy
    pinned = achilles.load("zoo-a")
    assert pinned.path.name == get_entry("zoo-a").revision
    # offline with nothing cached: the bundled copy; offline with the cache: the Hub copy, no request
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    hub.hub.requests.clear()
    assert achilles.load("zoo-a").path == pinned.path
    fallback = achilles_cli("pull", "zoo-b")
    assert fallback.exit_code == 0 and "bundled copy; the Hub is unavailable" in fallback.stderr
    assert Path(fallback.stdout.strip()) == zoo_registry.parent / "bundled" / "zoo-b"
    assert hub.hub.requests == []


def test_publish_failing_half_way_leaves_the_index_consistent(hub, zoo_registry, run_dir):
    two_bundles(run_dir)
    hub.hub.broken_repos = {"test-org/zoo-b"}
    result = achilles_cli("zoo", "publish", "--org", "test-org")
    assert_one_line_error(result, "publishing zoo-b failed", "HTTP 500", "1 of 2 published and pinned", "zoo-a",
                          "run it again")
    assert get_entry("zoo-a").is_published and not get_entry("zoo-b").is_published
    a_commit = get_entry("zoo-a").revision

    hub.hub.broken_repos = set()
    assert achilles_cli("zoo", "publish", "--org", "test-org").exit_code == 0
    assert get_entry("zoo-a").revision == a_commit and get_entry("zoo-b").is_published
    assert [e.id for e in list_zoo() if e.is_published] == ["zoo-a", "zoo-b"]


def test_publish_without_a_token_or_a_hub_changes_nothing(hub, zoo_registry, run_dir, monkeypatch):
    two_bundles(run_dir)
    before = zoo_registry.read_bytes()
    hub.hub.requests.clear()

    monkeypatch.delenv("HF_TOKEN")
    assert_one_line_error(achilles_cli("zoo", "publish", "--org", "test-org"), "without a Hub token",
                          "nothing changed")
    monkeypatch.setenv("HF_TOKEN", "hf_local_test_token")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert_one_line_error(achilles_cli("zoo", "publish", "--org", "test-org"), "HF_HUB_OFFLINE", "nothing changed")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert hub.hub.requests == []

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    assert_one_line_error(achilles_cli("zoo", "publish", "--org", "test-org"), "cannot be reached",
                          "nothing changed")
    assert zoo_registry.read_bytes() == before


def test_eval_with_no_flags_prints_the_cards_numbers():
    """`achilles eval ZOO_ID` scores the samples the run's final evaluation scored (its split
    sizes, its data seed, the train row on its first training samples): the card's numbers."""
    from achilles.registry import REGISTRY_FILE
    from achilles.zoo.index import first_party_entries

    entries = [e for e in first_party_entries(REGISTRY_FILE).values() if e.bundled]
    entry = min(entries, key=lambda e: (e.bundle_path() / "model.safetensors").stat().st_size)  # the smallest
    card = ModelCard.load(entry.bundle_path() / "README.md")
    recorded = json.loads((entry.bundle_path() / "run.json").read_text())
    result = achilles_cli("eval", entry.id)
    assert result.exit_code == 0, result.output
    n, seed = recorded["training"]["eval_samples"], recorded["training"]["data_seed"]
    assert f"on {n:,} samples per split, data seed {seed}" in result.stderr  # what it evaluates, said
    table = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()[2:] if line.strip()}
    header = result.stdout.splitlines()[1].split()[1:]
    split, metric = entry.headline["split"], entry.headline["metric"]
    printed = float(table[metric][header.index(split)])
    card_value = next(r.metric_value for r in card.data.eval_results
                      if r.dataset_split == split and r.metric_type == metric)
    assert printed == card_value == round(recorded["final_metrics"][split][metric], 4) == entry.headline["value"]
    for metric, values in table.items():  # every number of the table is the run's own
        for s, text in zip(header, values):
            if text and metric in recorded["final_metrics"].get(s, {}):
                assert float(text) == round(recorded["final_metrics"][s][metric], 4), (s, metric)


# -- reports reachable where achilles is installed ------------------------------------------------
def test_every_entrys_report_is_found_and_zoo_show_prints_it():
    from achilles.registry import REGISTRY_FILE
    from achilles.zoo.index import first_party_entries, report_location

    for entry in first_party_entries(REGISTRY_FILE).values():
        where = entry.report_location()
        assert where and Path(where).is_file() and where.endswith(entry.report.rsplit("/", 2)[-2] + "/report.md")
    assert report_location("https://example.org/report.md") == "https://example.org/report.md"
    missing = "/".join(["examples", "reports", "no-such-recipe", "report.md"])  # not a citation of a file
    assert report_location(missing) is None
    zoo_id = "mamba2.inverse-l2-g0.5-s0-quick"
    shown = achilles_cli("zoo", "show", zoo_id)
    assert shown.exit_code == 0, shown.output
    line = next(line for line in shown.stdout.splitlines() if line.startswith("report at"))
    assert Path(line.split(None, 2)[2]).is_file()


@pytest.mark.slow
def test_an_installed_wheel_ships_the_reports_zoo_show_points_to(tmp_path):
    """Outside the repository (a wheel installed into a folder of its own), `zoo show` prints the
    path of the report inside the installed package, and the file is there."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(root / name, src / name)
    for folder in ("core", "plugins", "cards", "registry", "examples/reports"):
        shutil.copytree(root / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, capture_output=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("achilles-*.whl"))
    target = tmp_path / "installed"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(target),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    script = ("import json, achilles\n"
              "from click.testing import CliRunner\n"
              "from achilles.cli.commands.zoo import zoo_group\n"
              "from achilles.zoo.index import list_zoo\n"
              "shown = {e.id: CliRunner().invoke(zoo_group, ['show', e.id]).output for e in list_zoo()}\n"
              "print(json.dumps({'package': achilles.__file__, 'shown': shown}))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": str(target)})
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["package"].startswith(str(target))  # the wheel's copy, not the checkout
    assert out["shown"]
    for zoo_id, text in out["shown"].items():
        line = next(line for line in text.splitlines() if line.startswith("report at"))
        path = Path(line.split(None, 2)[2])
        assert path.is_file() and str(path).startswith(str(target / "achilles" / "reports")), (zoo_id, line)


def test_every_shipped_checkpoint_is_one_of_the_runs_its_report_rests_on():
    """A zoo entry's card links a report; the entry's weights must be one of that report's runs
    (same sha256 in its report.json), so a reader who loads the checkpoint gets the model behind
    the numbers, not a retrain (retraining repeats exactly only on the same machine)."""
    from achilles.registry import REGISTRY_FILE
    from achilles.zoo.index import first_party_entries

    for entry in first_party_entries(REGISTRY_FILE).values():
        report = json.loads(Path(entry.report_location()).with_name("report.json").read_text())
        shas = {run.get("weights_sha256") for run in report["runs"]}
        assert entry.sha256 in shas, f"{entry.id}: not among the runs of {entry.report}"
