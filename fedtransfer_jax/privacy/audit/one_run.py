"""Empirical privacy audit in one training run, beside the accountant (`privacy.accounting`).

Steinke, Nasr & Jagielski 2023, "Privacy auditing with one (1) training run" (NeurIPS): m canaries, each
included in the training run independently with probability 1/2 (S_i in {-1, +1}); after the ONE run the
auditor scores every canary, guesses "in" for the k+ highest scores and "out" for the k- lowest (abstaining on
the rest, r = k+ + k- guesses) and counts the v correct guesses. If the run is (eps, delta)-DP in each
canary's inclusion, their Theorem 3.3 bounds

    P[v or more correct] <= P[Binomial(r, e^eps / (1 + e^eps)) >= v]
                            + 2 m delta max_{i=1..v} P[v - i <= Binomial(r, e^eps / (1 + e^eps)) < v] / i

so every eps whose bound is below beta is rejected at confidence 1 - beta; `epsilon_lower_bound` returns the
largest rejected eps (their Appendix D algorithm: bisection on eps). Pure numpy/scipy: `p_value`,
`epsilon_lower_bound`, `guess_from_scores`, `audit_scores`.

Applied to DP-FedAvg (`audit_dp_fedavg`): m canary CLIENTS beside a few real clients of a toy linear model,
each canary included with probability 1/2 (an excluded canary holds no data: weight 0, it contributes
nothing). A canary's update is a Dirac "gradient canary" (Steinke et al., Sec. 6: zero everywhere but one
coordinate of its own, with a random sign) of norm >= clip, so the aggregator clips it to exactly C. The run
is the project's own: `fl.federated_round.build_round` with every client every round (q = 1: the
accountant's `sampling='none'`, add/remove-one neighbours = a canary in or out) and `privacy.dp.dp_fedavg`
with a fixed clip. The white-box score of canary i is <u_i, theta_R - theta_0> (FedAvg's server lr 1: the sum
of the released noised means). `--noise_scale 0` (or `mechanism='noise_off'`) runs the aggregator without
noise while the report still claims the configured z: the audit must catch that.

What to expect: the bound is sound but loose for the Gaussian mechanism. It treats the run as if it were
randomized response, so even with perfect white-box scores (a Dirac canary against isotropic noise is exactly
the Gaussian mechanism's worst case) it stays about 2x below the accountant. `fdp_one_run` (Mahloujifar,
Melis & Chaudhuri 2024, "Auditing f-differential privacy in one run") tests the Gaussian trade-off curve
instead; every row carries its bound beside Steinke's: `mu_lower_bound` against `mu_accountant` (R rounds
of the Gaussian mechanism without sampling are exactly sqrt(R) / z - GDP) and `epsilon_lower_bound_fdp`, the
epsilon at delta of the Gaussian curve it refutes (a bound for Gaussian-shaped claims such as this
accountant's; Steinke's holds against any (eps, delta) claim). Measured with this module (4 rounds, all
clients every round, delta = 1e-5, confidence 0.95 for each bound; accountant = RDP, the project's default;
PLD equals the exact GDP epsilon here; seeds 0-4; seconds: one canary run on 2 busy CPU cores):

    canaries  z  accountant eps  mu   Steinke      f-DP         f-DP         RDP eps / eps-hat      seconds
                 (RDP / PLD)     acc  eps-hat      mu-hat       eps-hat      Steinke    f-DP
    1000      4  2.17 / 1.99     0.5  0.44 - 0.87  0.18 - 0.31  0.66 - 1.17  2.5 - 4.9  1.85 - 3.29   1
    10000     4  2.17 / 1.99     0.5  0.84 - 1.12  0.28 - 0.35  1.06 - 1.36  1.9 - 2.6  1.59 - 2.04   2
    30000     4  2.17 / 1.99     0.5  0.92 - 1.13  0.29 - 0.35  1.07 - 1.33  1.9 - 2.4  1.63 - 2.02   9
    100000    4  2.17 / 1.99     0.5  0.95 - 1.01  0.39 - 0.41  1.50 - 1.59  2.1 - 2.3  1.36 - 1.44   70 - 90
    10000     8  1.01 / 0.93     .25  0.31 - 0.54  0.11 - 0.19  0.39 - 0.68  1.9 - 3.3  1.49 - 2.59   3
    30000     2  4.73 / 4.38     1.0  1.97 - 2.15  0.62 - 0.78  2.54 - 3.31  2.2 - 2.4  1.43 - 1.86   9
    1000      -  noise off, claims z = 16 (eps 0.48, mu 0.125): Steinke 4.53; f-DP mu-hat 1.61, eps-hat 7.66
                 (all guesses correct; both flag `violates_claim` / `violates_claim_fdp`)

so with Steinke's bound "within 2x" is reached only by lucky seeds, and more canaries do not close the gap
(an idealised simulation of the same scores with 10^5 canaries gives 2.1 - 2.2 against PLD). The f-DP bound
is 1.17 - 1.61x larger on the same scores and keeps improving with more canaries: within 2x of the RDP
accountant for 7 of 10 seeds at 10^4 - 3 x 10^4 canaries (z = 4; worst 2.04; against PLD all of them,
1.47 - 1.88), every seed at 10^5 (1.36 - 1.44) and at z = 2; not yet at z = 8 with 10^4 canaries.

    python -m fedtransfer_jax.privacy.audit.one_run --out DIR [--noise 1.0 --canaries 1000 --rounds 4 ...]

writes DIR/audit.json: one row for the mechanism as configured and one for the broken (noise-free) one.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import NamedTuple, Sequence

import numpy as np
from scipy import special, stats

from fedtransfer_jax.privacy.audit import fdp_one_run
from fedtransfer_jax.privacy.audit.guesses import DEFAULT_FRACTIONS, guess_from_scores  # noqa: F401 (API)

# --------------------------------------------------------------------------------------------------------------
# The bound (pure numpy / scipy).


def p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """Steinke et al. 2023, Thm. 3.3: an upper bound on P[>= v of r guesses correct] under (eps, delta)-DP, m
    canaries each included w.p. 1/2 (the p-value of observing v)."""
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= v <= r <= m, got v={v}, r={r}, m={m}")
    if eps < 0 or not 0 <= delta <= 1:
        raise ValueError(f"need eps >= 0 and 0 <= delta <= 1, got {eps}, {delta}")
    q = float(special.expit(eps))  # accuracy of eps-DP randomized response
    p = float(stats.binom.sf(v - 1, r, q))  # P[Binomial(r, q) >= v]
    if delta > 0 and v > 0:
        i = np.arange(1, v + 1)
        # cumsum_i P[Binomial = v - i] = P[v - i <= Binomial < v]
        alpha = float(np.max(np.cumsum(stats.binom.pmf(v - i, r, q)) / i))
        p += 2.0 * m * delta * alpha
    return min(p, 1.0)


def epsilon_lower_bound(m: int, r: int, v: int, delta: float, beta: float = 0.05, iters: int = 60) -> float:
    """The largest eps that `p_value` rejects at level beta (so the run is not (eps, delta)-DP, with confidence
    1 - beta); 0 when not even eps = 0 is rejected. Bisection as in Steinke et al., Appendix D."""
    if not 0 < beta < 1:
        raise ValueError(f"need 0 < beta < 1, got {beta}")
    if p_value(m, r, v, 0.0, delta) >= beta:
        return 0.0
    lo, hi = 0.0, 1.0
    while p_value(m, r, v, hi, delta) < beta:  # p_value -> 1 as eps grows (unless v = 0, handled above)
        lo, hi = hi, 2.0 * hi
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if p_value(m, r, v, mid, delta) < beta:
            lo = mid
        else:
            hi = mid
    return lo




def audit_scores(
    scores: np.ndarray,
    included: np.ndarray,
    delta: float,
    beta: float = 0.05,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
) -> dict:
    """The one-run lower bound from membership scores: k+ = k- = round(f m / 2) for every f in `fractions`,
    each tested at level beta / len(fractions) (Bonferroni: choosing the best k after seeing the scores keeps
    the overall confidence 1 - beta). Returns the best row: epsilon_lower_bound, guesses r, correct v, k+, k-,
    and every row under `all`."""
    scores = np.asarray(scores, np.float64)
    included = np.asarray(included, bool)
    m = scores.shape[0]
    if included.shape != (m,):
        raise ValueError(f"scores and included must both be [m], got {scores.shape}, {included.shape}")
    level = beta / len(fractions)
    rows = []
    for f in fractions:
        k = max(1, min(m // 2, int(round(f * m / 2))))
        g = guess_from_scores(scores, k, k)
        truth = np.where(included, 1, -1)
        v = int(np.sum(g == truth))
        r = int(np.sum(g != 0))
        rows.append(
            {
                "fraction": float(f),
                "k_plus": k,
                "k_minus": k,
                "guesses": r,
                "correct": v,
                "epsilon_lower_bound": epsilon_lower_bound(m, r, v, delta, level),
            }
        )
    best = max(rows, key=lambda row: (row["epsilon_lower_bound"], row["correct"] / row["guesses"]))
    return {**best, "canaries": m, "delta": float(delta), "confidence": 1.0 - beta, "all": rows}


# --------------------------------------------------------------------------------------------------------------
# DP-FedAvg with canary clients (the project's round engine and DP aggregator).


class CanaryRun(NamedTuple):
    scores: np.ndarray  # float64 [m]: <u_i, theta_R - theta_0>
    included: np.ndarray  # bool [m]
    real_loss: float  # mean squared error of the final model on the real clients' data (utility)
    initial_loss: float
    seconds: float


def _toy_problem(canaries: int, real_clients: int, examples: int, task_dim: int, dim: int, seed: int):
    """Real clients: a linear regression y = x . w* + noise on the first `task_dim` coordinates. Canary
    clients: `examples` placeholder examples (real iff included) and their Dirac coordinate and sign."""
    rng = np.random.default_rng([seed, 0x0A0D])
    c = real_clients + canaries
    w_star = rng.normal(size=task_dim) / np.sqrt(task_dim)
    x = np.zeros((c, examples, task_dim), np.float32)
    x[:real_clients] = rng.normal(size=(real_clients, examples, task_dim))
    y = np.zeros((c, examples), np.float32)
    y[:real_clients] = x[:real_clients] @ w_star + 0.1 * rng.normal(size=(real_clients, examples))
    included = rng.random(canaries) < 0.5
    mask = np.zeros((c, examples), bool)
    mask[:real_clients] = True
    mask[real_clients:] = included[:, None]
    coord = np.full(c, -1, np.int32)
    coord[real_clients:] = rng.permutation(dim)[:canaries]  # one coordinate of its own per canary
    sign = np.ones(c, np.float32)
    sign[real_clients:] = rng.choice([-1.0, 1.0], size=canaries)
    data = {"x": x, "y": y, "mask": mask, "canary_coord": coord, "canary_sign": sign}
    return data, included


def _canary_algorithm(inner, dim: int, canary_norm: float):
    """`inner` (FedAvg) whose canary clients (canary_coord >= 0) send sign * canary_norm * e_coord instead of
    their trained delta; the canary keys are removed from every client's data before `inner` sees it."""
    import jax
    import jax.numpy as jnp

    from fedtransfer_jax.fl.algorithms.base import ClientOutput

    def client_update(payload, client_state, data, client_id, rng):
        data = dict(data)
        coord, sign = data.pop("canary_coord"), data.pop("canary_sign")
        out = inner.client_update(payload, client_state, data, client_id, rng)
        canary = {"w": sign * jnp.float32(canary_norm) * jax.nn.one_hot(jnp.maximum(coord, 0), dim)}
        message = jax.tree_util.tree_map(lambda c, d: jnp.where(coord >= 0, c, d), canary, out.message)
        return ClientOutput(message, out.weight, out.state, out.loss)

    return inner._replace(client_update=client_update)


