"""Logging: library modules log to ``achilles.*`` loggers; the CLI shows their lines as it always
printed them (info on stdout, warnings and errors on stderr), above any progress bar."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

import click
from tqdm import tqdm

ROOT = "achilles"


class EchoHandler(logging.Handler):
    """Each record as one plain line through ``click.echo`` (the streams of the moment, so
    ``CliRunner`` sees them), written around tqdm bars instead of through them."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            err = record.levelno >= logging.WARNING
            with tqdm.external_write_mode():
                click.echo(message, err=err)
        except Exception:
            self.handleError(record)


def install_cli_handler(level: int = logging.INFO) -> None:
    """Show ``achilles.*`` records at ``level`` and above; installed once per process."""
    logger = logging.getLogger(ROOT)
    logger.setLevel(level)
    if not any(isinstance(h, EchoHandler) for h in logger.handlers):
        logger.addHandler(EchoHandler())


class _ListHandler(logging.Handler):
    def __init__(self, lines: list[str]):
        super().__init__()
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextmanager
def captured_logs(name: str = ROOT) -> Iterator[list[str]]:
    """Collect the lines of logger ``name`` (info and above) instead of showing them: a sweep's
    worker sends its cells' lines back with their results."""
    logger = logging.getLogger(name)
    saved = logger.handlers[:], logger.propagate, logger.level
    lines: list[str] = []
    logger.handlers = [_ListHandler(lines)]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.handlers, logger.propagate = saved[0], saved[1]
        logger.setLevel(saved[2])
