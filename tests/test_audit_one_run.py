"""One-run privacy auditing (Steinke, Nasr & Jagielski 2023): the bound against brute force and closed forms,
its soundness and tightness on randomized response, and the audit of DP-FedAvg with canary clients (the
working mechanism stays under its accountant's epsilon, a noise-free one is caught)."""

import json
import math

import numpy as np
import pytest
from scipy import special

from fedtransfer_jax.privacy import accounting
from fedtransfer_jax.privacy.audit import one_run


def brute_p_value(m, r, v, eps, delta):
    """Theorem 3.3 with exact binomial sums (math.comb) and the max over i written out."""
    q = math.exp(eps) / (1 + math.exp(eps))
    pmf = lambda j: math.comb(r, j) * q**j * (1 - q) ** (r - j)
    tail = sum(pmf(j) for j in range(v, r + 1))
    alpha = max((sum(pmf(j) for j in range(v - i, v)) / i for i in range(1, v + 1)), default=0.0)
    return min(tail + 2 * m * delta * alpha, 1.0)


@pytest.mark.parametrize("delta", [0.0, 1e-3, 0.02])
def test_p_value_matches_brute_force(delta):
    for r in (1, 3, 7, 12):
        for v in range(r + 1):
            for eps in (0.0, 0.3, 1.0, 2.5):
                m = 2 * r
                assert one_run.p_value(m, r, v, eps, delta) == pytest.approx(brute_p_value(m, r, v, eps, delta), abs=1e-12)


def test_perfect_guessing_closed_form_grows_with_r():
    """delta = 0 and v = r: P[Binomial(r, q) >= r] = q^r = beta, so eps_hat = logit(beta^(1/r)), which grows
    like log(r / log(1/beta)) (Steinke et al.: more canaries, larger provable epsilon)."""
    beta = 0.05
    prev = 0.0
    for r in (1, 2, 5, 10, 100, 1000, 10000):
        closed = float(special.logit(beta ** (1.0 / r)))
        got = one_run.epsilon_lower_bound(r, r, r, 0.0, beta)
        assert got == pytest.approx(max(closed, 0.0), abs=1e-6)
        assert got >= prev
        prev = got
    assert one_run.epsilon_lower_bound(10000, 10000, 10000, 0.0, beta) == pytest.approx(math.log(10000 / 3.0), abs=0.01)


