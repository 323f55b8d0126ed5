"""The f-DP one-run audit (Mahloujifar, Melis & Chaudhuri 2024) for Gaussian DP: the GDP <-> (eps, delta)
conversion against the hockey-stick divergence, a Monte-Carlo privacy-loss estimate and dp_accounting; the
recursion against a generic convex solver on the constraint system it solves; soundness and tightness on
simulated mu-GDP scores (beside Steinke et al.'s bound); the broken DP-FedAvg mechanism caught through the
CLI; argument checks."""

import json
import math

import dp_accounting
import numpy as np
import pytest
from scipy import integrate, optimize, special, stats

from fedtransfer_jax.privacy import accounting
from fedtransfer_jax.privacy.audit import fdp_one_run, one_run

# ----------------------------------------------------------------------------------------------------------
# (a) GDP <-> (eps, delta)


def hockey_stick_delta(eps, mu):
    """delta(eps) = int (p_mu(x) - e^eps p_0(x))_+ dx for N(mu, 1) against N(0, 1): the integrand is positive
    exactly for x > eps / mu + mu / 2, integrated numerically."""
    x0 = eps / mu + mu / 2
    integrand = lambda x: stats.norm.pdf(x, mu) - math.exp(eps) * stats.norm.pdf(x)
    val, _ = integrate.quad(integrand, x0, x0 + 40, epsabs=0, epsrel=1e-12, limit=200)
    return val


@pytest.mark.parametrize("mu", [0.1, 0.5, 1.0, 3.0])
def test_gdp_delta_is_the_hockey_stick_divergence(mu):
    for eps in (0.0, 0.3, 1.0, 2.5, 6.0):
        want = hockey_stick_delta(eps, mu)
        if want > 1e-200:
            assert fdp_one_run.gdp_delta(eps, mu) == pytest.approx(want, rel=1e-6, abs=1e-300)


def test_gdp_delta_matches_monte_carlo_privacy_loss():
    """delta(eps) = E_{X ~ N(mu,1)} (1 - e^(eps - L(X)))_+ with the privacy loss L(x) = mu x - mu^2 / 2."""
    rng = np.random.default_rng(0)
    for mu in (0.5, 1.0, 2.0):
        x = rng.normal(mu, 1.0, size=400_000)
        loss = mu * x - mu * mu / 2
        for eps in (0.1, 0.5, 1.5):
            terms = np.maximum(0.0, 1.0 - np.exp(eps - loss))
            se = terms.std() / math.sqrt(terms.size)
            assert abs(terms.mean() - fdp_one_run.gdp_delta(eps, mu)) < 5 * se + 1e-12


def test_gdp_epsilon_inverts_delta_and_matches_dp_accounting():
    for mu in (0.2, 0.5, 1.0, 2.0):
        for delta in (1e-3, 1e-5, 1e-9):
            eps = fdp_one_run.gdp_epsilon(mu, delta)
            assert fdp_one_run.gdp_delta(eps, mu) == pytest.approx(delta, rel=1e-8)
            # The Gaussian mechanism with sensitivity 1 and std 1 / mu is exactly mu-GDP: dp_accounting's
            # analytic Gaussian mechanism (Balle & Wang 2018), both ways.
            assert dp_accounting.get_epsilon_gaussian(1.0 / mu, delta) == pytest.approx(eps, rel=1e-9)
            assert 1.0 / dp_accounting.get_sigma_gaussian(eps, delta) == pytest.approx(mu, rel=1e-9)
    assert fdp_one_run.gdp_epsilon(0.0, 1e-5) == 0.0
    assert fdp_one_run.gdp_epsilon(0.01, 0.5) == 0.0  # delta above delta(0) = 2 Phi(mu / 2) - 1


def test_mu_accountant_is_the_composed_gaussian_mechanism():
    """R rounds without sampling at noise multiplier z: the project's PLD accountant agrees with the
    (eps, delta) of sqrt(R) / z - GDP, the curve the f-DP audit tests."""
    for z, rounds in ((4.0, 4), (2.0, 4), (8.0, 16)):
        pld_eps = accounting.epsilon(z, rounds, 100, 100, 1e-5, sampling="none", accountant="pld")
        assert pld_eps == pytest.approx(fdp_one_run.gdp_epsilon(math.sqrt(rounds) / z, 1e-5), rel=1e-4)


def test_tradeoff_curve_is_the_likelihood_ratio_test():
    alpha = np.linspace(0.0, 1.0, 11)
    np.testing.assert_allclose(fdp_one_run.gdp_tradeoff(alpha, 0.0), 1 - alpha, atol=1e-15)
    for mu in (0.5, 2.0):
        # Reject N(0,1) when x > t: type I 1 - Phi(t), type II Phi(t - mu).
        t = np.linspace(-3, 3, 7)
        np.testing.assert_allclose(fdp_one_run.gdp_tradeoff(stats.norm.sf(t), mu), stats.norm.cdf(t - mu), rtol=1e-12)


