"""Attack (a) on the `gen` style technique: invert the imaging model a client fitted to one tile.

A gen message (`style.parametric.fit_style` of a tile *with its label map*, style/techniques/gen.py) is not a
function of the image alone, and not all of it is differentiable in the image. This module holds what the
generic label-guess attack (`statistics_inversion.label_guess_inversion_audit`) needs to attack it anyway:
the message itself (`gen_message`), the smooth equivalent the attacker matches (`gen_invariants` of the
message vs `gen_attack_statistics` of the candidate, with the label geometry of a guessed label map in
`gen_attack_context`), and the check that measures which message fields have gradients
(`fit_style_gradients`).

Differentiability of `parametric.fit_style` with respect to the image (`fit_style_gradients` measures it on
real tiles; the audit notes report it per lab): least squares, segment means and DFT matmuls are smooth, so
tone_mean, profile, shading and noise_psd have finite, non-zero gradients. The others are not safe:
- blur is picked by argmin among BLUR_CANDIDATES: piecewise constant, gradient zero;
- tone_sqrt and noise_basis come from `jnp.linalg.eigh`, whose gradient has 1 / (lambda_i - lambda_j) (and
  tone_sqrt sqrt'(0) = inf): non-finite when eigenvalues coincide or vanish, as for the rank-1 colour
  covariance of a grey lab's tones; an eigenvector's sign is arbitrary anyway;
- contrast_std = sqrt(max(., 0)) has gradient zero where the noise correction clips it (inf at 0).
In trials, an attack matching these raw fields went NaN within 50 steps on a brightfield tile. The attacker
therefore matches the tone covariance S S^T instead of its square root S, contrast_std^2, and the residual
power spectra on the victim's own shared colour axes (no eigh, no sign ambiguity); blur is left out.
"""

from __future__ import annotations

import functools
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fedtransfer_jax.privacy.audit.statistics_inversion import label_guess_inversion_audit

GEN_MATCHED_FIELDS = ("tone_mean", "tone_cov", "profile", "contrast_var", "shading", "noise_psd")

GEN_INVERSION_NOTE = (
    "gen inversion: a gen message is fitted with the tile's own label map, which the server does not "
    "have; the attacker fits its candidate image with the label map of another tile of the same lab "
    "(what the lab baseline assumes it knows) and matches the victim's message; 'gen/control' is the "
    "same attack, same guessed label, on a third tile's message. Boundary F1 is scored against the "
    "victim's true label."
)


def gen_message(image: jax.Array, label: jax.Array, profile_px: int = 6, noise_min_px: int = 2) -> dict:
    """What a `gen` client sends for one shared tile (style/techniques/gen.py): `fit_style` of the tile with
    its own label map, as a dict of the ImagingStyle fields."""
    from fedtransfer_jax.style import parametric

    return parametric.fit_style(image, label, profile_px=profile_px, noise_min_px=noise_min_px)._asdict()


def gen_invariants(message: dict) -> dict:
    """The smooth form of a gen message that the attack matches (see the module docstring)."""
    s = message["tone_sqrt"]
    return {
        "tone_mean": message["tone_mean"],
        "tone_cov": s @ jnp.swapaxes(s, -1, -2),
        "profile": message["profile"],
        "contrast_var": jnp.square(message["contrast_std"]),
        "shading": message["shading"],
        "noise_psd": message["noise_psd"],
    }


def gen_attack_context(label_guess: np.ndarray, noise_basis: jax.Array, profile_px: int) -> dict:
    """What the gen attack's statistics depend on besides the image: the geometry of the label map the
    attacker guesses (grain ids, distance bins: computed once, not at every step) and the shared colour
    axes of the message it attacks."""
    from fedtransfer_jax.style.labelmaps import distance_bins, grain_ids

    y = jnp.asarray(label_guess)
    return {
        "gid": grain_ids(y),
        "db": distance_bins(y, int(profile_px)),
        "noise_basis": jnp.asarray(noise_basis, jnp.float32),
    }


