"""Style-technique registry: every style-sharing technique is one module, picked by name.

How to add a style technique:
  1. Write ``style/techniques/<name>.py`` (paper reference in its docstring) exporting
     ``DEFAULTS``: a dict of every ``config.style`` key it reads, with its default (prefix the keys with
     the technique's name unless shared on purpose); ``make(cfg) -> base.StyleTechnique`` named
     ``"<name>"``, where ``cfg.get(key, default)`` reads the ``config.style`` section; and
     ``make_audit(cfg, *, seed, image_size) -> base.StyleAudit``: what its clients send and how the privacy
     audit recomputes and attacks it.
  2. Import it below and register it with one line: ``register("<name>", <name>)``.
  3. Add ``tests/test_style_technique_<name>.py``; the contract tests pick it up by themselves.
  Configs then take it as ``method_specs.<m>.style = "<name>"``; its keys join ``config.style`` with their
  defaults (experiments/grains.py builds the section from ``config_defaults()``).

  adain    FedTransfer's AdaIN style net (paper baseline), shared model trained federatedly
  fourier  FedDG-ELCFS low-frequency amplitude swap (baseline), no shared model
  gen      label-conditioned imaging model fitted per client (polarity, colour, texture from labels)
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Mapping

from fedtransfer_jax.style.techniques import adain, fourier, gen
from fedtransfer_jax.style.techniques.base import (
    TARGET_MODES,
    AuditCheck,
    StyleAudit,
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
    check_style_audit,
    stack_messages,
)

REGISTRY: dict[str, ModuleType] = {}  # name -> the method's module (its DEFAULTS and make)
TECHNIQUE_NAMES: tuple[str, ...] = ()


def register(name: str, module: ModuleType) -> None:
    """Make ``module`` (its ``make`` and ``DEFAULTS``) the style technique ``name``."""
    global TECHNIQUE_NAMES
    if name in REGISTRY:
        raise ValueError(f"style technique {name!r} is already registered")
    missing = [a for a in ("DEFAULTS", "make", "make_audit") if not hasattr(module, a)]
    if missing:
        raise TypeError(f"style technique {name!r}: its module {module.__name__} defines no {', '.join(missing)}")
    REGISTRY[name] = module
    TECHNIQUE_NAMES = tuple(REGISTRY)


def unregister(name: str) -> None:
    """Remove ``name`` (tests that register a toy method clean up with this)."""
    global TECHNIQUE_NAMES
    del REGISTRY[name]
    TECHNIQUE_NAMES = tuple(REGISTRY)


register("adain", adain)
register("fourier", fourier)
register("gen", gen)


def config_defaults() -> dict[str, Any]:
    """Every config key the registered methods read from ``config.style``, with its default."""
    out: dict[str, Any] = {}
    for mod in REGISTRY.values():
        out.update(mod.DEFAULTS)
    return out


def resolve_config(name: str, overrides: Mapping[str, Any], key: str = "style") -> dict:
    """Method ``name``'s ``DEFAULTS`` updated with ``overrides``; a key the method does not read is an
    error naming ``key.<k>`` (``get_technique`` itself reads the whole shared ``config.style`` section,
    where the other methods' and the protocol's keys live too)."""
    if name not in REGISTRY:
        raise ValueError(f"config key style: unknown style technique {name!r}; choose from {sorted(REGISTRY)}")
    defaults = REGISTRY[name].DEFAULTS
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ValueError(
            f"config key {key}.{unknown[0]}: style technique {name!r} reads no key {unknown[0]!r}; "
            f"it reads {sorted(defaults)}"
        )
    return {**defaults, **dict(overrides)}


def get_technique(name: str, cfg: Mapping[str, Any] | None = None) -> StyleTechnique:
    """The style technique ``name`` configured from ``cfg`` (the ``config.style`` section; missing keys take
    the defaults of ``config_defaults()``)."""
    if name not in REGISTRY:
        raise ValueError(f"config key style: unknown style technique {name!r}; choose from {sorted(REGISTRY)}")
    return REGISTRY[name].make(_Cfg(cfg))


def get_style_audit(name: str, cfg: Mapping[str, Any] | None = None, *, seed: int, image_size: int) -> StyleAudit:
    """What the privacy audit needs to attack technique ``name``'s messages as clients configured by ``cfg``
    (the ``config.style`` section), with ``seed`` the run's seed and ``image_size`` the tiles' side, from its
    module's ``make_audit``. A registered technique without one is an error: it would otherwise be silently
    left out of the audit."""
    if name not in REGISTRY:
        raise ValueError(f"config key style: unknown style technique {name!r}; choose from {sorted(REGISTRY)}")
    make_audit = getattr(REGISTRY[name], "make_audit", None)
    if make_audit is None:
        raise TypeError(
            f"style technique {name!r} declares no privacy audit: its module must define "
            "make_audit(cfg, *, seed, image_size) -> StyleAudit (style/techniques/base.py) so that "
            "fedtransfer_jax.privacy.audit can attack what its clients send"
        )
    return check_style_audit(name, make_audit(_Cfg(cfg), seed=int(seed), image_size=int(image_size)))


class _Cfg:
    """Uniform ``.get(key, default)`` over dicts and ml_collections ConfigDicts (None: every default)."""

    def __init__(self, cfg):
        cfg = {} if cfg is None else cfg
        self._get = cfg.get if hasattr(cfg, "get") else (lambda k, d=None: getattr(cfg, k, d))

    def get(self, key, default=None):
        return self._get(key, default)


__all__ = [
    "AuditCheck",
    "StyleAudit",
    "TECHNIQUE_NAMES",
    "REGISTRY",
    "TARGET_MODES",
    "StyleBank",
    "StyleTechnique",
    "check_message",
    "config_defaults",
    "draw_targets",
    "foreign_targets",
    "own_targets",
    "get_style_audit",
    "get_technique",
    "make_batch_transform",
    "register",
    "resolve_config",
    "unregister",
    "mix_batch",
    "pick_styles",
    "render_in_batches",
    "stack_messages",
]

