"""Model cards: format a ``CardData`` as the Hub renders it (``achilles.cards.render``).

This package imports nothing of achilles; ``achilles.run_card`` gathers a run's facts and
writes the card::

    from achilles.run_card import write_card
    write_card("runs/inverse-s0")          # -> runs/inverse-s0/README.md
"""

from .render import CardData, Paper, render

__all__ = ["CardData", "Paper", "render"]
