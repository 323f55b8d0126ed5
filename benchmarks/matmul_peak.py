"""Measured bf16 (and f32) matmul peak of the default device, the denominator of 'fraction of peak'.

  python benchmarks/matmul_peak.py            # prints a table and a final JSON line

A chain of large square matmuls inside one jit (so dispatch is amortised), median of several runs.
"""

from __future__ import annotations

import json
import statistics
import time

import jax
import jax.numpy as jnp


def peak_tflops(dtype, n: int, reps: int = 8, runs: int = 5) -> float:
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), dtype)

    @jax.jit
    def chain(a, b):
        def body(x, _):
            return (x @ b).astype(dtype) * jnp.asarray(0.01, dtype), None

        return jax.lax.scan(body, a, None, length=reps)[0]

    chain(a, b).block_until_ready()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        chain(a, b).block_until_ready()
        times.append(time.perf_counter() - t0)
    return 2.0 * n**3 * reps / statistics.median(times) / 1e12


def main() -> dict:
    on_cpu = jax.default_backend() == "cpu"
    n = 1024 if on_cpu else 8192
    result = {
        "device": f"{jax.devices()[0].device_kind} ({jax.default_backend()})",
        "n": n,
        "bf16_tflops": peak_tflops(jnp.bfloat16, n, reps=2 if on_cpu else 8),
        "f32_tflops": peak_tflops(jnp.float32, n, reps=2 if on_cpu else 8),
    }
    print(f"{result['device']}: bf16 {result['bf16_tflops']:.2f} TFLOP/s, f32 {result['f32_tflops']:.2f} TFLOP/s")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