def gen_attack_statistics(
    image: jax.Array, context: dict, *, profile_px: int = 6, noise_min_px: int = 2
) -> dict:
    """`gen_invariants(gen_message(image, label))` computed the way `parametric.fit_style` does, but smooth in
    the image: the label geometry comes from `context` (`gen_attack_context`) and the residual is projected
    on `context['noise_basis']` instead of its own eigenvectors. Equal to the message's invariants when that
    basis is the image's own (tests/test_audit_gen_inversion.py checks it, so a change of fit_style shows up
    here)."""
    from fedtransfer_jax.style import parametric as pm

    h, w, _ = image.shape
    n = h * w
    image = image.astype(jnp.float32)
    gid, db = context["gid"], context["db"]
    tones, area, tb, prof, coef, _ = pm._fit_tones_profile(
        image, gid, db, profile_px, jnp.asarray(pm.BLUR_CANDIDATES, jnp.float32)
    )
    mu, tone_cov = pm.tone_distribution(tones, area)
    x, d = image.reshape(n, 3), db.reshape(n)
    rc, n_far = pm.far_residual(x, d, tb, prof, coef, (h, w), noise_min_px)
    psd = pm.binned_noise_psd(rc, context["noise_basis"], n_far, (h, w))
    p0 = prof[0]
    noise_var = jnp.sum(jnp.square(rc)) / n_far / 3.0  # trace(noise_cov) / 3, basis-free
    amp_var = pm.boundary_contrast_var(x, d, tb, p0, noise_var)
    contrast_var = jnp.where(p0 @ p0 > 1e-5, jnp.clip(amp_var, 0.0, 1.5**2), 0.0)
    return {
        "tone_mean": mu,
        "tone_cov": tone_cov,
        "profile": prof[:profile_px],
        "contrast_var": contrast_var,
        "shading": coef,
        "noise_psd": psd,
    }


# One function object per setting, so that the attack's and the messages' compilations are cached (the
# inversion runner and the jitted message are keyed by the function object).
@functools.lru_cache(maxsize=8)
def _gen_attack_fn(profile_px: int, noise_min_px: int) -> Callable:
    return functools.partial(gen_attack_statistics, profile_px=profile_px, noise_min_px=noise_min_px)


@functools.lru_cache(maxsize=8)
def _gen_message_fn(profile_px: int, noise_min_px: int) -> Callable:
    return functools.partial(gen_message, profile_px=profile_px, noise_min_px=noise_min_px)


def fit_style_gradients(
    image: np.ndarray,
    label: np.ndarray,
    key: jax.Array,
    *,
    profile_px: int = 6,
    noise_min_px: int = 2,
    fields: Sequence[str] | None = None,
) -> dict[str, str]:
    """{field: 'finite, non-zero' | 'zero' | 'non-finite'}: the gradient with respect to the image of a random
    projection of each field (default: all) of the gen message of (image, label)."""
    fields = tuple(sorted(fields or _gen_fields()))
    grads = _fit_style_gradient_fn(int(profile_px), int(noise_min_px), fields)
    out = {}
    for f, g in grads(jnp.asarray(image, jnp.float32), jnp.asarray(label), key).items():
        g = np.asarray(g)
        if not np.isfinite(g).all():
            out[f] = "non-finite"
        else:
            out[f] = "finite, non-zero" if np.any(g) else "zero"
    return out


def _gen_fields() -> tuple[str, ...]:
    from fedtransfer_jax.style.parametric import ImagingStyle

    return ImagingStyle._fields


