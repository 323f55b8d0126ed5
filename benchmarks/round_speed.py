"""Speed of one federated round: our one-jit round vs a per-step-jitted loop vs eager PyTorch FedAvg.

  python benchmarks/round_speed.py                      # defaults: C=8 S=4 B=4 64x64, ~1-2 min on 2 CPU cores
  python benchmarks/round_speed.py --strategy chunked --chunk_size 4 --conv_impl xla
  python benchmarks/round_speed.py --json               # only the final JSON line

All three train the same U-Net (features 16,32,64), on the same random data ([C, N=S*B, 64, 64, 3]),
with the same loss (weighted CE + Dice), client optimizer (--optimizer sgd|adam, fresh every round),
C clients x S local steps x batch B, and server FedAvg (SGD lr 1 on the weighted mean delta):

  one_jit    fl.round.build_round(fl.algorithms.fedavg(...)): sampling, every client's local
             scan, aggregation and server update in ONE compiled XLA program (--strategy vmap|chunked|
             sequential, --conv_impl, --unroll).
  step_loop  the FedJAX execution model: Python loops over clients and local steps calling a jitted
             train step on host-sliced batches, then a jitted weighted mean + server update.
  torch      sequential PyTorch FedAvg of the same architecture (benchmarks/torch_unet.py), if torch is
             installed (torch.set_num_threads(os.cpu_count())).

Compilation is excluded from the round times (one_jit: AOT lower+compile timed separately; step_loop:
first round minus median round; torch: first-round warm-up minus median, there is nothing to compile). Rounds are timed after one warm-up round; the table shows the median,
min and max of --rounds rounds. The LAST printed line is one JSON object (see `run_benchmark`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

_HERE = Path(__file__).resolve().parent
for _p in (str(_HERE.parent), str(_HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import common  # noqa: E402
from fedtransfer_jax.fl import aggregators, algorithms  # noqa: E402
from fedtransfer_jax.fl.algorithms.base import LocalTraining  # noqa: E402
from fedtransfer_jax.fl.round import STRATEGIES, RoundConfig, build_round, init_round_state  # noqa: E402
from fedtransfer_jax.models.conv import IMPLS  # noqa: E402

SERVER_OPT = optax.sgd(1.0)  # FedAvg: the server applies the weighted mean delta as is.


# ----------------------------------------------------------------------------------------- one jit


def as_round_data(data) -> dict:
    """(images, labels, mask) arrays -> the round's data dict."""
    return data if isinstance(data, dict) else dict(zip(("images", "labels", "mask"), data))


def compile_one_jit(cfg: common.BenchConfig, params, data):
    """(compiled round, initial ServerState, compile seconds): AOT lower + compile of the one-jit round.

    The compiled executable exposes `memory_analysis()` (used by experiments/scaling.py).
    """
    model = common.make_model(cfg)
    local = LocalTraining(
        common.make_loss(model), common.client_optimizer(cfg), cfg.local_steps, cfg.batch_size, unroll=cfg.unroll
    )
    alg = algorithms.fedavg(local, SERVER_OPT)
    round_fn = build_round(alg, RoundConfig(cfg.clients, cfg.strategy, cfg.chunk_size), seed=cfg.seed)
    state = init_round_state(alg, params, cfg.clients)
    data = as_round_data(data)
    t0 = time.perf_counter()
    compiled = round_fn.lower(state, data).compile()
    return compiled, state, time.perf_counter() - t0


def build_one_jit(
    cfg: common.BenchConfig, params, data
) -> tuple[Callable[[], Any], Callable[[], Any], float]:
    """(run_round, get_params, compile seconds) for the one-jit round.

    `run_round()` blocks and returns the round's loss; `get_params()` the current global params.
    """
    compiled, state, compile_s = compile_one_jit(cfg, params, data)
    data = as_round_data(data)
    holder = [state]

    def run_round():
        holder[0], metrics = compiled(holder[0], data)  # the state is donated: keep only the new one
        return float(jax.block_until_ready(metrics["loss"]))

    return run_round, lambda: holder[0].server.params, compile_s


# ------------------------------------------------------------------------------------- step loop


