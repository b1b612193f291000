"""Model cards: format a ``CardData`` as the Hub renders it (``achilles.cards.render``).

This package imports nothing of achilles; ``achilles.zoo.card`` gathers a run's facts (the
task's papers as ``achilles.Paper``, the one paper record) and writes the card::

    from achilles.zoo.card import write_card
    write_card("runs/inverse-s0")          # -> runs/inverse-s0/README.md
"""

from .render import CardData, render

__all__ = ["CardData", "render"]
