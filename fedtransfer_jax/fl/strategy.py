"""How the round compiler maps the sampled clients onto the hardware.

  vmap        all K sampled clients at once                      (memory ~ K)
  chunked     a scan over chunks of `chunk_size` vmapped clients  (memory ~ chunk_size)
  sequential  a scan over clients, one at a time                  (memory ~ 1)
  auto        chosen for the backend, the model and the memory available (`resolve`)

All strategies compute the same round: client keys depend on (seed, round, client id) only.

`auto`, measured (docs/PERFORMANCE.md): on the CPU every conv already uses all cores, so a scan over clients
(`sequential`) is fastest. On an H100 (256 clients x 4 steps x batch 8, 64 px, U-Net 16/32/64) chunked-32 ran
6816 img/s, sequential 6452 and vmap-256 4869 while needing 50 MB per vmapped client: so accelerators get
`chunked` with the largest chunk <= GPU_CHUNK_CAP that fits MEMORY_FRACTION of the device's memory.

The memory side is a `MemoryModel`: peak bytes of one round = fixed + per_chunk_client x chunk +
per_sampled_client x K. It comes either from the model's shapes (`analytic_memory_model`, cheap) or from
XLA's own buffer plan of the compiled round at a few small sizes (`probe_memory_model`, exact for that
program); `plan_round` does probe + budget + resolve in one call for the engine.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, NamedTuple

import jax

STRATEGIES = ("auto", "vmap", "chunked", "sequential")
# Largest chunk `auto` picks on an accelerator: chunked-32 beat both larger (vmap-256) and smaller
# (sequential) chunks on an H100 at batch 8 x 64 px (docs/PERFORMANCE.md); benchmarks/gpu_check.sh re-measures it.
GPU_CHUNK_CAP = 32
# Share of the device's memory a round may plan for: XLA needs slack for fragmentation, the evaluation
# programs and the test sets that stay resident next to the training data.
MEMORY_FRACTION = 0.8


class Plan(NamedTuple):
    strategy: str  # the resolved strategy (never 'auto')
    chunk: int  # clients vmapped together
    n_chunks: int  # scan length
    peak_bytes: float | None = None  # the memory model's peak for this plan (None: no model given)
    budget_bytes: float | None = None  # the budget it was checked against (None: none given)
    reason: str = ""  # why `auto` chose it

    @property
    def fits(self) -> bool | None:
        if self.peak_bytes is None or self.budget_bytes is None:
            return None
        return self.peak_bytes <= self.budget_bytes


class MemoryModel(NamedTuple):
    """Peak device bytes of a round with chunk c and K sampled clients: fixed + per_chunk_client x c +
    per_sampled_client x K.

    fixed: the round's arguments (every client's data, the round state; identical for every plan) and
    the chunk-independent temporaries. per_chunk_client: what one more vmapped client costs (its local
    params, gradients, optimizer state, one local step's activations). per_sampled_client: what every
    sampled client costs whatever the chunk (its stacked new client state and metrics, e.g. SCAFFOLD's
    control variate).
    """

    fixed: float
    per_chunk_client: float
    per_sampled_client: float = 0.0
    source: str = "analytic"

    def peak_bytes(self, chunk: int, clients_per_round: int) -> float:
        return self.fixed + self.per_chunk_client * chunk + self.per_sampled_client * clients_per_round

    def largest_chunk(self, clients_per_round: int, budget_bytes: float) -> int:
        """The largest chunk whose peak fits the budget (0 when not even one client fits)."""
        room = budget_bytes - self.fixed - self.per_sampled_client * clients_per_round
        if self.per_chunk_client <= 0:
            return clients_per_round if room >= 0 else 0
        return max(0, min(clients_per_round, int(room // self.per_chunk_client)))


def default_strategy(backend: str | None = None) -> str:
    """Without a memory model: `sequential` on the CPU (a scan over clients; vmapping them buys no
    parallelism there and per-client weights cost a batched conv), `chunked` on accelerators."""
    backend = backend or jax.default_backend()
    return "sequential" if backend == "cpu" else "chunked"


def balanced_chunk(clients_per_round: int, max_chunk: int) -> int:
    """The smallest chunk that needs as few scan steps as `max_chunk` does: K=100, max 32 -> 4 chunks of 25
    (not 32+32+32+4 with 28 padded clients that compute and throw away a full chunk's work)."""
    k, c = int(clients_per_round), max(1, min(int(max_chunk), int(clients_per_round)))
    return math.ceil(k / math.ceil(k / c))


def _named(chunk: int, k: int) -> str:
    return "vmap" if chunk >= k else ("sequential" if chunk == 1 else "chunked")


def resolve(
    strategy: str,
    clients_per_round: int,
    chunk_size: int = 0,
    backend: str | None = None,
    *,
    memory: MemoryModel | None = None,
    budget_bytes: float | None = None,
    chunk_cap: int | None = None,
) -> Plan:
    """The plan for `strategy` (explicit strategies are taken as given; `memory`/`budget_bytes` only
    annotate them). `auto`: `sequential` on the CPU; on accelerators the largest chunk <= `chunk_cap`
    (default GPU_CHUNK_CAP) that fits `budget_bytes` under `memory`, balanced over the scan steps, and
    `sequential` when not even one client fits by the model (the smallest plan there is)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"config key fl.strategy: unknown strategy {strategy!r}; choose from {STRATEGIES}")
    k = int(clients_per_round)
    if k < 1:
        raise ValueError(f"clients_per_round must be >= 1, got {k}")
    reason = ""
    if strategy == "auto":
        backend = backend or jax.default_backend()
        if default_strategy(backend) == "sequential":
            chunk, reason = 1, f"{backend}: a scan over clients is fastest (measured)"
        else:
            cap = int(chunk_cap or GPU_CHUNK_CAP)
            chunk, reason = min(k, cap), f"{backend}: largest chunk <= {cap}"
            if memory is not None and budget_bytes is not None:
                fit = memory.largest_chunk(k, budget_bytes)
                if fit < chunk:
                    chunk = max(fit, 1)
                    reason += f" that fits {budget_bytes / 2**30:.2f} GiB" + ("" if fit else " (none fits)")
            chunk = balanced_chunk(k, chunk)
        strategy = _named(chunk, k)
    else:
        chunk = {"vmap": k, "sequential": 1, "chunked": chunk_size or k}[strategy]
        chunk = max(1, min(chunk, k))
    n_chunks = math.ceil(k / chunk)
    peak = memory.peak_bytes(chunk, k) if memory is not None else None
    return Plan(strategy, chunk, n_chunks, peak, budget_bytes, reason)


# ------------------------------------------------------------------------------------------ the budget


def host_available_bytes() -> float:
    """MemAvailable of /proc/meminfo (the CPU backend's 'device' memory), else total physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def memory_budget_bytes(device: Any = None, fraction: float = MEMORY_FRACTION) -> float:
    """`fraction` of what the device can hold: the allocator's `bytes_limit` on GPU/TPU (XLA's BFC
    allocator reserves it up front), the host's available memory on the CPU."""
    device = device or jax.devices()[0]
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory stats
        stats = None
    if stats and stats.get("bytes_limit"):
        return fraction * float(stats["bytes_limit"])
    return fraction * host_available_bytes()


# ----------------------------------------------------------------------------------- the memory models


def compiled_peak_bytes(compiled: Any) -> float:
    """Peak bytes of a compiled program by XLA's buffer plan: arguments + outputs not aliased to a
    donated argument + temporaries."""
    ma = compiled.memory_analysis()
    return float(
        ma.argument_size_in_bytes + ma.output_size_in_bytes - ma.alias_size_in_bytes + ma.temp_size_in_bytes
    )


def fit_memory_model(points: dict[tuple[int, int], float], source: str = "probe") -> MemoryModel:
    """The model through three measured peaks {(K, chunk): bytes} with two chunks at one K and two Ks at one
    chunk (per-client slopes clipped at 0: XLA may reuse a buffer between sizes)."""
    (k1, c1), (k2, c2), (k3, c3) = sorted(points, key=lambda kc: (kc[0], kc[1]))
    if not (k1 == k2 and c1 < c2 and c3 == c2 and k3 > k2):
        raise ValueError(
            f"fit_memory_model: need (K, c1), (K, c2), (K', c2) with c1 < c2, K < K'; got {list(points)}"
        )
    per_chunk = max(0.0, (points[(k2, c2)] - points[(k1, c1)]) / (c2 - c1))
    per_sampled = max(0.0, (points[(k3, c3)] - points[(k2, c2)]) / (k3 - k2))
    fixed = points[(k2, c2)] - per_chunk * c2 - per_sampled * k2
    return MemoryModel(fixed, per_chunk, per_sampled, source)


# Params-sized tensors per vmapped client: XLA's plan of the CPU round showed ~4.2 (local params, grads,
# delta, the chunk sum's share).
PARAM_COPIES = 4
PROBE_POINTS = ((8, 2), (8, 4), (16, 4))  # (K, chunk): small, chunked (a scan), so the probe compiles fast


def probe_points(num_clients: int) -> tuple[tuple[int, int], ...] | None:
    """PROBE_POINTS scaled down for small federations (K cannot exceed the clients there are); None below
    4 clients (then every plan is tiny anyway)."""
    if num_clients >= 16:
        return PROBE_POINTS
    if num_clients >= 4:
        return ((2, 1), (2, 2), (4, 2))
    return None


def probe_memory_model(
    compile_round: Callable[[int, int], Any], points: tuple[tuple[int, int], ...] | None = PROBE_POINTS
) -> MemoryModel | None:
    """Measures the model from XLA's buffer plan: `compile_round(K, chunk)` returns the compiled round
    (`jax.jit(...).lower(...).compile()`) for K sampled clients in chunks of `chunk`; the fixed part
    (all clients' data and state) is whatever the arguments hold, so probe with the real data shapes.
    Three compilations (~15 s each for the U-Net round on the 2-core CPU). None when `points` is None."""
    if points is None:
        return None
    return fit_memory_model({kc: compiled_peak_bytes(compile_round(*kc)) for kc in points}, source="probe")


def analytic_memory_model(
    *,
    num_params: int,
    activation_bytes_per_image: float,
    batch_size: int,
    data_bytes_per_client: float,
    num_clients: int,
    optimizer_slots: int = 0,
    client_state_params: int = 0,
    server_state_params: int | None = None,
    param_bytes: int = 4,
) -> MemoryModel:
    """The model from shapes alone. Per vmapped client: PARAM_COPIES params-sized tensors (local params,
    gradients, the delta, its share of the chunk's sum), optimizer slots (Adam 2P) and one local step's
    saved activations for the batch (the local steps are a scan: one step is live). Per sampled client: its
    new client state (`client_state_params`, e.g. SCAFFOLD's P). Fixed: every client's data and state, the
    server state (params + slots) and its aggregation buffer. `activation_bytes_per_image`:
    `models.unet.activation_bytes_per_image` for the U-Net. Checked against XLA's plan: docs/PERFORMANCE.md.
    """
    p = int(num_params)
    server = p * (2 + optimizer_slots) if server_state_params is None else int(server_state_params)
    per_chunk = param_bytes * p * (PARAM_COPIES + optimizer_slots) + batch_size * activation_bytes_per_image
    fixed = num_clients * (data_bytes_per_client + param_bytes * client_state_params) + param_bytes * (
        server + p
    )
    return MemoryModel(float(fixed), float(per_chunk), float(param_bytes * client_state_params), "analytic")


def plan_round(
    strategy: str,
    clients_per_round: int,
    chunk_size: int = 0,
    *,
    compile_round: Callable[[int, int], Any] | None = None,
    memory: MemoryModel | None = None,
    budget_bytes: float | None = None,
    backend: str | None = None,
    chunk_cap: int | None = None,
) -> Plan:
    """What the engine calls once before training: for `auto` on an accelerator, probe the memory model
    (unless given) with `compile_round` and resolve against `memory_budget_bytes()`; everything else is
    `resolve` as is (no compilation on the CPU, where `auto` is `sequential` whatever the memory)."""
    backend = backend or jax.default_backend()
    needs_memory = strategy == "auto" and default_strategy(backend) != "sequential"
    if needs_memory and memory is None and compile_round is not None:
        memory = probe_memory_model(compile_round, probe_points(getattr(compile_round, "num_clients", 16)))
    if needs_memory and budget_bytes is None:
        budget_bytes = memory_budget_bytes()
    return resolve(
        strategy,
        clients_per_round,
        chunk_size,
        backend,
        memory=memory,
        budget_bytes=budget_bytes,
        chunk_cap=chunk_cap,
    )