def build_step_loop(
    cfg: common.BenchConfig, params, host_data
) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """(run_round, get_params) in the FedJAX execution model: Python loops over clients and local steps,
    one jitted call per local step, then a jitted weighted mean + server update."""
    model = common.make_model(cfg)
    loss_fn = common.make_loss(model)
    opt = common.client_optimizer(cfg)
    images, labels, mask = host_data

    @jax.jit
    def train_step(p, opt_state, batch):
        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, batch, None)
        updates, opt_state = opt.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, loss

    init_opt = jax.jit(opt.init)
    delta_fn = jax.jit(lambda p, g: jax.tree_util.tree_map(jnp.subtract, p, g))

    @jax.jit
    def server_update(p, server_opt_state, deltas, weights):
        stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *deltas)
        weighted = jax.tree_util.tree_map(lambda x: jnp.tensordot(weights, x, axes=(0, 0)), stacked)
        mean = aggregators.safe_divide(weighted, weights.sum())
        updates, server_opt_state = SERVER_OPT.update(
            jax.tree_util.tree_map(jnp.negative, mean), server_opt_state, p
        )
        return optax.apply_updates(p, updates), server_opt_state

    state = {"params": jax.tree_util.tree_map(jnp.array, params), "round": 0}
    state["opt"] = SERVER_OPT.init(state["params"])

    def run_round():
        g = state["params"]
        deltas, weights, losses = [], [], []
        for c in range(cfg.clients):
            real = np.flatnonzero(mask[c])
            order = real[np.random.default_rng([cfg.seed, state["round"], c]).permutation(len(real))]
            p, o = g, init_opt(g)
            for s in range(cfg.local_steps):
                idx = order[(np.arange(cfg.batch_size) + s * cfg.batch_size) % len(order)]
                batch = {"images": images[c, idx], "labels": labels[c, idx], "mask": mask[c, idx]}
                p, o, loss = train_step(p, o, batch)
                losses.append(loss)
            deltas.append(delta_fn(p, g))
            weights.append(float(len(real)))
        state["params"], state["opt"] = server_update(
            g, state["opt"], deltas, jnp.asarray(weights, jnp.float32)
        )
        state["round"] += 1
        return float(jax.block_until_ready(jnp.mean(jnp.stack(losses))))

    return run_round, lambda: state["params"]


# ------------------------------------------------------------------------------------------- torch


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def build_torch(cfg: common.BenchConfig, host_data, params=None, num_threads: int | None = None):
    """(run_round, torch global model); `params` (a flax tree) initialises the torch model when given."""
    import torch_unet

    return torch_unet.make_fedavg_round(
        *host_data,
        features=cfg.features,
        local_steps=cfg.local_steps,
        batch_size=cfg.batch_size,
        optimizer=cfg.optimizer,
        lr=cfg.lr,
        seed=cfg.seed,
        boundary_weight=common.BOUNDARY_WEIGHT,
        dice_weight=common.DICE_WEIGHT,
        init_params=params,
        num_threads=num_threads,
    )


# ------------------------------------------------------------------------------------------ driver


