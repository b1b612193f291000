"""Model-card templates and the code that renders a card from a run."""
