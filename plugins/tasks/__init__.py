"""First-party tasks of the three papers (definitions pinned in docs/tasks.md).

Every module of this package that defines ``TASKS`` (name -> (class, description)) is
registered: a new task is a new module, with no list to edit here (``achilles.plugins.discovery``).
The task modules load when the tasks are registered (or on first use of a class name below, as in
``from achilles.plugins.tasks import CompositeTask``), so that importing this plugin, as
``achilles --help`` does to find plugin commands, imports no torch."""

from achilles import hookimpl

from ..discovery import declarations, register_declared


def _classes() -> dict[str, type]:
    """class name -> class of every task declared in this package (imports the task modules)."""
    return {cls.__name__: cls for _, tasks in declarations(__name__, "TASKS") for cls, _ in tasks.values()}


def __getattr__(name):
    if name == "__all__":
        return sorted(_classes())
    if name[:1].isupper() and name in (classes := _classes()):  # a class name; module names are lower case
        return classes[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@hookimpl
def register_tasks(register):
    register_declared(__name__, "TASKS", register)
