"""First-party probes of the Achilles' Heel paper."""

from achilles import hookimpl


@hookimpl
def register_probes(register):
    pass
