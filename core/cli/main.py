"""The ``achilles`` command. Commands live one module each in ``achilles.cli.commands``;
plugins add more through the ``register_commands`` hook."""

from __future__ import annotations

import errno
import importlib
import os
import pkgutil
import sys

import click

from achilles import __version__
from achilles.training.threads import choose_wait_policy
from achilles.errors import AchillesError
from achilles.logs import install_cli_handler


#: errno -> what the user can do about it (a state of their machine, not a bug of achilles)
_OS_ADVICE = {
    errno.ENOSPC: "the disk is full: free some space and run the command again (a run resumes with --resume)",
    errno.EDQUOT: "the disk quota is exceeded: free some space and run the command again",
    errno.EROFS: "the file system is read-only: choose a writable folder (e.g. --out)",
    errno.EACCES: "permission denied: choose a folder you can write (e.g. --out), or fix its permissions",
    errno.EPERM: "operation not permitted: choose a folder you can write (e.g. --out)",
    errno.ENAMETOOLONG: "the file name is too long: choose a shorter name (e.g. --out)",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.EISDIR: "a folder is where a file was expected: choose another path",
    errno.ELOOP: "too many levels of symbolic links: choose another path",
}


def os_error_message(exc: OSError) -> str | None:
    """One line for an OSError a user's machine caused (None: not one of those)."""
    advice = _OS_ADVICE.get(exc.errno)
    if advice is None:
        return None
    where = f" ({display_path(exc.filename)})" if exc.filename else ""
    return f"cannot write or read a file{where}: {advice}"


def display_path(path) -> str:
    """A path as text that any terminal can print (undecodable bytes shown as escapes)."""
    text = os.fsdecode(path) if isinstance(path, (bytes, os.PathLike)) else str(path)
    return text.encode("utf-8", "backslashreplace").decode("utf-8") if _has_surrogates(text) else text


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class AchillesGroup(click.Group):
    """Turns user errors into one line on stderr and a non-zero exit, never a traceback. Plugin
    commands are added when a command name is not a built-in one or the list is asked for
    (``--help``, completion), so ``--version`` and built-in commands load no plugin first."""

    def list_commands(self, ctx):
        get_cli()
        return super().list_commands(ctx)

    def get_command(self, ctx, cmd_name):
        if cmd_name not in self.commands:
            get_cli()
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx):
        if os.environ.get("NO_COLOR"):  # https://no-color.org: any non-empty value
            ctx.color = False
        try:
            return super().invoke(ctx)
        except AchillesError as exc:
            click.echo(f"Error: {display_path(str(exc))}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(130)
        except BrokenPipeError:
            _quiet_broken_pipe()
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            message = os_error_message(exc) if isinstance(exc, OSError) else None
            if message is not None and not os.environ.get("ACHILLES_DEBUG"):
                click.echo(f"Error: {message}", err=True)
                ctx.exit(2)
            if os.environ.get("ACHILLES_DEBUG"):
                raise
            click.echo(f"Error: internal error: {type(exc).__name__}: {exc} "
                       "(set ACHILLES_DEBUG=1 to see the traceback)", err=True)
            ctx.exit(1)


@click.group(cls=AchillesGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="achilles")
def cli() -> None:
    """achilles: train, probe and share models that show where Mamba-style SSMs fail
    and Transformers don't.

    \b
    Start with:  achilles list
                 achilles train --arch mamba2-residual --task inverse
    """
    install_cli_handler()  # the library logs; the CLI shows those lines


def _add_builtin_commands() -> None:
    from achilles.cli import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(cli)


def _quiet_broken_pipe() -> None:
    """The reader went away (``achilles list | head -1``): stop quietly, as a Unix tool does."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush must not fail again
    except (OSError, ValueError):
        pass
    raise SystemExit(141)  # 128 + SIGPIPE, what a shell reports for a tool the pipe closed


_add_builtin_commands()
BUILTIN_COMMANDS = frozenset(cli.commands)


def get_cli() -> click.Group:
    """The ``achilles`` command with the plugin commands attached: what a plugin's tests invoke
    under ``click.testing.CliRunner``. ``main`` attaches them only when a command it does not know
    or the list of commands is asked for, so ``--version`` and built-in commands start faster."""
    from achilles.cli.plugin_commands import attach_plugin_commands

    attach_plugin_commands(cli, BUILTIN_COMMANDS)
    return cli


def main(argv: list[str] | None = None) -> None:
    choose_wait_policy()  # before torch loads: idle OpenMP threads spin briefly, then sleep
    for stream in (sys.stdout, sys.stderr):  # a path that is not UTF-8 prints escaped, never fails
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError):
            pass
    try:
        cli.main(args=argv, prog_name="achilles")  # plugin commands attach when asked for (AchillesGroup)
    except BrokenPipeError:  # raised by click's own output, outside the group's invoke
        _quiet_broken_pipe()


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
