"""Micro-benchmark of the conv impls in ``fedtransfer_jax.models.conv`` under scan / vmap.

Prints a table and a final JSON line.  Cases (times are per call, median of ``--repeats`` runs
after a warm-up/compile call):

1. ``sgd8_scan`` / ``sgd8_unrolled``: 8 SGD steps of a 3x3 16->16 conv on 4x64x64.
2. ``sgd8_scan_vmap8`` / ``sgd8_unrolled_vmap8``: the same vmapped over 8 clients (per-client weights).
3. ``unet_round``: the one-jit federated round, vmap(clients=8) of scan(4 local steps) of grad of a
   small U-Net (features 16,32,64 at 64,32,16 px, batch 4, two 3x3 convs per level), plus the
   alternative formulations: ``lax.map`` over clients inside one jit, a Python loop of jitted
   per-client scans, and bf16 compute.

Usage: ``python -m benchmarks.conv_micro [--repeats 5] [--impls xla,custom_vjp,...] [--skip-unet]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax

from fedtransfer_jax.models.conv import IMPLS, conv2d, default_impl, upsample_nearest

LR = 1e-3
N_CLIENTS = 8


def time_fn(fn: Callable, *args: Any, repeats: int) -> float:
    """Median wall time in ms of ``fn(*args)`` after one warm-up (compile) call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


# ---------------------------------------------------------------- case 1/2: single conv SGD


def conv_sgd_steps(impl: str, n_steps: int, scan: bool) -> Callable:
    """n_steps of SGD on mean((conv(x, w) - t)^2), in lax.scan or unrolled."""

    def loss(w, x, t):
        return jnp.mean((conv2d(x, w, impl=impl) - t) ** 2)

    def run(w, x, t):
        def step(w, _):
            return w - LR * jax.grad(loss)(w, x, t), None

        if scan:
            return lax.scan(step, w, None, length=n_steps)[0]
        for _ in range(n_steps):
            w, _ = step(w, None)
        return w

    return run


# ---------------------------------------------------------------- case 3: small U-Net

FEATS = (16, 32, 64)


def unet_init(key: jax.Array, in_ch: int = 3) -> dict:
    """HWIO kernels for a 3-level U-Net: enc (2 convs/level), dec (2 convs/level), 1x1 head."""
    shapes: dict[str, tuple[int, ...]] = {}
    c = in_ch
    for lvl, f in enumerate(FEATS):
        shapes[f"enc{lvl}a"] = (3, 3, c, f)
        shapes[f"enc{lvl}b"] = (3, 3, f, f)
        c = f
    for lvl in reversed(range(len(FEATS) - 1)):
        f = FEATS[lvl]
        shapes[f"up{lvl}"] = (3, 3, c, f)
        shapes[f"dec{lvl}a"] = (3, 3, 2 * f, f)
        shapes[f"dec{lvl}b"] = (3, 3, f, f)
        c = f
    shapes["head"] = (1, 1, c, 1)
    params = {}
    for i, (name, s) in enumerate(sorted(shapes.items())):
        fan_in = s[0] * s[1] * s[2]
        params[name] = {
            "w": jax.random.normal(jax.random.fold_in(key, i), s) / jnp.sqrt(fan_in),
            "b": jnp.zeros((s[-1],)),
        }
    return params


