"""Example-level DP inside each lab: DP-SGD with per-MICROGRAPH clipping, as the clients' local optimizer path.

Abadi et al. 2016, "Deep learning with differential privacy" (CCS): every step Poisson-samples privacy units
with rate q, clips each sampled unit's gradient to L2 norm C, adds N(0, (z C)^2) to the sum and divides by the
EXPECTED batch B = q U (fixed denominator), so adding or removing one unit moves the step's gradient by at
most C / B and each step is a Poisson-sampled Gaussian mechanism with noise multiplier z.

The privacy unit is a micrograph, not a tile: the tiles of one micrograph are correlated (same grains, same
imaging), so protecting tiles separately would leak the micrograph. A client's data [N, ...] is viewed as
[U, T, ...] (`tiles_per_unit` = T consecutive tiles form one micrograph, padding tiles masked out; a unit is
real when any of its tiles is), each unit's gradient is the gradient of the loss on its T tiles (per-unit
gradients by `jax.vmap` over units), clipped as one vector. This is the cross-silo regime (few labs, many
micrographs each), complementary to user-level DP-FedAvg (`privacy.dp`, the unit there is the whole lab).

    local = dpsgd.dp_local_training(loss_fn, optax.sgd(lr), local_steps=K,
                                    dp=dpsgd.DPSGD(clip_norm=1.0, noise_multiplier=1.1, units_per_batch=8,
                                                   tiles_per_unit=4))
    alg = algorithms.fedavg(local)           # any algorithm: the hook is `LocalTraining.gradient_fn`
    eps = dpsgd.epsilon(1.1, steps=K * rounds, units_per_batch=8, units=lab_micrographs, delta=1e-5)

Cost: every step computes all U units' gradients and masks out the unsampled ones (exact Poisson sampling,
no truncation), fine for labs of tens to hundreds of micrographs of a few tiles. `max_units_per_step` gathers
at most that many sampled units instead (the physical batch); a step that samples more drops the excess, which
the accountant does not cover: `truncation_probability` is the chance per step, to be added to delta times the
number of steps.

Guarantee: (epsilon, delta) per micrograph with respect to everything the lab's updates release (model deltas
of every round it trains in), by the accountant over ALL local steps of the lab (`epsilon`). The lab's
participation itself, its number of micrographs U (the sampling rate uses the real count) and, unless
noised, its example count as FedAvg's aggregation weight are not protected; use DP-FedAvg for user-level
guarantees.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from scipy import stats

from fedtransfer_jax.fl.algorithms.base import LocalTraining, LossFn
from fedtransfer_jax.privacy import accounting
from fedtransfer_jax.privacy.dp import _gaussian_like, clip_by_global_norm


class DPSGD(NamedTuple):
    clip_norm: float  # C: L2 clip of each micrograph's gradient
    noise_multiplier: float  # z: noise std z C on the sum
    units_per_batch: float  # B: expected sampled micrographs per step (q = B / real micrographs)
    tiles_per_unit: int = 1  # T: consecutive tiles of the client's data that form one micrograph
    max_units_per_step: int = 0  # physical batch cap (0: every unit computed, exact Poisson sampling)


def unit_view(data: dict, tiles_per_unit: int) -> dict:
    """Client data [N, ...] as [U, T, ...] with U = N / T (N must be a multiple of T)."""
    n = data["mask"].shape[0]
    t = int(tiles_per_unit)
    if t < 1 or n % t:
        raise ValueError(f"dpsgd: {n} tiles per client is not a multiple of tiles_per_unit={t}")
    return {k: v.reshape((n // t, t) + v.shape[1:]) for k, v in data.items()}


def dp_gradient_fn(dp: DPSGD) -> Callable:
    """A `LocalTraining.gradient_fn`: the Poisson-sampled, per-micrograph clipped, noised mean gradient."""
    if dp.clip_norm <= 0 or dp.noise_multiplier < 0 or dp.units_per_batch <= 0:
        raise ValueError(f"dpsgd needs clip_norm > 0, noise_multiplier >= 0, units_per_batch > 0; got {dp}")
    c, z, b = float(dp.clip_norm), float(dp.noise_multiplier), float(dp.units_per_batch)

    def gradient_fn(loss_fn: LossFn, params, data: dict, prepare, rng):
        units = unit_view(data, dp.tiles_per_unit)
        real = units["mask"].any(axis=1)  # [U]
        n_units = real.shape[0]
        q = jnp.minimum(1.0, b / jnp.maximum(real.sum(), 1).astype(jnp.float32))
        sampled = real & (jax.random.uniform(jax.random.fold_in(rng, 0), (n_units,)) < q)
        unit_keys = jax.random.split(jax.random.fold_in(rng, 1), n_units)
        if dp.max_units_per_step:
            # Sampled units first, in random order; the excess beyond the cap is dropped (see the docstring).
            cap = min(int(dp.max_units_per_step), n_units)
            order = jnp.argsort(jnp.where(sampled, jax.random.uniform(jax.random.fold_in(rng, 2), (n_units,)), 2.0))
            take = order[:cap]
            units = {k: v[take] for k, v in units.items()}
            sampled, unit_keys = sampled[take], unit_keys[take]

        def one_unit(unit, key):
            batch = prepare(unit, jax.random.fold_in(key, 0))
            (loss, _), g = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, jax.random.fold_in(key, 1))
            clipped, _ = clip_by_global_norm(g, jnp.float32(c))
            return clipped, loss

        grads, losses = jax.vmap(one_unit)(units, unit_keys)
        w = sampled.astype(jnp.float32)
        summed = jax.tree_util.tree_map(lambda g: jnp.tensordot(w, g, axes=1), grads)
        noise = _gaussian_like(jax.random.fold_in(rng, 3), summed, jnp.float32(z * c))
        mean = jax.tree_util.tree_map(
            lambda s, n, p: ((s + n) / jnp.float32(b)).astype(p.dtype), summed, noise, params
        )
        # The loss is reported as the mean over the sampled units (not noised: see `privacy.dp`'s report_loss).
        loss = (w * losses).sum() / jnp.maximum(w.sum(), 1.0)
        return mean, loss

    return gradient_fn


def dp_local_training(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    *,
    local_steps: int,
    dp: DPSGD,
    batch_transform=None,
    unroll: bool = False,
) -> LocalTraining:
    """A `LocalTraining` whose every step is a DP-SGD step over micrographs (any algorithm accepts it)."""
    return LocalTraining(
        loss_fn=loss_fn,
        optimizer=optimizer,
        local_steps=int(local_steps),
        batch_size=int(dp.tiles_per_unit),  # unused by the DP path (the minibatch indices are not read)
        batch_transform=batch_transform,
        unroll=unroll,
        gradient_fn=dp_gradient_fn(dp),
    )


def sampling_rate(units_per_batch: float, units: int) -> float:
    return min(1.0, float(units_per_batch) / float(units))


def epsilon(
    noise_multiplier: float,
    steps: int,
    units_per_batch: float,
    units: int,
    delta: float,
    *,
    accountant: str = "rdp",
) -> float:
    """Per-micrograph epsilon of a lab after `steps` DP-SGD steps in total (local steps x rounds it trained
    in): a Poisson-sampled Gaussian mechanism with q = units_per_batch / units, composed `steps` times."""
    import dp_accounting

    if steps <= 0:
        return 0.0
    if noise_multiplier <= 0:
        return float("inf")
    acc = accounting.make_accountant(accountant, "poisson")
    event = dp_accounting.PoissonSampledDpEvent(
        sampling_rate(units_per_batch, units), dp_accounting.GaussianDpEvent(float(noise_multiplier))
    )
    with accounting._quiet_absl():
        acc.compose(event, int(steps))
        return float(acc.get_epsilon(delta))


def truncation_probability(units_per_batch: float, units: int, max_units_per_step: int) -> float:
    """P[a step samples more than `max_units_per_step` units] (Binomial(units, q) tail): with a physical
    batch cap, add steps x this to delta."""
    if not max_units_per_step:
        return 0.0
    return float(stats.binom.sf(int(max_units_per_step), int(units), sampling_rate(units_per_batch, units)))


def noise_std_of_mean(dp: DPSGD) -> float:
    """Per-coordinate std of the noise in one step's gradient: z C / B."""
    return float(dp.noise_multiplier) * float(dp.clip_norm) / float(dp.units_per_batch)


__all__ = [
    "DPSGD",
    "dp_gradient_fn",
    "dp_local_training",
    "epsilon",
    "noise_std_of_mean",
    "sampling_rate",
    "truncation_probability",
    "unit_view",
]
