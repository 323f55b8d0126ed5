"""Federations of thousands: rounds that grow with the clients per round K, not with the population N.

The trainer of `runs/train.py` holds every client's data on the device and samples K of them inside the jitted
round. For a population of 10^3 .. 10^5 simulated clients (`data/population.py`) that would put all N clients'
tiles in the round's arguments. Here the host samples round r's K clients (`sample_round_clients`: a function
of (seed, r, N, K) only), renders only their tiles (the next round's on a host thread while the current round
runs) and calls the same jitted round (`fl.federated_round.build_round`) with C = K clients that all take part
(clients_per_round = K, so its in-jit sampling is the identity), so a round costs O(K) in time and memory.

Limits: the algorithm must be stateless per client (FedAvg, the FedOpt family, DP-FedAvg): the round state
here holds K slots that change owner every round, and per-client state for 10^5 clients (SCAFFOLD, FedDyn) is
out of scope (`check_stateless`). No mid-cell checkpoints: a study resumes per cell (a finished cell is
stored in `<workdir>/cells/<cell>.json` and never rerun; a killed cell restarts from its round 0).

DP: DP-FedAvg (`privacy/dp.py`, built by `engine.build_aggregation`) with its fixed denominator m = K (the K
that actually trains), and epsilon from `engine.privacy_accounting` (dp-accounting RDP): sampling exactly K of
N without replacement, q = K / N, replace-one neighbours, and the number without amplification (the server
knows the sample) next to it; delta defaults to 1 / (10 N) (`dp_delta`).

A study (`experiments/many_clients.py`, `launch.py` with `config.runner = "population"`) runs a grid of cells
(N, K, z, seed) and writes summary.json / summary.md with ARI-vs-K and ARI-vs-epsilon tables.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import multiprocessing
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fedtransfer_jax.data import synthetic
from fedtransfer_jax.data.population import Population, PopulationSpec
from fedtransfer_jax.fl import federated_round, strategy as strategy_lib
from fedtransfer_jax.metrics import postprocess_select as pps
from fedtransfer_jax.runs import engine, evaluation, inference
from fedtransfer_jax.runtime import interrupts, io_utils, provenance, workdir as workdir_lib

SAMPLE_TAG = 0x5A3B1  # numpy seed word of the host's client sampling
HELDOUT_FIRST = 10**8  # held-out population clients: ids from here (beyond any population), same for every N
UNSEEN_SEED_TAG = 7919  # the unseen lab's data seed: config seed + this (never a training seed)
RUNNER = "population"


# ----------------------------------------------------------------------------------------------------------
# Sampling and data.
# ----------------------------------------------------------------------------------------------------------
def sample_round_clients(seed: int, round_idx: int, num_clients: int, k: int) -> np.ndarray:
    """Round `round_idx`'s K distinct client ids of N, uniformly without replacement: a function of
    (seed, round, N, K) only (`default_rng([seed, SAMPLE_TAG, round])`)."""
    if not 0 < k <= num_clients:
        raise ValueError(f"need 0 < clients_per_round <= num_clients, got K={k}, N={num_clients}")
    rng = np.random.default_rng([int(seed), SAMPLE_TAG, int(round_idx)])
    return rng.choice(int(num_clients), size=int(k), replace=False)


def population_spec(config: ml_collections.ConfigDict, num_clients: int) -> PopulationSpec:
    p = config.population
    return PopulationSpec(
        num_clients=int(num_clients),
        seed=int(p.seed),
        tile_size=int(p.tile_size),
        tiles_per_client=tuple(int(x) for x in p.tiles_per_client),
        diameter_px=tuple(float(x) for x in p.diameter_px),
    )


def dp_delta(config: ml_collections.ConfigDict, num_clients: int) -> float:
    """`dp.delta`, or (0 = auto) 1 / (10 N): below 1/N, as a user-level guarantee over N clients needs."""
    d = float(config.dp.get("delta", 0.0))
    return d if d > 0 else 1.0 / (10.0 * num_clients)


def initial_clip_norm(config: ml_collections.ConfigDict, num_params: int) -> float:
    """DP-FedAvg's initial clip norm: `dp.clip_norm`, or (0 = auto) Adam's bound on a client's update,
    fl.client_lr x fl.local_steps x sqrt(num_params).

    Why auto: every Adam step moves each coordinate by about the learning rate (exactly so on the first
    step), so that bound is the size of an unclipped update, known without looking at any client's data.
    A fixed small start (0.1 against ~0.7 for the CPU cell's U-Net) clipped every update ~7x and adaptive
    clipping, at most x exp(clip_lr / 2) a round, had not caught up in 10 rounds: measured on development
    seed 100 (N = 100,000, K = 300), clipping alone (z = 0.01) cost 56 % of FedAvg's post-processed ARI and
    the auto start with z = 1 lost none (docs/many_clients_cpu.md)."""
    c = float(config.dp.clip_norm)
    if c > 0:
        return c
    if str(config.fl.client_optimizer) != "adam":
        raise ValueError(
            "config key dp.clip_norm: 0 (auto: Adam's update bound) needs fl.client_optimizer='adam'; "
            f"got {config.fl.client_optimizer!r}: set dp.clip_norm > 0"
        )
    return float(config.fl.client_lr) * int(config.fl.local_steps) * math.sqrt(int(num_params))


def method_spec(
    config: ml_collections.ConfigDict, z: float, num_clients: int, *, num_params: int = 0
) -> engine.MethodSpec:
    """FedAvg (z = 0) or DP-FedAvg with noise multiplier z, as an engine method spec (`num_params`: the
    model's size, for the auto initial clip norm)."""
    algorithm = str(config.fl.get("algorithm", "fedavg"))
    if z <= 0:
        return engine.MethodSpec(name="fedavg", algorithm=algorithm)
    dp = config.dp
    aggregator = {
        "name": "dp",
        "clip_norm": initial_clip_norm(config, num_params),
        "noise_multiplier": float(z),
        "adaptive": bool(dp.adaptive),
        "target_quantile": float(dp.target_quantile),
        "clip_lr": float(dp.clip_lr),
        "clipped_count_stddev": float(dp.clipped_count_stddev),
        "report_loss": False,
        "delta": dp_delta(config, num_clients),
        "accountant": str(dp.accountant),
    }
    return engine.MethodSpec(name=f"dp_fedavg_z{z:g}", algorithm=algorithm, aggregator=aggregator)


def check_stateless(algorithm, params) -> None:
    """Per-client state of 10^5 clients is out of scope: the K round slots change owner every round."""
    leaves = jax.tree_util.tree_leaves(jax.eval_shape(algorithm.client_init, params))
    if leaves:
        raise ValueError(
            f"config key fl.algorithm: {algorithm.name!r} keeps per-client state; population rounds need a "
            "stateless algorithm (fedavg, fedavgm, fedadam, fedyogi)"
        )


# ----------------------------------------------------------------------------------------------------------
# One federation of a population.
# ----------------------------------------------------------------------------------------------------------
class PopulationTrainer:
    """Everything the cells of a study share: model, loss, init params, jitted probabilities, mesh."""

    def __init__(self, config: ml_collections.ConfigDict, *, mesh: Any = "auto"):
        self.config = config
        self.model = engine.build_model(config)
        self.loss_fn = engine.make_loss(config, self.model)
        self.tile = int(config.population.tile_size)
        self.prob_fn = inference.make_prob_fn(self.model)
        if mesh == "auto":
            n = jax.device_count()
            mesh = federated_round.make_client_mesh(n) if n > 1 and config.fl.get("shard_clients", True) else None
        self.mesh = mesh

    def init_params(self, seed: int):
        cfg = ml_collections.ConfigDict(self.config.to_dict())
        cfg.seed = int(seed)
        return engine.init_params(cfg, self.model, self.tile)

    def place(self, data) -> dict:
        arrays = dict(data._asdict())
        if self.mesh is None:
            return {k: jnp.asarray(v) for k, v in arrays.items()}
        return {k: federated_round.shard_client_axis(np.asarray(v), self.mesh) for k, v in arrays.items()}

    def train(
        self,
        population: Population,
        *,
        num_clients: int,
        clients_per_round: int,
        noise_multiplier: float,
        rounds: int,
        seed: int,
        prefetch: bool = True,
        on_round=None,
    ) -> dict:
        """`rounds` rounds over the first `num_clients` clients of `population`, K = `clients_per_round` per
        round. Returns {'params', 'losses', 'timing', 'accounting', 'strategy'}."""
        config, k = self.config, int(clients_per_round)
        if num_clients > len(population):
            raise ValueError(f"num_clients={num_clients} exceeds the population's {len(population)} clients")
        params0 = self.init_params(seed)
        num_params = sum(int(x.size) for x in jax.tree_util.tree_leaves(params0))
        spec = method_spec(config, float(noise_multiplier), num_clients, num_params=num_params)
        local = engine.local_training(config, self.loss_fn)
        algorithm = engine.build_algorithm(spec, local, float(config.fl.client_lr))
        check_stateless(algorithm, params0)
        aggregator, protocol = engine.build_aggregation(spec, k)
        cfg = engine.round_config(config, k, federated=True, mesh=self.mesh)
        if cfg.strategy == "auto" and self.mesh is None:
            shapes = {
                "images": jax.ShapeDtypeStruct((k, population.spec.max_tiles, self.tile, self.tile, 3), jnp.uint8),
                "labels": jax.ShapeDtypeStruct((k, population.spec.max_tiles, self.tile, self.tile), jnp.uint8),
                "mask": jax.ShapeDtypeStruct((k, population.spec.max_tiles), jnp.bool_),
            }
            probe = federated_round.round_compiler(
                algorithm, params0, shapes, seed=int(seed), aggregator=aggregator, protocol=protocol
            )
            plan = strategy_lib.plan_round("auto", k, compile_round=probe)
            cfg = cfg._replace(strategy=plan.strategy, chunk_size=plan.chunk)
        round_fn = federated_round.build_round(
            algorithm, cfg, seed=int(seed), aggregator=aggregator, protocol=protocol, mesh=self.mesh
        )
        slots = k if self.mesh is None else k + (-k) % int(self.mesh.devices.size)
        state = federated_round.init_round_state(algorithm, params0, slots, aggregator=aggregator, mesh=self.mesh)

        workers = int(config.population.get("render_workers", 0))
        # Spawned (not forked) processes: forking a process whose JAX runtime has threads is unsafe.
        renderers = (
            concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
            if workers > 0
            else None
        )

        def render(r: int):
            t0 = time.perf_counter()
            ids = sample_round_clients(seed, r, num_clients, k)
            return population.client_data(ids, renderers), time.perf_counter() - t0

        losses, round_s, render_s, wait_s = [], [], [], []
        pool = concurrent.futures.ThreadPoolExecutor(1) if prefetch else None
        try:
            pending = pool.submit(render, 0) if pool else None
            for r in range(rounds):
                interrupts.check()  # a Ctrl-C whose KeyboardInterrupt a finaliser swallowed
                t_wait = time.perf_counter()
                data, t_render = pending.result() if pool else render(r)
                wait_s.append(time.perf_counter() - t_wait)
                render_s.append(t_render)
                if pool and r + 1 < rounds:
                    pending = pool.submit(render, r + 1)  # rendered while this round runs
                t0 = time.perf_counter()
                state, metrics = round_fn(state, self.place(data))
                loss = float(metrics["loss"])  # waits for the round
                round_s.append(time.perf_counter() - t0)
                losses.append(loss)
                if on_round is not None:
                    on_round(r + 1, rounds, loss)
        finally:
            if pool:
                pool.shutdown(wait=True, cancel_futures=True)
            if renderers is not None:
                renderers.shutdown(wait=True, cancel_futures=True)
        params = jax.device_get(algorithm.get_params(state.server))
        accounting = engine.privacy_accounting(spec, rounds=rounds, clients_per_round=k, num_clients=num_clients)
        if accounting is not None and k < num_clients:
            # The engine accounts the fixed-size sample as sampling without replacement with replace-one
            # neighbours (sensitivity 2C: the Gaussian event gets z / 2, privacy/accounting.py), which for small
            # z exceeds even the unamplified number. The usual reference (McMahan et al. 2018; Poisson sampling
            # with rate q = K / N, add/remove-one, z) is reported next to it.
            from fedtransfer_jax.privacy import accounting as accounting_lib  # noqa: PLC0415

            accounting["epsilon_poisson_q"] = accounting_lib.epsilon(
                float(noise_multiplier), rounds, k, num_clients, accounting["delta"],
                sampling="poisson", accountant=accounting["accountant"],
            )
        steady = round_s[1:] or round_s
        return {
            "params": params,
            "losses": losses,
            "strategy": self._plan(cfg),
            "accounting": accounting,
            "timing": {
                "first_round_s": round_s[0] if round_s else 0.0,  # includes compilation
                "round_s_median": float(np.median(steady)) if steady else 0.0,
                "render_s_median": float(np.median(render_s)) if render_s else 0.0,
                "host_wait_s_total": float(np.sum(wait_s)),  # time the rounds waited for tiles
            },
        }

    def _plan(self, cfg) -> dict:
        devices = 1 if self.mesh is None else int(self.mesh.devices.size)
        plan = federated_round.client_plan(cfg, devices)
        return {"strategy": plan.strategy, "chunk": plan.chunk, "devices": devices}

    def evaluate(self, params, test_sets: dict) -> dict:
        """Threshold metrics and post-processed ones (the built-in post-processing defaults, no choice on
        validation tiles: a population has no shared validation set) on every test set."""
        kw = dict(threshold=float(self.config.eval.threshold), tolerance=float(self.config.eval.tolerance))
        out = {}
        for name, (images, labels) in test_sets.items():
            raw = evaluation.evaluate_split(self.prob_fn, params, images, labels, **kw)
            post = evaluation.evaluate_split_postprocessed(
                self.prob_fn, params, images, labels, pps.BUILTIN_DEFAULTS, tolerance=kw["tolerance"]
            )
            out[name] = {
                "ari": raw["ari"],
                "boundary_f1": raw["boundary_f1"],
                "ari_postprocessed": post["ari"],
                "boundary_f1_postprocessed": post["boundary_f1"],
                "tiles": int(len(images)),
            }
        return out


def make_test_sets(config: ml_collections.ConfigDict, population: Population) -> dict:
    """'heldout': tiles of `eval.heldout_clients` population clients never sampled (ids from HELDOUT_FIRST,
    the same for every N); 'unseen_lab': `eval.unseen_tiles` tiles of the unseen lab (tint by default, a style
    outside the population's prior)."""
    ev, tile = config.eval, int(config.population.tile_size)
    out = {}
    if int(ev.heldout_clients) > 0:
        out["heldout"] = population.held_out(int(ev.heldout_clients), first=HELDOUT_FIRST)
    if ev.unseen_lab and int(ev.unseen_tiles) > 0:
        images, labels, _ = synthetic.make_lab_examples(
            str(ev.unseen_lab), int(ev.unseen_tiles), tile, int(config.population.seed) + UNSEEN_SEED_TAG
        )
        out["unseen_lab"] = (images, labels)
    return out


# ----------------------------------------------------------------------------------------------------------
# The study: a grid of cells, resumable per cell.
# ----------------------------------------------------------------------------------------------------------
def cells(config: ml_collections.ConfigDict) -> list[dict]:
    """The grid (N, K, z, seed) in run order; K > N is skipped."""
    g = config.grid
    out = []
    for n in g.num_clients:
        for k in g.clients_per_round:
            if int(k) > int(n):
                continue
            for z in g.noise_multipliers:
                for s in g.seeds:
                    out.append({"N": int(n), "K": int(k), "z": float(z), "seed": int(s)})
    return out


def poisson_epsilon(cell: dict) -> float:
    """epsilon of a stored cell with Poisson sampling at q = K / N (inf without noise or without sampling)."""
    acc = cell.get("differential_privacy")
    if not acc:
        return math.inf
    if cell["K"] >= cell["N"]:
        return float(acc["epsilon"])
    from fedtransfer_jax.privacy import accounting as accounting_lib  # noqa: PLC0415

    return accounting_lib.epsilon(
        float(cell["z"]), int(cell["rounds"]), int(cell["K"]), int(cell["N"]), float(acc["delta"]),
        sampling="poisson", accountant=acc["accountant"],
    )


def cell_id(c: dict) -> str:
    return f"N{c['N']}_K{c['K']}_z{c['z']:g}_s{c['seed']}".replace(".", "p")


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Fails early, naming the key."""
    if config.get("runner", "") != RUNNER:
        raise ValueError(f"config key runner must be {RUNNER!r} for the population trainer")
    g = config.grid
    for key in ("num_clients", "clients_per_round", "noise_multipliers", "seeds"):
        if not len(g[key]):
            raise ValueError(f"config key grid.{key} must not be empty")
    if min(int(k) for k in g.clients_per_round) < 1:
        raise ValueError("config key grid.clients_per_round: every K must be >= 1")
    if min(float(z) for z in g.noise_multipliers) < 0:
        raise ValueError("config key grid.noise_multipliers: every z must be >= 0 (0 = no DP)")
    if not cells(config):
        raise ValueError("config keys grid.clients_per_round / grid.num_clients: every K exceeds every N")
    for key in ("rounds", "local_steps", "batch_size"):
        if int(config.fl[key]) < 1:
            raise ValueError(f"config key fl.{key} must be >= 1, got {config.fl[key]}")
    lo = int(config.population.tiles_per_client[0])
    if int(config.fl.batch_size) > int(config.population.tiles_per_client[1]):
        raise ValueError(
            f"config key fl.batch_size={config.fl.batch_size} exceeds the most tiles a client holds "
            f"(population.tiles_per_client={tuple(config.population.tiles_per_client)}); use <= {lo}"
        )
    population_spec(config, 1)  # the prior's own checks
    if "data" in config and config.data.get("intensity", "raw") != "raw":  # its clients are rendered raw
        raise ValueError("config key data.intensity: the population trainer feeds raw intensities; leave it 'raw'")
    if float(config.dp.clip_norm) < 0:
        raise ValueError(f"config key dp.clip_norm must be >= 0 (0 = auto), got {config.dp.clip_norm}")
    if float(config.dp.clip_norm) == 0 and any(float(z) > 0 for z in g.noise_multipliers):
        initial_clip_norm(config, 1)  # the auto rule's own check, before any cell runs


def run_study(config: ml_collections.ConfigDict, workdir: str, console=None, *, fresh_start: bool = False) -> dict:
    """Runs (or resumes) every cell of `config.grid` in `workdir`; writes cells/<cell>.json per finished cell
    and summary.json / summary.md (atomically) after each."""
    validate_config(config)
    config_json = io_utils.config_to_json(config)
    with workdir_lib.open_workdir(workdir, config_json, fresh_start=fresh_start):
        cell_dir = os.path.join(workdir, "cells")
        os.makedirs(cell_dir, exist_ok=True)
        grid = cells(config)
        n_max = max(c["N"] for c in grid)
        t0 = time.perf_counter()
        # One population of the largest N: client c is the same in every N (its parameters depend on (seed, c)
        # only), so the population of N is its first N clients.
        population = Population(population_spec(config, n_max))
        build_s = time.perf_counter() - t0
        trainer = PopulationTrainer(config)
        tests = make_test_sets(config, population)
        summary = {
            "status": "running",
            "config": config_json,
            "population": {
                "num_clients": n_max,
                "stored_bytes": population.nbytes,
                "bytes_per_client": population.nbytes / n_max,
                "build_s": build_s,
                "tile_size": population.spec.tile_size,
                "tiles_per_client": list(population.spec.tiles_per_client),
                "styles": list(population.spec.styles),
                "methods": list(population.spec.methods),
            },
            "test_sets": {k: int(len(v[0])) for k, v in tests.items()},
            "device": f"{jax.default_backend()}:{jax.device_count()}",
            "cells": {},
        }
        summary["provenance"] = provenance.record(workdir, summary["device"], jax.devices()[0].device_kind, config)
        # The floor every cell is read against: the untrained model of each seed on the same test sets.
        summary["untrained"] = {
            str(s): trainer.evaluate(trainer.init_params(s), tests) for s in sorted({c["seed"] for c in grid})
        }
        for c in grid:
            cid = cell_id(c)
            path = os.path.join(cell_dir, cid + ".json")
            if os.path.exists(path):  # finished before a kill: never rerun
                with open(path) as f:
                    done = json.load(f)
                if int(done.get("rounds", -1)) == int(config.fl.rounds):  # (more fl.rounds: rerun from 0)
                    if "epsilon_poisson_q" not in done:  # cells stored before that column existed
                        done["epsilon_poisson_q"] = poisson_epsilon(done)
                    summary["cells"][cid] = done
                    continue
            if console is not None:
                console.line(f"cell {cid}: N={c['N']} K={c['K']} z={c['z']:g} seed={c['seed']}")
            progress = console.progress(cid, int(config.fl.rounds)) if console is not None else None
            t_cell = time.perf_counter()
            try:
                res = trainer.train(
                    population,
                    num_clients=c["N"],
                    clients_per_round=c["K"],
                    noise_multiplier=c["z"],
                    rounds=int(config.fl.rounds),
                    seed=c["seed"],
                    prefetch=bool(config.get("prefetch", True)),
                    on_round=progress.update if progress is not None else None,
                )
            finally:
                if progress is not None:
                    progress.close()
            scores = trainer.evaluate(res["params"], tests)
            acc = res["accounting"]
            entry = {
                **c,
                "q": c["K"] / c["N"],
                "rounds": int(config.fl.rounds),
                "losses": res["losses"],
                "scores": scores,
                "epsilon": acc["epsilon"] if acc else math.inf,
                "epsilon_without_sampling_amplification": (
                    acc["epsilon_without_sampling_amplification"] if acc else math.inf
                ),
                "epsilon_poisson_q": acc.get("epsilon_poisson_q", acc["epsilon"]) if acc else math.inf,
                "delta": acc["delta"] if acc else None,
                "differential_privacy": acc,
                "timing": {**res["timing"], "cell_s": time.perf_counter() - t_cell},
                "strategy": res["strategy"],
            }
            io_utils.write_json_atomic(path, entry)
            summary["cells"][cid] = entry
            write_summary(workdir, summary)
        summary["status"] = "complete"
        write_summary(workdir, summary)
    return summary


# ----------------------------------------------------------------------------------------------------------
# Tables.
# ----------------------------------------------------------------------------------------------------------
def _mean(values) -> float:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(vals)) if vals else float("nan")


def _eps(x) -> float:
    """epsilon as stored: JSON has no infinity (io_utils writes None), so None is the non-private inf."""
    return math.inf if x is None else float(x)


def tables(summary: dict) -> dict:
    """'ari_vs_k': rows (N, K) x columns z (mean over seeds) of every test set's ARI; 'ari_vs_epsilon': one
    row per (N, K, z), sorted by epsilon."""
    groups: dict[tuple, list[dict]] = {}
    for e in summary["cells"].values():
        groups.setdefault((e["N"], e["K"], e["z"]), []).append(e)
    sets = sorted({s for e in summary["cells"].values() for s in e["scores"]})
    rows = []
    for (n, k, z), es in sorted(groups.items()):
        row = {
            "N": n,
            "K": k,
            "z": z,
            "q": k / n,
            "seeds": sorted(e["seed"] for e in es),
            "rounds": es[0]["rounds"],
            "delta": es[0]["delta"],
            "epsilon": _eps(es[0]["epsilon"]),
            "epsilon_without_sampling_amplification": _eps(es[0]["epsilon_without_sampling_amplification"]),
            "epsilon_poisson_q": _eps(es[0].get("epsilon_poisson_q", es[0]["epsilon"])),
            "round_s_median": _mean(e["timing"]["round_s_median"] for e in es),
        }
        for s in sets:
            for m in ("ari", "ari_postprocessed", "boundary_f1"):
                row[f"{s}/{m}"] = _mean(e["scores"][s][m] for e in es)
        rows.append(row)
    by_eps = sorted(rows, key=lambda r: (r["epsilon"], r["N"], r["K"]))  # non-private (inf) last
    return {"test_sets": sets, "ari_vs_k": rows, "ari_vs_epsilon": by_eps}


def _f(x, nd=3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def markdown(summary: dict) -> str:
    t = tables(summary)
    pop = summary["population"]
    lines = [
        f"# Many clients ({summary['status']})",
        "",
        f"Population: {pop['num_clients']} clients, {pop['bytes_per_client']:.0f} bytes of stored parameters "
        f"each ({pop['stored_bytes'] / 1e6:.1f} MB), tiles {pop['tile_size']} px, "
        f"{pop['tiles_per_client'][0]}-{pop['tiles_per_client'][1]} per client, styles {', '.join(pop['styles'])}. "
        f"Test sets: {', '.join(f'{k} ({v} tiles)' for k, v in summary['test_sets'].items())}. "
        "ARI: thresholded at eval.threshold; pp = built-in post-processing defaults. Device: "
        f"{summary['device']}.",
        "",
    ]
    differs = (summary.get("provenance") or {}).get("differs")
    if differs:
        lines += [f"**{provenance.describe(differs)}**", ""]
    lines += [
        "## ARI vs K (mean over seeds)",
        "",
    ]
    sets = t["test_sets"]
    for seed, scores in sorted(summary.get("untrained", {}).items()):
        lines.append(
            f"Untrained model (seed {seed}), the floor: "
            + ", ".join(f"{s} ARI {_f(scores[s]['ari'])} (pp {_f(scores[s]['ari_postprocessed'])})" for s in sets if s in scores)
            + "."
        )
    if summary.get("untrained"):
        lines.append("")
    head = ["N", "K", "z", "seeds", "round s"] + [f"{s} ARI" for s in sets] + [f"{s} ARI pp" for s in sets]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in t["ari_vs_k"]:
        vals = [r["N"], r["K"], _f(r["z"], 2), ",".join(map(str, r["seeds"])), _f(r["round_s_median"], 2)]
        vals += [_f(r[f"{s}/ari"]) for s in sets] + [_f(r[f"{s}/ari_postprocessed"]) for s in sets]
        lines.append("| " + " | ".join(map(str, vals)) + " |")
    zs = sorted({r["z"] for r in t["ari_vs_k"]})
    nk = sorted({(r["N"], r["K"]) for r in t["ari_vs_k"]})
    at = {(r["N"], r["K"], r["z"]): r for r in t["ari_vs_k"]}
    for s in sets:
        lines += ["", f"### {s} ARI: rows (N, K), columns z (0 = no DP); round s = median seconds per round", ""]
        head = ["N", "K", "round s"] + [f"z={z:g}" for z in zs]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for n, k in nk:
            rs = [at.get((n, k, z)) for z in zs]
            secs = _mean(r["round_s_median"] for r in rs if r is not None)
            vals = [n, k, _f(secs, 2)] + [_f(r[f"{s}/ari"]) if r is not None else "-" for r in rs]
            lines.append("| " + " | ".join(map(str, vals)) + " |")
    lines += [
        "",
        "## ARI vs epsilon (user level, RDP)",
        "",
        "epsilon: K of N without replacement, replace-one neighbours (engine.privacy_accounting: z/2, "
        "conservative); eps Poisson: rate q = K/N, add/remove-one (the usual reference); eps no amp.: no "
        "sampling amplification (against the server, which knows the sample).",
        "",
    ]
    head = ["z", "N", "K", "q", "rounds", "delta", "epsilon", "eps Poisson", "eps no amp."] + [f"{s} ARI" for s in sets]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in t["ari_vs_epsilon"]:
        vals = [_f(r["z"], 2), r["N"], r["K"], _f(r["q"], 4), r["rounds"], _f(r["delta"], 8) if r["delta"] else "-",
                _f(r["epsilon"], 2), _f(r["epsilon_poisson_q"], 2), _f(r["epsilon_without_sampling_amplification"], 1)]
        vals += [_f(r[f"{s}/ari"]) for s in sets]
        lines.append("| " + " | ".join(map(str, vals)) + " |")
    return "\n".join(lines) + "\n"


def write_summary(workdir: str, summary: dict) -> None:
    out = dict(summary)
    out["tables"] = tables(summary) if summary["cells"] else {}
    io_utils.write_json_atomic(os.path.join(workdir, "summary.json"), out)
    io_utils.write_text_atomic(os.path.join(workdir, "summary.md"), markdown(summary) if summary["cells"] else "")
    if summary.get("status") == "complete" and summary["cells"]:
        try:
            write_figure(os.path.join(workdir, "ari_vs_epsilon.png"), out["tables"])
        except Exception:  # noqa: BLE001 - a figure is a convenience; the tables are the result
            pass


def write_figure(path: str, t: dict) -> None:
    """Post-processed ARI (the endpoint; raw ARI dashed) of every test set against epsilon per (N, K), the
    non-private cells at the right edge; beside it (`ari_vs_k.png` in the same folder) against K per z."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    rows = t["ari_vs_k"]
    finite = [r["epsilon"] for r in rows if math.isfinite(r["epsilon"])]
    edge = 2 * max(finite) if finite else 1.0

    def save(fig, out):
        fig.tight_layout()
        io_utils.save_figure_atomic(fig, out, dpi=100)

    fig, axes = plt.subplots(1, len(t["test_sets"]), figsize=(5 * len(t["test_sets"]), 3.6), squeeze=False)
    for ax, s in zip(axes[0], t["test_sets"]):
        for i, (n, k) in enumerate(sorted({(r["N"], r["K"]) for r in rows})):
            rs = sorted((r for r in rows if r["N"] == n and r["K"] == k), key=lambda r: r["z"], reverse=True)
            xs = [r["epsilon"] if math.isfinite(r["epsilon"]) else edge for r in rs]
            colour = f"C{i % 10}"
            ax.plot(xs, [r[f"{s}/ari_postprocessed"] for r in rs], "o-", color=colour, label=f"N={n} K={k}")
            ax.plot(xs, [r[f"{s}/ari"] for r in rs], ":", color=colour, lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("epsilon (non-private at the right edge)")
        ax.set_ylabel("ARI, post-processed (dotted: raw)")
        ax.set_title(s)
        ax.legend(fontsize=7)
    save(fig, path)

    fig, axes = plt.subplots(1, len(t["test_sets"]), figsize=(5 * len(t["test_sets"]), 3.6), squeeze=False)
    for ax, s in zip(axes[0], t["test_sets"]):
        for i, (n, z) in enumerate(sorted({(r["N"], r["z"]) for r in rows})):
            rs = sorted((r for r in rows if r["N"] == n and r["z"] == z), key=lambda r: r["K"])
            label = f"N={n} " + ("FedAvg (no DP)" if z == 0 else f"DP z={z:g}")
            ax.plot([r["K"] for r in rs], [r[f"{s}/ari_postprocessed"] for r in rs], "o-", color=f"C{i % 10}", label=label)
        ax.set_xscale("log")
        ax.set_xlabel("clients per round K")
        ax.set_ylabel("ARI, post-processed")
        ax.set_title(s)
        ax.legend(fontsize=7)
    save(fig, os.path.join(os.path.dirname(path), "ari_vs_k.png"))
