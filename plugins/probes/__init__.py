"""First-party probes of the Achilles' Heel paper (§4.1, §4.2, figures 5, 6 and 12).

Every module of this package that defines ``PROBES`` (name -> (class, description)) is
registered: a new probe is a new module, with no list to edit here (``achilles.plugins.discovery``)."""

from achilles import hookimpl

from ..discovery import register_declared


@hookimpl
def register_probes(register):
    register_declared(__name__, "PROBES", register)
