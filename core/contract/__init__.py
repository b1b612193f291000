"""The plugin contract: the interfaces a plugin implements and the loader that registers plugins.

Owns: ``Task`` (``task.py``), ``Probe`` (``probe.py``), model settings (``settings.py``), the pluggy
hook specifications (``hookspecs.py``), the loader (``loader.py``, with ``entry_points.py``: which
plugins are installed, and ``isolation.py``: a failing plugin rolled back alone), the name
registries (``names.py``), lookups by name (``lookup.py``), what a component declares about itself
(``declarations.py``), contract checks (``checks.py``) and which distribution provides a component
(``provenance.py``).

May import: ``achilles.errors`` only. Every other folder builds on this one.
"""
