"""Secure aggregation (Bonawitz et al. 2017, "Practical secure aggregation for privacy-preserving machine
learning", CCS) as a `SumProtocol`, simulated inside the one jitted round.

Each sampled client turns its contribution into a payload the server cannot read alone:

1. **Quantise** every float leaf of the contribution (`x`, `w`, `loss`, DP's `unclipped`, ...) to fixed point:
   v is clipped to [-R, R] (R per contribution key, `clip_range`; clipped or non-finite values are counted),
   scaled by S and rounded (stochastically by default: unbiased) to a signed integer, stored two's-complement
   in uint32 modulo 2**bits. S is the largest scale with K (R S + 1) <= 2**(bits-1) - 1, so the sum of the
   K sampled clients cannot overflow, and with R S <= 2**24 so that float32 holds the scaled values exactly
   (the float32 mantissa, not `bits`, limits the resolution for K < 128 at 32 bits). Resolution 1 / S per
   client: each quantised value is within 1.5 / S of v S / S (stochastic: one unit of rounding, half a unit
   of float32 rounding of v S) or 1 / S (deterministic), so the dequantised sum is within 1.5 K / S (K / S)
   of the float sum of the clipped values.
2. **Pairwise masks**: for every pair (i, j) of neighbours, a mask PRG(s_ij) the size of the payload, added
   by the client with the lower id and subtracted by the higher one, in uint32 arithmetic modulo 2**bits:
   the masks cancel exactly in the sum of the pair's payloads. s_ij is a Diffie-Hellman agreement
   s_ij = pk_j^sk_i = pk_i^sk_j in the multiplicative group of F_p (p = 65521, generator 17; L = 4
   independent components, i.e. a toy 64-bit secret).
3. **Self mask** (the paper's double masking): PRG(b_i) with a private seed b_i, removed by the server only
   for survivors, so a payload that arrives after its sender was declared dropped stays masked.
4. Both sk_i and b_i are **t-out-of-K Shamir shared** over F_p among the sampled clients. At decode the
   server takes `survived` (whose payload arrived), collects from the survivors (at least t) their shares
   of sk_u for every dropped u and of b_v for every survivor v (never both for one client), reconstructs them by Lagrange
   interpolation at 0, recomputes PRG(b_v) and the masks PRG(pk_v^sk_u) between each survivor v and each
   dropped neighbour u, and removes them; with fewer than t survivors the round aborts (a zero sum, flagged).

What is simulated and what is real:
  real       the fixed-point quantisation and its clipping; the modular uint32 masking and exact cancellation;
             the DH arithmetic in F_p (pk = g^sk, s = pk^sk'); Shamir dealing and Lagrange reconstruction in
             F_p, from exactly the shares survivors would send; which secrets the server may use (reconstructed
             sk of dropped clients, reconstructed b of survivors, public keys).
  simulated  the AdvertiseKeys / ShareKeys rounds: the one-jit round has no extra communication phase, so a
             client's secrets (sk, b and its Shamir polynomials) are derived from the shared round key and its
             id (`_client_secrets`) instead of being drawn privately, and the shares are dealt by that same
             function instead of travelling encrypted through the server. Anyone holding the round key could
             therefore unmask everything: the simulation shows the protocol's arithmetic, costs and dropout
             behaviour, not its cryptographic security. The group is tiny (16-bit), the PRG is JAX's
             threefry keyed by the agreed secret (a real implementation uses AES-CTR / ChaCha on a 128-bit key),
             there is no authenticated encryption, no consistency check round, and no protection against a
             malicious server lying about dropouts.

Cost: with the complete graph every client expands K - 1 pair masks and one self mask, so a round costs
O(K^2 x message size) PRG output on the clients (vmapped) and up to O(K x dropped x size) on the server.
`neighbours=k` uses the sparse k-regular graph of Bell et al. 2020 ("Secure single-server aggregation with
(poly)logarithmic overhead", CCS): a circulant graph over a public random permutation of the sampled
clients, each masking with k neighbours only: O(K k x size). (Bell et al. also share keys with neighbours
only and need k = O(log K) for security against colluding clients; here shares still go to all K.)
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp

from fedtransfer_jax.fl.aggregators import PROTOCOL_METRICS, ClientContext, ServerContext, SumProtocol

P = 65521  # the largest prime below 2**16: products of two field elements fit in uint32
G = 17  # a generator of the multiplicative group of F_P
L = 4  # field elements per secret (~64 bits)
CLIPPED = "secagg_clipped"  # payload entry: how many values were clipped (masked like the rest)

_TAG_SECRETS, _TAG_PRG, _TAG_GRAPH, _TAG_ROUNDING = 0x5EC, 0x9A6, 0x6A4, 0x40D


# --------------------------------------------------------------------------------------------------------
# Arithmetic in F_P on uint32 (no 64-bit integers needed: P < 2**16).
# --------------------------------------------------------------------------------------------------------
def mulmod(a: jax.Array, b: jax.Array) -> jax.Array:
    return (a.astype(jnp.uint32) * b.astype(jnp.uint32)) % jnp.uint32(P)


def powmod(base: jax.Array, exponent: jax.Array) -> jax.Array:
    """base ** exponent mod P by square-and-multiply over the 16 bits of the exponent (exponent < 2**16)."""
    exponent = exponent.astype(jnp.uint32)

    def step(bit, carry):  # a loop, not unrolled: keeps the round's XLA graph (and compile time) small
        result, b = carry
        result = jnp.where((exponent >> bit.astype(jnp.uint32)) & 1, mulmod(result, b), result)
        return result, mulmod(b, b)

    b0 = base.astype(jnp.uint32) % jnp.uint32(P)
    return jax.lax.fori_loop(0, 16, step, (jnp.ones_like(b0), b0))[0]


def invmod(a: jax.Array) -> jax.Array:
    """a^-1 = a^(P-2) mod P (Fermat), for a != 0."""
    return powmod(a, jnp.full_like(a, P - 2, jnp.uint32))


def shamir_share(secret: jax.Array, coefficients: jax.Array, num_shares: int) -> jax.Array:
    """Shamir's t-out-of-n sharing of `secret` [L] in F_P with polynomial `coefficients` [t-1, L]:
    share j (j = 0..n-1, evaluated at x = j + 1) is secret + sum_k c_k x^(k+1) mod P. Returns [n, L]."""
    x = jnp.arange(1, num_shares + 1, dtype=jnp.uint32)[:, None]
    acc = jnp.broadcast_to(secret.astype(jnp.uint32) % jnp.uint32(P), (num_shares, secret.shape[-1]))
    xk = jnp.ones_like(x)
    for c in coefficients:
        xk = mulmod(xk, x)
        acc = (acc + mulmod(c[None, :], xk)) % jnp.uint32(P)
    return acc


def shamir_reconstruct(shares: jax.Array, use: jax.Array) -> jax.Array:
    """The secret from the shares [n, L] of the parties with `use` [n] True (x = index + 1), by Lagrange
    interpolation at 0: sum_j y_j prod_{m != j} x_m / (x_m - x_j). Correct whenever at least t parties are
    used (using more than t is fine: the polynomial has degree t - 1)."""
    n = shares.shape[0]
    x = jnp.arange(1, n + 1, dtype=jnp.uint32)
    diff = (x[None, :] + jnp.uint32(P) - x[:, None]) % jnp.uint32(P)  # [j, m] = x_m - x_j
    pair = use[None, :] & use[:, None] & ~jnp.eye(n, dtype=bool)
    num = jnp.where(pair, x[None, :], jnp.uint32(1))
    den = jnp.where(pair, diff, jnp.uint32(1))
    mulmod_rows = lambda m, acc: (mulmod(acc[0], num[:, m]), mulmod(acc[1], den[:, m]))  # noqa: E731
    lam_num, lam_den = jax.lax.fori_loop(
        0, n, mulmod_rows, (jnp.ones((n,), jnp.uint32), jnp.ones((n,), jnp.uint32))
    )
    lam = jnp.where(use, mulmod(lam_num, invmod(lam_den)), jnp.uint32(0))  # [n]
    terms = mulmod(shares, lam[:, None])  # each < P, so the sum of n < 2**16 of them cannot overflow uint32
    return terms.sum(axis=0, dtype=jnp.uint32) % jnp.uint32(P)


# --------------------------------------------------------------------------------------------------------
# Key material (the simulated AdvertiseKeys / ShareKeys rounds) and the PRG.
# --------------------------------------------------------------------------------------------------------
def _client_secrets(round_key: jax.Array, client_id: jax.Array, threshold: int) -> dict:
    """Client `client_id`'s secrets for the round. SIMULATION: derived from the round key so that the
    one-jit round needs no key-exchange phase; a real client draws them privately."""
    k = jax.random.fold_in(jax.random.fold_in(round_key, _TAG_SECRETS), client_id)
    # One draw for everything (each threefry call adds compile time): rows sk, b, t-1 + t-1 coefficients.
    draw = jax.random.bits(k, (2 * threshold, L), jnp.uint32) % jnp.uint32(P)  # (bias < 2**-15: simulated)
    return {
        "sk": jnp.uint32(1) + draw[0] % jnp.uint32(P - 2),  # DH secret key, in [1, P-1)
        "b": draw[1],  # self-mask seed
        "sk_poly": draw[2 : threshold + 1],  # Shamir polynomials (degree t - 1)
        "b_poly": draw[threshold + 1 :],
    }


def public_keys(round_key: jax.Array, sampled_ids: jax.Array, threshold: int) -> jax.Array:
    """What every sampled client advertises: pk = G^sk [K, L] (public)."""
    sk = jax.vmap(lambda c: _client_secrets(round_key, c, threshold)["sk"])(sampled_ids)
    return powmod(jnp.full_like(sk, G), sk)


def agree(sk_self: jax.Array, pk_other: jax.Array) -> jax.Array:
    """Diffie-Hellman: pk_other^sk_self = G^(sk_self sk_other), the same from both sides."""
    return powmod(pk_other, sk_self)


def prg(seed: jax.Array, round_key: jax.Array, shapes: list, bits: int) -> list:
    """Pseudo-random uint32 arrays (uniform modulo 2**bits) of `shapes`, keyed by a field-element seed [L]."""
    # Two 32-bit words from the L = 4 16-bit field elements: two fold_ins (each one is a threefry call).
    k = jax.random.fold_in(round_key, _TAG_PRG)
    k = jax.random.fold_in(jax.random.fold_in(k, seed[0] | (seed[1] << 16)), seed[2] | (seed[3] << 16))
    modmask = jnp.uint32((1 << bits) - 1) if bits < 32 else jnp.uint32(0xFFFFFFFF)
    return _split(jax.random.bits(k, (_total_size(shapes),), jnp.uint32) & modmask, shapes)


def _total_size(shapes: list) -> int:
    return max(1, sum(math.prod(s) for s in shapes))


def _split(flat: jax.Array, shapes: list) -> list:
    """One flat stream cut into arrays of `shapes` (one PRG call per mask instead of one per leaf)."""
    out, start = [], 0
    for s in shapes:
        size = math.prod(s)
        out.append(flat[start : start + size].reshape(s))
        start += size
    return out


def _offsets(k_sampled: int, neighbours: int | None) -> list[int]:
    """Circulant offsets of the masking graph: all others (complete graph) or +-1..+-k/2 (k-regular)."""
    if neighbours is None or neighbours >= k_sampled - 1:
        return list(range(1, k_sampled))
    half = neighbours // 2
    return list(range(1, half + 1)) + list(range(k_sampled - half, k_sampled))


def _graph_order(round_key: jax.Array, k_sampled: int, neighbours: int | None) -> tuple[jax.Array, jax.Array]:
    """(perm, rank): the public order of the circulant graph (random for the sparse graph, Bell et al.)."""
    if neighbours is None or neighbours >= k_sampled - 1:
        perm = jnp.arange(k_sampled)
    else:
        perm = jax.random.permutation(jax.random.fold_in(round_key, _TAG_GRAPH), k_sampled)
    return perm, jnp.argsort(perm)


def _neighbour(perm, rank, position, offset, k_sampled):
    return perm[(rank[position] + offset) % k_sampled]


# --------------------------------------------------------------------------------------------------------
# The protocol.
# --------------------------------------------------------------------------------------------------------
def quantisation_scale(clip_range: float, k_sampled: int, bits: int) -> float:
    """The fixed-point scale S: K (R S + 1) <= 2**(bits-1) - 1 (no overflow) and R S <= 2**24 (exact in
    float32)."""
    return min((2.0 ** (bits - 1) - 1 - k_sampled) / (k_sampled * clip_range), 2.0**24 / clip_range)


class SecAggParts(NamedTuple):
    """The protocol's stages, separately testable: encode = mask . quantise, decode = dequantise . unmask."""

    quantise: Callable[[dict, ClientContext], dict]  # contribution -> uint32 tree (+ clipped count)
    mask: Callable[[dict, ClientContext], dict]  # + pair masks (+ self mask), modulo 2**bits
    unmask: Callable[[dict, ServerContext], tuple[dict, jax.Array]]  # summed payload -> (sum, aborted)
    dequantise: Callable[[dict, jax.Array, ServerContext], dict]  # -> float sum + protocol metrics


