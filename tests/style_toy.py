"""Tiny synthetic 'labs' for the style tests: Voronoi grains, two opposite boundary polarities; and every
style technique built on two of them (shared by the contract test and each method's own test)."""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np

S = 16  # tile size of the style-technique tests
CFG = {"features": (4, 8), "gen_profile_px": 3}  # tiny overrides of the keys some methods read


def voronoi_labels(seed: int, n: int, size: int, cells: int = 6) -> np.ndarray:
    """``[n, size, size]`` uint8 boundary maps (2-px bands between Voronoi cells) and the cell maps."""
    rng = np.random.default_rng([seed, 0xB0])
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    labels, grains = [], []
    for _ in range(n):
        pts = rng.uniform(0, size, (cells, 2))
        d = (yy[..., None] - pts[:, 0]) ** 2 + (xx[..., None] - pts[:, 1]) ** 2
        g = np.argmin(d, -1)
        b = np.zeros((size, size), bool)
        dx, dy = g[:, 1:] != g[:, :-1], g[1:] != g[:-1]
        b[:, 1:] |= dx
        b[:, :-1] |= dx
        b[1:] |= dy
        b[:-1] |= dy
        labels.append(b.astype(np.uint8))
        grains.append(g)
    return np.stack(labels), np.stack(grains)


def toy_lab(polarity: str, seed: int, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """'dark': bright grains (0.7 +- 0.05) with dark boundaries (-0.4); 'bright': black grains (0.1) with
    bright boundaries (+0.6); Gaussian noise 0.02. Returns (images [n,S,S,3] f32, labels [n,S,S] u8)."""
    rng = np.random.default_rng([seed, 0xC0, polarity == "bright"])
    labels, grains = voronoi_labels(seed, n, size)
    level, spread, edge = (0.7, 0.05, -0.4) if polarity == "dark" else (0.1, 0.02, 0.6)
    images = []
    for lab, g in zip(labels, grains):
        tones = level + spread * rng.standard_normal(g.max() + 1)
        img = tones[g] + edge * lab + 0.02 * rng.standard_normal(lab.shape)
        images.append(np.repeat(np.clip(img, 0, 1)[..., None], 3, -1))
    return np.stack(images).astype(np.float32), labels


def toy_clients(n_clients=2, n=4, size=S):
    """Clients alternating 'dark' and 'bright' toy labs, as the federated style protocol takes them."""
    out = []
    for c in range(n_clients):
        x, y = toy_lab("dark" if c % 2 == 0 else "bright", c, n, size)
        out.append({"images": jnp.asarray(x), "labels": jnp.asarray(y), "mask": jnp.ones(n, bool)})
    return out


@functools.lru_cache(maxsize=None)
def built(name: str):
    """Registered style technique ``name`` with ``CFG``: (method, shared params after 1 tiny FedAvg round, bank
    of 3 styles per client, client messages, shared-model losses); built once per test process."""
    from fedtransfer_jax.style import federated
    from fedtransfer_jax.style.techniques import get_technique

    clients = toy_clients()
    m = get_technique(name, CFG)
    tr = federated.train_shared(m, clients, seed=0, tile=S, rounds=1, local_steps=1, batch_size=2, lr=1e-3)
    bank, msgs = federated.share_styles(m, tr.params, clients, k=3, seed=0)
    return m, tr.params, bank, msgs, tr.losses
