"""The Probe interface: a named analysis of a trained model that writes JSON and PNGs.

A probe declares what it needs and what it accepts; ``achilles probe`` reads those
declarations and knows nothing else about any probe:

* ``options``: a tuple of ``ProbeOption`` (name, type, default, help). Each becomes a
  ``--set NAME=VALUE`` setting and a ``--NAME VALUE`` flag of ``achilles probe``;
  ``resolve_options`` checks names and converts values.
* ``required_sites``: hook-point patterns the model must expose (``layers.*.ssm.matrix``).
* ``requires``: capabilities the task must declare (``Task.capabilities``).

``run`` receives the model, the task and a ``ProbeContext`` (output folder, run folder,
run record, device) and returns a JSON-able summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping

import torch

from achilles.errors import AchillesError, ConfigError

#: option types a declaration may name; ``None`` accepts any value and leaves checking to the probe
OPTION_TYPES = (int, float, bool, str, None)


@dataclass(frozen=True)
class ProbeOption:
    """One option of a probe. ``type`` is int, float, bool, str, or None for any value (a list,
    a path, a state dict: the probe checks it). A value given as text (a command-line flag)
    is converted to ``type``; ``default`` is used when the option is not given."""

    name: str
    type: type | None
    default: Any = None
    help: str = ""

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"probe option name must be an identifier, got {self.name!r}")
        if self.type not in OPTION_TYPES:
            raise ValueError(f"probe option {self.name!r}: type must be int, float, bool, str or None, "
                             f"got {self.type!r}")

    def convert(self, value: Any) -> Any:
        """``value`` as this option's type (None passes: it means the probe's default behaviour);
        a ConfigError naming the option if it cannot be."""
        if value is None or self.type is None:
            return value
        if self.type is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            raise ConfigError(self.name, f"must be true or false, got {value!r}")
        if self.type is str:
            if isinstance(value, str):
                return value
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(value)  # e.g. --set twin=43, which JSON reads as a number
            raise ConfigError(self.name, f"must be a string, got {value!r}")
        if not isinstance(value, bool):
            if self.type is int and isinstance(value, int):
                return value
            if self.type is float and isinstance(value, (int, float)):
                return float(value)
            if isinstance(value, str):
                try:
                    return self.type(value)
                except ValueError:
                    pass
        kind = "an integer" if self.type is int else "a number"
        raise ConfigError(self.name, f"must be {kind}, got {value!r}")


@dataclass(frozen=True)
class ProbeContext:
    """Where a probe runs: ``out_dir`` receives its files; ``run_dir`` is the run folder the
    model came from (None for a model built in Python), ``config`` that run's record as
    ``RunFolder.read_config`` returns it (empty without a run), ``device`` the model's device."""

    out_dir: Path
    run_dir: Path | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    device: torch.device = torch.device("cpu")

    def __post_init__(self) -> None:
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        if self.run_dir is not None:
            object.__setattr__(self, "run_dir", Path(self.run_dir))
        object.__setattr__(self, "device", torch.device(self.device))


class Probe:
    """Subclass, declare, and implement ``run``.

    ``run`` returns the summary that it also writes as ``<name>.json``. ``achilles probe``
    prints three of its keys when present: ``what`` (one sentence: what the numbers measure),
    ``table`` (``{"headers": [...], "rows": [[...], ...]}``: one row per item, e.g. per anchor
    pair or layer) and ``headline`` (``{label: number}``: the few numbers to read first; without
    it, the result's top-level numbers are shown).
    """

    name: ClassVar[str] = ""
    #: hook-point patterns the model must expose (``*.ssm.matrix``)
    required_sites: ClassVar[tuple[str, ...]] = ()
    #: task capabilities (``Task.capabilities``) the probe relies on
    requires: ClassVar[tuple[str, ...]] = ()
    #: the options ``run`` accepts
    options: ClassVar[tuple[ProbeOption, ...]] = ()

    def check(self, model, task) -> None:
        """Raise AchillesError, in one line, if ``model`` or ``task`` lacks something the probe
        declares it needs; ``achilles probe`` calls it before running."""
        missing = [p for p in self.required_sites if not model.hook_points(p)]
        if missing:
            raise AchillesError(
                f"probe {self.name!r} needs hook points {', '.join(missing)}, which "
                f"{getattr(model, 'arch_name', type(model).__name__)!r} does not expose")
        have = getattr(task, "capabilities", ())
        lacking = [c for c in self.requires if c not in have]
        if lacking:
            raise AchillesError(
                f"probe {self.name!r} needs a task with capability {', '.join(map(repr, lacking))}, "
                f"which task {getattr(task, 'name', type(task).__name__)!r} does not declare")

    def resolve_options(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Every declared option: the value in ``given`` converted to its type, else its default.
        An undeclared name is a ConfigError listing the declared ones."""
        declared = {option.name: option for option in self.options}
        unknown = sorted(set(given) - set(declared))
        if unknown:
            raise ConfigError(unknown[0], f"probe {self.name!r} has no such option "
                                          f"(options: {', '.join(sorted(declared)) or 'none'})")
        return {name: option.convert(given[name]) if name in given else option.default
                for name, option in declared.items()}

    def run(self, model, task, context: ProbeContext, **options: Any) -> dict[str, Any]:
        """Analyse ``model`` on ``task``; write figures and ``<name>.json`` into
        ``context.out_dir``; return the summary (also what the JSON holds). ``options`` are
        those declared in ``options`` (check them with ``resolve_options``)."""
        raise NotImplementedError
