"""``achilles push``, ``achilles pull`` and ``achilles zoo list|show|add|publish``."""

from __future__ import annotations

import click

from achilles.cli.options import is_quiet, json_option, verbosity_option
from achilles.cli.completion import complete_zoo_id
from achilles.cli.table import format_table


def note(message: str) -> None:
    """A line about the result, on stderr (stdout holds only the result itself); none with -q."""
    if not is_quiet():
        click.echo(message, err=True)


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
@click.option("-m", "--message", default=None, help="Commit message.")
@verbosity_option
def push_command(run_dir: str, repo_id: str, private: bool, revision: str | None, message: str | None) -> None:
    """Publish RUN_DIR (weights, config, metrics, card, figures) to the Hugging Face Hub.

    Only a finished run whose files match their recorded sha256 is published, and only its own
    regular files (no link, nothing outside the folder). The token comes from HF_TOKEN or
    `hf auth login`; prints the commit URL."""
    from achilles.zoo.hub import push_run

    result = push_run(run_dir, repo_id, private=private, revision=revision, commit_message=message)
    note(f"Pushed {len(result.files)} files to {result.repo_id}@{result.revision} "
         f"(commit {result.commit_oid[:12]}).")
    click.echo(result.commit_url)
    note(f"To list it in the zoo: achilles zoo add {run_dir} --repo-id {result.repo_id} "
         f"--revision {result.commit_oid}")


@click.command("pull")
@click.argument("source", metavar="ID", shell_complete=complete_zoo_id)
@click.option("--revision", default=None, metavar="REV", help="Hub branch, tag or commit (for hf-hub:ORG/NAME).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Hugging Face cache folder (default: HF_HUB_CACHE).")
@verbosity_option
def pull_command(source: str, revision: str | None, cache_dir: str | None) -> None:
    """Fetch a zoo id or hf-hub:ORG/NAME[@REVISION] into the Hugging Face cache and verify it.

    Prints the local run folder, then a one-line summary. A run folder is only verified; a zoo
    entry that is not published (or with the Hub out of reach) gives its bundled copy."""
    from achilles.zoo.pull import pull

    pulled = pull(source, revision=revision, cache_dir=cache_dir)
    click.echo(str(pulled.path))
    sha = pulled.config.get("weights_sha256", "")
    note(f"{_summary(pulled.config)}; weights sha256 {sha[:12]}… verified ({pulled.origin})")


@click.group("zoo")
def zoo_group() -> None:
    """The zoo: checkpoints bundled with achilles or published on the Hub, by id (registry/ plus plugin zoos)."""


def _warn(problems: list[str]) -> None:
    for problem in problems:
        click.echo(f"achilles: warning: {problem}", err=True)


@zoo_group.command("list")
@click.argument("pattern", required=False, default="", shell_complete=complete_zoo_id)
@json_option
@verbosity_option
def zoo_list(pattern: str, as_json: bool = False) -> None:
    """List zoo ids (PATTERN takes wildcards, e.g. 'mamba2*inverse*'; a plain word matches anywhere)."""
    from achilles.zoo.index import list_zoo, zoo_index

    entries = list_zoo(pattern)
    if as_json:
        import json

        click.echo(json.dumps([{**e.to_dict(), "source": e.source, "where": e.where()} for e in entries],
                              indent=2, default=str))
    elif not entries:
        click.echo("no zoo entries" + (f" matching {pattern!r}" if pattern else ""))
    else:
        rows = [(e.id, e.profile or "?", e.headline_text(), e.where(), e.source) for e in entries]
        click.echo(format_table(rows, ["id", "profile", "headline", "where", "source"], 60))
    _warn(zoo_index().problems)


