"""Model cards: format a ``CardData`` as the Hub renders it (``achilles.cards.render``).

This package imports nothing of achilles; ``achilles.zoo.card`` gathers a run's facts and
writes the card::

    from achilles.zoo.card import write_card
    write_card("runs/inverse-s0")          # -> runs/inverse-s0/README.md
"""

from .render import CardData, Paper, render

__all__ = ["CardData", "Paper", "render"]
