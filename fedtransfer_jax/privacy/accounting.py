"""User-level (epsilon, delta) of DP-FedAvg over many rounds, with Google's `dp_accounting` package.

One round of `privacy.dp.dp_fedavg` is a Gaussian mechanism with noise multiplier z on the sum of the
clipped updates of a random sample of clients (McMahan et al. 2018); the privacy unit is a *client* (a lab
and all its images). Rounds compose; sampling amplifies:

  sampling='poisson'  every client joins a round independently with q = clients_per_round / num_clients
                      (`PoissonSampledDpEvent`, add/remove-one neighbours: the sensitivity of the sum is C,
                      so the Gaussian event has noise multiplier z). Matches the fixed denominator
                      m = q * num_clients of `dp_fedavg`.
  sampling='fixed'    a uniformly random subset of exactly clients_per_round clients, without replacement
                      (`SampledWithoutReplacementDpEvent`, Wang, Balle & Kasiviswanathan 2019). Its neighbours
                      are replace-one, for which the sensitivity of the clipped sum is 2C: the Gaussian event
                      gets z / 2 (conservative; the RDP accountant only, dp_accounting's PLD has no such event).
  sampling='none'     no amplification (q = 1): every round is a plain Gaussian mechanism. This is the honest
                      number against a server that *knows* who was sampled, which an FL server does:
                      amplification by sampling assumes the sample is secret from the adversary (it protects
                      the released models against everyone else).

accountant='rdp' (Renyi DP, Mironov 2017; conversion to (eps, delta) by Canonne, Kamath & Steinke 2020) or
'pld' (privacy loss distributions, tighter, slower). With adaptive clipping pass the *effective* noise
multiplier (the `noise_multiplier` given to `dp_fedavg`; `dp.effective_noise_multiplier` if you know the
update noise instead): Andrew et al. 2021 show the update and clipped-count queries together are a Gaussian
mechanism with that multiplier.
"""

from __future__ import annotations

import contextlib
from typing import Callable, NamedTuple, Sequence

import dp_accounting
import numpy as np
from absl import logging as absl_logging
from dp_accounting import pld, rdp

SAMPLINGS = ("poisson", "fixed", "none")
ACCOUNTANTS = ("rdp", "pld")


class EpsilonCurve(NamedTuple):
    """epsilon after rounds: `cumulative[i]` is the epsilon of rounds 1..rounds[i] together."""

    rounds: np.ndarray  # int [T]: the round counts (default 1..T)
    cumulative: np.ndarray  # float [T]
    per_round: float  # epsilon of a single round alone (what one round costs; rounds do not add linearly)
    delta: float


@contextlib.contextmanager
def _quiet_absl():
    """The RDP accountant logs a warning for every fractional order whose series does not converge (it then
    just drops that order); for large q that is dozens of lines per call."""
    level = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        yield
    finally:
        absl_logging.set_verbosity(level)


def _check(sampling: str, accountant: str, clients_per_round: int, num_clients: int) -> None:
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown sampling {sampling!r}; choose from {SAMPLINGS}")
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"unknown accountant {accountant!r}; choose from {ACCOUNTANTS}")
    if not 0 < clients_per_round <= num_clients:
        raise ValueError(f"need 0 < clients_per_round <= num_clients, got {clients_per_round}, {num_clients}")
    if sampling == "fixed" and accountant == "pld":
        raise ValueError("sampling='fixed' (without replacement) is supported by the RDP accountant only")


def round_event(
    noise_multiplier: float, clients_per_round: int, num_clients: int, sampling: str = "poisson"
) -> dp_accounting.DpEvent:
    """The `DpEvent` of one DP-FedAvg round (see the module docstring for the sensitivity conventions)."""
    z = float(noise_multiplier)
    if sampling == "poisson":
        return dp_accounting.PoissonSampledDpEvent(
            clients_per_round / num_clients, dp_accounting.GaussianDpEvent(z)
        )
    if sampling == "fixed":
        return dp_accounting.SampledWithoutReplacementDpEvent(
            num_clients, clients_per_round, dp_accounting.GaussianDpEvent(z / 2.0)
        )
    if sampling == "none":
        return dp_accounting.GaussianDpEvent(z)
    raise ValueError(f"unknown sampling {sampling!r}; choose from {SAMPLINGS}")


