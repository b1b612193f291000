"""Running a recipe: its runs through the sweep machinery, then evaluations, probes, claims, report.

Output folder (default ``reproductions/<recipe>-<profile>``)::

    recipe.json        the recipe and profile this folder belongs to, and the plan that ran
    figures/*.png      the recipe's figures
    report.md          claims table, figures, budget, departures from the paper, runs
    report.json        the same, for machines

The runs live in a run store shared by recipes (default ``reproductions/runs``; ``--runs DIR``):
one sweep folder per run group, named by the group's settings (``<arch>.<task>-<hash>``), each
cell an ordinary run folder with ``evals/<name>.json`` and ``probes/<probe>/`` beside its weights.
Two recipes that need the same runs (same architecture, task, settings and budget) train them
once.

Everything is resumable: finished runs, evaluations and probe results are reused, an interrupted
run resumes from its last checkpoint, and Ctrl-C stops cleanly (run the same command again).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from achilles.errors import AchillesError
from achilles.runs.folder import RunFolder
from achilles.runs.files import atomic_write_json
from achilles.runs.ownership import claim, owned_folder
from achilles import sweep
from achilles.recipes import sweeps
from achilles.recipes.recipe_results import RecipeResults, RunRecord, read_run
from achilles.runs.layout import EVALS_DIR, PROBES_DIR
from achilles.recipes.recipe import Plan, Recipe, RunGroup, with_seeds, with_train_overrides
from achilles.recipes.subject import check_subject_serves

log = logging.getLogger("achilles.reproduce")

RECIPE_JSON = "recipe.json"
RUNS_DIR = "runs"
FIGURES_DIR = "figures"
OUT_FORMAT = "achilles-reproduction/1"


def default_out(recipe: str, profile: str, subject: str = "") -> Path:
    return Path("reproductions") / (f"{recipe}-{profile}" + (f"-{subject}" if subject else ""))


def default_runs(out: Path | None) -> Path:
    """The run store: ``reproductions/runs`` beside the default output folders, else ``OUT/runs``."""
    return Path("reproductions") / RUNS_DIR if out is None else Path(out) / RUNS_DIR


@dataclass(frozen=True)
class GroupRuns:
    """A run group of the plan, its sweep (settings checked) and that sweep's folder in the run store."""

    group: RunGroup
    spec: sweep.SweepSpec
    folder: Path


@dataclass(frozen=True)
class Reproduction:
    """One recipe's reproduction, resolved once by ``plan_reproduction``: what runs, where, how.

    ``achilles reproduce NAME --seeds 5`` reaches the run folders this way: ``plan`` has every group
    on seeds 0..4; ``groups`` holds one sweep per group (its cells: grid values x seeds) and its
    folder ``runs/<arch>.<task>-<hash>/``; each cell is a run folder there."""

    recipe: Recipe
    profile: str
    plan: Plan                    # the recipe's plan at this profile, --seeds and --train-set applied
    out: Path                     # recipe.json, report.md, report.json, figures/
    runs: Path                    # the run store: one sweep folder per run group, shared by recipes
    training: sweep.SweepOptions  # how the runs train: executor, workers, threads, device, progress
    groups: tuple[GroupRuns, ...]

    @property
    def device(self) -> str:
        return self.training.device


def plan_reproduction(recipe: Recipe, *, profile: str = "quick", seeds: int | None = None,
                      train_overrides: Mapping[str, Any] | None = None, out: Path | str | None = None,
                      runs: Path | str | None = None, training: sweep.SweepOptions | None = None) -> Reproduction:
    """Resolve a reproduction once: the plan (``--seeds`` puts every group on seeds 0..N-1,
    ``--train-set`` overrides training settings), the output folder (default
    ``reproductions/NAME-PROFILE``), the run store (default ``OUT/runs`` with ``--out``, else
    ``reproductions/runs``) and each group's sweep. A bad setting fails here, before any folder."""
    plan = recipe.plan(profile)
    if seeds is not None:
        plan = with_seeds(plan, seeds)
    plan = with_train_overrides(plan, train_overrides or {})
    training = training or sweep.SweepOptions()
    store = Path(runs) if runs else default_runs(Path(out) if out else None)
    return Reproduction(recipe, profile, plan, Path(out) if out else default_out(recipe.name, profile, recipe.tested_subject),
                        store, training, group_runs(plan, store, training.device))


