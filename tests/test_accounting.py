"""Privacy accounting (privacy/accounting.py) against closed forms computed independently here."""

import numpy as np
import pytest
from scipy import optimize, special, stats

from fedtransfer_jax.privacy import accounting, dp

DELTA = 1e-5


def cks_epsilon(orders, rdp_values, delta):
    """(eps, delta) from RDP, Canonne, Kamath & Steinke 2020 (Prop. 12 of Asoodeh et al.):
    eps = min_a rdp(a) + log((a - 1) / a) - (log delta + log a) / (a - 1)."""
    a = np.asarray(orders, np.float64)
    eps = np.asarray(rdp_values) + np.log1p(-1 / a) - (np.log(delta) + np.log(a)) / (a - 1)
    return float(max(0.0, eps.min()))


def gaussian_rdp(orders, z, rounds):
    """RDP of the Gaussian mechanism (sensitivity 1, std z) composed `rounds` times: rounds * a / (2 z^2)."""
    return rounds * np.asarray(orders, np.float64) / (2 * z**2)


def exact_gaussian_epsilon(z, rounds, delta):
    """Exact epsilon of T Gaussian mechanisms = one Gaussian with mu = sqrt(T) / z (Balle & Wang 2018):
    delta(eps) = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2)."""
    mu = np.sqrt(rounds) / z

    def gap(eps):
        return stats.norm.cdf(-eps / mu + mu / 2) - np.exp(eps) * stats.norm.cdf(-eps / mu - mu / 2) - delta

    return optimize.brentq(gap, 0.0, 500.0, xtol=1e-12)


def poisson_gaussian_rdp_integer(q, z, orders):
    """RDP of the Poisson-subsampled Gaussian at integer orders (Mironov, Talwar & Zhang 2019, Sec. 3.3):
    A_a = sum_k C(a, k) (1 - q)^(a - k) q^k exp((k^2 - k) / (2 z^2)),  rdp(a) = log A_a / (a - 1)."""
    out = []
    for a in orders:
        k = np.arange(a + 1, dtype=np.float64)
        log_terms = (
            special.gammaln(a + 1)
            - special.gammaln(k + 1)
            - special.gammaln(a - k + 1)
            + (a - k) * np.log1p(-q)
            + k * np.log(q)
            + (k * k - k) / (2 * z**2)
        )
        out.append(special.logsumexp(log_terms) / (a - 1))
    return np.asarray(out)


@pytest.mark.parametrize("z,rounds", [(0.8, 1), (1.0, 10), (2.0, 100), (5.0, 1000)])
def test_q1_matches_the_closed_form_gaussian_rdp_and_brackets_the_exact_epsilon(z, rounds):
    got = accounting.epsilon(z, rounds, 4, 4, DELTA, sampling="none")
    dense = np.concatenate([np.linspace(1.01, 20, 2000), np.linspace(20, 2000, 4000)])
    closed = cks_epsilon(dense, gaussian_rdp(dense, z, rounds), DELTA)
    # The accountant optimises over a coarser order grid: never below the dense optimum, and close to it.
    assert closed * (1 - 1e-9) <= got <= closed * 1.02, (got, closed)
    exact = exact_gaussian_epsilon(z, rounds, DELTA)
    assert exact <= got  # RDP is an upper bound ...
    pld = accounting.epsilon(z, rounds, 4, 4, DELTA, sampling="none", accountant="pld")
    assert abs(pld - exact) <= 0.01 * exact + 1e-3, (pld, exact)  # ... PLD is (nearly) exact


@pytest.mark.parametrize("q,z,rounds", [(0.01, 1.1, 10000), (0.1, 1.0, 100), (0.5, 2.0, 50)])
def test_poisson_sampling_matches_the_integer_order_closed_form(q, z, rounds):
    num_clients = 1000
    got = accounting.epsilon(z, rounds, int(q * num_clients), num_clients, DELTA)
    orders = np.arange(2, 257)
    ref = cks_epsilon(orders, rounds * poisson_gaussian_rdp_integer(q, z, orders), DELTA)
    # The accountant also uses fractional orders, so it may only be (slightly) smaller.
    assert ref * 0.9 <= got <= ref * (1 + 1e-6), (got, ref)


