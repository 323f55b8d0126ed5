"""Style-method registry: every style-sharing method is one module exposing ``make(cfg) -> StyleTechnique``.

  adain    FedTransfer's AdaIN style net (paper baseline), shared model trained federatedly
  fourier  FedDG-ELCFS low-frequency amplitude swap (baseline), no shared model
  gen      label-conditioned imaging model fitted per client (polarity, colour, texture from labels)

Adding a method: one module with ``make(cfg)`` + its test, and one line in ``_REGISTRY``.
"""

from __future__ import annotations

from typing import Any, Mapping

from fedtransfer_jax.style.techniques import adain, fourier, gen
from fedtransfer_jax.style.techniques.base import (
    TARGET_MODES,
    StyleBank,
    StyleTechnique,
    check_message,
    draw_targets,
    foreign_targets,
    own_targets,
    make_batch_transform,
    mix_batch,
    pick_styles,
    render_in_batches,
    stack_messages,
)

_REGISTRY = {"adain": adain, "fourier": fourier, "gen": gen}
TECHNIQUE_NAMES = tuple(_REGISTRY)


def config_defaults() -> dict[str, Any]:
    """Every config key the registered methods read from ``config.style``, with its default."""
    out: dict[str, Any] = {}
    for mod in _REGISTRY.values():
        out.update(mod.DEFAULTS)
    return out


def get_technique(name: str, cfg: Mapping[str, Any] | None = None) -> StyleTechnique:
    """The style method ``name`` configured from ``cfg`` (the ``config.style`` section; missing keys take
    the defaults of ``config_defaults()``)."""
    if name not in _REGISTRY:
        raise ValueError(f"config key style method: unknown {name!r}; choose from {sorted(_REGISTRY)}")
    cfg = {} if cfg is None else cfg
    getter = cfg.get if hasattr(cfg, "get") else (lambda k, d=None: getattr(cfg, k, d))
    return _REGISTRY[name].make(_Cfg(getter))


class _Cfg:
    """Uniform ``.get(key, default)`` over dicts and ml_collections ConfigDicts."""

    def __init__(self, getter):
        self._get = getter

    def get(self, key, default=None):
        return self._get(key, default)


__all__ = [
    "TECHNIQUE_NAMES",
    "TARGET_MODES",
    "StyleBank",
    "StyleTechnique",
    "check_message",
    "config_defaults",
    "draw_targets",
    "foreign_targets",
    "own_targets",
    "get_technique",
    "make_batch_transform",
    "mix_batch",
    "pick_styles",
    "render_in_batches",
    "stack_messages",
]