def run_canary_federation(
    *,
    canaries: int,
    rounds: int,
    noise_multiplier: float,
    clip_norm: float = 1.0,
    real_clients: int = 8,
    examples: int = 4,
    task_dim: int = 16,
    dim: int | None = None,
    local_steps: int = 2,
    client_lr: float = 0.1,
    canary_norm_factor: float = 2.0,
    seed: int = 0,
    strategy: str = "auto",
) -> CanaryRun:
    """One DP-FedAvg training run (all clients every round, fixed clip) with `canaries` canary clients, each
    included w.p. 1/2; returns the white-box canary scores. `noise_multiplier` is the noise the aggregator
    really adds (0 for the broken mechanism). `dim` (default max(2 canaries, 4 task_dim)) is the model size:
    a canary's coordinate lies outside the task's `task_dim` coordinates only with chance 1 - task_dim / dim."""
    import jax.numpy as jnp
    import optax

    from fedtransfer_jax.fl.algorithms.base import LocalTraining
    from fedtransfer_jax.fl.algorithms.fedavg import fedavg
    from fedtransfer_jax.fl.federated_round import RoundConfig, build_round, init_round_state
    from fedtransfer_jax.privacy.dp import dp_fedavg

    t0 = time.time()
    dim = int(dim or max(2 * canaries, 4 * task_dim))
    if dim < max(canaries, task_dim):
        raise ValueError(f"dim={dim} must be >= canaries ({canaries}) and task_dim ({task_dim})")
    data, included = _toy_problem(canaries, real_clients, examples, task_dim, dim, seed)

    def loss_fn(params, batch, rng):
        del rng
        m = batch["mask"].astype(jnp.float32)
        err = batch["x"] @ params["w"][:task_dim] - batch["y"]
        return (jnp.square(err) * m).sum() / jnp.maximum(m.sum(), 1.0), {}

    local = LocalTraining(loss_fn, optax.sgd(client_lr), local_steps=local_steps, batch_size=examples)
    alg = _canary_algorithm(fedavg(local), dim, canary_norm_factor * clip_norm)
    num_clients = real_clients + canaries
    aggregator = dp_fedavg(clip_norm, noise_multiplier, real_clients + canaries / 2.0)
    params = {"w": jnp.zeros((dim,), jnp.float32)}
    state = init_round_state(alg, params, num_clients, aggregator)
    round_fn = build_round(alg, RoundConfig(num_clients, strategy), seed=seed, aggregator=aggregator)
    dev = {k: jnp.asarray(v) for k, v in data.items()}
    for _ in range(rounds):
        state, _ = round_fn(state, dev)
    w = np.asarray(alg.get_params(state.server)["w"], np.float64)  # theta_R - theta_0 (theta_0 = 0)
    scores = data["canary_sign"][real_clients:] * w[data["canary_coord"][real_clients:]]

    def real_mse(wv):
        x, y = data["x"][:real_clients], data["y"][:real_clients]
        return float(np.mean(np.square(x @ wv[:task_dim] - y)))

    return CanaryRun(scores, included, real_mse(w), real_mse(np.zeros(dim)), time.time() - t0)


