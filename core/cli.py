"""The ``achilles`` command. Commands live one module each in ``achilles.commands``;
plugins add more through the ``register_commands`` hook."""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys

import click

from . import __version__
from .errors import AchillesError
from .logs import install_cli_handler


class AchillesGroup(click.Group):
    """Turns user errors into one line on stderr and a non-zero exit, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except AchillesError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(130)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
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
    from . import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(cli)


def _add_plugin_commands() -> None:
    from .plugin_manager import get_state

    state = get_state()
    for impl in state.pm.hook.register_commands.get_hookimpls():
        try:
            impl.function(cli=cli)
        except Exception as exc:
            state.report_failure(impl.plugin_name, "register_commands", exc)


_add_builtin_commands()


def main(argv: list[str] | None = None) -> None:
    _add_plugin_commands()
    cli.main(args=argv, prog_name="achilles")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