def secure_sum(
    bits: int = 32,
    clip_range: float | Mapping[str, float] = 1.0,
    neighbours: int | None = None,
    *,
    rounding: str = "stochastic",
    self_mask: bool = True,
    threshold: int | None = None,
) -> SumProtocol:
    """Bonawitz et al. 2017 secure aggregation (see the module docstring for what is simulated).

    Args:
      bits: payload integers live modulo 2**bits (1..32; stored in uint32).
      clip_range: R, per contribution key ({"x": C, "w": 1.0, ...}; key "default" for the rest) or one
        float for all: values are clipped to [-R, R] before quantisation, and counted.
      neighbours: None for the complete masking graph, or an even k < K - 1 for the k-regular graph of
        Bell et al. 2020.
      rounding: 'stochastic' (unbiased, with the client's private key) or 'deterministic' (nearest).
      self_mask: the double masking of the paper.
      threshold: t of the t-out-of-K Shamir sharing (default: a majority, K // 2 + 1); a round with fewer
        than t survivors aborts.

    The payload has one uint32 leaf per contribution leaf plus `secagg_clipped`; `decode` returns the summed
    contribution (float32) and, under `protocol_metrics`, `clipped` (values clipped over all survivors),
    `aborted` and `survivors`.
    """
    parts = secure_sum_parts(
        bits, clip_range, neighbours, rounding=rounding, self_mask=self_mask, threshold=threshold
    )
    return SumProtocol(
        f"secagg{bits}",
        lambda contribution, ctx: parts.mask(parts.quantise(contribution, ctx), ctx),
        lambda total, ctx: parts.dequantise(*parts.unmask(total, ctx), ctx),
    )


