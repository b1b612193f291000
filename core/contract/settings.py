"""Settings of tasks and architectures: what a factory accepts, checked in one place.

A factory (a task class, an architecture function or class) declares its settings as keyword
parameters; an architecture may instead build from a ``ModelConfig`` dataclass (nanoGPT's
``GPTConfig`` style) through ``model_factory``, whose signature is the dataclass's fields. Either
way ``inspect.signature`` lists the accepted settings and their defaults, and ``check_settings``
refuses an unknown one in one line that lists what is accepted.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from achilles.errors import ConfigError

#: settings every architecture factory receives from the trainer (set from the task)
TASK_SET_MODEL_SETTINGS = ("vocab_size", "max_len")
_NOT_SETTINGS = {"self", "cls"}


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int within bounds, else a ConfigError naming ``name`` (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(name, f"must be an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ConfigError(name, f"must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(name, f"must be at most {maximum}, got {value}")
    return value


# -- what a factory accepts -------------------------------------------------------------------
@dataclass(frozen=True)
class FactorySettings:
    """The keyword settings of a factory with their defaults (None where it has none), and
    whether it also takes arbitrary ``**kwargs`` (then any name is accepted)."""

    defaults: Mapping[str, Any]
    open_ended: bool

    def accepts(self, name: str) -> bool:
        return self.open_ended or name in self.defaults

    def default(self, name: str, fallback: Any = None) -> Any:
        value = self.defaults.get(name)
        return fallback if value is None else value


def factory_settings(factory: Callable) -> FactorySettings:
    """The settings ``factory(**settings)`` accepts (an unreadable signature accepts anything)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return FactorySettings({}, True)
    defaults, open_ended = {}, False
    for name, p in params.items():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            open_ended = True
        elif p.kind is not inspect.Parameter.VAR_POSITIONAL and name not in _NOT_SETTINGS:
            defaults[name] = None if p.default is inspect.Parameter.empty else p.default
    return FactorySettings(defaults, open_ended)


def check_settings(kind: str, name: str, factory: Callable, config: Mapping[str, Any]) -> None:
    """Refuse a setting ``factory`` does not take: one line naming it and listing the accepted ones."""
    accepted = factory_settings(factory)
    for key in config:
        if not accepted.accepts(key):
            listed = ", ".join(accepted.defaults)
            raise ConfigError(key, f"{kind} {name!r} has no such setting"
                              + (f" (settings: {listed})" if listed else ""))


# -- typed model settings ---------------------------------------------------------------------
@dataclass
class ModelConfig:
    """The settings every architecture receives (subclass it and add the architecture's own,
    each with its default). ``validate`` checks them; ``to_dict`` is what ``model.config`` and
    a run's config.json hold, and ``create_model(arch, **config)`` rebuilds the model from it."""

    vocab_size: int = 256
    n_layers: int = 2
    d_model: int = 32
    gamma: float = 0.5
    max_len: int = 512  # the longest sequence the model takes (the task's seq_len; positional capacity)
    backend: str = "auto"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check_int("vocab_size", self.vocab_size, minimum=2)
        check_int("n_layers", self.n_layers, minimum=1)
        check_int("d_model", self.d_model, minimum=1)
        if isinstance(self.gamma, bool) or not isinstance(self.gamma, numbers.Real) or not math.isfinite(self.gamma):
            raise ConfigError("gamma", f"must be a finite number, got {self.gamma!r}")
        self.gamma = float(self.gamma)
        check_int("max_len", self.max_len, minimum=1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def model_factory(config_class: type[ModelConfig], model_class: Callable[[dict], Any]) -> Callable[..., Any]:
    """``factory(**settings) -> model_class(config_class(**settings).to_dict())``, whose signature
    is the config's fields (so listing, grids and error messages see every setting)."""

    def factory(**settings: Any) -> Any:
        return model_class(config_class(**settings).to_dict())

    params = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=_field_default(f), annotation=f.type)
              for f in dataclasses.fields(config_class)]
    factory.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    factory.__name__ = factory.__qualname__ = f"build_{model_class.__name__}"
    factory.__doc__ = model_class.__doc__
    factory.config_class = config_class  # type: ignore[attr-defined]
    return factory


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return inspect.Parameter.empty