def run_benchmark(
    cfg: common.BenchConfig,
    *,
    rounds: int = 5,
    skip_step_loop: bool = False,
    skip_torch: bool = False,
    step_loop_conv_impl: str = "",
    torch_threads: int | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Times every implementation and returns the JSON-able result.

    Keys: images_per_s / round_time_s / spread / first_round_s / compile_s / achieved_gflops_by_impl
    (dicts by impl: one_jit, step_loop, torch; null when skipped), ratio_vs_step_loop, ratio_vs_torch,
    achieved_gflops (one_jit), flops_per_round, device, config.
    """
    if cfg.strategy not in STRATEGIES:
        raise ValueError(f"--strategy: unknown {cfg.strategy!r}; choose from {STRATEGIES}")
    for flag, impl in (("--conv_impl", cfg.conv_impl), ("--step_loop_conv_impl", step_loop_conv_impl)):
        if impl and impl not in IMPLS:
            raise ValueError(f"{flag}: unknown conv impl {impl!r}; choose from {IMPLS}")
    host = common.make_data(cfg)
    params = common.init_params(common.make_model(cfg), cfg)
    flops = common.train_flops_per_round(params, cfg)
    impls = ("one_jit", "step_loop", "torch")
    res: dict[str, dict[str, Any]] = {
        k: dict.fromkeys(impls)
        for k in (
            "images_per_s",
            "round_time_s",
            "spread",
            "first_round_s",
            "compile_s",
            "achieved_gflops_by_impl",
        )
    }

    def record(name: str, run: Callable[[], Any], compile_s: float | None) -> None:
        first, times = common.time_rounds(run, rounds)
        st = common.summarize(times)
        res["round_time_s"][name] = st["median_s"]
        res["spread"][name] = st["spread"]
        res["first_round_s"][name] = first
        res["compile_s"][name] = compile_s if compile_s is not None else max(first - st["median_s"], 0.0)
        res["images_per_s"][name] = cfg.images_per_round / st["median_s"]
        res["achieved_gflops_by_impl"][name] = flops / st["median_s"] / 1e9
        log(
            f"  {name:10s} median {st['median_s'] * 1e3:9.1f} ms  (min {st['min_s'] * 1e3:.1f}, max "
            f"{st['max_s'] * 1e3:.1f})  compile {res['compile_s'][name]:.2f} s"
        )

    data = tuple(jax.device_put(x) for x in host)
    run, _, compile_s = build_one_jit(cfg, params, data)
    record("one_jit", run, compile_s)
    del run, data
    if not skip_step_loop:
        loop_cfg = cfg if not step_loop_conv_impl else _replace(cfg, conv_impl=step_loop_conv_impl)
        record("step_loop", build_step_loop(loop_cfg, params, host)[0], None)
    if not skip_torch and torch_available():
        record("torch", build_torch(cfg, host, params, torch_threads)[0], None)

    ips = res["images_per_s"]
    out = {
        **res,
        "ratio_vs_step_loop": ips["one_jit"] / ips["step_loop"] if ips["step_loop"] else None,
        "ratio_vs_torch": ips["one_jit"] / ips["torch"] if ips["torch"] else None,
        "achieved_gflops": res["achieved_gflops_by_impl"]["one_jit"],
        "flops_per_round": flops,
        "device": common.device_string(),
        "rounds": rounds,
        "config": {
            **cfg.as_dict(),
            "step_loop_conv_impl": step_loop_conv_impl or cfg.resolved_conv_impl(),
            "torch_threads": torch_threads or os.cpu_count(),
        },
    }
    return out


def _replace(cfg: common.BenchConfig, **kw) -> common.BenchConfig:
    import dataclasses

    return dataclasses.replace(cfg, **kw)


def format_table(out: dict[str, Any]) -> str:
    rows = [
        f"{'impl':10s} {'round ms':>10s} {'spread':>7s} {'images/s':>10s} {'GFLOP/s':>9s} {'compile/warm-up s':>18s}"
    ]
    for name in ("one_jit", "step_loop", "torch"):
        t = out["round_time_s"][name]
        if t is None:
            rows.append(f"{name:10s} {'-':>10s}")
            continue
        rows.append(
            f"{name:10s} {t * 1e3:10.1f} {out['spread'][name]:7.0%} {out['images_per_s'][name]:10.1f} "
            f"{out['achieved_gflops_by_impl'][name]:9.2f} {out['compile_s'][name]:18.2f}"
        )
    r1, r2 = out["ratio_vs_step_loop"], out["ratio_vs_torch"]
    rows.append(f"one_jit vs step_loop: {r1:.2f}x" if r1 else "one_jit vs step_loop: -")
    rows.append(
        f"one_jit vs torch:     {r2:.2f}x"
        if r2
        else "one_jit vs torch:     - (skipped or torch not installed)"
    )
    return "\n".join(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = common.BenchConfig()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=d.clients)
    ap.add_argument("--local_steps", type=int, default=d.local_steps)
    ap.add_argument("--batch_size", type=int, default=d.batch_size)
    ap.add_argument("--image_size", type=int, default=d.image_size)
    ap.add_argument("--features", default=",".join(map(str, d.features)))
    ap.add_argument("--optimizer", choices=("sgd", "adam"), default=d.optimizer)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--strategy", choices=STRATEGIES, default=d.strategy)
    ap.add_argument("--chunk_size", type=int, default=d.chunk_size)
    ap.add_argument(
        "--conv_impl",
        choices=("",) + IMPLS,
        default=d.conv_impl,
        help="'' = models.conv.default_impl() for the backend",
    )
    ap.add_argument(
        "--step_loop_conv_impl",
        choices=("",) + IMPLS,
        default="",
        help="conv impl of the step loop ('' = same as --conv_impl)",
    )
    ap.add_argument("--unroll", action="store_true", help="unroll the local steps instead of lax.scan")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--skip_step_loop", action="store_true")
    ap.add_argument("--skip_torch", action="store_true")
    ap.add_argument("--torch_threads", type=int, default=0, help="torch.set_num_threads (0 = os.cpu_count())")
    ap.add_argument("--json", action="store_true", help="print only the final JSON line")
    return ap.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> common.BenchConfig:
    return common.BenchConfig(
        clients=args.clients,
        local_steps=args.local_steps,
        batch_size=args.batch_size,
        image_size=args.image_size,
        features=tuple(common.parse_int_list(args.features, "--features")),
        optimizer=args.optimizer,
        lr=args.lr,
        seed=args.seed,
        strategy=args.strategy,
        chunk_size=args.chunk_size,
        conv_impl=args.conv_impl,
        unroll=args.unroll,
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    cfg = config_from_args(args)
    log = (lambda s: None) if args.json else (lambda s: print(s, flush=True))
    log(f"device: {common.device_string()}  config: {cfg.as_dict()}")
    out = run_benchmark(
        cfg,
        rounds=args.rounds,
        skip_step_loop=args.skip_step_loop,
        skip_torch=args.skip_torch,
        step_loop_conv_impl=args.step_loop_conv_impl,
        torch_threads=args.torch_threads or None,
        log=log,
    )
    log(format_table(out))
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
