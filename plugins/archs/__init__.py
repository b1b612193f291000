"""First-party architectures: Mamba2 and its variants, Transformer, conv-Transformer.

Every factory takes keyword settings (``vocab_size``, ``n_layers``, ``d_model``, ``gamma``,
``max_len``, ``backend`` and the architecture's own) and returns an ``achilles.HookedModel``
whose ``config`` rebuilds it: ``create_model(name, **model.config)``. The registered names are
presets of two builders (``mamba2.build_mamba2``, ``transformer.build_transformer``): a variant
differs from its base only in the defaults it sets, e.g. ``mamba2-residual`` is
``ssm_input="residual", pos_enc=True``.
"""

from functools import partial

from achilles import hookimpl

from . import mamba2, transformer


#: The family each builder's architectures belong to: their tags on model cards and the Hub.
FAMILY_TAGS = {mamba2.build_mamba2: ("state-space-model", "mamba2"), transformer.build_transformer: ("transformer",)}


def factories() -> dict[str, tuple[object, str, tuple[str, ...]]]:
    """name -> (factory, description, family tags) for every first-party architecture."""
    out = {}
    for module, build in ((mamba2, mamba2.build_mamba2), (transformer, transformer.build_transformer)):
        for name, (settings, description) in module.VARIANTS.items():
            out[name] = (partial(build, **settings) if settings else build, description, FAMILY_TAGS[build])
    return out


@hookimpl
def register_architectures(register):
    for name, (factory, description, tags) in factories().items():
        register(name, factory, description=description, tags=tags)