def test_monotonicity_and_amplification():
    eps = lambda z=1.0, t=20, k=2, n=20, **kw: accounting.epsilon(z, t, k, n, DELTA, **kw)  # noqa: E731
    assert eps(t=10) < eps(t=20) < eps(t=40)
    assert eps(z=2.0) < eps(z=1.0) < eps(z=0.7)
    assert eps(k=1) < eps(k=2) < eps(k=10)
    assert eps() < eps(sampling="none")  # amplification by (secret) sampling
    assert eps(accountant="pld") < eps()  # PLD is tighter than RDP
    assert accounting.epsilon(1.0, 0, 2, 20, DELTA) == 0.0
    assert accounting.epsilon(0.0, 5, 2, 20, DELTA) == float("inf")


def test_fixed_size_sampling_uses_the_replace_one_sensitivity():
    # Sampling everyone without replacement is no sampling; replace-one neighbours double the sensitivity of
    # the clipped sum (2C), i.e. a Gaussian with noise multiplier z / 2 (compared with the closed form).
    z, rounds, n = 2.0, 30, 8
    got = accounting.epsilon(z, rounds, n, n, DELTA, sampling="fixed")
    dense = np.concatenate([np.linspace(1.01, 20, 2000), np.linspace(20, 2000, 4000)])
    closed = cks_epsilon(dense, gaussian_rdp(dense, z / 2, rounds), DELTA)
    assert closed * (1 - 1e-9) <= got <= closed * 1.02, (got, closed)
    assert accounting.epsilon(z, rounds, 2, n, DELTA, sampling="fixed") < got
    with pytest.raises(ValueError, match="RDP accountant only"):
        accounting.epsilon(z, rounds, 2, n, DELTA, sampling="fixed", accountant="pld")


def test_epsilon_curve_is_the_cumulative_epsilon_after_each_round():
    curve = accounting.epsilon_curve(1.0, 30, 3, 12, DELTA)
    assert curve.rounds.tolist() == list(range(1, 31))
    assert np.all(np.diff(curve.cumulative) > 0)
    for t in (1, 7, 30):
        np.testing.assert_allclose(
            curve.cumulative[t - 1], accounting.epsilon(1.0, t, 3, 12, DELTA), rtol=1e-9
        )
    np.testing.assert_allclose(curve.per_round, curve.cumulative[0], rtol=1e-12)
    f = accounting.epsilon_fn(1.0, 3, 12, DELTA)
    np.testing.assert_allclose(f(7), curve.cumulative[6], rtol=1e-9)
    pld = accounting.epsilon_curve(1.0, 30, 3, 12, DELTA, accountant="pld", at=[5, 30])
    assert pld.rounds.tolist() == [5, 30] and np.all(pld.cumulative < curve.cumulative[[4, 29]])


def test_noise_multiplier_for_a_target_epsilon():
    z = accounting.noise_multiplier_for_epsilon(4.0, 50, 2, 10, DELTA)
    eps = accounting.epsilon(z, 50, 2, 10, DELTA)
    assert eps <= 4.0 + 1e-6 and eps > 3.95
    assert accounting.epsilon(0.98 * z, 50, 2, 10, DELTA) > 4.0


def test_adaptive_clipping_is_accounted_with_the_effective_multiplier():
    # dp_fedavg(noise_multiplier=z, adaptive=True) adds z_Delta > z to the update; the pair of queries costs
    # exactly what one Gaussian query with z costs, so the accountant is called with z.
    z, sigma_b = 1.0, 1.0  # cross-silo: few clients per round need a large count noise (z < 2 sigma_b)
    z_update = dp.split_noise_multiplier(z, sigma_b)
    z_eff = dp.effective_noise_multiplier(z_update, sigma_b)
    np.testing.assert_allclose(
        accounting.epsilon(z_eff, 40, 2, 10, DELTA), accounting.epsilon(z, 40, 2, 10, DELTA), rtol=1e-9
    )
    assert accounting.epsilon(z_update, 40, 2, 10, DELTA) < accounting.epsilon(z, 40, 2, 10, DELTA)