# ----------------------------------------------------------------------------------------------------------
# The recursion


def convex_minimum_mass(m, r, v, mu, tau):
    """min sum_j p_j over p_0..p_r >= 0 with P[C >= v] >= tau and H_{i-1} >= g(R_i) for i = 1..r (R_i, H_i:
    the expected correct / wrong guesses on {C >= i}, over m; g(y) = Phi(Phi^-1(y) - mu)), by SLSQP from a
    flat start: the constraint system the module docstring derives, solved without the recursion."""
    j = np.arange(r + 1)
    g = lambda y: special.ndtr(special.ndtri(np.clip(y, 1e-300, 1.0)) - mu)

    def gaps(p):
        tail = lambda w: np.cumsum((w * p)[::-1])[::-1] / m
        big_r, big_h = tail(j), tail(r - j)
        return big_h[:-1] - g(big_r[1:])

    cons = [{"type": "ineq", "fun": lambda p: p[v:].sum() - tau}, {"type": "ineq", "fun": gaps}]
    res = optimize.minimize(
        np.sum, np.full(r + 1, 1.0 / (r + 1)), method="SLSQP", bounds=[(0, None)] * (r + 1),
        constraints=cons, options={"maxiter": 1000, "ftol": 1e-13},
    )  # fmt: skip
    assert res.success, res.message
    return res.fun


@pytest.mark.parametrize(
    "m, r, v, mu, tau",
    [
        (19, 10, 8, 0.3, 0.1),
        (18, 14, 12, 0.3, 0.05),
        (14, 14, 10, 0.1, 0.1),
        (29, 12, 12, 1.0, 0.05),
        (20, 17, 13, 0.3, 0.05),
    ],
)
def test_recursion_is_the_minimum_of_the_fdp_constraints(m, r, v, mu, tau):
    got = fdp_one_run.minimum_total_probability(m, r, v, mu, tau)
    assert 2 * tau < got < 1  # cases where the recursion does work and stops by itself
    assert got == pytest.approx(convex_minimum_mass(m, r, v, mu, tau), rel=1e-8)


