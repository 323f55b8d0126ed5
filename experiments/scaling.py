r"""Client-count scaling of the one-jit federated round: round time, per-client time and memory vs clients.

This is a plain SCRIPT, not a launch.py experiment config (its name under experiments/ is fixed by the
"Scale and speed" issue):

  python -m experiments.scaling --out /tmp/scaling                       # CPU preset: C = 8,16,32,64
  python -m experiments.scaling --out runs/scaling --preset gpu          # C = 64..4096, 64 px, B=8
  python -m experiments.scaling --out /tmp/s --clients 4,8 --strategy chunked --chunk_size 4

For each C (ascending) it AOT-compiles the round of benchmarks/round_speed.py (same U-Net, loss, random
8-bit data [C, N=S*B, H, W, 3] kept uint8 on device), runs one warm-up round and --rounds timed rounds
(median), and records memory: `device.memory_stats()["peak_bytes_in_use"]` where the backend has it
(GPU/TPU; a running peak, so C is swept in ascending order), else the compiled executable's
`memory_analysis()` (XLA's static plan: arguments + unaliased outputs + temporaries; CPU). A C that runs out
of memory is recorded as 'oom' and ends the sweep; --strategy auto resolves the plan per C like the trainer
(fl.strategy: sequential on the CPU, the largest chunk <= 32 that fits on accelerators).

Writes OUT/scaling.csv and OUT/scaling.png (round time, per-client time and memory vs clients, log-x) and
prints the memory model (fl.strategy.analytic_memory_model from the U-Net's shapes: params, optimizer
state, one step's activations per vmapped client; every client's uint8 data) against the measurements, and
its prediction for 4096 clients.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import time
from typing import Any


PRESETS: dict[str, dict[str, Any]] = {
    # 2-core CPU: the round_speed.py model and tiles; ~5 min in all.
    "cpu": dict(clients="8,16,32,64", image_size=64, features="16,32,64", local_steps=4, batch_size=4),
    # One GPU: the GPU benchmark's configuration (U-Net 16/32/64, 64 px, 4 local steps of batch 8) up to 4096 clients.
    "gpu": dict(clients="64,256,1024,4096", image_size=64, features="16,32,64", local_steps=4, batch_size=8),
}
PRESETS["tpu"] = PRESETS["gpu"]

CSV_FIELDS = (
    "clients",
    "status",
    "strategy",
    "chunk_size",
    "conv_impl",
    "image_size",
    "features",
    "local_steps",
    "batch_size",
    "optimizer",
    "images_per_round",
    "plan_strategy",
    "plan_chunk",
    "round_time_s",
    "per_client_round_ms",
    "spread",
    "images_per_s",
    "compile_s",
    "memory_bytes",
    "memory_source",
    "peak_bytes_in_use",
    "compiled_temp_bytes",
    "compiled_argument_bytes",
    "compiled_output_bytes",
    "model_peak_bytes",
    "device",
)


def get_config(arg: str | None = None):
    """`launch.py --config experiments/scaling.py` is a mistake: say how to run this script instead."""
    del arg
    raise ValueError(
        "experiments/scaling.py is a benchmark script, not a launch.py experiment config: run "
        "`python -m experiments.scaling --out DIR [--preset cpu|gpu] [--clients 8,16,...]`"
    )


# ------------------------------------------------------------------------------ per-client memory model


def memory_model(params, cfg, optimizer: str, activation_copies: float | None = None):
    """`fl.strategy.analytic_memory_model` of the benchmark round at `cfg` (all cfg.clients clients' uint8
    or float32 data resident, FedAvg: no per-client state, server SGD)."""
    from fedtransfer_jax.fl import strategy
    from fedtransfer_jax.models import unet

    act = unet.activation_bytes_per_image(
        params,
        cfg.image_size,
        dtype_bytes=2 if cfg.dtype == "bfloat16" else 4,
        copies=unet.ACTIVATION_COPIES if activation_copies is None else activation_copies,
    )
    image_bytes = 1 if cfg.image_dtype == "uint8" else 4
    n, hw = cfg.examples_per_client, cfg.image_size**2
    return strategy.analytic_memory_model(
        num_params=unet.count_params(params),
        activation_bytes_per_image=act,
        batch_size=cfg.batch_size,
        data_bytes_per_client=float(n * hw * (3 * image_bytes + 1) + n),
        num_clients=cfg.clients,
        optimizer_slots={"sgd": 0, "adam": 2}.get(optimizer, 2),
        server_state_params=unet.count_params(params),  # server SGD: params only
    )


def per_client_bytes_estimate(params, cfg, optimizer: str) -> dict[str, float]:
    """Bytes one more vmapped client costs, by part (`memory_model`'s terms): PARAM_COPIES x P (local
    params, grads, delta, its share of the chunk sum; the global params are shared), Adam's mu and nu (2P,
    SGD none), one local step's saved activations for the batch (the local steps are a scan: one step is
    live), and its data (uint8 images by default)."""
    from fedtransfer_jax.fl import strategy
    from fedtransfer_jax.models import unet

    p = unet.count_params(params)
    opt_mult = {"sgd": 0, "adam": 2}.get(optimizer, 2)
    dtype_bytes = 2 if cfg.dtype == "bfloat16" else 4
    image_bytes = 1 if cfg.image_dtype == "uint8" else 4
    n, hw = cfg.examples_per_client, cfg.image_size**2
    parts = {
        "params": 4.0 * strategy.PARAM_COPIES * p,
        "opt_state": 4.0 * opt_mult * p,
        "activations": cfg.batch_size
        * unet.activation_bytes_per_image(params, cfg.image_size, dtype_bytes=dtype_bytes),
        "data": float(n * hw * (3 * image_bytes + 1) + n),
    }
    parts["total"] = sum(parts.values())
    return parts


def _leaves(tree):
    import jax

    return jax.tree_util.tree_leaves(tree)


def memory_slope(clients: list[int], memory: list[float]) -> tuple[float, float]:
    """Least-squares (slope bytes/client, intercept bytes) of memory over clients."""
    import numpy as np

    if len(clients) < 2:
        return float("nan"), float("nan")
    slope, intercept = np.polyfit(np.asarray(clients, float), np.asarray(memory, float), 1)
    return float(slope), float(intercept)


# ------------------------------------------------------------------------------------------ measurement


def _memory(compiled) -> dict[str, Any]:
    import jax

    out: dict[str, Any] = {
        "peak_bytes_in_use": None,
        "compiled_temp_bytes": None,
        "compiled_argument_bytes": None,
        "compiled_output_bytes": None,
    }
    try:
        ma = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - some backends do not implement it
        ma = None
    if ma is not None:
        out["compiled_temp_bytes"] = int(ma.temp_size_in_bytes)
        out["compiled_argument_bytes"] = int(ma.argument_size_in_bytes)
        out["compiled_output_bytes"] = int(ma.output_size_in_bytes)
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        out["peak_bytes_in_use"] = int(stats["peak_bytes_in_use"])
        out["memory_bytes"], out["memory_source"] = out["peak_bytes_in_use"], "memory_stats.peak_bytes_in_use"
    elif ma is not None:
        from fedtransfer_jax.fl import strategy

        out["memory_bytes"] = strategy.compiled_peak_bytes(compiled)
        out["memory_source"] = "memory_analysis.argument+output-alias+temp"
    else:
        out["memory_bytes"], out["memory_source"] = None, "unavailable"
    return out


def planned(cfg, model):
    """(cfg with the resolved strategy/chunk, the Plan): `auto` as the trainer resolves it, against the
    analytic memory model and this device's budget (explicit strategies pass through)."""
    from fedtransfer_jax.fl import strategy

    budget = strategy.memory_budget_bytes()
    plan = strategy.resolve(cfg.strategy, cfg.clients, cfg.chunk_size, memory=model, budget_bytes=budget)
    return dataclasses.replace(cfg, strategy=plan.strategy, chunk_size=plan.chunk), plan


