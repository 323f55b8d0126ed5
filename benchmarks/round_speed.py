"""Speed of one federated round: our one-jit round vs a per-step-jitted loop vs eager PyTorch FedAvg.

  python -m benchmarks.round_speed                      # defaults: C=8 S=4 B=4 64x64, ~1 min on 2 idle CPU cores
  python -m benchmarks.round_speed --variants 'auto#1' --torch_threads 2,1   # + the one-device round, torch 1 thread
  python -m benchmarks.round_speed --variants sequential,vmap,chunked:4,auto@bfloat16 --roofline
  python -m benchmarks.round_speed --strategy chunked --chunk_size 4 --conv_impl xla
  python -m benchmarks.round_speed --json               # only the final JSON line

All train the same U-Net (features 16,32,64), on the same random 8-bit data ([C, N=S*B, 64, 64, 3], kept
uint8 on device and decoded in the step like the trainer's data; --image_dtype float32 for float data), with
the same loss (weighted CE + Dice), client optimizer (--optimizer sgd|adam, fresh every round), C clients x S
local steps x batch B, and server FedAvg (SGD lr 1 on the weighted mean delta):

  one_jit    fl.federated_round.build_round(fl.algorithms.fedavg(...)): sampling, every client's local
             scan, aggregation and server update in ONE compiled XLA program (--strategy auto|vmap|chunked|
             sequential, --conv_impl, --norm_impl, --dtype, --unroll), sharded like the engine's round over
             a `clients` mesh of every device (--devices; on the CPU launch.py's and this script's
             --cpu_devices=auto make one XLA:CPU device per core, fedtransfer_jax/runtime/host_devices.py).
             `--variants` adds more one-jit rounds side by side, each
             `strategy[:chunk][@dtype][/norm_impl][%conv_impl][#devices]`, e.g. `chunked:32@bfloat16`,
             `auto#1` (one device, no mesh; `/baseline`: nn.GroupNorm and nn.max_pool, the U-Net before
             docs/PERFORMANCE.md's CPU work).
  step_loop  the FedJAX execution model: Python loops over clients and local steps calling a jitted
             train step on host-sliced batches, then a jitted weighted mean + server update.
  torch      sequential PyTorch FedAvg of the same architecture (benchmarks/torch_unet.py), if torch is
             installed (torch.set_num_threads(os.cpu_count())).

Compilation is excluded from the round times (one_jit: AOT lower+compile timed separately; step_loop:
first round minus median round; torch: first-round warm-up minus median, there is nothing to compile).
Every implementation runs one warm-up round, then the --rounds timed rounds go round-robin over the
implementations (A B C A B C ...), so load changes on a shared machine hit all alike; the table shows the
median, min and spread of the wall times and the median process CPU time (all threads). `--roofline` adds
the roofline (benchmarks/roofline.py) against peaks measured in-process (benchmarks/matmul_peak.py) or read
from `--peaks FILE` (matmul_peak.py's JSON line). The LAST printed line is one JSON object (`run_benchmark`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import common
from fedtransfer_jax.runtime import host_devices
from fedtransfer_jax.fl import aggregators, algorithms
from fedtransfer_jax.fl.algorithms.base import LocalTraining, decode_images
from fedtransfer_jax.fl.federated_round import (
    STRATEGIES,
    RoundConfig,
    build_round,
    client_plan,
    init_round_state,
    make_client_mesh,
    shard_client_axis,
)
from fedtransfer_jax.models.conv import IMPLS
from fedtransfer_jax.models.unet import NORM_IMPLS

SERVER_OPT = optax.sgd(1.0)  # FedAvg: the server applies the weighted mean delta as is.


# ----------------------------------------------------------------------------------------- one jit


def as_round_data(data) -> dict:
    """(images, labels, mask) arrays -> the round's data dict."""
    return data if isinstance(data, dict) else dict(zip(("images", "labels", "mask"), data))


def fedavg_algorithm(cfg: common.BenchConfig):
    model = common.make_model(cfg)
    local = LocalTraining(
        common.make_loss(model),
        common.client_optimizer(cfg),
        cfg.local_steps,
        cfg.batch_size,
        unroll=cfg.unroll,
    )
    return algorithms.fedavg(local, SERVER_OPT)