def unet_apply(params: dict, x: jax.Array, impl: str, dtype: Any = jnp.float32) -> jax.Array:
    """Forward pass; ``dtype`` is the compute dtype (params are cast, stay f32 outside)."""

    def conv(name, h, act=True):
        p = params[name]
        y = conv2d(h.astype(dtype), p["w"].astype(dtype), impl=impl) + p["b"].astype(dtype)
        return jax.nn.relu(y) if act else y

    skips = []
    h = x
    for lvl in range(len(FEATS)):
        if lvl > 0:
            n, hh, ww, c = h.shape
            h = h.reshape(n, hh // 2, 2, ww // 2, 2, c).max(axis=(2, 4))
        h = conv(f"enc{lvl}b", conv(f"enc{lvl}a", h))
        skips.append(h)
    for lvl in reversed(range(len(FEATS) - 1)):
        h = conv(f"up{lvl}", upsample_nearest(h, 2))
        h = jnp.concatenate([h, skips[lvl]], axis=-1)
        h = conv(f"dec{lvl}b", conv(f"dec{lvl}a", h))
    return conv("head", h, act=False)[..., 0].astype(jnp.float32)


def unet_local_steps(impl: str, n_steps: int, dtype: Any = jnp.float32) -> Callable:
    """scan of n_steps SGD steps of BCE on one client's (images [S,B,H,W,3], labels [S,B,H,W])."""

    def loss(params, x, y):
        logits = unet_apply(params, x, impl, dtype)
        return jnp.mean(jnp.maximum(logits, 0) - logits * y + jnp.log1p(jnp.exp(-jnp.abs(logits))))

    def run(params, xs, ys):
        def step(p, xy):
            g = jax.grad(loss)(p, *xy)
            return jax.tree.map(lambda a, b: a - LR * b, p, g), None

        return lax.scan(step, params, (xs, ys), length=n_steps)[0]

    return run


def unet_round(impl: str, form: str, n_steps: int, dtype: Any = jnp.float32) -> Callable:
    """One federated round over the client axis: 'vmap' or 'map' (lax.map) in one jit."""
    local = unet_local_steps(impl, n_steps, dtype)
    if form == "vmap":
        return jax.jit(jax.vmap(local))
    if form == "map":
        return jax.jit(lambda p, xs, ys: lax.map(lambda a: local(*a), (p, xs, ys)))
    raise ValueError(form)


def unet_python_loop(impl: str, n_steps: int, dtype: Any = jnp.float32) -> Callable:
    """Baseline: Python loop over clients of a jitted per-client scan."""
    local = jax.jit(unet_local_steps(impl, n_steps, dtype))

    def run(p, xs, ys):
        return [local(jax.tree.map(lambda a: a[c], p), xs[c], ys[c]) for c in range(xs.shape[0])]

    return run


# ---------------------------------------------------------------- driver


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--impls", default=",".join(IMPLS))
    ap.add_argument(
        "--unet-impls", default=None, help="impls for case 3 (default: --impls); 'xla' vmap takes minutes"
    )
    ap.add_argument("--skip-micro", action="store_true")
    ap.add_argument("--skip-unet", action="store_true")
    ap.add_argument(
        "--bf16", action="store_true", help="also time bf16 compute for the U-Net round (default impl only)"
    )
    args = ap.parse_args()
    impls = args.impls.split(",")
    key = jax.random.key(0)
    results: dict[str, dict[str, float]] = {}

    def record(impl: str, case: str, ms: float) -> None:
        results.setdefault(impl, {})[case] = round(ms, 2)
        print(f"{impl:16s} {case:28s} {ms:10.2f} ms", flush=True)

    if not args.skip_micro:
        x = jax.random.normal(jax.random.fold_in(key, 1), (4, 64, 64, 16))
        t = jax.random.normal(jax.random.fold_in(key, 2), (4, 64, 64, 16))
        w = jax.random.normal(jax.random.fold_in(key, 3), (3, 3, 16, 16)) * 0.1
        xc = jax.random.normal(jax.random.fold_in(key, 4), (N_CLIENTS, 4, 64, 64, 16))
        tc = jax.random.normal(jax.random.fold_in(key, 5), (N_CLIENTS, 4, 64, 64, 16))
        wc = jax.random.normal(jax.random.fold_in(key, 6), (N_CLIENTS, 3, 3, 16, 16)) * 0.1
        for impl in impls:
            for scan in (True, False):
                tag = "scan" if scan else "unrolled"
                run = conv_sgd_steps(impl, 8, scan)
                record(impl, f"sgd8_{tag}", time_fn(jax.jit(run), w, x, t, repeats=args.repeats))
                record(
                    impl,
                    f"sgd8_{tag}_vmap8",
                    time_fn(jax.jit(jax.vmap(run)), wc, xc, tc, repeats=args.repeats),
                )
            one = jax.jit(conv_sgd_steps(impl, 8, True))
            pyloop = lambda w, x, t: [one(w[c], x[c], t[c]) for c in range(N_CLIENTS)]  # noqa: E731
            record(impl, "sgd8_scan_pyloop8", time_fn(pyloop, wc, xc, tc, repeats=args.repeats))

    if not args.skip_unet:
        n_steps = 4
        p0 = unet_init(jax.random.fold_in(key, 10))
        pc = jax.tree.map(
            lambda a: a + 0.01 * jax.random.normal(jax.random.fold_in(key, 11), (N_CLIENTS,) + a.shape), p0
        )
        xs = jax.random.uniform(jax.random.fold_in(key, 12), (N_CLIENTS, n_steps, 4, 64, 64, 3))
        ys = (jax.random.uniform(jax.random.fold_in(key, 13), (N_CLIENTS, n_steps, 4, 64, 64)) < 0.2).astype(
            jnp.float32
        )
        for impl in args.unet_impls.split(",") if args.unet_impls else impls:
            with_bf16 = args.bf16 and impl == default_impl()
            dtypes = [("f32", jnp.float32)] + ([("bf16", jnp.bfloat16)] if with_bf16 else [])
            for dname, dt in dtypes:
                sfx = "" if dname == "f32" else "_bf16"
                record(
                    impl,
                    f"unet_round_vmap{sfx}",
                    time_fn(unet_round(impl, "vmap", n_steps, dt), pc, xs, ys, repeats=args.repeats),
                )
                record(
                    impl,
                    f"unet_round_map{sfx}",
                    time_fn(unet_round(impl, "map", n_steps, dt), pc, xs, ys, repeats=args.repeats),
                )
                record(
                    impl,
                    f"unet_pyloop{sfx}",
                    time_fn(unet_python_loop(impl, n_steps, dt), pc, xs, ys, repeats=args.repeats),
                )

    print(
        json.dumps(
            {
                "backend": jax.default_backend(),
                "devices": str(jax.devices()),
                "default_impl": default_impl(),
                "ms": results,
            }
        )
    )


if __name__ == "__main__":
    main()
