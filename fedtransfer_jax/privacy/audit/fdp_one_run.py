"""f-DP audit in one training run: test the Gaussian trade-off curve, not randomized response.

Mahloujifar, Melis & Chaudhuri 2024, "Auditing f-differential privacy in one run" (arXiv 2410.22235, ICML
2025). Same experiment as `one_run` (Steinke, Nasr & Jagielski 2023): m canaries, each included
independently with probability 1/2; after the ONE run the auditor makes r guesses (k+ "in", k- "out",
abstaining on the rest, r fixed in advance) and v of them are correct. Steinke et al. bound P[>= v correct]
for an (eps, delta)-DP mechanism as if it were randomized response; here the null hypothesis is "the run is
f-DP in each canary's inclusion" for a whole trade-off curve f, and the bound uses its shape. For Gaussian
DP (Dong, Roth & Su 2022), f_mu(alpha) = Phi(Phi^-1(1 - alpha) - mu), the exact curve of DP-FedAvg without
client sampling (mu = sqrt(rounds) / z, add/remove-one neighbours, sensitivity = the clip norm).

The bound (the membership-inference game, two options per canary; the paper's reconstruction game with K
options per canary is NOT implemented). Let C be the number of correct guesses, p_j = P[C = j], and

    R_i = E[C 1{C >= i}] / m,     H_i = E[(r - C) 1{C >= i}] / m        (so R_0 + H_0 = r / m).

Fix canary j, the other canaries' bits and a bit s, and take the event "the guess on j is s and >= i - 1 of
the OTHER guesses are correct": with S_j = s it reads "j correct and C >= i", with S_j flipped "j wrong and
C >= i - 1". f-DP in S_j (both directions: add/remove neighbours), applied to the test that rejects on the
event's complement, gives P[event | flipped] >= g(P[event | S_j = s]) with g(y) = f(1 - y), which is
Phi(Phi^-1(y) - mu) for GDP and convex. Averaging over s, the other bits and the m canaries (Jensen):
H_{i-1} >= g(R_i) for every i >= 1. If P[C >= v] >= tau, the least total probability sum_j p_j meeting these
constraints is reached by mass tau at C = v and, level by level downwards, the least p_{i-1} that lifts
H_{i-1} to g(R_i):

    r_v = tau v / m,  h_v = tau (r - v) / m;   for i = v-1, ..., 0:
        h_i = max(h_{i+1}, g(r_{i+1})),   r_i = r_{i+1} + i / (r - i) * (h_i - h_{i+1})

If r_0 + h_0 > r / m the constraints need more than probability 1, so P[C >= v] < tau under the null: mu
is rejected at level tau = beta. This is the recursion of the paper (membership-inference case); we
checked our reading against google-deepmind/jax_privacy (jax_privacy/auditing.py, `_epsilon_one_run_fdp`,
which cites the paper's appendix code `audit_rh_with_cap`; nothing copied), whose loop is the same. The
derivation of the constraints above is ours (the paper's text was not at hand); that the greedy recursion
attains their minimum is not proven here but checked: tests/test_audit_fdp_one_run.py compares
`minimum_total_probability` ((r_0 + h_0) m / r) with the minimum a generic convex solver finds (the
constraints are convex in p). Rejection only gets easier as mu falls (g grows), so `mu_lower_bound`
bisects for the largest rejected mu.

From mu to epsilon: `gdp_epsilon(mu, delta)` inverts the exact GDP <-> (eps, delta) conversion (Dong, Roth &
Su 2022, Cor. 2.13) delta(eps) = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2). As in the paper (and
jax_privacy's `epsilon_one_run_fdp`), eps-hat = gdp_epsilon(mu-hat, delta) is the epsilon of the most private
*Gaussian* curve the run is shown to violate: it refutes a mu-GDP (or Gaussian-mechanism) claim, which is
the claim DP-FedAvg's accountant makes, but it is not a lower bound against arbitrary (eps, delta)-DP
mechanisms (Steinke's `one_run.epsilon_lower_bound` is).

Guess sizes: as `one_run.audit_scores`, k+ = k- = f m / 2 for every f in `fractions`, each tested at
beta / len(fractions) (Bonferroni), using `one_run.guess_from_scores`. Pure numpy / scipy.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
from scipy import optimize, special

from fedtransfer_jax.privacy.audit.guesses import DEFAULT_FRACTIONS, guess_from_scores

# --------------------------------------------------------------------------------------------------------------
# Gaussian differential privacy.


def gdp_tradeoff(alpha, mu: float):
    """f_mu(alpha) = Phi(Phi^-1(1 - alpha) - mu): the least type-II error at type-I error alpha of a test
    between N(0, 1) and N(mu, 1)."""
    return special.ndtr(special.ndtri(1.0 - np.asarray(alpha, np.float64)) - mu)


def _gdp_g(mu: float) -> Callable[[float], float]:
    """g(y) = f_mu(1 - y) = Phi(Phi^-1(y) - mu): if an event has probability y with the canary one way, it has
    at least g(y) the other way (mu-GDP in both directions: f_mu is symmetric)."""
    if mu == 0.0:
        return lambda y: y
    return lambda y: float(special.ndtr(special.ndtri(y) - mu))


def _log_gdp_delta(eps: float, mu: float) -> float:
    """log delta(eps) for mu-GDP, as log(Phi(a) - e^eps Phi(b)) with log-CDFs (delta goes below 1e-300 long
    before the CDFs underflow)."""
    a = special.log_ndtr(-eps / mu + mu / 2.0)
    b = eps + special.log_ndtr(-eps / mu - mu / 2.0)
    if b >= a:  # rounding: the true difference is positive but below float resolution
        return -math.inf
    return float(a + np.log1p(-np.exp(b - a)))


def gdp_delta(eps: float, mu: float) -> float:
    """The delta at which mu-GDP is (eps, delta)-DP, exactly: Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2)
    (Dong, Roth & Su 2022, Cor. 2.13)."""
    if mu < 0 or eps < 0:
        raise ValueError(f"need mu >= 0 and eps >= 0, got {mu}, {eps}")
    if mu == 0.0:
        return 0.0
    return math.exp(_log_gdp_delta(float(eps), float(mu)))


def gdp_epsilon(mu: float, delta: float) -> float:
    """The least eps with mu-GDP => (eps, delta)-DP (inverse of `gdp_delta`, decreasing in eps); 0 when
    delta >= delta(0)."""
    if mu < 0:
        raise ValueError(f"need mu >= 0, got {mu}")
    if not 0 < delta < 1:
        raise ValueError(f"need 0 < delta < 1, got {delta}")
    mu, log_delta = float(mu), math.log(delta)
    if mu == 0.0 or _log_gdp_delta(0.0, mu) <= log_delta:
        return 0.0
    lo, hi = 0.0, max(1.0, mu * mu)
    while _log_gdp_delta(hi, mu) > log_delta:  # delta(eps) -> 0 as eps grows
        lo, hi = hi, 2.0 * hi
    return float(optimize.brentq(lambda e: _log_gdp_delta(e, mu) - log_delta, lo, hi, xtol=1e-12, rtol=1e-12))


# --------------------------------------------------------------------------------------------------------------
# The one-run bound for an f-DP mechanism (Mahloujifar et al. 2024, membership-inference game).


def _check_counts(m: int, r: int, v: int) -> None:
    if not 0 <= v <= r <= m or m < 1:
        raise ValueError(f"need 0 <= v <= r <= m and m >= 1, got v={v}, r={r}, m={m}")


def _minimum_mass(m: int, r: int, v: int, tau: float, g: Callable[[float], float]) -> float:
    """The recursion of the module docstring for a blow-up inverse g; returns (r_0 + h_0) m / r, stopping
    early once it exceeds 1 (both r_i and h_i only grow as i falls, so the verdict cannot change)."""
    if r == 0:
        return tau
    cap = r / m
    rr, hh = tau * v / m, tau * (r - v) / m
    for i in range(v - 1, -1, -1):
        h_new = max(hh, g(rr))
        if h_new == hh:  # no mass needed at this level; r, h and so every lower level stay as they are
            break
        rr, hh = rr + i / (r - i) * (h_new - hh), h_new
        if rr + hh > cap:
            break
    return (rr + hh) / cap


def minimum_total_probability(m: int, r: int, v: int, mu: float, tau: float) -> float:
    """The least total probability a mu-GDP run needs if its r guesses have >= v correct with probability
    >= tau (m canaries, each included w.p. 1/2). Above 1: impossible, so P[>= v correct] < tau. Exact up to
    1; past 1 the recursion stops early and the value only says "more than 1"."""
    _check_counts(m, r, v)
    if mu < 0 or not 0 < tau <= 1:
        raise ValueError(f"need mu >= 0 and 0 < tau <= 1, got {mu}, {tau}")
    return _minimum_mass(m, r, v, float(tau), _gdp_g(float(mu)))


def rejects(m: int, r: int, v: int, mu: float, beta: float = 0.05) -> bool:
    """Whether v correct of r guesses refutes "the run is mu-GDP in each canary" at confidence 1 - beta."""
    if not 0 < beta < 1:
        raise ValueError(f"need 0 < beta < 1, got {beta}")
    return minimum_total_probability(m, r, v, mu, beta) > 1.0


def mu_lower_bound(m: int, r: int, v: int, beta: float = 0.05, iters: int = 50) -> float:
    """The largest mu that `rejects` (the run is not mu-GDP, with confidence 1 - beta); 0 when not even mu = 0
    (a mechanism whose output ignores the canaries) is rejected. Bisection: rejection is monotone in mu."""
    if not rejects(m, r, v, 0.0, beta):
        return 0.0
    lo, hi = 0.0, 1.0
    while rejects(m, r, v, hi, beta):  # g -> 0 as mu grows, so a large enough mu is never rejected
        lo, hi = hi, 2.0 * hi
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if rejects(m, r, v, mid, beta):
            lo = mid
        else:
            hi = mid
    return lo


def epsilon_lower_bound(m: int, r: int, v: int, delta: float, beta: float = 0.05) -> float:
    """eps-hat = gdp_epsilon(mu_lower_bound, delta): the epsilon at delta of the most private Gaussian curve the
    run refutes (see the module docstring for what it does and does not bound)."""
    return gdp_epsilon(mu_lower_bound(m, r, v, beta), delta)


def audit_scores(
    scores: np.ndarray,
    included: np.ndarray,
    delta: float,
    beta: float = 0.05,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
) -> dict:
    """The f-DP one-run bound from membership scores: k+ = k- = round(f m / 2) for every f in `fractions`,
    each tested at level beta / len(fractions) (Bonferroni, as `one_run.audit_scores`). Returns the row with
    the largest mu_lower_bound (and its epsilon_lower_bound at delta), the counts behind it, and every row
    under `all`."""
    scores = np.asarray(scores, np.float64)
    included = np.asarray(included, bool)
    m = scores.shape[0] if scores.ndim == 1 else -1
    if m < 1 or included.shape != (m,):
        raise ValueError(f"scores, included must both be [m] (m >= 1), got {scores.shape}, {included.shape}")
    if not fractions or not all(0 < f <= 1 for f in fractions):
        raise ValueError(f"need fractions in (0, 1], got {fractions}")
    if not 0 < delta < 1:
        raise ValueError(f"need 0 < delta < 1, got {delta}")
    level = beta / len(fractions)
    truth = np.where(included, 1, -1)
    rows = []
    for f in fractions:
        k = max(1, min(m // 2, int(round(f * m / 2))))
        g = guess_from_scores(scores, k, k)
        v, r = int(np.sum(g == truth)), int(np.sum(g != 0))
        mu = mu_lower_bound(m, r, v, level)
        rows.append(
            {
                "fraction": float(f),
                "k_plus": k,
                "k_minus": k,
                "guesses": r,
                "correct": v,
                "mu_lower_bound": mu,
                "epsilon_lower_bound": gdp_epsilon(mu, delta),
            }
        )
    best = max(rows, key=lambda row: (row["mu_lower_bound"], row["correct"] / row["guesses"]))
    return {**best, "canaries": m, "delta": float(delta), "confidence": 1.0 - beta, "all": rows}
