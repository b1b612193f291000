"""The zoo and the Hub: checkpoints findable by id, published and fetched through huggingface_hub.

Owns: ``index.py`` (zoo ids and the bundled index), ``pull.py`` (pull and load,
verified), ``curation.py`` (adding a
run to the index), ``hub.py`` (push a run folder to the Hub and download it back) and ``card.py``
(a run's model card).

May import: ``achilles.errors``, ``achilles.contract``, ``achilles.runs`` and ``achilles.models``.
"""
