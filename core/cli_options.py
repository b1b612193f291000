"""Options shared by the long-running commands: ``-q/--quiet`` and ``-v/--verbose``.

They set the level of the ``achilles`` logger, which library code and commands log through::

    from achilles.cli_options import verbosity_option

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

from .errors import AchillesError
from .logs import ROOT as LOGGER
from .logs import install_cli_handler

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
