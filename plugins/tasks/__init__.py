"""First-party tasks of the three papers."""

from achilles import hookimpl


@hookimpl
def register_tasks(register):
    pass