def audit_dp_fedavg(
    *,
    noise_multiplier: float,
    canaries: int,
    rounds: int,
    delta: float = 1e-5,
    beta: float = 0.05,
    noise_scale: float = 1.0,
    clip_norm: float = 1.0,
    seed: int = 0,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    **run_kwargs,
) -> dict:
    """One canary run and its audit row: the accountant's epsilon for the CLAIMED noise multiplier (RDP, the
    project's default, and PLD), the one-run lower bound, and the counts behind it. The aggregator adds
    `noise_scale * noise_multiplier` (1: as claimed; 0: the broken, noise-free mechanism)."""
    from fedtransfer_jax.privacy import accounting

    actual = float(noise_multiplier) * float(noise_scale)
    run = run_canary_federation(
        canaries=canaries, rounds=rounds, noise_multiplier=actual, clip_norm=clip_norm, seed=seed, **run_kwargs
    )
    audit = audit_scores(run.scores, run.included, delta, beta, fractions)
    # The f-DP bound (Mahloujifar et al. 2024) on the same scores, each bound at confidence 1 - beta on its own.
    fdp = fdp_one_run.audit_scores(run.scores, run.included, delta, beta, fractions)
    n = run_kwargs.get("real_clients", 8) + canaries
    eps = {
        acc: accounting.epsilon(noise_multiplier, rounds, n, n, delta, sampling="none", accountant=acc)
        for acc in ("rdp", "pld")
    }
    lb = audit["epsilon_lower_bound"]
    # Without sampling, R rounds of the Gaussian mechanism (sensitivity C, noise z C) compose to exactly
    # sqrt(R) / z - GDP (Dong, Roth & Su 2022): the curve the f-DP audit tests against.
    mu_acc = math.sqrt(rounds) / noise_multiplier if noise_multiplier > 0 else math.inf
    eps_gdp = fdp_one_run.gdp_epsilon(mu_acc, delta) if math.isfinite(mu_acc) else math.inf
    mu_lb, lb_fdp = fdp["mu_lower_bound"], fdp["epsilon_lower_bound"]
    if noise_scale == 1.0:
        mechanism = f"dp_fedavg(z={noise_multiplier:g}, clip={clip_norm:g})"
    elif noise_scale == 0.0:
        mechanism = f"BROKEN: dp_fedavg with noise off (claims z={noise_multiplier:g})"
    else:
        mechanism = f"BROKEN: dp_fedavg with z={actual:g} (claims z={noise_multiplier:g})"
    return {
        "mechanism": mechanism,
        "noise_multiplier_claimed": float(noise_multiplier),
        "noise_multiplier_actual": actual,
        "clip_norm": float(clip_norm),
        "rounds": int(rounds),
        "sampling_rate": 1.0,
        "accountant_epsilon": eps["rdp"],
        "accountant_epsilon_pld": eps["pld"],
        "epsilon_lower_bound": lb,
        "delta": float(delta),
        "canaries": int(canaries),
        "included": int(run.included.sum()),
        "guesses": audit["guesses"],
        "correct": audit["correct"],
        "k_plus": audit["k_plus"],
        "k_minus": audit["k_minus"],
        "confidence": audit["confidence"],
        "ratio_accountant_to_lower_bound": (eps["rdp"] / lb) if lb > 0 else float("inf"),
        "ratio_pld_to_lower_bound": (eps["pld"] / lb) if lb > 0 else float("inf"),
        "violates_claim": bool(lb > eps["rdp"]),
        "mu_accountant": mu_acc,
        "accountant_epsilon_gdp": eps_gdp,
        "mu_lower_bound": mu_lb,
        "epsilon_lower_bound_fdp": lb_fdp,
        "guesses_fdp": fdp["guesses"],
        "correct_fdp": fdp["correct"],
        "ratio_accountant_to_fdp_lower_bound": (eps["rdp"] / lb_fdp) if lb_fdp > 0 else float("inf"),
        "ratio_pld_to_fdp_lower_bound": (eps["pld"] / lb_fdp) if lb_fdp > 0 else float("inf"),
        "ratio_mu_accountant_to_lower_bound": (mu_acc / mu_lb) if mu_lb > 0 else float("inf"),
        "violates_claim_fdp": bool(mu_lb > mu_acc),
        "real_clients_mse": {"initial": run.initial_loss, "final": run.real_loss},
        "seconds": run.seconds,
        "all_guess_sizes": audit["all"],
        "all_guess_sizes_fdp": fdp["all"],
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m fedtransfer_jax.privacy.audit.one_run", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--out", required=True, help="folder for audit.json")
    p.add_argument("--noise", type=float, default=1.0, help="the claimed noise multiplier z")
    p.add_argument("--canaries", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--delta", type=float, default=1e-5)
    p.add_argument("--beta", type=float, default=0.05, help="1 - confidence")
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--real_clients", type=int, default=8)
    p.add_argument("--noise_scale", type=float, default=1.0, help="actual noise / claimed (0: noise off)")
    p.add_argument("--no_broken", action="store_true", help="skip the broken-mechanism (noise off) row")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    from fedtransfer_jax.runtime import io_utils

    a = parse_args(argv)
    common = dict(
        noise_multiplier=a.noise,
        canaries=a.canaries,
        rounds=a.rounds,
        delta=a.delta,
        beta=a.beta,
        clip_norm=a.clip,
        seed=a.seed,
        real_clients=a.real_clients,
    )
    row = audit_dp_fedavg(noise_scale=a.noise_scale, **common)
    per_size = ("all_guess_sizes", "all_guess_sizes_fdp")
    report = {k: row[k] for k in row if k not in per_size}
    report["method"] = (
        "one-run audit (Steinke, Nasr & Jagielski 2023) and its f-DP (Gaussian) version (Mahloujifar, Melis &"
        " Chaudhuri 2024), Dirac gradient canary clients"
    )
    report.update({k: row[k] for k in per_size})
    if not a.no_broken:
        broken = audit_dp_fedavg(noise_scale=0.0, **common)
        report["broken_mechanism"] = {k: broken[k] for k in broken if k not in per_size}
    os.makedirs(a.out, exist_ok=True)
    io_utils.write_json_atomic(os.path.join(a.out, "audit.json"), {"empirical_dp": report})
    rows = [report] + ([report["broken_mechanism"]] if "broken_mechanism" in report else [])
    for r in rows:
        print(
            f"{r['mechanism']}: accountant eps {r['accountant_epsilon']:.3f} (pld {r['accountant_epsilon_pld']:.3f}),"
            f" one-run lower bound {r['epsilon_lower_bound']:.3f} at delta={r['delta']:g}, confidence"
            f" {r['confidence']:.2f}: {r['correct']}/{r['guesses']} correct guesses of m={r['canaries']} canaries,"
            f" {r['rounds']} rounds ({r['seconds']:.1f} s)"
        )
        print(
            f"  f-DP (Gaussian) audit: mu lower bound {r['mu_lower_bound']:.3f} against the accountant's mu"
            f" {r['mu_accountant']:.3f}, epsilon lower bound {r['epsilon_lower_bound_fdp']:.3f}"
            f" ({r['correct_fdp']}/{r['guesses_fdp']} correct)"
        )
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
