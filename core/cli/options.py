"""Options shared by the long-running commands: ``-q/--quiet`` and ``-v/--verbose``.

They set the level of the ``achilles`` logger, which library code and commands log through::

    from achilles.cli.options import verbosity_option

    @click.command("mine")
    @verbosity_option
    def mine(): ...

``-q`` shows warnings and errors only (and no progress bar unless ``--progress``), ``-v`` adds
debug lines; the command's result (a table, a path, a URL) is printed either way.
"""

from __future__ import annotations

import logging
from typing import Callable, TypeVar

import click

from achilles.errors import AchillesError
from achilles.logs import ROOT as LOGGER
from achilles.logs import install_cli_handler

_QUIET, _VERBOSE = "achilles.quiet", "achilles.verbose"

F = TypeVar("F", bound=Callable)


def _apply(ctx: click.Context) -> None:
    quiet, verbose = ctx.meta.get(_QUIET, False), ctx.meta.get(_VERBOSE, 0)
    if quiet and verbose:
        raise AchillesError("-q/--quiet and -v/--verbose contradict each other: give one")
    install_cli_handler(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)


def _quiet(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    ctx.meta[_QUIET] = bool(value)
    _apply(ctx)


def _verbose(ctx: click.Context, param: click.Parameter, value: int) -> None:
    ctx.meta[_VERBOSE] = int(value or 0)
    _apply(ctx)


def verbosity_option(command: F) -> F:
    """Add ``-q/--quiet`` and ``-v/--verbose`` to a click command (they set the ``achilles`` log level)."""
    command = click.option("-v", "--verbose", count=True, expose_value=False, callback=_verbose,
                           help="Also show debug lines.")(command)
    return click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_quiet,
                        help="Show only warnings, errors and the result (no progress bar unless --progress).")(command)


def is_quiet(ctx: click.Context | None = None) -> bool:
    """Whether ``-q`` was given to the running command."""
    ctx = ctx or click.get_current_context(silent=True)
    return bool(ctx and ctx.meta.get(_QUIET))


def info(message: str) -> None:
    """A progress line of a command: shown unless ``-q``."""
    logging.getLogger(f"{LOGGER}.cli").info(message)


# --- one grammar of flags (README "Flags"; tests/test_flags.py keeps every command to it) -------

def json_option(command: F) -> F:
    """``--json``: print the command's result as JSON (one document on stdout) instead of a table."""
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON instead of a table.")(command)


def threads_option(help: str = "") -> Callable[[F], F]:
    """``--threads N``: torch threads, at least 1, the same type on every command."""
    from achilles.training.threads import ENV_THREADS

    text = (f"Torch threads{help} (default: ${ENV_THREADS}, else the CPUs this process may use: its affinity, "
            "capped by a cgroup CPU quota" + (", divided among the workers" if help else "") + ").")
    return click.option("--threads", type=click.IntRange(min=1), default=None, metavar="N", help=text)


class Seeds(click.ParamType):
    """``--seeds``: a count N, meaning seeds 0..N-1, on every command; where ``lists`` is allowed (a
    sweep) also a list of seeds such as 0,3,7. Converts to an int (a count) or a tuple of ints."""

    name = "seeds"

    def __init__(self, lists: bool = False):
        self.lists = lists

    def get_metavar(self, param, ctx=None):  # noqa: D401 (click's signature varies by version)
        return "N|S,S,..." if self.lists else "N"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, tuple)) and not isinstance(value, bool):
            return value
        text = str(value).strip()
        try:
            if "," in text:
                if not self.lists:
                    self.fail(f"{text!r}: give a number of seeds N (seeds 0..N-1); a list of seeds is "
                              "taken by `achilles sweep --seeds`", param, ctx)
                seeds = tuple(int(s) for s in text.split(",") if s.strip())
                if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
                    self.fail(f"{text!r}: the seeds must be distinct non-negative integers", param, ctx)
                return seeds
            count = int(text)
        except ValueError:
            self.fail(f"{text!r} is not a number of seeds" + (" nor a list like 0,3,7" if self.lists else ""),
                      param, ctx)
        if count < 1:
            self.fail(f"{count} is not a number of seeds: give 1 or more", param, ctx)
        return count


SEEDS_HELP = "Number of seeds N, meaning seeds 0..N-1"


def seeds_option(default: str = "", lists: bool = False) -> Callable[[F], F]:
    """``--seeds``: one meaning and one type everywhere (:class:`Seeds`)."""
    text = SEEDS_HELP + (", or a list of seeds such as 0,3,7" if lists else "") + (f" (default: {default})." if default else ".")
    return click.option("--seeds", type=Seeds(lists=lists), default=None, help=text)


def deprecated_alias(old: str, new: str, dest: str, **option_kwargs) -> Callable[[F], F]:
    """A hidden option ``old`` kept for one release as the deprecated spelling of ``new`` (whose
    parameter is ``dest``): it warns on stderr and gives its value to ``new``. Giving both is an
    error. Put the decorator *above* the ``new`` option's. Independent of click's handling of two
    options with one name: the alias stores its value, ``new``'s callback (:func:`takes_alias`)
    picks it up (click processes options given on the command line before the others)."""

    def callback(ctx: click.Context, param: click.Parameter, value):
        if value is None or value == () or value is False:
            return
        click.echo(f"achilles: warning: {old} is deprecated; use {new}", err=True)
        if ctx.params.get(dest) not in (None, ()):  # `new` was given too, and processed first
            raise click.UsageError(f"{old} is the old spelling of {new}: give one of them", ctx)
        ctx.meta[f"achilles.alias.{dest}"] = (old, value)

    return click.option(old, f"{dest}_deprecated_alias", hidden=True, expose_value=False, callback=callback,
                        is_eager=False, **option_kwargs)


def takes_alias(ctx: click.Context, param: click.Parameter, value):
    """The callback of an option that has a :func:`deprecated_alias`: its value, or the alias's."""
    given = ctx.meta.get(f"achilles.alias.{param.name}")
    if given is None:
        return value
    if value not in (None, ()):
        raise click.UsageError(f"{given[0]} is the old spelling of {param.opts[0]}: give one of them", ctx)
    ctx.set_parameter_source(param.name, click.core.ParameterSource.COMMANDLINE)
    return given[1]
