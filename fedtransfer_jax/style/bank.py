"""The style bank: every client's shared style vectors, and in-jit restyling with them.

After clients send their style statistics (AdaIN bottleneck mean/std and/or Fourier
low-frequency amplitude windows; never images or labels) through the privacy boundary,
the server stacks them into a ``StyleBank`` padded to a common K styles per client and
broadcasts it. During local training a client then replaces a fraction of each batch by
versions of its own images rendered in *other* clients' styles; labels are unchanged
because restyling keeps the geometry.

Everything except ``build_bank`` (host-side, numpy) is pure and jittable; ``client_id``
may be a traced integer, so one compiled function serves every client under ``vmap``.
"""

from __future__ import annotations

from typing import Callable, Literal, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fedtransfer_jax.style.fourier import low_freq_amplitude

Array = jnp.ndarray
_KEYS = ("adain_mean", "adain_std", "fourier_amp")


class StyleBank(NamedTuple):
    """Stacked style statistics of C clients, K (padded) styles each.

    Attributes:
      adain_mean: ``[C, K, D]`` bottleneck feature means.
      adain_std: ``[C, K, D]`` bottleneck feature stds.
      fourier_amp: ``[C, K, h, w, 3]`` centred low-frequency amplitude windows.
      valid: ``[C, K]`` bool, False on padding slots.
    """

    adain_mean: Array
    adain_std: Array
    fourier_amp: Array
    valid: Array

    @property
    def num_clients(self) -> int:
        return self.valid.shape[0]


def client_styles(
    images: Array,
    mask: Array | None = None,
    *,
    beta: float | None = None,
    adain_stats_fn: Callable[[Array], tuple[Array, Array]] | None = None,
) -> dict[str, Array]:
    """One client's shareable style statistics, in the format ``build_bank`` takes.

    Args:
      images: ``[N, H, W, 3]`` the client's images.
      mask: ``[N]`` real-example mask (padding is marked invalid in the bank).
      beta: Fourier window fraction; omit to skip Fourier styles.
      adain_stats_fn: ``images -> (mean [N,D], std [N,D])``, e.g.
        ``functools.partial(model.apply, {'params': p}, method=StyleNet.style_stats)``;
        omit to skip AdaIN styles.
    """
    out: dict[str, Array] = {}
    if adain_stats_fn is not None:
        out["adain_mean"], out["adain_std"] = adain_stats_fn(images)
    if beta is not None:
        out["fourier_amp"] = low_freq_amplitude(images, beta)
    out["valid"] = jnp.ones(images.shape[0], bool) if mask is None else jnp.asarray(mask).astype(bool)
    return out


def build_bank(per_client_stats: Sequence[Mapping[str, Array]]) -> StyleBank:
    """Stack per-client style dicts into a ``StyleBank`` padded to the largest K.

    Each dict may hold ``adain_mean [k, D]``, ``adain_std [k, D]``, ``fourier_amp [k, h, w, 3]``
    and optionally ``valid [k]`` (default all True); k may differ between clients. A key
    absent from *every* client (e.g. Fourier-only training) becomes a zero placeholder with
    size-1 trailing dims; a key present for some clients only is an error, because the
    bank would silently hold no styles for the others.

    Host-side (numpy); call once per round, outside jit.
    """
    if len(per_client_stats) == 0:
        raise ValueError("build_bank: per_client_stats is empty")
    for c, d in enumerate(per_client_stats):
        unknown = set(d) - set(_KEYS) - {"valid"}
        if unknown:
            raise KeyError(f"build_bank: client {c} has unknown keys {sorted(unknown)}")
    present = [k for k in _KEYS if any(k in d for d in per_client_stats)]
    if not present:
        raise ValueError(f"build_bank: no client provides any of {_KEYS}")
    for k in present:
        missing = [c for c, d in enumerate(per_client_stats) if k not in d]
        if missing:
            raise KeyError(f"build_bank: key '{k}' missing for clients {missing}")

    counts = []
    for c, d in enumerate(per_client_stats):
        ks = {k: np.asarray(d[k]).shape[0] for k in present}
        if "valid" in d:
            ks["valid"] = np.asarray(d["valid"]).shape[0]
        if len(set(ks.values())) != 1:
            raise ValueError(f"build_bank: client {c} has inconsistent style counts {ks}")
        counts.append(next(iter(ks.values())))
    n_clients, k_max = len(per_client_stats), max(max(counts), 1)

    placeholder = {"adain_mean": (1,), "adain_std": (1,), "fourier_amp": (1, 1, 3)}
    fields: dict[str, np.ndarray] = {}
    for k in _KEYS:
        if k not in present:
            fields[k] = np.zeros((n_clients, k_max, *placeholder[k]), np.float32)
            continue
        tails = {np.asarray(d[k]).shape[1:] for d in per_client_stats}
        if len(tails) != 1:
            raise ValueError(f"build_bank: '{k}' has different per-style shapes across clients: {tails}")
        arr = np.zeros((n_clients, k_max, *tails.pop()), np.float32)
        for c, d in enumerate(per_client_stats):
            arr[c, : counts[c]] = np.asarray(d[k], np.float32)
        fields[k] = arr
    valid = np.zeros((n_clients, k_max), bool)
    for c, d in enumerate(per_client_stats):
        valid[c, : counts[c]] = np.asarray(d["valid"], bool) if "valid" in d else True
    return StyleBank(**{k: jnp.asarray(v) for k, v in fields.items()}, valid=jnp.asarray(valid))