def test_lower_bound_is_a_threshold_of_the_p_value_and_monotone():
    m, r, v = 1000, 200, 180
    for delta in (0.0, 1e-5):
        eps = one_run.epsilon_lower_bound(m, r, v, delta, 0.05)
        assert one_run.p_value(m, r, v, eps, delta) < 0.05 <= one_run.p_value(m, r, v, eps + 1e-6, delta)
    # More correct guesses, or a smaller delta, or less confidence prove more.
    assert one_run.epsilon_lower_bound(m, r, 190, 1e-5) > one_run.epsilon_lower_bound(m, r, 180, 1e-5)
    assert one_run.epsilon_lower_bound(m, r, v, 0.0) > one_run.epsilon_lower_bound(m, r, v, 1e-3)
    assert one_run.epsilon_lower_bound(m, r, v, 1e-5, 0.2) > one_run.epsilon_lower_bound(m, r, v, 1e-5, 0.01)
    # Chance-level guessing proves nothing.
    assert one_run.epsilon_lower_bound(m, r, r // 2, 1e-5) == 0.0
    assert one_run.epsilon_lower_bound(m, r, 0, 1e-5) == 0.0


def randomized_response_scores(rng, m, eps0):
    """The eps0-DP mechanism the bound is tight for: each canary's bit reported truthfully w.p. e^eps0/(1+e^eps0)."""
    included = rng.random(m) < 0.5
    truthful = rng.random(m) < special.expit(eps0)
    reported = np.where(truthful, included, ~included)
    return reported.astype(np.float64) + 1e-9 * rng.random(m), included  # ties broken at random


def test_sound_and_nearly_tight_on_randomized_response():
    rng = np.random.default_rng(0)
    eps0, beta = 1.0, 0.05
    over = 0
    for _ in range(40):
        scores, inc = randomized_response_scores(rng, 500, eps0)
        g = one_run.guess_from_scores(scores, 250, 250)
        v = int(np.sum(g == np.where(inc, 1, -1)))
        over += one_run.epsilon_lower_bound(500, 500, v, 0.0, beta) > eps0
    assert over <= 6  # at most beta of the runs (binomial(40, 0.05): P[> 6] < 0.5%)
    scores, inc = randomized_response_scores(rng, 20000, eps0)
    audit = one_run.audit_scores(scores, inc, delta=0.0, beta=beta, fractions=(1.0,))
    assert 0.85 * eps0 < audit["epsilon_lower_bound"] <= eps0


def test_guesses_and_bonferroni():
    scores = np.array([5.0, -1.0, 3.0, 0.0, -4.0, 1.0])
    np.testing.assert_array_equal(one_run.guess_from_scores(scores, 2, 1), [1, 0, 1, 0, -1, 0])
    inc = scores > 0.5
    one = one_run.audit_scores(scores, inc, 0.0, 0.05, fractions=(1.0,))
    three = one_run.audit_scores(scores, inc, 0.0, 0.05, fractions=(1.0, 0.5, 0.2))
    assert one["correct"] == one["guesses"] == 6
    assert one["epsilon_lower_bound"] == pytest.approx(one_run.epsilon_lower_bound(6, 6, 6, 0.0, 0.05))
    # Same best row, tested at beta / 3: a smaller bound.
    assert three["epsilon_lower_bound"] == pytest.approx(one_run.epsilon_lower_bound(6, 6, 6, 0.0, 0.05 / 3))
    with pytest.raises(ValueError):
        one_run.guess_from_scores(scores, 4, 3)


def test_dp_fedavg_audit_stays_under_the_accountant():
    row = one_run.audit_dp_fedavg(noise_multiplier=1.0, canaries=1000, rounds=4, seed=0)
    assert row["accountant_epsilon"] == pytest.approx(accounting.epsilon(1.0, 4, 1008, 1008, 1e-5, sampling="none"))
    assert 0.0 < row["epsilon_lower_bound"] <= row["accountant_epsilon"]
    assert row["epsilon_lower_bound"] <= row["accountant_epsilon_pld"]
    assert not row["violates_claim"]
    assert row["real_clients_mse"]["final"] < row["real_clients_mse"]["initial"]  # the real clients learn


def test_broken_mechanism_is_caught():
    """Noise switched off while z = 16 is claimed (eps ~ 0.5 over 4 rounds): the audit proves far more."""
    kw = dict(noise_multiplier=16.0, canaries=1000, rounds=4, seed=1)
    working = one_run.audit_dp_fedavg(**kw)
    broken = one_run.audit_dp_fedavg(noise_scale=0.0, **kw)
    claimed = broken["accountant_epsilon"]
    assert claimed < 0.6
    assert working["epsilon_lower_bound"] <= claimed
    assert broken["violates_claim"] and broken["epsilon_lower_bound"] > 4 * claimed
    assert broken["correct"] == broken["guesses"]


def test_cli_writes_audit_json(tmp_path):
    one_run.main(["--out", str(tmp_path), "--noise", "8", "--canaries", "200", "--rounds", "2"])
    report = json.loads((tmp_path / "audit.json").read_text())["empirical_dp"]
    for key in ("accountant_epsilon", "epsilon_lower_bound", "delta", "canaries", "guesses", "correct", "confidence", "mechanism"):
        assert key in report and key in report["broken_mechanism"]
    assert report["canaries"] == 200 and report["confidence"] == pytest.approx(0.95)
    assert report["epsilon_lower_bound"] <= report["accountant_epsilon"]
    assert report["broken_mechanism"]["epsilon_lower_bound"] > report["broken_mechanism"]["accountant_epsilon"]