@zoo_group.command("show")
@click.argument("zoo_id", metavar="ID", shell_complete=complete_zoo_id)
@json_option
@verbosity_option
def zoo_show(zoo_id: str, as_json: bool = False) -> None:
    """Everything the index records about ID, and how to load it."""
    from achilles.models.hub_refs import endpoint
    from achilles.zoo.index import get_entry

    entry = get_entry(zoo_id)
    if as_json:
        import json

        click.echo(json.dumps({**entry.to_dict(), "source": entry.source, "where": entry.where(),
                               "report_at": entry.report_location(),
                               "load": f'achilles.load("{entry.id}")'}, indent=2, default=str))
        return
    rows = [("id", entry.id), ("source", entry.source), ("sha256", entry.sha256)]
    if entry.is_published:
        rows += [("hub", f"hf-hub:{entry.repo_id}@{entry.revision}"),
                 ("url", f"{endpoint()}/{entry.repo_id}/tree/{entry.revision}")]
    else:
        rows.append(("hub", "not published yet"))
    if entry.bundled:
        rows.append(("bundled", str(entry.bundle_path())))
    rows += [(k, getattr(entry, k)) for k in ("arch", "task", "variant", "seed", "profile", "budget", "report",
                                              "added", "published") if getattr(entry, k) is not None]
    if entry.report:  # the recorded path is the repository's: say where it is readable from here
        rows.append(("report at", entry.report_location() or "not found: neither the installed package nor a "
                                                               "checkout holds it"))
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
@click.option("--bundle", is_flag=True,
              help="Ship the finished run inside achilles (registry/bundled/ID/); `zoo publish` pushes it later.")
@click.option("--repo-id", default=None, metavar="ORG/NAME", help="Hub repository the run was pushed to.")
@click.option("--revision", default=None, help="Commit the push printed (a branch or tag is pinned to its commit).")
@click.option("--id", "zoo_id", default=None, help="Zoo id (default: the run name, ARCH.TASK-lL-gGAMMA-sSEED[-PROFILE]).")
@click.option("--report", default=None, metavar="PATH|URL", help="The reproduction report this checkpoint backs.")
@click.option("--with-init", is_flag=True, help="Bundle init.safetensors too (conv-similarity's 'at init' rows).")
@click.option("--sha256", default=None, help="Expected sha256 of the weights (checked; default: computed).")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Download the published weights and check they are this run's.")
@verbosity_option
def zoo_add(run_dir: str, bundle: bool, repo_id: str | None, revision: str | None, zoo_id: str | None,
            report: str | None, with_init: bool, sha256: str | None, verify: bool) -> None:
    """Add RUN_DIR to the zoo index: bundled (--bundle) and/or published (--repo-id, --revision)."""
    from achilles.zoo.index import registry_path
    from achilles.zoo.curation import add_entry, bundled_size

    entry = add_entry(run_dir, repo_id, revision, bundle=bundle, zoo_id=zoo_id, sha256=sha256, verify=verify,
                      report=report, with_init=with_init)
    click.echo(f"Added {entry.id} ({entry.where()}, sha256 {entry.sha256[:12]}…) to {registry_path()}")
    if entry.bundled:
        folder = entry.bundle_path()
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        click.echo(f"bundled in {folder}: {size / 1e6:.2f} MB; all bundled entries: {bundled_size() / 1e6:.2f} MB",
                   err=True)
    if entry.profile != "paper":
        click.echo(f"note: {entry.id} was trained with the {entry.profile or 'unknown'} profile; "
                   "its metrics are not the paper's", err=True)


@zoo_group.command("publish")
@click.option("--org", required=True, metavar="ORG", help="Hub user or organisation: entries go to ORG/<zoo id>.")
@click.option("--private", is_flag=True, help="Create the repositories private.")
@verbosity_option
def zoo_publish(org: str, private: bool) -> None:
    """Push every bundled, unpublished zoo entry to the Hub and pin its commit in the index.

    Entries already published are skipped; the index is rewritten after each entry, so an
    interruption loses nothing and a re-run publishes the rest. Needs a token (HF_TOKEN or
    `hf auth login`)."""
    from achilles.zoo.index import registry_path
    from achilles.zoo.curation import publish

    report = publish(org, private=private, log=lambda line: click.echo(line))
    if not report.published:
        click.echo(f"nothing to publish: {len(report.skipped)} entries already published, none bundled-only")
        return
    click.echo(f"Published {len(report.published)} entries (skipped {len(report.skipped)} already published); "
               f"pinned in {registry_path()}", err=True)


def register(cli: click.Group) -> None:
    cli.add_command(push_command)
    cli.add_command(pull_command)
    cli.add_command(zoo_group)