def round_devices(cfg: common.BenchConfig) -> int:
    """How many devices the one-jit round is sharded over (`cfg.devices`, 0 = all of the backend's)."""
    return min(cfg.devices or jax.device_count(), jax.device_count())


def round_mesh(cfg: common.BenchConfig):
    """The engine's `clients` mesh (run_context.make_mesh) over `round_devices(cfg)` devices, or None for one."""
    n = round_devices(cfg)
    return None if n == 1 else make_client_mesh(n)


def compile_one_jit(cfg: common.BenchConfig, params, data):
    """(compiled round, initial ServerState, compile seconds): AOT lower + compile of the one-jit round.

    The compiled executable exposes `memory_analysis()` (used by experiments/scaling.py). With several
    devices (`cfg.devices`) the round is the engine's mesh round: clients sharded over a `clients` axis.
    """
    alg = fedavg_algorithm(cfg)
    mesh = round_mesh(cfg)
    round_fn = build_round(alg, RoundConfig(cfg.clients, cfg.strategy, cfg.chunk_size), seed=cfg.seed, mesh=mesh)
    data = as_round_data(data)
    state = init_round_state(alg, params, data["mask"].shape[0] if mesh is None else cfg.clients, mesh=mesh)
    if mesh is not None:
        data = {name: shard_client_axis(np.asarray(x), mesh) for name, x in data.items()}
    t0 = time.perf_counter()
    compiled = round_fn.lower(state, data).compile()
    return compiled, state, time.perf_counter() - t0, data


