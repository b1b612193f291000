"""``achilles push``, ``achilles pull`` and ``achilles zoo list|show|add``."""

from __future__ import annotations

import click

from ..table import format_table


def _summary(config: dict) -> str:
    """One line: what the run is and its headline result."""
    training = config.get("training") or {}
    headline = config.get("headline") or {}
    result = ""
    if isinstance(headline.get("value"), (int, float)):
        result = f": {headline.get('split')} {headline.get('metric')} {headline['value']:.4g}"
    return (f"{config.get('arch')} on {config.get('task')} (seed {config.get('seed')}, "
            f"{training.get('profile', '?')} profile, {config.get('status')}){result}")


@click.command("push")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=str))
@click.option("--repo-id", required=True, metavar="ORG/NAME", help="Hub repository (created if missing).")
@click.option("--private", is_flag=True, help="Create the repository private.")
@click.option("--revision", metavar="BRANCH", default=None, help="Branch to commit to (created if missing; default main).")
@click.option("--force", is_flag=True, help="Push even an unfinished run or weights that do not match their sha256.")
@click.option("-m", "--message", default=None, help="Commit message.")
def push_command(run_dir: str, repo_id: str, private: bool, revision: str | None, force: bool,
                 message: str | None) -> None:
    """Publish RUN_DIR (weights, config, metrics, card, figures) to the Hugging Face Hub.

    The token comes from HF_TOKEN or `hf auth login`; prints the commit URL."""
    from ..hub import push_run

    result = push_run(run_dir, repo_id, private=private, revision=revision, force=force, commit_message=message)
    for problem in result.forced:
        click.secho(f"WARNING: pushed despite: {problem}", fg="red", bold=True, err=True)
    click.echo(f"Pushed {len(result.files)} files to {result.repo_id}@{result.revision} "
               f"(commit {result.commit_oid[:12]}).", err=True)
    click.echo(result.commit_url)
    click.echo(f"To list it in the zoo: achilles zoo add {run_dir} --repo-id {result.repo_id} "
               f"--revision {result.commit_oid}", err=True)


@click.command("pull")
@click.argument("source", metavar="ID")
def pull_command(source: str) -> None:
    """Fetch a zoo id or hf-hub:ORG/NAME[@REVISION] into the Hugging Face cache and verify it.

    Prints the local run folder, then a one-line summary. A run folder is only verified."""
    from ..zoo import pull

    pulled = pull(source)
    click.echo(str(pulled.path))
    sha = pulled.config.get("weights_sha256", "")
    click.echo(f"{_summary(pulled.config)}; weights sha256 {sha[:12]}… verified ({pulled.origin})", err=True)


@click.group("zoo")
def zoo_group() -> None:
    """Published checkpoints: the reviewed index in registry/ plus plugin zoos."""


def _warn(problems: list[str]) -> None:
    for problem in problems:
        click.echo(f"achilles: warning: {problem}", err=True)


@zoo_group.command("list")
@click.argument("pattern", required=False, default="")
def zoo_list(pattern: str) -> None:
    """List zoo ids (PATTERN takes wildcards, e.g. 'mamba2*inverse*'; a plain word matches anywhere)."""
    from ..zoo import list_zoo, zoo_index

    entries = list_zoo(pattern)
    if not entries:
        click.echo("no zoo entries" + (f" matching {pattern!r}" if pattern else ""))
    else:
        rows = [(e.id, e.profile or "?", e.headline_text(), f"{e.repo_id}@{e.revision[:7]}", e.source)
                for e in entries]
        click.echo(format_table(rows, ["id", "profile", "headline", "hub", "source"], 60))
    _warn(zoo_index().problems)


@zoo_group.command("show")
@click.argument("zoo_id", metavar="ID")
def zoo_show(zoo_id: str) -> None:
    """Everything the index records about ID, and how to load it."""
    from ..hub import endpoint
    from ..zoo import get_entry

    entry = get_entry(zoo_id)
    rows = [("id", entry.id), ("source", entry.source), ("hub", f"hf-hub:{entry.repo_id}@{entry.revision}"),
            ("url", f"{endpoint()}/{entry.repo_id}/tree/{entry.revision}"), ("sha256", entry.sha256)]
    rows += [(k, getattr(entry, k)) for k in ("arch", "task", "variant", "seed", "profile", "added")
             if getattr(entry, k) is not None]
    if entry.headline_text():
        rows.append(("headline", entry.headline_text()))
    for split, value in (entry.metrics or {}).items():
        rows.append((f"{split} {(entry.headline or {}).get('metric', '')}".rstrip(), value))
    rows += [(k, v) for k, v in entry.extra.items()]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key.ljust(width)}  {value}")
    if entry.profile != "paper":
        click.echo(f"note: trained with the {entry.profile or 'unknown'} profile, not the paper's settings")
    click.echo(f'load:  achilles.load("{entry.id}")   or   achilles pull {entry.id}')


@zoo_group.command("add")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=str))
@click.option("--repo-id", required=True, metavar="ORG/NAME", help="Hub repository the run was pushed to.")
@click.option("--revision", required=True, help="Commit the push printed (a branch or tag is pinned to its commit).")
@click.option("--id", "zoo_id", default=None, help="Zoo id (default: the run name, ARCH.TASK-lL-gGAMMA-sSEED[-PROFILE]).")
@click.option("--sha256", default=None, help="Expected sha256 of the weights (checked; default: computed).")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Download the published weights and check they are this run's.")
def zoo_add(run_dir: str, repo_id: str, revision: str, zoo_id: str | None, sha256: str | None,
            verify: bool) -> None:
    """Append the entry for RUN_DIR, published at --repo-id/--revision, to the zoo index."""
    from ..zoo import add_entry, registry_path

    entry = add_entry(run_dir, repo_id, revision, zoo_id=zoo_id, sha256=sha256, verify=verify)
    click.echo(f"Added {entry.id} -> hf-hub:{entry.repo_id}@{entry.revision[:12]} "
               f"(sha256 {entry.sha256[:12]}…) to {registry_path()}")
    if entry.profile != "paper":
        click.echo(f"note: {entry.id} was trained with the {entry.profile or 'unknown'} profile; "
                   "its metrics are not the paper's", err=True)


def register(cli: click.Group) -> None:
    cli.add_command(push_command)
    cli.add_command(pull_command)
    cli.add_command(zoo_group)
