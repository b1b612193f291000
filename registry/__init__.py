"""The zoo index: one reviewed file listing the zoo's checkpoints (``zoo.json`` here), and the
checkpoints bundled with the package (``bundled/<zoo id>/``, each a run folder).

``ACHILLES_ZOO_REGISTRY=/path/to/zoo.json`` points achilles at another index file (a fork's,
or a scratch copy in tests); its bundled folders are then looked up beside that file.
``achilles zoo add`` and ``achilles zoo publish`` write to the same file they read.
"""

from __future__ import annotations

import os
from pathlib import Path

REGISTRY_ENV = "ACHILLES_ZOO_REGISTRY"
REGISTRY_FILE = Path(__file__).with_name("zoo.json")


def registry_path() -> Path:
    """The index file in use: ``$ACHILLES_ZOO_REGISTRY`` if set, else the packaged ``zoo.json``."""
    override = os.environ.get(REGISTRY_ENV)
    return Path(override).expanduser() if override else REGISTRY_FILE
