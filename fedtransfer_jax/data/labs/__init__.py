"""Synthetic labs, one module each, beside the five built into `data/synthetic.py` (`LABS`) and
`data/styles.py` (their renderers). A lab couples what a lab studies (microstructure generator, grain sizes)
with how it images it (a renderer written from the physics of the technique, with per-image parameter ranges).

How to add a lab:
  1. Write ``data/labs/<name>.py`` from the physics of the technique, exporting ``RANGES`` (every per-image
     imaging parameter with its (low, high) range; ``n_*`` keys are drawn as integers), ``render(rng, grains,
     params) -> float32 [H, W, 3] in [0, 1]`` (it never moves a boundary: the labels come from the grain map),
     optionally ``distort(rng, grains, params) -> grains`` (instrument geometry, applied to the grain map
     before the labels are taken), and ``SPEC = synthetic.LabSpec(name, style=name, method=..., diameter_px=...)``.
  2. Import it below and register it with one line: ``register(<name>)``.
  3. Add ``tests/test_lab_<name>.py``: it renders on tiny shapes and its labels are exactly
     ``microstructure.boundary_map(grains)``.
  Configs then name it in ``data.clients`` / ``data.unseen_clients``. Labs keep their registration order (a
  lab's index seeds its images), so adding one never changes another lab's data.
"""

from __future__ import annotations

from types import ModuleType

from fedtransfer_jax.data import styles, synthetic


def register(module: ModuleType) -> None:
    """Adds the lab defined by ``module`` (its ``SPEC``, ``RANGES``, ``render`` and optional ``distort``)."""
    missing = [a for a in ("SPEC", "RANGES", "render") if not hasattr(module, a)]
    if missing:
        raise TypeError(f"lab module {module.__name__} defines no {', '.join(missing)}")
    spec = module.SPEC
    styles.register_style(spec.style, module.RANGES, module.render, getattr(module, "distort", None))
    try:
        synthetic.register_lab(spec)
    except Exception:
        styles.unregister_style(spec.style)
        raise


def unregister(name: str) -> None:
    """Removes lab ``name`` and its imaging style (tests that add a toy lab clean up with this)."""
    style = synthetic.LABS[name].style
    synthetic.unregister_lab(name)
    styles.unregister_style(style)


from fedtransfer_jax.data.labs import ceramic_sem, ebsd_ipf, polarised_al, tem_brightfield  # noqa: E402

# Labs whose imaging the style model `gen` does not mirror (docs/STYLE.md, "Labs outside gen's family").
register(tem_brightfield)
register(ebsd_ipf)
register(polarised_al)
register(ceramic_sem)

__all__ = ["register", "unregister"]