def group_runs(plan: Plan, store: Path, device: str) -> tuple[GroupRuns, ...]:
    """Each run group of ``plan`` with its sweep and sweep folder in ``store``."""
    out = []
    for group in plan.runs:
        spec = sweeps.spec_for(group, plan, device)
        out.append(GroupRuns(group, spec, sweep.sweep_folder(spec, None, store)))
    return tuple(out)


def check_out_folder(out: Path, recipe: Recipe, profile: str) -> None:
    """A folder that holds another recipe's (or profile's) reproduction is refused, not mixed."""
    file = Path(out) / RECIPE_JSON
    if file.is_symlink():
        raise AchillesError(f"{file} is a symbolic link; a reproduction folder holds its own {RECIPE_JSON}: "
                            "choose another --out")
    if not file.is_file():
        if Path(out).is_dir() and any(Path(out).iterdir()):
            raise AchillesError(f"{out} exists and is not a reproduction folder (no {RECIPE_JSON}); "
                                "choose another --out")
        return
    try:
        data = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise AchillesError(f"{file} is unreadable ({exc}); choose another --out") from None
    if data.get("recipe") != recipe.name or data.get("profile") != profile:
        raise AchillesError(f"{out} holds a reproduction of {data.get('recipe')!r} at profile "
                            f"{data.get('profile')!r}, not {recipe.name!r} at {profile!r}; choose another --out")
    if (data.get("subject") or recipe.subject) != (recipe.tested_subject or recipe.subject):
        raise AchillesError(f"{out} holds {recipe.name!r} measured on {data.get('subject') or recipe.subject!r}, not "
                            f"on {recipe.tested_subject or recipe.subject!r}; choose another --out")


def check_run_store(runs: Path) -> None:
    """The run store holds sweep folders only: it is new, empty, or each entry is a folder (not a
    link) of a run group (its sweep.json, or nothing yet but the sweep's lock); never a user's
    folder, whose files would be mixed with the runs."""
    from achilles.sweep import SWEEP_JSON

    runs = Path(runs)
    if not os.path.lexists(runs):
        return
    if not runs.is_dir():
        raise AchillesError(f"the run store {runs} exists and is not a folder; choose another --runs")
    for entry in sorted(runs.iterdir()):
        if entry.is_symlink():
            raise AchillesError(f"{entry} in the run store is a symbolic link (to {os.readlink(entry)}); achilles "
                                "writes only inside folders it owns, never through a link: remove the link")
        own = entry.is_dir() and ((entry / SWEEP_JSON).is_file()
                                  or all(p.name.startswith(".") for p in entry.iterdir()))
        if not own and not entry.name.startswith("."):
            raise AchillesError(f"{runs} is not a run store ({entry.name} is not a run group's sweep folder); a "
                                "reproduction keeps its runs in a new or empty folder or a run store of its own: "
                                "choose another --runs (or --out)")


def plan_record(recipe: Recipe, profile: str, plan: Plan) -> dict[str, Any]:
    def group(g: RunGroup) -> dict[str, Any]:
        d = asdict(g)
        d["evals"] = [asdict(e) for e in g.evals]
        if g.until is not None:  # its test is code: the record keeps what it means
            d["until"] = {"text": g.until.text, "need": g.until.need, "cap": g.until.cap}
        return d

    return {"format": OUT_FORMAT, "recipe": recipe.name, "profile": profile,
            "subject": recipe.tested_subject or recipe.subject,
            "runs": [group(g) for g in plan.runs], "probes": [asdict(p) for p in plan.probes],
            "training_profile": plan.training_profile}


# -- the stages ------------------------------------------------------------------------------------
def collect(rep: Reproduction) -> RecipeResults:
    """Read every run of the reproduction in the run store (finished or not) with its evals and probes."""
    runs: list[RunRecord] = []
    for g in rep.groups:
        for cell in sweeps.cells(g.spec, g.folder, rep.device):
            runs.append(read_run(g.group.name, cell.values, cell.seed, cell.path, cell.status))
    return RecipeResults(rep.recipe, rep.profile, rep.plan, rep.out, runs)


