"""Run folders: the files a training run leaves on disk, written atomically and read back checked.

Owns: ``layout.py`` (the names of the files in a run folder), ``files.py`` (atomic writes, JSON,
safetensors loaded sha256-verified), ``folder.py`` (``RunFolder``: a run's config, record, metrics
and weights), ``ownership.py`` (the manifest of files achilles wrote, so ``--overwrite`` removes
only those), ``run_lock.py`` (one writer per run folder) and ``figures.py`` (a run's training curves).

May import: ``achilles.errors`` and ``achilles.contract``.
"""
