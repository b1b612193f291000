"""The zoo index: one reviewed file listing published checkpoints (``zoo.json`` here).

``ACHILLES_ZOO_REGISTRY=/path/to/zoo.json`` points achilles at another index file (a fork's,
or a scratch copy in tests); ``achilles zoo add`` writes to the same file it reads.
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
