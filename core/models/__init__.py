"""Models: the hook points every architecture exposes, and building a model from a checkpoint, checked.

Owns: ``hook_points.py`` (``HookedModel``, ``HookPoint``: read or edit a model's internals by name),
``loading.py`` (a model built from a checkpoint, checked), ``hub_refs.py`` (Hub
references and huggingface_hub's errors as one line), ``pretrained.py`` (Hugging Face's ``save_pretrained``/``from_pretrained`` conventions and the checks
an untrusted checkpoint passes before anything is built), ``limits.py`` (memory limits before
allocation), ``initialization.py`` (the paper's gamma) and ``logits_mask.py`` (unembed only the
positions a task scores).

May import: ``achilles.errors``, ``achilles.contract`` and ``achilles.runs``.
"""
