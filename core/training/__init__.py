"""Training: one run of an architecture on a task, or an ensemble of runs, resumable exactly.

Owns: ``trainer.py`` (a run from settings to a finished folder), ``epoch_loop.py`` (the one epoch
loop), ``ensemble.py`` (runs that share every shape batched as one model), ``checkpoint.py``
(weights, AdamW state and RNG per epoch), ``evaluation.py``, ``profiles.py`` (paper and quick),
``precision.py`` (fp32/bf16), ``environment.py`` (the machine and software run.json records),
``threads.py`` and ``allocator.py`` (how a CPU run uses the CPU), ``events.py`` (what the loop tells
plugins) and the TensorBoard and W&B writers (``tensorboard.py``, ``wandb_writer.py``).

May import: ``achilles.errors``, ``achilles.contract``, ``achilles.runs``, ``achilles.models`` and
``achilles.zoo`` (a finished run writes its model card).
"""
