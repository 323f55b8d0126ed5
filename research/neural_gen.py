"""Research: a FedST-like label-conditioned conv generator trained with FedAvg (per-client private lab
code), as an alternative to the parametric renderer. Not part of the package (lost on the style checks).

G(label features, per-grain noise, pixel noise; lab code) -> image. Label features: boundary mask,
one-hot distance-to-boundary bins, a random N(0,1) tone per grain (3 ch, piecewise constant), 2 pixel-noise
channels. The lab code (16 floats, private during training, shared at the end) FiLM-modulates every conv.
Loss (paired with the client's real image of the same label map; per-grain tones are random, so no
pixel loss on them): feature-statistics matching (mean/std of a fixed random reflect-padded conv encoder
at 3 scales) + L1 on the per-distance-bin mean colour (boundary profile) + L1 on the 8x downsampled image
(layout of shading).
"""

from __future__ import annotations
import functools, time
import flax.linen as nn
import jax, jax.numpy as jnp, numpy as np, optax
from fedtransfer_jax.models.conv import Conv, default_impl
from fedtransfer_jax.style.labelmaps import grain_ids, distance_bins
from fedtransfer_jax.style.features import make_descriptor, reflect_conv

R = 6
CODE = 16


def label_features(labels, key):
    """[B,H,W] labels -> [B,H,W,1+(R+1)+3+2] generator input."""
    b, h, w = labels.shape
    k1, k2 = jax.random.split(key)
    gid = jax.vmap(grain_ids)(labels)
    db = jax.vmap(lambda l: distance_bins(l, R))(labels)
    tone = jax.random.normal(k1, (b, h * w, 3))
    tone = jnp.take_along_axis(tone, gid.reshape(b, -1, 1), axis=1).reshape(b, h, w, 3)
    pix = jax.random.normal(k2, (b, h, w, 2))
    return jnp.concatenate(
        [(labels > 0)[..., None].astype(jnp.float32), jax.nn.one_hot(db, R + 1), tone, pix], -1
    )


class Gen(nn.Module):
    width: int = 24
    depth: int = 4

    @nn.compact
    def __call__(self, feats, code):
        x = feats
        for i in range(self.depth):
            x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
            x = Conv(self.width, 3, impl=default_impl(), name=f"conv{i}")(x)[:, 1:-1, 1:-1]
            film = nn.Dense(2 * self.width, name=f"film{i}")(code)
            x = x * (1 + film[:, None, None, : self.width]) + film[:, None, None, self.width :]
            x = nn.relu(x)
        return nn.sigmoid(Conv(3, 1, impl=default_impl(), name="out")(x))


_DESC = make_descriptor(seed=7, widths=(16, 16, 16))


def enc_stats(x):
    h = x * 2 - 1
    out = []
    for i, k in enumerate(_DESC.kernels):
        if i:
            b, hh, ww, c = h.shape
            h = h.reshape(b, hh // 2, 2, ww // 2, 2, c).mean((2, 4))
        h = jax.nn.relu(reflect_conv(h, k))
        out += [h.mean((1, 2)), h.std((1, 2))]
    return jnp.concatenate(out, -1)


def profile_means(x, labels):
    db = jax.vmap(lambda l: distance_bins(l, R))(labels)
    oh = jax.nn.one_hot(db, R + 1)  # [B,H,W,R+1]
    return jnp.einsum("bhwr,bhwc->brc", oh, x) / (oh.sum((1, 2))[..., None] + 1)


def down8(x):
    b, h, w, c = x.shape
    return x.reshape(b, h // 8, 8, w // 8, 8, c).mean((2, 4))


def make_loss(gen):
    def loss_fn(params, batch, rng):
        g, code = params["gen"], params["code"]
        x, y, m = batch["images"], batch["labels"], batch["mask"].astype(jnp.float32)
        out = gen.apply({"params": g}, label_features(y, rng), jnp.broadcast_to(code, (x.shape[0], CODE)))
        st = jnp.mean(jnp.abs(enc_stats(out) - enc_stats(x)), -1)
        pr = jnp.mean(jnp.abs(profile_means(out, y) - profile_means(x, y)), (1, 2))
        lo = jnp.mean(jnp.abs(down8(out) - down8(x)), (1, 2, 3))
        per = st + 5.0 * pr + 2.0 * lo
        return jnp.sum(per * m) / jnp.maximum(m.sum(), 1), {}

    return loss_fn


def train(clients, seed, rounds=15, local_steps=10, lr=3e-3, width=24):
    """FedAvg on the generator; each client's code is private (its local row), never averaged."""
    from fedtransfer_jax.fl.algorithms import base

    gen = Gen(width)
    key = jax.random.PRNGKey(seed)
    g0 = gen.init(key, jnp.zeros((1, 64, 64, 1 + R + 1 + 5)), jnp.zeros((1, CODE)))["params"]
    codes = [0.1 * jax.random.normal(jax.random.fold_in(key, 100 + c), (CODE,)) for c in range(len(clients))]
    lt = base.LocalTraining(make_loss(gen), optax.adam(lr), local_steps, 8)
    local = jax.jit(lambda p, d, c, k: base.run_local_training(lt, p, d, c, k))
    t0 = time.time()
    g = g0
    for r in range(rounds):
        deltas = []
        for c, d in enumerate(clients):
            p, loss = local(
                {"gen": g, "code": codes[c]},
                d,
                jnp.int32(c),
                jax.random.fold_in(jax.random.fold_in(key, r), c),
            )
            deltas.append(base.tree_sub(p["gen"], g))
            codes[c] = p["code"]
        g = base.tree_add(g, jax.tree_util.tree_map(lambda *a: sum(a) / len(a), *deltas))
    jax.block_until_ready(g)
    return gen, g, jnp.stack(codes), time.time() - t0


def make_method(gen, g, codes):
    from fedtransfer_jax.style.methods.base import StyleMethod, stack_messages

    def render(shared, bank, images, labels, targets, key):
        code = bank.styles["code"][targets, 0]
        return gen.apply({"params": shared}, label_features(labels, key), code)

    def message(shared, images, labels, mask, key):
        return {"code": codes_holder[0][int(message.cid)][None]}

    codes_holder = [codes]
    return StyleMethod("neural_gen", lambda k, t: g, None, message, stack_messages, render), codes
