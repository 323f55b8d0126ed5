"""How the round compiler maps the sampled clients onto the hardware.

  vmap        all K sampled clients at once                      (memory ~ K)
  chunked     a scan over chunks of `chunk_size` vmapped clients  (memory ~ chunk_size)
  sequential  a scan over clients, one at a time                  (memory ~ 1)
  auto        chosen for the backend (`resolve`)

All strategies compute the same round: client keys depend on (seed, round, client id) only.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax

STRATEGIES = ("auto", "vmap", "chunked", "sequential")


class Plan(NamedTuple):
    strategy: str  # the resolved strategy (never 'auto')
    chunk: int  # clients vmapped together
    n_chunks: int  # scan length


def default_strategy(backend: str | None = None) -> str:
    """Measured on a 2-core CPU (benchmarks/round_speed.py, models/conv.py): every conv already uses all
    cores, so vmapping clients buys no parallelism there and per-client weights cost a grouped/batched
    conv; a scan over clients is fastest. Accelerators want the batch parallelism of vmap."""
    backend = backend or jax.default_backend()
    return "sequential" if backend == "cpu" else "vmap"


def resolve(strategy: str, clients_per_round: int, chunk_size: int = 0, backend: str | None = None) -> Plan:
    if strategy not in STRATEGIES:
        raise ValueError(f"config key fl.strategy: unknown strategy {strategy!r}; choose from {STRATEGIES}")
    k = int(clients_per_round)
    if strategy == "auto":
        strategy = default_strategy(backend)
    chunk = {"vmap": k, "sequential": 1, "chunked": chunk_size or k}[strategy]
    chunk = max(1, min(chunk, k))
    return Plan(strategy, chunk, math.ceil(k / chunk))
