"""First-party architectures: Mamba2 and its variants, Transformer, conv-Transformer, and the
Transformer with rotary positions or none (transformer-rope, transformer-nope).

Every factory takes keyword settings (``vocab_size``, ``n_layers``, ``d_model``, ``gamma``,
``max_len``, ``backend`` and the architecture's own) and returns an ``achilles.HookedModel``
whose ``config`` rebuilds it: ``create_model(name, **model.config)``. The registered names are
presets of builders (``mamba2.build_mamba2``, ``transformer.build_transformer`` and its
``build_transformer_rope``/``build_transformer_nope``), each from its typed settings
(``Mamba2Config``, ``TransformerConfig``, ..., subclasses of ``achilles.ModelConfig``): a variant
differs from its base only in the defaults it sets, e.g. ``mamba2-residual`` is
``ssm_input="residual", pos_enc=True``; the Transformer's positional schemes differ in their
settings too (only ``transformer-rope`` has ``rope_base``). Every module of this package that
defines ``ARCHITECTURES`` is registered.
"""

from achilles import hookimpl

from ..discovery import declarations


def factories() -> dict[str, tuple[object, str, tuple[str, ...]]]:
    """name -> (factory, description, family tags) for every first-party architecture: the
    ``ARCHITECTURES`` of each module of this package (a new module registers itself; no list to
    keep), tagged with the module's ``FAMILY_TAGS`` (its tags on model cards and the Hub)."""
    out = {}
    for module, declared in declarations(__name__, "ARCHITECTURES"):
        tags = tuple(getattr(module, "FAMILY_TAGS", ()))
        out.update({name: (factory, description, tags) for name, (factory, description) in declared.items()})
    return out


@hookimpl
def register_architectures(register):
    for name, (factory, description, tags) in factories().items():
        register(name, factory, description=description, tags=tags)