def run_evaluations(results: RecipeResults, device: str = "auto") -> int:
    """Each group's extra evaluations on its finished runs; reuses results of the same weights."""
    from achilles.contract.lookup import get_task
    from achilles.training.evaluation import evaluate
    from achilles.runs.folder import recorded_data_seed
    from achilles.training.trainer import resolve_device
    from achilles.zoo.pull import load

    done = 0
    for group in results.plan.runs:
        for spec in group.evals:
            for run in results.group(group.name):
                if not run.finished:
                    continue
                sha = run.config.get("weights_sha256")
                wanted = {"task_settings": dict(spec.task_settings), "splits": list(spec.splits),
                          "samples": spec.samples or run.eval_samples(spec.splits[0]), "weights_sha256": sha}
                old = run.evals.get(spec.name)
                if old and all(old.get(k) == v for k, v in wanted.items()):
                    continue
                with RunFolder(run.path).lock("evaluate"):
                    loaded = load(str(run.path))
                    task = get_task(loaded.config["task"], **{**loaded.config.get("task_config", {}),
                                                              **spec.task_settings})
                    model = loaded.model.to(resolve_device(device))
                    metrics = evaluate(model, task, spec.splits, samples=wanted["samples"],
                                       seed=recorded_data_seed(loaded.config),  # the run's own data seed
                                       # and its precision: a bf16 run is evaluated as it trained
                                       precision=(loaded.config.get("training") or {}).get("precision"))
                    record = {**wanted, "task": task.name, "task_config": task.config, "metrics": metrics}
                    claim(run.path, EVALS_DIR)
                    atomic_write_json(owned_folder(run.path, EVALS_DIR) / f"{spec.name}.json", record)
                run.evals[spec.name] = record
                done += 1
                log.info(f"evaluated {run.label} on {spec.name}")
    return done


def run_probes(results: RecipeResults, device: str = "auto") -> int:
    """The plan's probes on the finished runs they name; reuses results of the same weights."""
    from achilles.contract.lookup import get_probe
    from achilles.training.trainer import resolve_device
    from achilles.zoo.pull import load

    done = 0
    for step in results.plan.probes:
        probe = get_probe(step.probe)
        for run in results.group(step.on, step.where):
            if not run.finished:
                continue
            out_dir = run.path / PROBES_DIR / step.probe
            request = {"options": dict(step.options), "weights_sha256": run.config.get("weights_sha256")}
            marker = out_dir / "request.json"
            if step.probe in run.probes and marker.is_file() and json.loads(marker.read_text()) == request:
                continue
            with RunFolder(run.path).lock("probe"):
                claim(run.path, PROBES_DIR)
                owned_folder(run.path, PROBES_DIR, step.probe)  # a link at probes/NAME is refused
                loaded = load(str(run.path))
                model = loaded.model.to(resolve_device(device)).eval()
                try:
                    probe.check(model, loaded.task)
                except AchillesError as exc:  # e.g. an LSTM has no SSM matrix: the claims say the result is missing
                    log.warning(f"probe {step.probe} does not apply to {run.label}: {exc}")
                    continue
                result = sweeps.call_probe(probe, model, loaded.task, out_dir, run.path, loaded.config,
                                           dict(step.options))
                atomic_write_json(marker, request)
            run.probes[step.probe] = result
            done += 1
            log.info(f"probed {run.label} with {step.probe}")
    return done


def draw_figures(results: RecipeResults, out: Path) -> list[dict[str, str]]:
    """The recipe's figures; a figure that fails is reported in the report, not fatal."""
    figures = []
    folder = owned_folder(out, FIGURES_DIR)  # never through a link out of the output folder
    for figure in results.recipe.figures:
        path = folder / f"{figure.name}.png"
        entry = {"name": figure.name, "caption": figure.caption, "path": f"{FIGURES_DIR}/{path.name}"}
        if path.is_symlink():
            path.unlink()  # a link planted there is removed, never written through
        try:
            figure.draw(results, path)
        except Exception as exc:  # a broken figure must not lose the claims
            log.warning("figure %s failed: %s: %s", figure.name, type(exc).__name__, exc)
            entry = {**entry, "error": f"{type(exc).__name__}: {exc}", "path": ""}
        figures.append(entry)
    return figures


