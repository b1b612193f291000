"""Grid syntax: ``--grid NAME=VALUES`` axes checked against the settings of an architecture, a
task and the training, and ``--seeds``.

* ``name=a:b:step``  from a to b inclusive in steps of ``step`` (decimal arithmetic, so
  ``0.5:1.0:0.1`` gives exactly 0.5, 0.6, ..., 1.0; a negative step counts down);
* ``name=v1,v2,...`` a list (JSON values: ``2,3``, ``0.5,1``, ``shuffle,last``);
* ``name=v`` a single value (a fixed setting that also appears in the cells' names).

``name`` is an architecture setting (``gamma``, ``n_layers``, ``d_model``, ...), a task setting
with the prefix ``task.`` (``task.placement``) or a training setting with the prefix ``train.``
(``train.lr_peak``). Seeds are not a grid axis: ``seeds=3`` means seeds 0, 1, 2.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, fields
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable

from achilles.contract.lookup import registry
from achilles.errors import ConfigError, UnknownNameError
from achilles.training.profiles import TrainSettings
from achilles.contract.settings import TASK_SET_MODEL_SETTINGS, factory_settings

MAX_GRID_VALUES = 10_000


def training_settings() -> dict[str, Any]:
    """The training settings a sweep (or ``train.NAME``) may set, with their defaults."""
    return {f.name: (None if f.default is MISSING else f.default) for f in fields(TrainSettings)
            if f.name != "profile"}


def known_settings(arch: str, task: str) -> dict[str, Any]:
    """Every name a grid axis may take for ``arch`` on ``task``, with its default (or None)."""
    model = factory_settings(registry("architecture").get(arch).factory).defaults
    task_settings = factory_settings(registry("task").get(task).factory).defaults
    return {**{k: v for k, v in model.items() if k not in TASK_SET_MODEL_SETTINGS},
            **{f"task.{k}": v for k, v in task_settings.items()},
            **{f"train.{k}": v for k, v in training_settings().items()}}


def _parse_value(text: str) -> Any:
    text = text.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare word such as shuffle


def _decimal(text: str, name: str, what: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ConfigError(f"--grid {name}", f"{what} {text.strip()!r} of the range is not a number") from None
    if not value.is_finite():
        raise ConfigError(f"--grid {name}", f"{what} of the range must be finite")
    return value


def parse_range(name: str, text: str) -> list:
    """``a:b[:step]`` inclusive, in decimal arithmetic (so 0.1 steps land on 0.6, not 0.6000000001)."""
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise ConfigError(f"--grid {name}", f"a range is start:stop:step, got {text!r}")
    start, stop = _decimal(parts[0], name, "start"), _decimal(parts[1], name, "stop")
    step = _decimal(parts[2], name, "step") if len(parts) == 3 else Decimal(1)
    if step == 0:
        raise ConfigError(f"--grid {name}", f"the step of {text!r} is 0")
    count = math.floor((stop - start) / step) + 1
    if count < 1:
        raise ConfigError(f"--grid {name}", f"the range {text!r} is empty (a step of {step} never "
                                            f"gets from {start} to {stop})")
    if count > MAX_GRID_VALUES:
        raise ConfigError(f"--grid {name}", f"the range {text!r} has {count} values (at most {MAX_GRID_VALUES})")
    integral = all(d == d.to_integral_value() and "." not in p and "e" not in p.lower()
                   for d, p in zip((start, stop, step), parts + ["1"] * (3 - len(parts))))
    values = [start + i * step for i in range(count)]
    return [int(v) for v in values] if integral else [float(v) for v in values]


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Match the type of the setting's default: 1 -> 1.0 for gamma, 2.0 -> 2 for n_layers."""
    if isinstance(default, bool) or isinstance(value, bool):
        return value
    if isinstance(default, float) and isinstance(value, int):
        return float(value)
    if isinstance(default, int) and isinstance(value, float):
        if value != int(value):
            raise ConfigError(f"--grid {name}", f"must be a whole number, got {value}")
        return int(value)
    return value


def _grid_items(specs: Iterable[str] | dict[str, Any]) -> list[tuple[str, list]]:
    if isinstance(specs, dict):
        return [(k, list(v) if isinstance(v, (list, tuple)) else [v]) for k, v in specs.items()]
    items = []
    for spec in specs:
        name, sep, text = spec.partition("=")
        name = name.strip()
        if not sep or not name or not text.strip():
            raise ConfigError("--grid", f"expected NAME=VALUES (a:b:step or v1,v2,...), got {spec!r}")
        values = parse_range(name, text) if ":" in text else [_parse_value(v) for v in text.split(",")]
        items.append((name, values))
    return items


def parse_grid(specs: Iterable[str] | dict[str, Any], arch: str, task: str) -> dict[str, list]:
    """``["gamma=0.5:1.0:0.1", "n_layers=2,3"]`` (or a dict of lists) -> ``{name: [values]}``,
    checked against the settings of ``arch`` and ``task``."""
    known = known_settings(arch, task)
    model_open = factory_settings(registry("architecture").get(arch).factory).open_ended
    task_open = factory_settings(registry("task").get(task).factory).open_ended
    grid: dict[str, list] = {}
    for name, values in _grid_items(specs):
        if name in ("seed", "seeds"):
            raise ConfigError("--grid seed", "seeds are not a grid axis; use --seeds N (or --seeds 0,3,7)")
        if name in grid:
            raise ConfigError(f"--grid {name}", "is given twice")
        open_ended = task_open if name.startswith("task.") else (False if name.startswith("train.") else model_open)
        if name not in known and not open_ended:
            raise UnknownNameError(f"grid setting (of {arch} on {task})", name, list(known))
        if not values:
            raise ConfigError(f"--grid {name}", "has no values")
        values = [_coerce(name, v, known.get(name)) for v in values]
        if len({json.dumps(v) for v in values}) != len(values):
            raise ConfigError(f"--grid {name}", f"repeats a value: {values}")
        grid[name] = list(values)
    return grid


def parse_seeds(seeds: int | str | Iterable[int]) -> list[int]:
    """``3`` or ``"3"`` -> [0, 1, 2]; ``"0,3,7"`` or ``[0, 3, 7]`` -> [0, 3, 7]."""
    if isinstance(seeds, str):
        text = seeds.strip()
        try:
            seeds = int(text) if "," not in text else [int(s) for s in text.split(",") if s.strip()]
        except ValueError:
            raise ConfigError("--seeds", f"expected a number of seeds or a list like 0,3,7, got {text!r}") from None
    if isinstance(seeds, int):
        if seeds < 1:
            raise ConfigError("--seeds", f"must be at least 1, got {seeds}")
        return list(range(seeds))
    out = [int(s) for s in seeds]
    if not out or any(s < 0 for s in out) or len(set(out)) != len(out):
        raise ConfigError("--seeds", f"must be distinct non-negative integers, got {out}")
    return out
