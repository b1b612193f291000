"""The layout of a run folder: the names of the files achilles writes there.

A run folder holds::

    config.json         the model: ``format``, ``arch`` and the model's settings at the top level
                        (what huggingface_hub's ModelHubMixin and a reader expect)
    run.json            the run record: task and its settings, training settings, seed, status,
                        final metrics, the weights' sha256
    model.safetensors   final (or latest) weights; sha256 recorded in run.json
    init.safetensors    the weights at initialisation (for conv-kernel similarity)
    metrics.jsonl       one JSON record per epoch
    README.md           the model card
    checkpoint/         trainer state for resume (tensors in safetensors, rest in JSON)
    probes/, evals/     probe outputs and a recipe's extra evaluations
    *.png               figures

Nothing is ever unpickled: tensors go through safetensors, everything else is JSON.

Code reads and writes the record through ``RunFolder.read_config()`` / ``update_config()``,
which present both files as one dict (``arch`` and ``model`` included). Run folders of the
first format (``achilles-run/1``: everything nested in config.json, no run.json) still read,
resume and probe; they keep their layout when updated, and are exported in the current layout
(``RunFolder.export_record()``) when pushed or bundled.
"""

from __future__ import annotations

RUN_FORMAT = "achilles-run/2"
RUN_FORMAT_V1 = "achilles-run/1"  # everything nested in config.json
CONFIG = "config.json"
RECORD = "run.json"
WEIGHTS = "model.safetensors"
INIT_WEIGHTS = "init.safetensors"
METRICS = "metrics.jsonl"
CARD = "README.md"
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_STATE = f"{CHECKPOINT_DIR}/state.json"
PROBES_DIR = "probes"
EVALS_DIR = "evals"  # a recipe's extra evaluations of the run, one JSON per evaluation
TENSORBOARD_DIR = "tensorboard"
# -- the on-disk layout of the record (format 2: config.json = the model, run.json = the run) --
#: Keys of config.json that are not model settings.
MODEL_CONFIG_KEYS = ("format", "arch")
# -- one writer per run folder ----------------------------------------------------------
LOCK_FILE = ".achilles.lock"
LOCK_OWNER = ".achilles.lock.owner"  # who holds the lock: named in the refusal of the next one
# -- what a run folder owns -------------------------------------------------------------
#: Files achilles writes at the top of a run folder (run.json: the record of the split layout)
OWNED_FILES = (CONFIG, RECORD, WEIGHTS, INIT_WEIGHTS, METRICS, CARD)
#: Folders achilles writes in a run folder
OWNED_DIRS = (CHECKPOINT_DIR, PROBES_DIR, TENSORBOARD_DIR, EVALS_DIR)
#: The run's own list of what it wrote at the top of its folder (JSON list of names), kept in the
#: folder and written atomically: --overwrite removes these names (and the leftovers of their
#: interrupted atomic writes), nothing else. A folder from before the list: the fixed names below.
MANIFEST = ".achilles-files"
_LEGACY_OWNED = (*OWNED_FILES, *OWNED_DIRS, "training_curves.png")
_KEPT = (LOCK_FILE, LOCK_OWNER, MANIFEST)