def measure(cfg, rounds: int, warmup: int = 1) -> dict[str, Any]:
    """One row of the study: compile, warm up (`warmup` rounds; 0 times the first rounds too: the round is
    compiled ahead of time, so only its buffers are new), time `rounds` rounds at cfg.clients."""
    import jax
    from benchmarks import common
    from benchmarks import round_speed

    row: dict[str, Any] = {
        **{k: v for k, v in cfg.as_dict().items() if k in CSV_FIELDS},
        "features": "-".join(map(str, cfg.features)),
        "device": common.device_string(),
    }
    try:
        params = common.init_params(common.make_model(cfg), cfg)
        model = memory_model(params, cfg, cfg.optimizer)
        cfg, plan = planned(cfg, model)
        row.update(plan_strategy=plan.strategy, plan_chunk=plan.chunk, model_peak_bytes=plan.peak_bytes)
        data = round_speed.as_round_data(tuple(jax.device_put(x) for x in common.make_data(cfg)))
        compiled, state, compile_s, data = round_speed.compile_one_jit(cfg, params, data)
        holder = [state]

        def run():
            holder[0], metrics = compiled(holder[0], data)
            jax.block_until_ready(metrics["loss"])

        if warmup > 0:
            _, times = common.time_rounds(run, rounds, warmup)
        else:
            times = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                run()
                times.append(time.perf_counter() - t0)
        st = common.summarize(times)
        row.update(
            status="ok",
            round_time_s=st["median_s"],
            per_client_round_ms=st["median_s"] / cfg.clients * 1e3,
            spread=st["spread"],
            images_per_s=cfg.images_per_round / st["median_s"],
            compile_s=compile_s,
            **_memory(compiled),
        )
    except Exception as e:  # noqa: BLE001 - an OOM ends the sweep with a row that says so
        if "RESOURCE_EXHAUSTED" not in str(e) and "out of memory" not in str(e).lower():
            raise
        row.update(status="oom")
    return row


