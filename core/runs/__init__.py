"""Run folders: the files a training run leaves on disk, written atomically and read back checked.

Owns: ``folder.py`` (a run's config, record, metrics and weights in safetensors, sha256-verified
loads, the manifest of files achilles owns, locks) and ``figures.py`` (a run's training curves).

May import: ``achilles.errors`` and ``achilles.contract``.
"""
