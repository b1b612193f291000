"""The hooks a plugin may implement (pluggy project ``achilles``).

Each registration hook receives a ``register`` callback::

    from achilles import hookimpl

    @hookimpl
    def register_tasks(register):
        register("my-task", MyTask, description="what it is")
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("achilles")
hookimpl = pluggy.HookimplMarker("achilles")


@hookspec
def register_tasks(register):
    """Register tasks: ``register(name, task_class, description=None)``."""


@hookspec
def register_architectures(register):
    """Register architectures: ``register(name, factory, description=None, tags=())``.

    ``factory(**config)`` returns an ``achilles.HookedModel`` (its docstring is the contract:
    ``model(tokens)`` -> logits, ``model(tokens, logits_mask=mask)`` -> the masked rows only).
    ``tags`` name the architecture's family (e.g. ``("state-space-model", "mamba2")``); model
    cards and the Hub show them."""


@hookspec
def register_probes(register):
    """Register probes: ``register(name, probe_class, description=None)``."""


@hookspec
def register_commands(cli):
    """Add click commands or groups to the ``achilles`` CLI group ``cli``."""


@hookspec
def register_zoo_entries(register):
    """Contribute zoo index entries: ``register(entry_dict)`` (see ``achilles.zoo.index``)."""


@hookspec
def on_trainer_event(event):
    """Receive the trainer's events: ``achilles.training.events`` RunStarted, EpochEnded (with the epoch's
    metrics), CheckpointSaved, RunEnded (finished or interrupted) and RunFailed, each with the run
    folder, architecture, task and epoch. An exception here is reported once and never stops
    training. The first-party TensorBoard writer (``achilles train --log tensorboard``) is one."""


@hookspec
def register_recipes(register):
    """Register recipes: ``register(name, recipe, description=None)`` where ``recipe`` is an
    ``achilles.recipes.Recipe`` (or a callable returning one): a one-command reproduction of a
    paper's finding with its runs, probes, figures and claims."""