def secure_sum_parts(
    bits: int = 32,
    clip_range: float | Mapping[str, float] = 1.0,
    neighbours: int | None = None,
    *,
    rounding: str = "stochastic",
    self_mask: bool = True,
    threshold: int | None = None,
) -> SecAggParts:
    """The stages of `secure_sum` (same arguments)."""
    if not 1 <= bits <= 32:
        raise ValueError(f"secure_sum: bits must be in 1..32, got {bits}")
    if rounding not in ("stochastic", "deterministic"):
        raise ValueError(f"secure_sum: rounding must be 'stochastic' or 'deterministic', got {rounding!r}")
    if neighbours is not None and (neighbours < 2 or neighbours % 2):
        raise ValueError(f"secure_sum: neighbours must be an even k >= 2 (or None), got {neighbours}")
    modmask = jnp.uint32((1 << bits) - 1) if bits < 32 else jnp.uint32(0xFFFFFFFF)

    def range_of(key: str) -> float:
        if not isinstance(clip_range, Mapping):
            return float(clip_range)
        if key in clip_range:
            return float(clip_range[key])
        if "default" in clip_range:
            return float(clip_range["default"])
        raise ValueError(f"secure_sum: no clip_range for contribution entry {key!r} (and no 'default')")

    def t_of(k_sampled: int) -> int:
        t = k_sampled // 2 + 1 if threshold is None else int(threshold)
        if not 1 <= t <= k_sampled:
            raise ValueError(f"secure_sum: threshold must be in 1..{k_sampled} (clients sampled), got {t}")
        return t

    def quantise(contribution: dict, ctx: ClientContext) -> dict:
        k_sampled = ctx.sampled_ids.shape[0]
        names = sorted(contribution)
        flat = [jax.tree_util.tree_flatten(contribution[name]) for name in names]
        shapes = [jnp.shape(v) for leaves, _ in flat for v in leaves]
        if rounding == "stochastic":  # one uniform draw for all leaves, from the client's private key
            noise = _split(
                jax.random.uniform(jax.random.fold_in(ctx.key, _TAG_ROUNDING), (_total_size(shapes),)), shapes
            )
        quantised, clipped, i = {}, jnp.uint32(0), 0
        for name, (leaves, treedef) in zip(names, flat):
            r = range_of(name)
            scale = quantisation_scale(r, k_sampled, bits)
            out = []
            for v in leaves:
                v = jnp.asarray(v, jnp.float32)
                bad = ~jnp.isfinite(v) | (jnp.abs(v) > r)
                clipped = clipped + bad.sum(dtype=jnp.uint32)
                y = jnp.clip(jnp.where(jnp.isfinite(v), v, 0.0), -r, r) * jnp.float32(scale)
                y = jnp.floor(y + noise[i]) if rounding == "stochastic" else jnp.round(y)
                out.append(jax.lax.bitcast_convert_type(y.astype(jnp.int32), jnp.uint32) & modmask)
                i += 1
            quantised[name] = jax.tree_util.tree_unflatten(treedef, out)
        # The count is masked like everything else; capped so that K counts cannot wrap around.
        quantised[CLIPPED] = jnp.minimum(clipped, jnp.uint32(max(1, (2 ** (bits - 1) - 1) // k_sampled)))
        return quantised

    def mask(quantised: dict, ctx: ClientContext) -> dict:
        k_sampled = ctx.sampled_ids.shape[0]
        t = t_of(k_sampled)
        leaves, treedef = jax.tree_util.tree_flatten(quantised)
        shapes = [x.shape for x in leaves]
        mine = _client_secrets(ctx.round_key, ctx.client_id, t)
        pk = public_keys(ctx.round_key, ctx.sampled_ids, t)
        perm, rank = _graph_order(ctx.round_key, k_sampled, neighbours)

        def pair_mask(ls, off):  # a scan over the neighbours, not a Python loop: one traced PRG
            j = _neighbour(perm, rank, ctx.position, off, k_sampled)
            masks = prg(agree(mine["sk"], pk[j]), ctx.round_key, shapes, bits)
            add = ctx.client_id < ctx.sampled_ids[j]  # the lower id adds, the higher subtracts
            return [jnp.where(add, x + m, x - m) for x, m in zip(ls, masks)], None

        offsets = _offsets(k_sampled, neighbours)
        if offsets:
            leaves, _ = jax.lax.scan(pair_mask, leaves, jnp.asarray(offsets, jnp.int32))
        if self_mask:
            leaves = [x + m for x, m in zip(leaves, prg(mine["b"], ctx.round_key, shapes, bits))]
        return jax.tree_util.tree_unflatten(treedef, [x & modmask for x in leaves])

    def unmask(total: dict, ctx: ServerContext) -> tuple[dict, jax.Array]:
        k_sampled = ctx.sampled_ids.shape[0]
        t = t_of(k_sampled)
        survived = jnp.asarray(ctx.survived, bool)
        n_survived = survived.sum()
        aborted = n_survived < t
        leaves, treedef = jax.tree_util.tree_flatten(total)
        shapes = [x.shape for x in leaves]

        # Shares the survivors hold: every client dealt shares of sk and b to the K sampled clients.
        secrets = jax.vmap(lambda c: _client_secrets(ctx.round_key, c, t))(ctx.sampled_ids)
        deal = jax.vmap(lambda s, poly: shamir_share(s, poly, k_sampled))
        sk_shares, b_shares = deal(secrets["sk"], secrets["sk_poly"]), deal(secrets["b"], secrets["b_poly"])
        # Survivors answer with shares of sk for dropped clients and of b for survivors, never both.
        sk_dropped = jax.vmap(shamir_reconstruct, in_axes=(0, None))(sk_shares, survived)
        sk_dropped = jnp.where(survived[:, None], jnp.uint32(0), sk_dropped)
        b_survivor = jax.vmap(shamir_reconstruct, in_axes=(0, None))(b_shares, survived)
        b_survivor = jnp.where(survived[:, None], b_survivor, jnp.uint32(0))
        pk = public_keys(ctx.round_key, ctx.sampled_ids, t)

        def sub(ls, seed, sign_add):
            ms = prg(seed, ctx.round_key, shapes, bits)
            return [jnp.where(sign_add, x + m, x - m) for x, m in zip(ls, ms)]

        if self_mask:

            def remove_self(ls, v):
                ls = jax.lax.cond(survived[v], lambda ls: sub(ls, b_survivor[v], False), lambda ls: ls, ls)
                return ls, None

            leaves, _ = jax.lax.scan(remove_self, leaves, jnp.arange(k_sampled))

        offsets = _offsets(k_sampled, neighbours)
        if offsets:
            perm, rank = _graph_order(ctx.round_key, k_sampled, neighbours)
            slots_v = jnp.repeat(jnp.arange(k_sampled), len(offsets))
            slots_off = jnp.tile(jnp.asarray(offsets), k_sampled)

            def remove_pair(ls, slot):
                v, off = slot
                u = _neighbour(perm, rank, v, off, k_sampled)
                # Survivor v masked towards dropped u with +-PRG(s_vu); undo it (the server's s = pk_v^sk_u).
                v_added = ctx.sampled_ids[v] < ctx.sampled_ids[u]
                ls = jax.lax.cond(
                    survived[v] & ~survived[u],
                    lambda ls: sub(ls, agree(sk_dropped[u], pk[v]), ~v_added),
                    lambda ls: ls,
                    ls,
                )
                return ls, None

            leaves, _ = jax.lax.scan(remove_pair, leaves, (slots_v, slots_off))

        return jax.tree_util.tree_unflatten(treedef, [x & modmask for x in leaves]), aborted

    def signed(x):
        """Two's-complement reading of a residue modulo 2**bits."""
        x = x & modmask
        if bits == 32:
            return jax.lax.bitcast_convert_type(x, jnp.int32)
        xi = x.astype(jnp.int32)
        return jnp.where(xi >= (1 << (bits - 1)), xi - (1 << bits), xi)

    def dequantise(summed: dict, aborted: jax.Array, ctx: ServerContext) -> dict:
        k_sampled = ctx.sampled_ids.shape[0]
        out = {}
        for name, entry in summed.items():
            if name == CLIPPED:
                continue
            scale = quantisation_scale(range_of(name), k_sampled, bits)
            out[name] = jax.tree_util.tree_map(
                lambda x: jnp.where(aborted, 0.0, signed(x).astype(jnp.float32) / jnp.float32(scale)), entry
            )
        out[PROTOCOL_METRICS] = {
            "clipped": signed(summed[CLIPPED]),
            "aborted": aborted,
            "survivors": jnp.asarray(ctx.survived, bool).sum(),
        }
        return out

    return SecAggParts(quantise, mask, unmask, dequantise)


_CONFIG_KEYS = ("bits", "clip_range", "neighbours", "rounding", "self_mask", "threshold")


def protocol_from_config(cfg, clients_per_round: int, *, key: str = "secure") -> SumProtocol:
    """`secure_sum` from a config section (a method spec's `secure` without `enabled`).

    Keys: `bits` (32), `clip_range` (a float or {contribution key: R, 'default': R}; 1.0), `neighbours`
    (0 or absent: the complete graph), `rounding`, `self_mask`, `threshold` (0 or absent: a majority).
    `clients_per_round` only validates the threshold here (K is static in the round).
    """
    cfg = dict(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg)
    unknown = sorted(set(cfg) - set(_CONFIG_KEYS))
    if unknown:
        raise ValueError(
            f"config key {key}.{unknown[0]}: unknown; secure aggregation takes {list(_CONFIG_KEYS)}"
        )
    clip_range = cfg.get("clip_range", 1.0)
    if hasattr(clip_range, "to_dict"):
        clip_range = clip_range.to_dict()
    threshold = int(cfg.get("threshold") or 0) or None
    if threshold is not None and not 1 <= threshold <= clients_per_round:
        raise ValueError(f"config key {key}.threshold must be in 1..{clients_per_round}, got {threshold}")
    try:
        return secure_sum(
            int(cfg.get("bits", 32)),
            dict(clip_range) if isinstance(clip_range, Mapping) else float(clip_range),
            int(cfg.get("neighbours") or 0) or None,
            rounding=str(cfg.get("rounding", "stochastic")),
            self_mask=bool(cfg.get("self_mask", True)),
            threshold=threshold,
        )
    except ValueError as e:
        raise ValueError(f"config key {key}: {e}") from e