@functools.lru_cache(maxsize=8)
def _fit_style_gradient_fn(profile_px: int, noise_min_px: int, fields: tuple[str, ...]):
    """One field at a time: a zero cotangent on an eigh output still gives inf * 0 = NaN, so the fields must
    not share one vjp."""

    def grads(x, y, k):
        out = {}
        for i, f in enumerate(fields):

            def projection(im, f=f, i=i):
                v = gen_message(im, y, profile_px, noise_min_px)[f]
                return jnp.vdot(jax.random.normal(jax.random.fold_in(k, i), v.shape, v.dtype), v)

            out[f] = jax.grad(projection)(x)
        return out

    return jax.jit(grads)


def gradient_notes(gradients: dict[str, dict[str, str]]) -> list[str]:
    """One line on which gen message fields are differentiable with respect to the image, from the check."""
    fields = sorted({f for g in gradients.values() for f in g})
    smooth = [f for f in fields if all(g.get(f) == "finite, non-zero" for g in gradients.values())]
    rough = [
        f"{lab}: " + ", ".join(f"{f} {s}" for f, s in sorted(g.items()) if s != "finite, non-zero")
        for lab, g in gradients.items()
        if any(s != "finite, non-zero" for s in g.values())
    ]
    return [
        "fit_style gradient with respect to the image (a random projection of each gen message field, "
        f"first victim of each lab): finite and non-zero for {', '.join(smooth) or 'no field'} in every lab; "
        f"otherwise {'; '.join(rough) or 'none'} (blur: an argmin among candidates; tone_sqrt, noise_basis: "
        "eigh, non-finite for coinciding or vanishing eigenvalues, e.g. a grey lab's rank-1 colour "
        "covariance; contrast_std: zero where clipped). The gen attack therefore matches the smooth "
        f"equivalent ({', '.join(GEN_MATCHED_FIELDS)}) and leaves blur out."
    ]


def gen_style_audit(profile_px: int, noise_min_px: int, what_is_sent: Mapping[str, str]):
    """The gen method's `StyleAudit` (style/techniques/gen.py declares it with its settings): the message, the
    smooth form the attack matches with a guessed label, and the gradient check reported as
    `fit_style_gradients`."""
    from fedtransfer_jax.style.techniques.base import AuditCheck, StyleAudit

    profile_px, noise_min_px = int(profile_px), int(noise_min_px)
    return StyleAudit(
        message=_gen_message_fn(profile_px, noise_min_px),
        statistics=_gen_attack_fn(profile_px, noise_min_px),
        what_is_sent=what_is_sent,
        context=lambda msg, label_guess: gen_attack_context(label_guess, msg["noise_basis"], profile_px),
        target=gen_invariants,
        check=AuditCheck(
            report_key="fit_style_gradients",
            run=functools.partial(fit_style_gradients, profile_px=profile_px, noise_min_px=noise_min_px),
            notes=lambda results: [GEN_INVERSION_NOTE] + gradient_notes(results),
        ),
    )


def gen_inversion_audit(
    images: np.ndarray,
    labels: np.ndarray,
    victims: Sequence[int],
    key: jax.Array,
    *,
    profile_px: int = 6,
    noise_min_px: int = 2,
    steps: int = 300,
    lr: float = 0.05,
    tv_weight: float = 0.05,
    tolerance: float = 2.0,
    boundary_fn: Callable[[np.ndarray], np.ndarray] | None = None,
    control: bool = True,
) -> tuple[dict, dict]:
    """Attack (a) on one client's gen messages: `label_guess_inversion_audit` with the gen message and the
    smooth form the attacker matches. Needs >= 3 images (victim, label guess, control).

    Returns (scores {'gen': summarize(...), 'gen/control': ...}, recovered {'gen': [V, H, W, 3]}).
    """
    spec = gen_style_audit(profile_px, noise_min_px, {})
    return label_guess_inversion_audit(
        images, labels, victims, key, name="gen", message_fn=spec.message, stats_fn=spec.statistics,
        context_fn=spec.context, target_fn=spec.target, steps=steps, lr=lr, tv_weight=tv_weight,
        tolerance=tolerance, boundary_fn=boundary_fn, control=control,
    )
