"""Measured peaks of the default device, the denominators of the roofline: bf16 and f32 matmul FLOP/s and
memory bandwidth.

  python -m benchmarks.matmul_peak            # prints a line and a final JSON line
  python -m benchmarks.matmul_peak --tiny     # small sizes (a smoke test of the script)

Matmul: a chain of large square matmuls inside one jit (dispatch amortised), median of several runs.
Bandwidth: a jitted `y = x * a + b` over an array much larger than the caches (one read + one write per
element), median of several runs; STREAM-'scale'-like, what an elementwise XLA fusion can reach.
The JSON also carries the load average, because on a shared CPU every number here moves with it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp


def _median_seconds(fn, *args, runs: int, cpu: bool = False) -> float:
    """Median wall seconds of `fn(*args)` (or of the process's CPU time, all threads, with `cpu`)."""
    clock = time.process_time if cpu else time.perf_counter
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(runs):
        t0 = clock()
        jax.block_until_ready(fn(*args))
        times.append(clock() - t0)
    return statistics.median(times)


def peak_tflops(dtype, n: int, reps: int = 8, runs: int = 5, cpu: bool = False) -> float:
    """Matmul TFLOP/s; with `cpu`, per second of process CPU time (on a shared CPU: what the cores we got
    did, whatever the load; compare with round_speed's cpu_time_s)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), dtype)

    @jax.jit
    def chain(a, b):
        def body(x, _):
            return (x @ b).astype(dtype) * jnp.asarray(0.01, dtype), None

        return jax.lax.scan(body, a, None, length=reps)[0]

    return 2.0 * n**3 * reps / _median_seconds(chain, a, b, runs=runs, cpu=cpu) / 1e12


def bandwidth_gbps(num_bytes: int, runs: int = 5) -> float:
    """GB/s (1e9 B/s) of reading and writing a float32 array of `num_bytes`. The input is donated and the
    output fed back, so the same two buffers are reused (a fresh output every call would time the page
    faults of new host memory on the CPU)."""
    x = jnp.ones((num_bytes // 4,), jnp.float32)
    scale = jax.jit(lambda x: x * jnp.float32(0.5) + jnp.float32(1.0), donate_argnums=0)
    for _ in range(2):
        x = jax.block_until_ready(scale(x))
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        x = jax.block_until_ready(scale(x))
        times.append(time.perf_counter() - t0)
    return 2.0 * x.size * 4 / statistics.median(times) / 1e9


def default_sizes(backend: str, tiny: bool = False) -> dict:
    """Matmul n, chain length and bandwidth array bytes per backend (GPU: big enough to saturate an H100)."""
    if tiny:
        return {"n": 256, "reps": 2, "bw_bytes": 64 * 2**20}
    if backend == "cpu":
        return {"n": 2048, "reps": 2, "bw_bytes": 1 * 2**30}
    return {"n": 8192, "reps": 8, "bw_bytes": 4 * 2**30}


def measure(tiny: bool = False) -> dict:
    backend = jax.default_backend()
    sizes = default_sizes(backend, tiny)
    load0 = os.getloadavg()[0]
    result = {
        "device": f"{jax.devices()[0].device_kind} ({backend})",
        "n": sizes["n"],
        "bf16_tflops": peak_tflops(jnp.bfloat16, sizes["n"], reps=sizes["reps"]),
        "f32_tflops": peak_tflops(jnp.float32, sizes["n"], reps=sizes["reps"]),
        "bandwidth_gbps": bandwidth_gbps(sizes["bw_bytes"]),
        "f32_tflops_per_cpu_s": (
            peak_tflops(jnp.float32, sizes["n"], reps=sizes["reps"], cpu=True) if backend == "cpu" else None
        ),
        "bandwidth_array_bytes": sizes["bw_bytes"],
        "load_avg_1min": [load0, os.getloadavg()[0]],
        "cpu_count": os.cpu_count(),
    }
    return result


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="small sizes (smoke test)")
    args = ap.parse_args(argv)
    result = measure(args.tiny)
    print(
        f"{result['device']}: bf16 {result['bf16_tflops']:.3f} TFLOP/s, f32 {result['f32_tflops']:.3f} TFLOP/s, "
        f"memory {result['bandwidth_gbps']:.1f} GB/s (load avg {result['load_avg_1min'][0]:.1f})"
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
