"""Roofline of the federated round: achieved FLOP/s against the measured matmul peak and achieved bytes/s
against the measured memory bandwidth (benchmarks/matmul_peak.py), and which limit binds.

Work per round:
  flops  the U-Net's conv FLOPs from its shapes (common.train_flops_per_round: 3x forward, convs only), and
         XLA's own count (`cost_analysis()['flops']`) of ONE compiled local step x clients x local steps;
  bytes  XLA's `cost_analysis()['bytes accessed']` of one compiled local step (every fusion's operands and
         results, after XLA's fusion decisions on this backend) x clients x local steps.
XLA's cost analysis counts a while loop's body once (measured: a round with 2 or 4 local steps reports the
same FLOPs), so the round's own analysis undercounts by the trip counts; one step compiled alone does not.

  attainable = min(peak FLOP/s, intensity x bandwidth),  intensity = flops / bytes
The round is compute-bound when intensity > peak / bandwidth (the ridge point), else memory-bound; when
the achieved rate is far below both roofs, neither binds and the round is overhead/latency-bound (small
kernels, dispatch, poor vectorisation).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from benchmarks import common
from fedtransfer_jax.fl.algorithms.base import LocalTraining, run_local_training


def _cost(compiled) -> dict[str, float]:
    ca = compiled.cost_analysis()
    ca = ca[0] if isinstance(ca, (list, tuple)) else ca
    return {"flops": float(ca.get("flops", 0.0)), "bytes": float(ca.get("bytes accessed", 0.0))}


def local_step_cost(cfg: common.BenchConfig, params) -> dict[str, float]:
    """XLA's FLOPs and bytes of ONE local step of one client (`run_local_training` with one step on a
    client holding exactly one batch; same model, loss, optimizer, image dtype and decoding as the round)."""
    model = common.make_model(cfg)
    lt = LocalTraining(common.make_loss(model), common.client_optimizer(cfg), 1, cfg.batch_size)
    one = dataclasses.replace(cfg, clients=1, local_steps=1)  # N = S * B = B examples: one batch
    images, labels, mask = common.make_data(one)
    data = {"images": images[0], "labels": labels[0], "mask": mask[0]}
    fn = jax.jit(lambda p, d: run_local_training(lt, p, d, np.int32(0), jax.random.PRNGKey(0)))
    return _cost(fn.lower(params, data).compile())


def round_cost(cfg: common.BenchConfig, params) -> dict[str, float]:
    """Per-round FLOPs (model conv count and XLA's) and bytes (XLA's), from one local step."""
    step = local_step_cost(cfg, params)
    steps = cfg.clients * cfg.local_steps
    return {
        "flops_model": common.train_flops_per_round(params, cfg),
        "flops_xla": step["flops"] * steps,
        "bytes_xla": step["bytes"] * steps,
        "step_flops_xla": step["flops"],
        "step_bytes_xla": step["bytes"],
    }


def roofline(
    flops: float, num_bytes: float, seconds: float, peak_tflops: float | None, bandwidth_gbps: float | None
) -> dict[str, Any]:
    """Achieved rates, the roofline's attainable FLOP/s and which limit binds."""
    out: dict[str, Any] = {
        "achieved_tflops": flops / seconds / 1e12,
        "achieved_gbps": num_bytes / seconds / 1e9,
        "intensity_flop_per_byte": flops / num_bytes if num_bytes else None,
        "peak_tflops": peak_tflops,
        "bandwidth_gbps": bandwidth_gbps,
    }
    if not peak_tflops or not bandwidth_gbps or not num_bytes:
        return {**out, "bound": None}
    ridge = peak_tflops * 1e12 / (bandwidth_gbps * 1e9)
    intensity = flops / num_bytes
    attainable = min(peak_tflops * 1e12, intensity * bandwidth_gbps * 1e9)
    achieved = flops / seconds
    return {
        **out,
        "ridge_flop_per_byte": ridge,
        "fraction_of_peak_flops": achieved / (peak_tflops * 1e12),
        "fraction_of_bandwidth": (num_bytes / seconds) / (bandwidth_gbps * 1e9),
        "attainable_tflops": attainable / 1e12,
        "fraction_of_roofline": achieved / attainable,
        "bound": "compute" if intensity >= ridge else "memory",
    }


def format_roofline(r: dict[str, Any]) -> str:
    def f(x, spec):
        return "-" if x is None else format(x, spec)

    rows = [
        f"roofline ({r.get('dtype', '?')}, {r.get('variant', 'one_jit')}): "
        f"{f(r['flops'] / 1e9, '.1f')} GFLOP and {f(r['bytes'] / 1e9, '.2f')} GB per round "
        f"(intensity {f(r.get('intensity_flop_per_byte'), '.1f')} FLOP/B, ridge {f(r.get('ridge_flop_per_byte'), '.1f')})",
        f"  achieved {f(r['achieved_tflops'] * 1e3, '.1f')} GFLOP/s of {f(r['peak_tflops'] and r['peak_tflops'] * 1e3, '.1f')} peak "
        f"({f(r.get('fraction_of_peak_flops'), '.1%')}), {f(r['achieved_gbps'], '.1f')} GB/s of "
        f"{f(r['bandwidth_gbps'], '.1f')} ({f(r.get('fraction_of_bandwidth'), '.1%')}); "
        f"roof: {r.get('bound') or '-'}-bound, at {f(r.get('fraction_of_roofline'), '.1%')} of it",
    ]
    if r.get("achieved_tflops_per_cpu_s") is not None:
        rows.append(
            f"  per CPU-second (load-independent): {r['achieved_tflops_per_cpu_s'] * 1e3:.1f} GFLOP/s, "
            f"{r['fraction_of_peak_per_cpu_s']:.1%} of the matmul's"
        )
    return "\n".join(rows)