def make_accountant(accountant: str = "rdp", sampling: str = "poisson") -> dp_accounting.PrivacyAccountant:
    """A fresh accountant with the neighbouring relation the sampling scheme needs."""
    rel = dp_accounting.NeighboringRelation
    relation = rel.REPLACE_ONE if sampling == "fixed" else rel.ADD_OR_REMOVE_ONE
    if accountant == "rdp":
        return rdp.RdpAccountant(neighboring_relation=relation)
    if accountant == "pld":
        return pld.PLDAccountant(neighboring_relation=relation)
    raise ValueError(f"unknown accountant {accountant!r}; choose from {ACCOUNTANTS}")


def epsilon(
    noise_multiplier: float,
    rounds: int,
    clients_per_round: int,
    num_clients: int,
    delta: float,
    *,
    sampling: str = "poisson",
    accountant: str = "rdp",
) -> float:
    """User-level epsilon at `delta` after `rounds` rounds (inf without noise, 0 for 0 rounds)."""
    _check(sampling, accountant, clients_per_round, num_clients)
    if rounds <= 0:
        return 0.0
    if noise_multiplier <= 0:
        return float("inf")
    acc = make_accountant(accountant, sampling)
    with _quiet_absl():
        acc.compose(round_event(noise_multiplier, clients_per_round, num_clients, sampling), int(rounds))
        return float(acc.get_epsilon(delta))


def epsilon_fn(
    noise_multiplier: float,
    clients_per_round: int,
    num_clients: int,
    delta: float,
    *,
    sampling: str = "poisson",
    accountant: str = "rdp",
) -> Callable[[int], float]:
    """`rounds -> epsilon` for a fixed configuration (each call composes afresh: cheap for RDP)."""
    return lambda rounds: epsilon(
        noise_multiplier,
        rounds,
        clients_per_round,
        num_clients,
        delta,
        sampling=sampling,
        accountant=accountant,
    )


def epsilon_curve(
    noise_multiplier: float,
    rounds: int,
    clients_per_round: int,
    num_clients: int,
    delta: float,
    *,
    sampling: str = "poisson",
    accountant: str = "rdp",
    at: Sequence[int] | None = None,
) -> EpsilonCurve:
    """Cumulative epsilon after rounds `at` (default every round 1..rounds) and the epsilon of one round.

    RDP composes linearly (T rounds have T times one round's RDP at every order), so the whole curve costs
    one accountant call plus the (eps, delta) conversion per point; PLD composes afresh for every point
    (~0.5 s each), so give `at` a few round counts for long PLD curves.
    """
    _check(sampling, accountant, clients_per_round, num_clients)
    ts = np.arange(1, rounds + 1) if at is None else np.asarray(sorted(set(int(t) for t in at)))
    if noise_multiplier <= 0:
        return EpsilonCurve(ts, np.full(ts.shape, np.inf), float("inf"), delta)
    event = round_event(noise_multiplier, clients_per_round, num_clients, sampling)
    one = make_accountant(accountant, sampling)
    with _quiet_absl():
        one.compose(event, 1)
        per_round = float(one.get_epsilon(delta))
        orders, rdp1 = getattr(one, "_orders", None), getattr(one, "_rdp", None)
        if accountant == "rdp" and orders is not None and rdp1 is not None:
            cumulative = [rdp.rdp_privacy_accountant.compute_epsilon(orders, t * rdp1, delta)[0] for t in ts]
        else:  # PLD (or an RDP accountant without the attributes this relies on): compose afresh per point
            cumulative = [
                epsilon(
                    noise_multiplier,
                    t,
                    clients_per_round,
                    num_clients,
                    delta,
                    sampling=sampling,
                    accountant=accountant,
                )
                for t in ts
            ]
    return EpsilonCurve(ts, np.asarray(cumulative, np.float64), per_round, delta)


def noise_multiplier_for_epsilon(
    target_epsilon: float,
    rounds: int,
    clients_per_round: int,
    num_clients: int,
    delta: float,
    *,
    sampling: str = "poisson",
    accountant: str = "rdp",
    tol: float = 1e-4,
) -> float:
    """The smallest noise multiplier z whose `rounds` rounds stay within (target_epsilon, delta), by
    `dp_accounting.calibrate_dp_mechanism` (Brent's method on the accountant's epsilon)."""
    _check(sampling, accountant, clients_per_round, num_clients)
    with _quiet_absl():
        z = dp_accounting.calibrate_dp_mechanism(
            lambda: make_accountant(accountant, sampling),
            lambda z: dp_accounting.SelfComposedDpEvent(
                round_event(z, clients_per_round, num_clients, sampling), int(rounds)
            ),
            target_epsilon,
            delta,
            dp_accounting.LowerEndpointAndGuess(1e-3, 1.0),
            tol=tol,
        )
    return float(z)
