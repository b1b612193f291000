"""``achilles train`` and ``achilles eval``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from achilles.cli.completion import complete_arch, complete_model, complete_task
from achilles.cli.options import deprecated_alias, info, is_quiet, takes_alias, threads_option, verbosity_option
from achilles.training.threads import apply_threads, stop_adapting
from achilles.errors import AchillesError, ConfigError, TrainingFailed
from achilles.cli.table import format_table


def parse_settings(pairs: tuple[str, ...], option: str) -> dict:
    """``("placement=shuffle", "n_pairs=8")`` -> ``{"placement": "shuffle", "n_pairs": 8}``."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(option, f"expected KEY=VALUE, got {pair!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value  # a bare string such as shuffle
    return out


def metrics_table(results: dict[str, dict[str, float]]) -> str:
    splits = list(results)
    names = []
    for split in splits:
        names += [m for m in results[split] if m not in names]
    rows = [[name] + [results[s].get(name) for s in splits] for name in names]
    return format_table(rows, ["metric"] + splits)


#: the --precision choices of train, sweep and reproduce (literal: the CLI starts without importing torch)
PRECISION_CHOICES = ["fp32", "bf16"]
PRECISION_HELP = ("fp32, or bf16: the forward (and loss) under bf16 autocast with fp32 master weights and optimizer "
                  "state; evaluation in the same precision; run.json records it. Default: bf16 for the paper profile "
                  "on a GPU, fp32 otherwise (the quick profile on a CPU stays fp32 pending the measurement in "
                  "benchmarks/RESULTS-precision.md).")


@click.command("train")
@click.option("--arch", help="Architecture name (see `achilles list archs`).", shell_complete=complete_arch)
@click.option("--task", "task_name", help="Task name (see `achilles list tasks`).", shell_complete=complete_task)
@click.option("--profile", type=click.Choice(["paper", "quick"]), default=None,
              help="paper: appendix D to the letter; quick: minutes on a CPU. Default: paper on a GPU, quick on a CPU.")
@click.option("--layers", "n_layers", type=int, default=None, help="Number of layers (default 2).")
@click.option("--d-model", type=int, default=None, help="Model width (default: the paper's for the task).")
@click.option("--gamma", type=float, default=None, help="Initialisation rate: weights ~ N(0, d_in^(-2 gamma)). Default 0.5.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of initialisation, batch order and (unless --data-seed) the training and evaluation data.")
@click.option("--data-seed", type=click.IntRange(min=0), default=None,
              help="Pin the training and evaluation data to this seed, so runs of different --seed differ only in "
                   "initialisation and batch order (default: the run's --seed; run.json records it).")
@click.option("--epochs", type=int, default=None, help="Override the profile's number of epochs.")
@click.option("--batch-size", type=int, default=None, help="Override the profile's batch size.")
@click.option("--lr", "lr_peak", type=float, default=None, help="Override the peak learning rate.")
@deprecated_alias("--samples", "--train-samples", "train_samples", type=int, default=None)
@click.option("--train-samples", "train_samples", type=int, default=None, callback=takes_alias,
              help="Training samples (default: profile's).")
@click.option("--eval-samples", type=int, default=None, help="Evaluation samples per split (default: profile's).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--precision", type=click.Choice(PRECISION_CHOICES), default=None, help=PRECISION_HELP)
@click.option("--backend", type=click.Choice(["auto", "torch", "fused"]), default=None,
              help="Mamba compute path: fused kernels need CUDA and the cuda extra. Default auto.")
@click.option("--set", "task_set", multiple=True, metavar="KEY=VALUE", help="Task setting, e.g. --set placements=shuffle.")
@click.option("--model-set", multiple=True, metavar="KEY=VALUE", help="Architecture setting, e.g. --model-set d_state=64.")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Run folder (default runs/<arch>.<task>-l<L>-g<gamma>-s<seed>[-quick]).")
@click.option("--overwrite", is_flag=True, help="Replace an existing run folder of the same name.")
@click.option("--resume", type=click.Path(file_okay=False), default=None, help="Continue an interrupted run folder.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on in a terminal).")
@click.option("--log", "loggers", multiple=True, type=click.Choice(["tensorboard", "wandb"]),
              help="Also log the epochs, repeatable: tensorboard (event files in RUN/tensorboard/; pip install "
                   "\"achilles[tensorboard]\"), wandb (Weights & Biases, files in RUN/wandb/, WANDB_MODE=offline "
                   "works without a network; pip install \"achilles[wandb]\").")
@threads_option()
@verbosity_option
def train_command(arch, task_name, profile, n_layers, d_model, gamma, seed, data_seed, epochs, batch_size, lr_peak,
                  train_samples, eval_samples, device, precision, backend, task_set, model_set, out, overwrite, resume,
                  progress, loggers, threads):
    """Train an architecture on a task into a run folder (weights, metrics, card, figures).

    \b
    Example:  achilles train --arch mamba2-residual --task inverse
              achilles train --resume runs/mamba2-residual.inverse-l2-g0.5-s0-quick
    """
    from achilles.training.trainer import finalize_run, resume_run, start_run

    apply_threads(threads)
    click.get_current_context().call_on_close(stop_adapting)  # the adaptive default ends with this command
    if "tensorboard" in loggers:
        from achilles.contract.loader import register_plugin
        from achilles.training.tensorboard import TensorBoardWriter

        register_plugin(TensorBoardWriter(), "tensorboard")  # fails here, in one line, without the package
    if "wandb" in loggers:
        from achilles.contract.loader import register_plugin
        from achilles.training.wandb_writer import WandbWriter

        register_plugin(WandbWriter(), "wandb")  # the same scalars as tensorboard; one line without the package
    if progress is None and is_quiet():
        progress = False
    if resume:
        refuse_resume_changes(click.get_current_context(), resume)
        trainer = resume_run(resume, device=device, progress=progress)
    else:
        if not arch or not task_name:
            raise click.UsageError("--arch and --task are required (or --resume RUN_DIR)")
        model_config = parse_settings(model_set, "--model-set")
        for key, value in (("n_layers", n_layers), ("d_model", d_model), ("gamma", gamma), ("backend", backend)):
            if value is not None:
                model_config[key] = value
        trainer = start_run(arch, task_name, profile=profile, seed=seed, device=device, out=out,
                            model_config=model_config, task_config=parse_settings(task_set, "--set"),
                            overwrite=overwrite, progress=progress, epochs=epochs,
                            batch_size=batch_size, lr_peak=lr_peak, train_samples=train_samples,
                            eval_samples=eval_samples, data_seed=data_seed, precision=precision)
    if trainer.device.type == "cpu":
        from achilles.training.allocator import tune_cpu_allocator

        tune_cpu_allocator()  # measured +30% samples/s on the inverse shape (2-core CPU)
    s = trainer.settings
    info(f"Run: {trainer.run.path}")
    info(f"Training {trainer.run.read_config()['arch']} on {trainer.task.name} "
               f"({trainer.model.num_parameters():,} parameters) on {trainer.device}: profile {s.profile}, "
               f"{s.epochs} epochs, batch {s.batch_size}, lr {s.lr_start:g} -> {s.lr_peak:g} -> {s.lr_start:g}, "
               f"{s.train_samples or 'all'} training samples, data seed {s.data_seed}, precision {s.precision}")
    if s.profile != "paper":
        info("Note: the quick profile is a CPU budget, not the paper's setting; its numbers are not the paper's.")
    try:
        result = trainer.fit()
    finally:
        finalize_run(trainer.run.path)
    if result.status == "failed":
        raise TrainingFailed(f"the run failed: {result.reason}")
    if result.status != "finished":
        raise SystemExit(130)
    click.echo("\n" + metrics_table(result.final_metrics))
    click.echo(f"\nDone: {result.path}")


#: train flag -> where a run records it: ("model"|"training"|None, key); None: the record's top level
_RECORDED = {"arch": (None, "arch"), "task_name": (None, "task"), "seed": (None, "seed"),
             "profile": ("training", "profile"), "epochs": ("training", "epochs"),
             "batch_size": ("training", "batch_size"), "lr_peak": ("training", "lr_peak"),
             "train_samples": ("training", "train_samples"), "eval_samples": ("training", "eval_samples"),
             "data_seed": ("training", "data_seed"), "precision": ("training", "precision"),
             "n_layers": ("model", "n_layers"), "d_model": ("model", "d_model"), "gamma": ("model", "gamma"),
             "backend": ("model", "backend")}


def _same(given, recorded) -> bool:
    if isinstance(given, float) and isinstance(recorded, (int, float)) and not isinstance(recorded, bool):
        return math.isclose(given, recorded, rel_tol=1e-9, abs_tol=0.0)
    return given == recorded


def refuse_resume_changes(ctx: click.Context, run_dir: str) -> None:
    """``--resume`` continues a run with its own settings: refuse, in one line, any flag given with
    it that would change them (a flag equal to the run's value is accepted)."""
    from achilles.runs.folder import RunFolder

    given = {name for name in ctx.params
             if ctx.get_parameter_source(name) in (click.core.ParameterSource.COMMANDLINE,
                                                   click.core.ParameterSource.ENVIRONMENT)}
    if "overwrite" in given:
        raise AchillesError("--overwrite and --resume contradict each other: --resume continues the run, "
                            "--overwrite (with --out) starts it again")
    config = RunFolder(run_dir).read_config()
    changed = []
    flag = {p.name: p.opts[0] for p in ctx.command.params if isinstance(p, click.Option)}
    for name in sorted(given & set(_RECORDED), key=list(_RECORDED).index):
        section, key = _RECORDED[name]
        record = config if section is None else (config.get(section) or {})
        if name == "precision" and record.get(key) is None:
            record = {**record, key: "fp32"}  # runs recorded before the setting trained in fp32
        if key not in record or not _same(ctx.params[name], record[key]):
            changed.append(f"{flag[name]} {ctx.params[name]} (the run's: {record.get(key, 'not set')})")
    for option, name, section in (("--set", "task_set", "task_config"), ("--model-set", "model_set", "model")):
        record = config.get(section) or {}
        for key, value in parse_settings(ctx.params[name], option).items():
            if key not in record or not _same(value, record[key]):
                changed.append(f"{option} {key}={json.dumps(value)} (the run's: {record.get(key, 'not set')})")
    if "out" in given and Path(ctx.params["out"]).resolve() != Path(run_dir).resolve():
        changed.append(f"--out {ctx.params['out']} (the run's folder is {run_dir})")
    if changed:
        raise AchillesError(f"--resume continues {run_dir} with its own settings and cannot honour "
                            f"{'; '.join(changed)}; drop the flag, or start a new run with --out")


@click.command("eval")
@click.argument("run_id", shell_complete=complete_model)
@click.option("--task", "task_name", default=None, help="Evaluate on another task (default: the run's).",
              shell_complete=complete_task)
@click.option("--set", "task_set", multiple=True, metavar="KEY=VALUE",
              help="Task setting overrides, e.g. --set test_placements=shuffle.")
@click.option("--split", "splits", multiple=True, help="Split(s) to evaluate (default: all of the task's).")
@deprecated_alias("--samples", "--eval-samples", "samples", type=int, default=None)
@click.option("--eval-samples", "samples", type=int, default=None, callback=takes_alias,
              help="Evaluation samples per split (default: as many as the run's final evaluation scored, as "
                   "its run.json records them, so the numbers are its card's; the task's size for a model "
                   "without one).")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Seed of the evaluation samples (default: the data seed the run trained and evaluated with, "
                   "as its run.json records it; 0 for a model without one).")
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@verbosity_option
def eval_command(run_id, task_name, task_set, splits, samples, seed, device, as_json):
    """Evaluate a saved model: a run folder, a zoo id or hf-hub:ORG/NAME[@REV].

    \b
    With no flags it evaluates the samples the run's final evaluation scored (the same split sizes
    and data seed, the train row on the first of its training samples), so it prints the numbers
    of the run's card; a bar shows the progress in a terminal (none with -q).

    \b
    Example:  achilles eval runs/mamba2.mqar-l2-g0.5-s0-quick --set test_placements=shuffle --split test
    """
    from achilles.contract.lookup import get_task
    from achilles.training.evaluation import evaluate
    from achilles.training.trainer import resolve_device
    from achilles.zoo.pull import load

    loaded = load(run_id)
    config = loaded.config
    name = task_name or config["task"]
    task_config = dict(config.get("task_config", {})) if name == config["task"] else {}
    task_config.update(parse_settings(task_set, "--set"))
    task = get_task(name, **task_config) if (task_name or task_set) else loaded.task
    vocab = config["model"].get("vocab_size")
    if vocab is not None and task.vocab_size > vocab:
        raise ConfigError("--task", f"{name!r} uses {task.vocab_size} tokens but the model knows only {vocab}")
    bad = [s for s in splits if s not in task.splits]
    if bad:
        raise ConfigError("--split", f"{bad[0]!r} is not a split of {name!r} ({', '.join(task.splits)})")
    if samples is not None:
        from achilles.models.limits import check_samples_fit

        check_samples_fit(samples, task.seq_len, "--eval-samples")
    model = loaded.model.to(resolve_device(device))
    from achilles.runs.folder import recorded_data_seed

    training = config.get("training") or {}
    recorded_samples = training.get("eval_samples") if isinstance(training.get("eval_samples"), int) else None
    if samples is None:
        samples = recorded_samples  # as many as the run's final evaluation scored
    if seed is None:
        seed = recorded_data_seed(config)
    # the run's own evaluation samples: its task, its sample count, its data seed (given or defaulted)
    as_recorded = (not (task_name or task_set) and samples == recorded_samples
                   and seed == recorded_data_seed(config))
    chosen = list(splits or task.splits)
    data = None
    if as_recorded and "train" in chosen and training:
        # the train row of the run's evaluation: the first samples of its training set, not a fresh draw
        train = task.generate("train", training.get("train_samples"), seed=seed)
        data = {"train": train[: samples or min(len(train), 10_000)]}
    count = f"{samples:,}" if samples else "the task's default number of"
    if not is_quiet() and not as_json:  # on stderr; --json carries the same facts in its result
        click.echo(f"Evaluating {', '.join(chosen)} on {count} samples per split, data seed {seed}"
                   + (" (the run's own evaluation: its card's numbers)" if as_recorded else ""), err=True)
    # a run trained in bf16 is evaluated in bf16, as it trained (fp32 for runs without the setting)
    precision = (config.get("training") or {}).get("precision")
    results = evaluate(model, task, chosen, samples=samples, seed=seed, precision=precision, data=data,
                       progress=False if is_quiet() else None)
    if as_json:
        click.echo(json.dumps({"run": str(run_id), "task": name, "task_config": task.config, "samples": samples,
                               "seed": seed, "as_recorded": as_recorded, "metrics": results}, indent=2))
    else:
        click.echo(f"{config['arch']} on {name} ({', '.join(f'{k}={v}' for k, v in task.config.items())})")
        click.echo(metrics_table(results))


def register(cli: click.Group) -> None:
    cli.add_command(train_command)
    cli.add_command(eval_command)