def build_one_jit(
    cfg: common.BenchConfig, params, data
) -> tuple[Callable[[], Any], Callable[[], Any], float]:
    """(run_round, get_params, compile seconds) for the one-jit round.

    `run_round()` blocks and returns the round's loss; `get_params()` the current global params.
    """
    compiled, state, compile_s, data = compile_one_jit(cfg, params, data)
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
        batch = {**batch, "images": decode_images(batch["images"])}  # as the round does
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
    from benchmarks import torch_unet

    images, labels, mask = host_data
    return torch_unet.make_fedavg_round(
        common.float_images(images),
        labels,
        mask,
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


def parse_variant(spec: str, base: common.BenchConfig) -> common.BenchConfig:
    """`strategy[:chunk][@dtype][/norm_impl][%conv_impl][#devices]` -> the config of that one-jit round (e.g.
    `chunked:32@bfloat16`, `chunked:32%im2col`, `sequential#1`: one device, no mesh); `/baseline` is the
    U-Net before the CPU work (nn.GroupNorm and nn.max_pool)."""
    spec, _, devices = spec.partition("#")
    if devices:
        if not devices.isdigit() or int(devices) < 1:
            raise ValueError(f"--variants {spec}#{devices}: devices must be a positive integer")
        return dataclasses.replace(parse_variant(spec, base), devices=int(devices))
    spec, _, conv = spec.partition("%")
    if conv:
        if conv not in IMPLS:
            raise ValueError(f"--variants {spec}%{conv}: unknown conv impl {conv!r}; choose from {IMPLS}")
        return dataclasses.replace(parse_variant(spec, base), conv_impl=conv)
    rest, _, norm = spec.partition("/")
    if norm == "baseline":
        return dataclasses.replace(parse_variant(rest + "/flax", base), fast_pool=False)
    rest, _, dtype = rest.partition("@")
    strategy, _, chunk = rest.partition(":")
    if strategy not in STRATEGIES:
        raise ValueError(f"--variants {spec!r}: unknown strategy {strategy!r}; choose from {STRATEGIES}")
    if dtype and dtype not in common.DTYPES:
        raise ValueError(f"--variants {spec!r}: unknown dtype {dtype!r}; choose from {sorted(common.DTYPES)}")
    if norm and norm not in NORM_IMPLS:
        raise ValueError(f"--variants {spec!r}: unknown norm impl {norm!r}; choose from {NORM_IMPLS}")
    if chunk and not chunk.isdigit():
        raise ValueError(f"--variants {spec!r}: chunk must be a positive integer")
    return dataclasses.replace(
        base,
        strategy=strategy,
        chunk_size=int(chunk) if chunk else (base.chunk_size if strategy == "chunked" else 0),
        dtype=dtype or base.dtype,
        norm_impl=norm or base.norm_impl,
    )


def _plan_dict(cfg: common.BenchConfig) -> dict[str, Any]:
    devices = round_devices(cfg)
    plan = client_plan(RoundConfig(cfg.clients, cfg.strategy, cfg.chunk_size), devices)
    return {"strategy": plan.strategy, "chunk": plan.chunk, "n_chunks": plan.n_chunks, "devices": devices}


def _peaks(peaks: str | dict | None, log: Callable[[str], None]) -> dict | None:
    if peaks is None or isinstance(peaks, dict):
        return peaks
    if peaks == "measure":
        from benchmarks import matmul_peak

        log("measuring the device's peaks (benchmarks/matmul_peak.py) ...")
        return matmul_peak.measure()
    text = Path(peaks).read_text().strip().splitlines()
    return json.loads(text[-1])


def _with_threads(run: Callable[[], Any], threads: int | None) -> Callable[[], Any]:
    """Sets torch's (process-wide) thread count before each round, so torch runs with different thread
    counts can be interleaved."""
    import torch

    n = threads or os.cpu_count() or 1

    def run_with_threads():
        torch.set_num_threads(n)
        return run()

    return run_with_threads


def run_benchmark(
    cfg: common.BenchConfig,
    *,
    rounds: int = 5,
    variants: tuple[str, ...] = (),
    skip_step_loop: bool = False,
    skip_torch: bool = False,
    step_loop_conv_impl: str = "",
    torch_threads: tuple[int, ...] | None = None,
    peaks: str | dict | None = None,
    roofline_on: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Times every implementation (round-robin, see the module docstring) and returns the JSON-able result.

    Keys: images_per_s / round_time_s (median) / min_round_s / spread / cpu_time_s (median) / first_round_s /
    compile_s / achieved_gflops_by_impl (dicts by impl: one_jit, one_jit[<variant>]..., step_loop, torch;
    null when skipped), plans (the resolved strategy/chunk of every one-jit round), ratio_vs_step_loop,
    ratio_vs_torch, achieved_gflops (one_jit), flops_per_round, roofline (by one-jit impl, with --roofline),
    peaks, load_avg_1min [start, end], device, config.
    """
    if cfg.strategy not in STRATEGIES:
        raise ValueError(f"--strategy: unknown {cfg.strategy!r}; choose from {STRATEGIES}")
    for flag, impl in (("--conv_impl", cfg.conv_impl), ("--step_loop_conv_impl", step_loop_conv_impl)):
        if impl and impl not in IMPLS:
            raise ValueError(f"{flag}: unknown conv impl {impl!r}; choose from {IMPLS}")
    one_jit_cfgs = {"one_jit": cfg, **{f"one_jit[{v}]": parse_variant(v, cfg) for v in variants}}
    load0 = os.getloadavg()[0]
    host = common.make_data(cfg)
    params = common.init_params(common.make_model(cfg), cfg)
    flops = common.train_flops_per_round(params, cfg)
    data = tuple(jax.device_put(x) for x in host)
    runs: dict[str, Callable[[], Any]] = {}
    compile_s: dict[str, float | None] = {}
    for name, c in one_jit_cfgs.items():
        runs[name], _, compile_s[name] = build_one_jit(c, params, data)
        log(f"  compiled {name} ({_plan_dict(c)}) in {compile_s[name]:.1f} s")
    if not skip_step_loop:
        loop_cfg = cfg if not step_loop_conv_impl else dataclasses.replace(cfg, conv_impl=step_loop_conv_impl)
        runs["step_loop"], compile_s["step_loop"] = build_step_loop(loop_cfg, params, host)[0], None
    if not skip_torch and torch_available():
        for i, threads in enumerate(torch_threads or (None,)):
            name = "torch" if i == 0 else f"torch[threads={threads}]"
            runs[name], compile_s[name] = (
                _with_threads(build_torch(cfg, host, params, threads)[0], threads),
                None,
            )

    timed = common.time_interleaved(runs, rounds)
    names = list(runs) + [n for n in ("step_loop", "torch") if n not in runs]
    keys = (
        "images_per_s",
        "round_time_s",
        "min_round_s",
        "spread",
        "cpu_time_s",
        "first_round_s",
        "compile_s",
    )
    res: dict[str, dict[str, Any]] = {k: dict.fromkeys(names) for k in keys + ("achieved_gflops_by_impl",)}
    for name, t in timed.items():
        st = common.summarize(t["times"])
        res["round_time_s"][name] = st["median_s"]
        res["min_round_s"][name] = st["min_s"]
        res["spread"][name] = st["spread"]
        res["cpu_time_s"][name] = statistics.median(t["cpu_times"])
        res["first_round_s"][name] = t["first_s"]
        c = compile_s[name]
        res["compile_s"][name] = c if c is not None else max(t["first_s"] - st["median_s"], 0.0)
        res["images_per_s"][name] = cfg.images_per_round / st["median_s"]
        res["achieved_gflops_by_impl"][name] = flops / st["median_s"] / 1e9
        log(
            f"  {name:24s} median {st['median_s'] * 1e3:9.1f} ms  (min {st['min_s'] * 1e3:.1f}, max "
            f"{st['max_s'] * 1e3:.1f}, cpu {res['cpu_time_s'][name] * 1e3:.1f})  compile {res['compile_s'][name]:.2f} s"
        )

    ips = res["images_per_s"]
    out = {
        **res,
        "plans": {name: _plan_dict(c) for name, c in one_jit_cfgs.items()},
        "ratio_vs_step_loop": ips["one_jit"] / ips["step_loop"] if ips["step_loop"] else None,
        "ratio_vs_torch": ips["one_jit"] / ips["torch"] if ips["torch"] else None,
        "achieved_gflops": res["achieved_gflops_by_impl"]["one_jit"],
        "flops_per_round": flops,
        "roofline": None,
        "peaks": None,
        "load_avg_1min": [load0, os.getloadavg()[0]],
        "device": common.device_string(),
        "rounds": rounds,
        "config": {
            **cfg.as_dict(),
            "variants": list(variants),
            "step_loop_conv_impl": step_loop_conv_impl or cfg.resolved_conv_impl(),
            "torch_threads": list(torch_threads or (os.cpu_count(),)),
        },
    }
    if roofline_on:
        out["peaks"] = _peaks(peaks or "measure", log)
        out["roofline"] = roofline_by_impl(
            one_jit_cfgs, params, res["round_time_s"], out["peaks"], res["cpu_time_s"]
        )
    return out


def roofline_by_impl(
    cfgs: dict[str, common.BenchConfig],
    params,
    seconds: dict[str, float],
    peaks: dict | None,
    cpu_seconds: dict[str, float] | None = None,
) -> dict[str, dict[str, Any]]:
    """The roofline of every one-jit round: XLA's bytes of one local step (per dtype/conv/norm: the
    strategy does not change a step's work) and the matmul peak of the round's compute dtype. On the CPU
    also FLOPs per CPU-second against the matmul's (`f32_tflops_per_cpu_s`): the load-independent view."""
    from benchmarks import roofline

    costs: dict[tuple, dict[str, float]] = {}
    out = {}
    for name, c in cfgs.items():
        key = (c.dtype, c.resolved_conv_impl(), c.norm_impl, c.fast_pool)
        if key not in costs:
            costs[key] = roofline.round_cost(c, params)
        cost = costs[key]
        peak = (peaks or {}).get("bf16_tflops" if c.dtype == "bfloat16" else "f32_tflops")
        r = roofline.roofline(
            cost["flops_model"], cost["bytes_xla"], seconds[name], peak, (peaks or {}).get("bandwidth_gbps")
        )
        out[name] = {
            "variant": name,
            "dtype": c.dtype,
            "flops": cost["flops_model"],
            "bytes": cost["bytes_xla"],
            **cost,
            **r,
        }
        per_cpu_s = (peaks or {}).get("f32_tflops_per_cpu_s")
        if cpu_seconds and cpu_seconds.get(name) and per_cpu_s and c.dtype == "float32":
            achieved = cost["flops_model"] / cpu_seconds[name] / 1e12
            out[name].update(
                achieved_tflops_per_cpu_s=achieved, fraction_of_peak_per_cpu_s=achieved / per_cpu_s
            )
    return out


def format_table(out: dict[str, Any]) -> str:
    rows = [
        f"{'impl':26s} {'median ms':>10s} {'min ms':>9s} {'spread':>7s} {'cpu ms':>9s} {'images/s':>9s} "
        f"{'GFLOP/s':>8s} {'compile/warm-up s':>18s}"
    ]
    for name, t in out["round_time_s"].items():
        if t is None:
            rows.append(f"{name:26s} {'-':>10s}")
            continue
        rows.append(
            f"{name:26s} {t * 1e3:10.1f} {out['min_round_s'][name] * 1e3:9.1f} {out['spread'][name]:7.0%} "
            f"{out['cpu_time_s'][name] * 1e3:9.1f} {out['images_per_s'][name]:9.1f} "
            f"{out['achieved_gflops_by_impl'][name]:8.2f} {out['compile_s'][name]:18.2f}"
        )
    r1, r2 = out["ratio_vs_step_loop"], out["ratio_vs_torch"]
    rows.append(f"one_jit vs step_loop: {r1:.2f}x" if r1 else "one_jit vs step_loop: -")
    rows.append(
        f"one_jit vs torch:     {r2:.2f}x"
        if r2
        else "one_jit vs torch:     - (skipped or torch not installed)"
    )
    load = out.get("load_avg_1min")
    if load:
        rows.append(
            f"load average (1 min) at start/end: {load[0]:.1f} / {load[1]:.1f} on {os.cpu_count()} CPUs"
        )
    if out.get("roofline"):
        from benchmarks import roofline

        rows += [roofline.format_roofline(r) for r in out["roofline"].values()]
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
    ap.add_argument("--dtype", choices=sorted(common.DTYPES), default=d.dtype, help="U-Net compute dtype")
    ap.add_argument(
        "--norm_impl", choices=("",) + NORM_IMPLS, default=d.norm_impl, help="'' = backend default"
    )
    ap.add_argument("--image_dtype", choices=common.IMAGE_DTYPES, default=d.image_dtype)
    ap.add_argument(
        "--devices",
        type=int,
        default=d.devices,
        help="one-jit round sharded over this many devices (0 = all, as the engine does; 1 = one device)",
    )
    ap.add_argument(
        "--cpu_devices",
        default="auto",
        help="split the CPU into this many XLA:CPU devices before JAX starts ('auto' = one per core, as "
        "launch.py; 1 = one device, the round's single-device program)",
    )
    ap.add_argument(
        "--variants",
        default="",
        help="more one-jit rounds timed side by side: comma-separated strategy[:chunk][@dtype][/norm_impl]"
        "[%%conv_impl][#devices], e.g. sequential,vmap,chunked:4,auto@bfloat16,sequential/flax,"
        "chunked:4%%im2col,auto#1",
    )
    ap.add_argument(
        "--roofline", action="store_true", help="add the roofline (measures the peaks unless --peaks)"
    )
    ap.add_argument("--peaks", default="", help="matmul_peak.py output (JSON last line) to use as the roofs")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--skip_step_loop", action="store_true")
    ap.add_argument("--skip_torch", action="store_true")
    ap.add_argument(
        "--torch_threads",
        default="",
        help="torch.set_num_threads, comma-separated for several torch rows ('' = os.cpu_count())",
    )
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
        dtype=args.dtype,
        norm_impl=args.norm_impl,
        image_dtype=args.image_dtype,
        devices=args.devices,
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    host_devices.configure(args.cpu_devices)  # before anything starts JAX's backends (no-op if started)
    cfg = config_from_args(args)
    log = (lambda s: None) if args.json else (lambda s: print(s, flush=True))
    log(f"device: {common.device_string()}  config: {cfg.as_dict()}")
    out = run_benchmark(
        cfg,
        rounds=args.rounds,
        skip_step_loop=args.skip_step_loop,
        skip_torch=args.skip_torch,
        step_loop_conv_impl=args.step_loop_conv_impl,
        torch_threads=(
            tuple(common.parse_int_list(args.torch_threads, "--torch_threads")) or None
            if args.torch_threads
            else None
        ),
        variants=tuple(v.strip() for v in args.variants.split(",") if v.strip()),
        peaks=args.peaks or None,
        roofline_on=args.roofline or bool(args.peaks),
        log=log,
    )
    log(format_table(out))
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