# --------------------------------------------------------------------------------------------- outputs


def write_csv(rows: list[dict[str, Any]], path: str) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k) for k in CSV_FIELDS})


def plot(
    rows: list[dict[str, Any]],
    path: str,
    estimate: dict[str, float] | None = None,
    intercept: float | None = None,
) -> None:
    """Three panels vs clients (log2 x): round time, per-client round time, memory (MiB, + the estimate)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok"]
    c = [r["clients"] for r in ok]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = (
        ("round_time_s", "round time (s)"),
        ("per_client_round_ms", "round time per client (ms)"),
        ("memory_bytes", "memory (MiB)"),
    )
    for ax, (key, label) in zip(axes, panels):
        pts = [(r["clients"], r.get(key)) for r in ok if r.get(key) is not None]
        scale = 2**20 if key == "memory_bytes" else 1.0
        ax.plot([x for x, _ in pts], [y / scale for _, y in pts], "o-", label="measured")
        if key == "memory_bytes" and estimate and intercept is not None and c:
            ax.plot(
                c,
                [(intercept + estimate["total"] * x) / 2**20 for x in c],
                "--",
                label="intercept + C x estimate",
            )
            ax.legend(fontsize=8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("clients per round")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    if ok:
        r0 = ok[0]
        fig.suptitle(
            f"one-jit round, {r0['strategy']}, {r0['image_size']}px, U-Net {r0['features']}, "
            f"S={r0['local_steps']} B={r0['batch_size']} on {r0['device']}",
            fontsize=9,
        )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def describe_plan_at(params, cfg, optimizer: str, budget_bytes: float) -> str:
    """What `auto` picks on an accelerator with `budget_bytes` of memory (e.g. 4096 clients, 80 GB), by the
    analytic model: the plan, its peak, and the bytes per resident client (data) and per vmapped client."""
    from fedtransfer_jax.fl import strategy

    model = memory_model(params, cfg, optimizer)
    budget = strategy.MEMORY_FRACTION * budget_bytes
    plan = strategy.resolve("auto", cfg.clients, backend="gpu", memory=model, budget_bytes=budget)
    vmap = strategy.resolve("vmap", cfg.clients, memory=model, budget_bytes=budget)
    gb = lambda b: f"{b / 1e9:.2f} GB"  # noqa: E731
    return (
        f"model at C={cfg.clients} ({cfg.image_size} px, B={cfg.batch_size}, N={cfg.examples_per_client}, "
        f"{cfg.image_dtype} images, {cfg.dtype}): fixed {gb(model.fixed)} ({model.fixed / cfg.clients / 1e6:.3f}"
        f" MB per resident client), {model.per_chunk_client / 2 ** 20:.1f} MiB per vmapped client; auto on a "
        f"{gb(budget_bytes)} device ({gb(budget)} budget) -> {plan.strategy}:{plan.chunk} peak "
        f"{gb(plan.peak_bytes)} (fits: {plan.fits}); vmap of all {cfg.clients} would need {gb(vmap.peak_bytes)}"
    )


def report_memory(rows: list[dict[str, Any]], estimate: dict[str, float]) -> tuple[str, float, float]:
    ok = [r for r in rows if r["status"] == "ok" and r.get("memory_bytes") is not None]
    slope, intercept = memory_slope([r["clients"] for r in ok], [r["memory_bytes"] for r in ok])
    mib = lambda b: f"{b / 2 ** 20:8.2f} MiB"  # noqa: E731
    lines = [
        "per-client memory (estimate = params+grads+delta, optimizer state, one step's activations, data):"
    ]
    lines += [f"  {k:12s} {mib(v)}" for k, v in estimate.items()]
    src = ok[0]["memory_source"] if ok else "n/a"
    lines.append(f"  measured slope ({src}): {mib(slope)} per client, intercept {mib(intercept)}")
    if slope == slope and estimate["total"]:
        lines.append(f"  measured / estimated = {slope / estimate['total']:.2f}")
    return "\n".join(lines), slope, intercept


# ------------------------------------------------------------------------------------------------ main


def _define_flags():
    from absl import flags

    flags.DEFINE_string("out", None, "Output folder for scaling.csv and scaling.png.")
    flags.DEFINE_enum("preset", "auto", ["auto", "cpu", "gpu", "tpu"], "Size preset; auto = by JAX backend.")
    flags.DEFINE_string("clients", "", "Comma-separated client counts (overrides the preset).")
    flags.DEFINE_integer("image_size", 0, "Tile size (0 = preset).")
    flags.DEFINE_string("features", "", "U-Net features, e.g. 16,32,64 ('' = preset).")
    flags.DEFINE_integer("local_steps", 0, "Local steps S (0 = preset).")
    flags.DEFINE_integer("batch_size", 0, "Batch size B (0 = preset).")
    flags.DEFINE_enum(
        "strategy",
        "auto",
        ["auto", "vmap", "chunked", "sequential"],
        "Client strategy ('auto': as the trainer).",
    )
    flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "U-Net compute dtype.")
    flags.DEFINE_integer("chunk_size", 0, "Clients per chunk for --strategy chunked.")
    flags.DEFINE_string("conv_impl", "", "Conv impl ('' = models.conv.default_impl()).")
    flags.DEFINE_enum("optimizer", "sgd", ["sgd", "adam"], "Client optimizer.")
    flags.DEFINE_integer("rounds", 3, "Timed rounds per client count (median), after --warmup rounds.")
    flags.DEFINE_integer("warmup", 1, "Untimed rounds before the timed ones (0: time from the first round).")
    flags.mark_flag_as_required("out")


def main(argv) -> None:
    del argv
    from absl import flags
    import jax
    from benchmarks import common

    F = flags.FLAGS
    preset = PRESETS[
        (
            jax.default_backend()
            if F.preset == "auto" and jax.default_backend() in PRESETS
            else ("cpu" if F.preset == "auto" else F.preset)
        )
    ]
    clients = sorted(common.parse_int_list(F.clients or preset["clients"], "--clients"))
    cfg0 = common.BenchConfig(
        clients=clients[0],
        image_size=F.image_size or preset["image_size"],
        features=tuple(common.parse_int_list(F.features or preset["features"], "--features")),
        local_steps=F.local_steps or preset["local_steps"],
        batch_size=F.batch_size or preset["batch_size"],
        optimizer=F.optimizer,
        dtype=F.dtype,
        strategy=F.strategy,
        chunk_size=F.chunk_size,
        conv_impl=F.conv_impl,
    )
    os.makedirs(F.out, exist_ok=True)
    print(f"device: {common.device_string()}; clients {clients}; config {cfg0.as_dict()}", flush=True)
    rows = []
    for c in clients:
        row = measure(dataclasses.replace(cfg0, clients=c), F.rounds, F.warmup)
        rows.append(row)
        write_csv(rows, os.path.join(F.out, "scaling.csv"))  # after every C: a timeout keeps what was done
        if row["status"] != "ok":
            print(f"C={c:5d}  out of memory: stopping the sweep", flush=True)
            break
        mem = f"{row['memory_bytes'] / 2 ** 20:9.1f} MiB" if row["memory_bytes"] is not None else "n/a"
        print(
            f"C={c:5d}  {row['plan_strategy']}:{row['plan_chunk']}  round {row['round_time_s'] * 1e3:9.1f} ms "
            f"(spread {row['spread']:.0%}, {row['per_client_round_ms']:.2f} ms/client)  "
            f"{row['images_per_s']:9.1f} images/s  memory {mem} (model {row['model_peak_bytes'] / 2 ** 20:.1f} MiB)  "
            f"compile {row['compile_s']:.1f} s",
            flush=True,
        )
    params = common.init_params(common.make_model(cfg0), cfg0)
    estimate = per_client_bytes_estimate(params, cfg0, F.optimizer)
    text, _, intercept = report_memory(rows, estimate)
    print(text)
    print(describe_plan_at(params, dataclasses.replace(cfg0, clients=4096), F.optimizer, 80e9))
    write_csv(rows, os.path.join(F.out, "scaling.csv"))
    plot(rows, os.path.join(F.out, "scaling.png"), estimate, intercept if intercept == intercept else None)
    print(f"wrote {os.path.join(F.out, 'scaling.csv')} and {os.path.join(F.out, 'scaling.png')}")


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
