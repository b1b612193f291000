"""Model cards: render a run's ``README.md`` from its config, metrics and figures.

    from achilles.cards import write_card
    write_card("runs/inverse-s0")          # -> runs/inverse-s0/README.md
"""

from .render import render_card, write_card

__all__ = ["render_card", "write_card"]