def foreign_style_probs(bank: StyleBank, client_id: Array | int) -> tuple[Array, Array]:
    """Uniform probabilities over the valid styles of clients other than ``client_id``.

    Returns ``(probs [C*K], has_foreign)``. If no foreign style is valid, ``probs`` falls back
    to uniform over all slots (so sampling stays well defined under jit) and ``has_foreign``
    is False; ``restyle_batch`` then leaves the batch untouched.
    """
    n_clients, k = bank.valid.shape
    owner = jnp.repeat(jnp.arange(n_clients), k)
    ok = bank.valid.reshape(-1) & (owner != client_id)
    n_ok = jnp.sum(ok)
    has_foreign = n_ok > 0
    probs = jnp.where(has_foreign, ok / jnp.maximum(n_ok, 1), 1.0 / (n_clients * k))
    return probs.astype(jnp.float32), has_foreign


def sample_foreign_style_index(bank: StyleBank, client_id: Array | int, key: Array) -> tuple[Array, Array]:
    """``(owner client, slot)`` of one uniformly drawn valid foreign style."""
    probs, _ = foreign_style_probs(bank, client_id)
    k = bank.valid.shape[1]
    flat = jax.random.choice(key, probs.shape[0], p=probs)
    return flat // k, flat % k


def sample_foreign_style(bank: StyleBank, client_id: Array | int, key: Array) -> tuple[Array, Array, Array]:
    """Draw uniformly one valid style of a client ``!= client_id``: ``(mean [D], std [D], amp [h,w,3])``.

    Jittable (``jax.random.choice`` with a probability vector); zero-probability slots
    (own client, padding) are never drawn. See ``foreign_style_probs`` for the no-foreign case.
    """
    c, s = sample_foreign_style_index(bank, client_id, key)
    return bank.adain_mean[c, s], bank.adain_std[c, s], bank.fourier_amp[c, s]


def restyle_batch(
    images: Array,
    bank: StyleBank,
    client_id: Array | int,
    key: Array,
    *,
    mode: Literal["adain", "fourier"],
    apply_style: Callable[..., Array],
    mix_prob: float,
    return_mask: bool = False,
) -> Array | tuple[Array, Array]:
    """Replace ``round(mix_prob * B)`` random examples of the batch by foreign-style versions.

    Every example gets its own independently drawn foreign style. The restyling is computed
    for the whole batch (static shapes) and selected with ``jnp.where``.

    Args:
      images: ``[B, H, W, 3]``.
      bank: the broadcast ``StyleBank``.
      client_id: this client's index (may be traced).
      key: PRNG key.
      mode: ``'adain'`` calls ``apply_style(images, mean [B,D], std [B,D])``
        (e.g. ``functools.partial(model.apply, variables, method=StyleNet.stylize)``);
        ``'fourier'`` calls ``apply_style(images, amp [B,h,w,3])``
        (e.g. ``functools.partial(fourier_restyle, beta=0.1, lam=1.0)``).
      apply_style: the renderer, see ``mode``.
      mix_prob: static fraction in ``[0, 1]`` of the batch to restyle.
      return_mask: also return the ``[B]`` bool mask of restyled examples.

    Returns:
      ``[B, H, W, 3]`` images (and the mask if requested). Labels need no change.
    """
    if mode not in ("adain", "fourier"):
        raise ValueError(f"restyle_batch: mode must be 'adain' or 'fourier', got {mode!r}")
    if not 0.0 <= float(mix_prob) <= 1.0:
        raise ValueError(f"restyle_batch: mix_prob must be in [0, 1], got {mix_prob}")
    bsz = images.shape[0]
    k_pick, k_style = jax.random.split(key)
    n_mix = int(round(float(mix_prob) * bsz))
    ranks = jax.random.permutation(k_pick, bsz)  # a random ranking of the batch
    _, has_foreign = foreign_style_probs(bank, client_id)
    chosen = (ranks < n_mix) & has_foreign

    means, stds, amps = jax.vmap(lambda k: sample_foreign_style(bank, client_id, k))(
        jax.random.split(k_style, bsz)
    )
    if mode == "adain":
        styled = apply_style(images, means, stds)
    else:
        styled = apply_style(images, amps)
    if styled.shape != images.shape:
        raise ValueError(f"restyle_batch: apply_style returned {styled.shape}, expected {images.shape}")
    out = jnp.where(chosen[:, None, None, None], styled.astype(images.dtype), images)
    return (out, chosen) if return_mask else out


__all__ = [
    "StyleBank",
    "client_styles",
    "build_bank",
    "foreign_style_probs",
    "sample_foreign_style_index",
    "sample_foreign_style",
    "restyle_batch",
]
