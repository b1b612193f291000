"""The Probe interface: a named analysis of a trained model that writes JSON and PNGs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from .errors import AchillesError


class Probe:
    """Subclass and implement ``run``. ``required_sites`` lists hook-point patterns the
    probe needs (``*.ssm.matrix``); ``achilles probe`` checks them before running and says
    which are missing instead of failing deep inside."""

    name: ClassVar[str] = ""
    required_sites: ClassVar[tuple[str, ...]] = ()
    #: task names the probe understands (empty: any task)
    tasks: ClassVar[tuple[str, ...]] = ()

    def check(self, model, task) -> None:
        missing = [p for p in self.required_sites if not model.hook_points(p)]
        if missing:
            raise AchillesError(
                f"probe {self.name!r} needs hook points {', '.join(missing)}, which "
                f"{getattr(model, 'arch_name', type(model).__name__)!r} does not expose")
        if self.tasks and task.name not in self.tasks:
            raise AchillesError(f"probe {self.name!r} works on tasks {', '.join(self.tasks)}, "
                                f"not {task.name!r}")

    def run(self, model, task, out_dir: Path, **options: Any) -> dict[str, Any]:
        """Analyse ``model`` on ``task``; write figures and ``<name>.json`` into ``out_dir``;
        return the summary (also what the JSON holds)."""
        raise NotImplementedError
