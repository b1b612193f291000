"""The zoo: published checkpoints, findable by id, loadable and verified.

Zoo ids read ``ARCH.TASK[-VARIANT]-lLAYERS-gGAMMA-sSEED``, e.g.
``mamba2-residual.inverse-l2-g0.5-s0``.
"""

from __future__ import annotations

import re
from typing import Any

ZOO_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _short_number(value: Any) -> str:
    return format(value, "g") if isinstance(value, float) else str(value)


def suggest_zoo_id(config: dict[str, Any]) -> str:
    """The conventional zoo id of a run config (parts the config lacks are left out)."""
    from achilles.cards.render import dataset_name

    model = config.get("model") or {}
    parts = [dataset_name(config)]
    if "n_layers" in model:
        parts.append(f"l{model['n_layers']}")
    if "gamma" in model:
        parts.append(f"g{_short_number(model['gamma'])}")
    if config.get("seed") is not None:
        parts.append(f"s{config['seed']}")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{config.get('arch')}." + "-".join(parts))
