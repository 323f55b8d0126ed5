"""Style-method registry: every style-sharing method is one module exposing ``make(cfg) -> StyleMethod``.

  adain    FedTransfer's AdaIN style net (paper baseline), shared model trained federatedly
  fourier  FedDG-ELCFS low-frequency amplitude swap (baseline), no shared model
  gen      label-conditioned imaging model fitted per client (polarity, colour, texture from labels)

Adding a method: one module with ``make(cfg)`` + its test, and one line in ``_REGISTRY``.
"""

from __future__ import annotations

from typing import Any, Mapping

from fedtransfer_jax.style.methods import adain, fourier, gen
from fedtransfer_jax.style.methods.base import (
    TARGET_MODES,
    StyleBankV2,
    StyleMethod,
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
METHOD_NAMES = tuple(_REGISTRY)


def config_defaults() -> dict[str, Any]:
    """Every config key the registered methods read from ``config.style``, with its default."""
    out: dict[str, Any] = {}
    for mod in _REGISTRY.values():
        out.update(mod.DEFAULTS)
    return out


def get_style_method(name: str, cfg: Mapping[str, Any] | None = None) -> StyleMethod:
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
    "METHOD_NAMES",
    "TARGET_MODES",
    "StyleBankV2",
    "StyleMethod",
    "check_message",
    "config_defaults",
    "draw_targets",
    "foreign_targets",
    "own_targets",
    "get_style_method",
    "make_batch_transform",
    "mix_batch",
    "pick_styles",
    "render_in_batches",
    "stack_messages",
]


# ---------------------------------------------------------------------------------------------------------
# Privacy-audit declarations (see base.StyleAudit): the audit asks every registered method for one.
# ---------------------------------------------------------------------------------------------------------
from fedtransfer_jax.style.methods.base import AuditCheck, StyleAudit, check_style_audit  # noqa: E402


def get_style_audit(
    name: str, cfg: Mapping[str, Any] | None = None, *, seed: int, image_size: int
) -> StyleAudit:
    """What the privacy audit needs to attack method ``name``'s messages as clients configured by ``cfg``
    (the ``config.style`` section), with ``seed`` the run's seed and ``image_size`` the tiles' side, from its
    module's ``make_audit``. A registered method without one is an error: it would otherwise be silently
    left out of the audit."""
    if name not in _REGISTRY:
        raise ValueError(f"config key style method: unknown {name!r}; choose from {sorted(_REGISTRY)}")
    make_audit = getattr(_REGISTRY[name], "make_audit", None)
    if make_audit is None:
        raise TypeError(
            f"style method {name!r} declares no privacy audit: its module must define "
            "make_audit(cfg, *, seed, image_size) -> StyleAudit (style/methods/base.py) so that "
            "fedtransfer_jax.privacy.audit can attack what its clients send"
        )
    cfg = {} if cfg is None else cfg
    getter = cfg.get if hasattr(cfg, "get") else (lambda k, d=None: getattr(cfg, k, d))
    return check_style_audit(name, make_audit(_Cfg(getter), seed=int(seed), image_size=int(image_size)))


__all__ += ["AuditCheck", "StyleAudit", "get_style_audit"]