def test_mu_lower_bound_is_a_threshold_and_monotone():
    m, r, v = 1000, 200, 170
    mu = fdp_one_run.mu_lower_bound(m, r, v, 0.05)
    assert mu > 0 and fdp_one_run.rejects(m, r, v, mu, 0.05) and not fdp_one_run.rejects(m, r, v, mu + 1e-6, 0.05)
    assert fdp_one_run.mu_lower_bound(m, r, 185, 0.05) > mu  # more correct guesses prove more
    assert fdp_one_run.mu_lower_bound(m, r, v, 0.2) > mu > fdp_one_run.mu_lower_bound(m, r, v, 0.01)
    assert fdp_one_run.mu_lower_bound(m, r, r // 2 + 5, 0.05) == 0.0  # near chance level proves nothing
    assert fdp_one_run.mu_lower_bound(m, r, 0, 0.05) == 0.0
    # Perfect guesses: more canaries prove more, but never infinity.
    perfect = [fdp_one_run.mu_lower_bound(n, n, n, 0.05) for n in (10, 100, 1000)]
    assert 0 < perfect[0] < perfect[1] < perfect[2] < 10
    eps = fdp_one_run.epsilon_lower_bound(m, r, v, 1e-5, 0.05)
    assert eps == pytest.approx(fdp_one_run.gdp_epsilon(mu, 1e-5))


# ----------------------------------------------------------------------------------------------------------
# (b), (c) Idealised mu-GDP scores: canary in N(mu, 1), out N(0, 1) (a Dirac canary under isotropic noise).


def gdp_scores(rng, m, mu):
    included = rng.random(m) < 0.5
    return rng.normal(size=m) + mu * included, included


@pytest.mark.parametrize("mu, m, k", [(1.0, 500, 50), (0.5, 2000, 100), (2.0, 300, 15)])
def test_sound_on_simulated_gdp_runs(mu, m, k):
    """The true mu is rejected in at most a beta share of simulated audits (beta = 0.5 so that a rate above it
    would show within 300 audits: the tolerance is 3 binomial standard deviations)."""
    rng = np.random.default_rng(1)
    beta, n = 0.5, 300
    rejected = 0
    for _ in range(n):
        scores, inc = gdp_scores(rng, m, mu)
        v = int(np.sum(one_run.guess_from_scores(scores, k, k) == np.where(inc, 1, -1)))
        rejected += fdp_one_run.rejects(m, 2 * k, v, mu, beta)
    assert rejected <= beta * n + 3 * math.sqrt(n * beta * (1 - beta))


def test_tighter_than_steinke_on_simulated_gdp_runs():
    """10^4 canaries at mu = 0.5 (the audited DP-FedAvg configuration: z = 4, 4 rounds; eps = 1.99 at
    delta = 1e-5). Measured over these seeds: mu-hat / mu = 0.59 - 0.75, eps-hat(f-DP) / eps = 0.56 - 0.73
    (eps / eps-hat = 1.4 - 1.8), eps-hat(Steinke) / eps = 0.46 - 0.57 (1.8 - 2.2): f-DP proves 1.21 - 1.28x more."""
    mu, delta = 0.5, 1e-5
    eps = fdp_one_run.gdp_epsilon(mu, delta)
    for seed in range(3):
        scores, inc = gdp_scores(np.random.default_rng(seed), 10_000, mu)
        fdp = fdp_one_run.audit_scores(scores, inc, delta)
        steinke = one_run.audit_scores(scores, inc, delta)
        assert 0.55 * mu < fdp["mu_lower_bound"] <= mu
        assert fdp["epsilon_lower_bound"] == pytest.approx(fdp_one_run.gdp_epsilon(fdp["mu_lower_bound"], delta))
        assert eps / fdp["epsilon_lower_bound"] < 2.0  # "within 2x"
        assert fdp["epsilon_lower_bound"] > 1.1 * steinke["epsilon_lower_bound"]
        assert fdp["confidence"] == pytest.approx(0.95) and len(fdp["all"]) == len(one_run.DEFAULT_FRACTIONS)


# ----------------------------------------------------------------------------------------------------------
# (d) DP-FedAvg through the CLI: the new keys beside the old ones; the noise-free mechanism is caught.


def test_cli_reports_fdp_bound_and_catches_broken_mechanism(tmp_path):
    one_run.main(["--out", str(tmp_path), "--noise", "16", "--canaries", "300", "--rounds", "2", "--seed", "1"])
    report = json.loads((tmp_path / "audit.json").read_text())["empirical_dp"]
    working, broken = report, report["broken_mechanism"]
    new_keys = (
        "mu_accountant",
        "mu_lower_bound",
        "epsilon_lower_bound_fdp",
        "ratio_accountant_to_fdp_lower_bound",
        "violates_claim_fdp",
    )
    old_keys = ("accountant_epsilon", "accountant_epsilon_pld", "epsilon_lower_bound", "violates_claim", "correct")
    for row in (working, broken):
        assert all(k in row for k in new_keys + old_keys)
        assert row["mu_accountant"] == pytest.approx(math.sqrt(2) / 16)
    assert len(report["all_guess_sizes_fdp"]) == len(one_run.DEFAULT_FRACTIONS)
    assert working["mu_lower_bound"] <= working["mu_accountant"] and not working["violates_claim_fdp"]
    assert broken["violates_claim_fdp"] and broken["violates_claim"]
    assert broken["mu_lower_bound"] > 5 * broken["mu_accountant"]
    assert broken["epsilon_lower_bound_fdp"] > 5 * broken["accountant_epsilon"]
    assert broken["ratio_accountant_to_fdp_lower_bound"] < 0.2


# ----------------------------------------------------------------------------------------------------------
# (e) Bad arguments


def test_bad_arguments_raise():
    bad_calls = [
        lambda: fdp_one_run.minimum_total_probability(10, 5, 6, 1.0, 0.05),  # v > r
        lambda: fdp_one_run.minimum_total_probability(10, 11, 5, 1.0, 0.05),  # r > m
        lambda: fdp_one_run.minimum_total_probability(10, 5, -1, 1.0, 0.05),
        lambda: fdp_one_run.minimum_total_probability(10, 5, 3, -0.1, 0.05),  # mu < 0
        lambda: fdp_one_run.minimum_total_probability(10, 5, 3, 1.0, 0.0),  # tau
        lambda: fdp_one_run.rejects(10, 5, 3, 1.0, 1.0),  # beta
        lambda: fdp_one_run.mu_lower_bound(10, 5, 3, 0.0),
        lambda: fdp_one_run.gdp_epsilon(1.0, 0.0),  # delta = 0: eps would be infinite
        lambda: fdp_one_run.gdp_epsilon(1.0, 1.0),
        lambda: fdp_one_run.gdp_epsilon(-1.0, 1e-5),
        lambda: fdp_one_run.gdp_delta(-1.0, 1.0),
        lambda: fdp_one_run.audit_scores(np.zeros(5), np.zeros(4, bool), 1e-5),  # shapes
        lambda: fdp_one_run.audit_scores(np.zeros((2, 2)), np.zeros(2, bool), 1e-5),
        lambda: fdp_one_run.audit_scores(np.zeros(5), np.zeros(5, bool), 1e-5, fractions=()),
        lambda: fdp_one_run.audit_scores(np.zeros(5), np.zeros(5, bool), 1e-5, fractions=(1.5,)),
        lambda: fdp_one_run.audit_scores(np.zeros(5), np.zeros(5, bool), 0.0),
    ]
    for call in bad_calls:
        with pytest.raises(ValueError):
            call()
