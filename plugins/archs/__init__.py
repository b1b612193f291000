"""First-party architectures: Mamba2 and its variants, Transformer, conv-Transformer."""

from achilles import hookimpl


@hookimpl
def register_architectures(register):
    pass
