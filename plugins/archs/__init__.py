"""First-party architectures: Mamba2 and its variants, Transformer, conv-Transformer.

Every factory takes keyword settings (``vocab_size``, ``n_layers``, ``d_model``, ``gamma``,
``max_len``, ``backend`` and the architecture's own) and returns an ``achilles.HookedModel``
whose ``config`` rebuilds it: ``create_model(name, **model.config)``. The registered names are
presets of two builders (``mamba2.build_mamba2``, ``transformer.build_transformer``), each from
its typed settings (``Mamba2Config``, ``TransformerConfig``, subclasses of ``achilles.ModelConfig``):
a variant differs from its base only in the defaults it sets, e.g. ``mamba2-residual`` is
``ssm_input="residual", pos_enc=True``. Every module of this package that defines
``ARCHITECTURES`` is registered.
"""

import importlib
import pkgutil

from achilles import hookimpl


def factories() -> dict[str, tuple[object, str]]:
    """name -> (factory, description) for every first-party architecture: the ``ARCHITECTURES``
    of each module of this package (a new module registers itself; no list to keep)."""
    out = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        out.update(getattr(module, "ARCHITECTURES", {}))
    return out


@hookimpl
def register_architectures(register):
    for name, (factory, description) in factories().items():
        register(name, factory, description=description)