def link_report(results: RecipeResults, report: Path) -> None:
    """Record ``report`` in each finished run's record and write its card again, so the card
    says which report the checkpoint backs (a run several recipes share lists each recipe's
    latest report)."""
    from achilles.zoo.card import write_card

    where = os.path.relpath(Path(report).resolve(), Path.cwd())
    where = str(Path(report).resolve()) if where.startswith("..") else where
    for run in results.runs:
        if not run.finished:
            continue
        folder = RunFolder(run.path)
        with folder.lock("reproduce"):
            # a recipe's newer report (another --out) replaces its older one: one link per recipe
            kept = [r for r in folder.read_config().get("reports") or [] if Path(r).parent.name != Path(where).parent.name]
            reports = sorted({*kept, where})
            if reports != run.config.get("reports"):
                run.config = folder.update_config(reports=reports)
                write_card(run.path)


@dataclass
class ReproduceResult:
    out: Path
    results: RecipeResults
    claims: list[dict[str, Any]]
    report: Path | None
    seconds: float


def _jobs(rep: Reproduction) -> list[tuple[sweep.SweepSpec, Path]]:
    return [(g.spec, g.folder) for g in rep.groups]


def check_reproduction(rep: Reproduction) -> None:
    """Refuse, before any folder is made, an output folder of another reproduction, a subject that
    cannot serve the recipe and a run store holding anything but run groups."""
    check_out_folder(rep.out, rep.recipe, rep.profile)
    check_subject_serves(rep.recipe, rep.groups)
    check_run_store(rep.runs)


def train_together(reps: list[Reproduction]) -> None:
    """Train the runs of several reproductions in one pool (``reproduce --all``, the atlas): a
    recipe's last runs do not leave workers idle while the next recipe waits. Raises
    SweepInterrupted on Ctrl-C."""
    pairs: list[tuple[Any, Path]] = []
    for rep in reps:
        check_reproduction(rep)
        pairs += [p for p in _jobs(rep) if p not in pairs]
    if reps:
        sweeps.train(pairs, reps[0].training)


def reproduce(rep: Reproduction) -> ReproduceResult:
    """Train what is missing, evaluate, probe, judge the claims and write the report.

    Raises ``achilles.sweep.SweepInterrupted`` (a KeyboardInterrupt) on Ctrl-C after the
    finished runs are safe; the same call again resumes."""
    from achilles.recipes.measure import evaluate_claims
    from achilles.recipes.report import write_report

    started = time.perf_counter()
    check_reproduction(rep)
    rep.out.mkdir(parents=True, exist_ok=True)
    previous = rep.out / RECIPE_JSON
    created = (json.loads(previous.read_text()).get("created") if previous.is_file() else None) or _now()
    atomic_write_json(previous, {**plan_record(rep.recipe, rep.profile, rep.plan), "created": created,
                                 "updated": _now()})
    sweeps.train(_jobs(rep), rep.training)
    rep = extend_until_met(rep)
    results = collect(rep)
    run_evaluations(results, rep.device)
    run_probes(results, rep.device)
    claims = evaluate_claims(rep.recipe.claims, results)
    figures = draw_figures(results, rep.out)
    report = write_report(results, claims, figures, rep.out, seconds=time.perf_counter() - started)
    link_report(results, report)
    return ReproduceResult(rep.out, results, claims, report, time.perf_counter() - started)


def extend_until_met(rep: Reproduction) -> Reproduction:
    """Groups with an ``until`` premise get more seeds, a few at a time, until enough of their
    finished runs meet it or the cap is reached; returns the reproduction with the seeds actually trained."""
    from dataclasses import replace

    while True:
        grown = []
        for g in rep.groups:
            group = g.group
            if group.until is None or group.seeds >= group.until.cap:
                continue
            records = [read_run(group.name, c.values, c.seed, c.path, c.status)
                       for c in sweeps.cells(g.spec, g.folder, rep.device)]
            if any(not r.finished for r in records):
                continue  # failed or interrupted runs: more seeds would not help; the report says which
            met = sum(1 for r in records if group.until.test(r))
            if met >= group.until.need:
                continue
            seeds = min(group.until.cap, group.seeds + group.until.need - met)
            log.info(f"{group.name}: {met} of {group.seeds} runs meet '{group.until.text}'; training up to "
                     f"{seeds} seeds (cap {group.until.cap})")
            grown.append(replace(group, seeds=seeds))
        if not grown:
            return rep
        names = {g.name: g for g in grown}
        plan = replace(rep.plan, runs=tuple(names.get(g.name, g) for g in rep.plan.runs))
        rep = replace(rep, plan=plan, groups=group_runs(plan, rep.runs, rep.device))
        sweeps.train([(g.spec, g.folder) for g in rep.groups if g.group.name in names], rep.training)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
