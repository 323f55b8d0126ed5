"""Research: can AdaIN flip polarity if its decoder is trained on *cross-lab* style targets?

The federated AdaIN decoder normally pairs each image with the statistics of another image of the same
client (style_partner), so it never sees a foreign lab's statistics until restyling. Here each client's
local loss draws the target statistics from the bank of every client's encoder statistics (the encoder is
fixed and random, so these statistics are known before training and are exactly what AdaIN shares anyway).
Same losses (content + style + identity) otherwise."""

import jax, jax.numpy as jnp, numpy as np
from fedtransfer_jax.style.adain import adain, feature_stats
from fedtransfer_jax.style.network import StyleNet


def make_loss(net, bank_mean, bank_std, content_weight=1.0, style_weight=1.0, identity_weight=1.0):
    """bank_mean/std: [N_all, D] statistics of all clients' shared images."""

    def loss_fn(params, batch, rng):
        params = {**params, "encoder": jax.lax.stop_gradient(params["encoder"])}
        v = {"params": params}
        x = batch["images"]
        w = batch["mask"].astype(jnp.float32)
        enc = lambda im: net.apply(v, im, method=StyleNet.encode)
        feats = enc(x)
        idx = jax.random.randint(rng, (x.shape[0],), 0, bank_mean.shape[0])
        m_all, s_all = net.apply(v, bank_mean[idx], method=StyleNet.split_stats), net.apply(
            v, bank_std[idx], method=StyleNet.split_stats
        )
        targets = [adain(f, m, s, net.eps) for f, m, s in zip(feats, m_all, s_all)]
        out = net.apply(v, targets, method=StyleNet.decode)
        of = enc(out)
        content = jnp.mean(jnp.square(of[-1] - jax.lax.stop_gradient(targets[-1])), axis=(1, 2, 3))
        style = 0.0
        for f, m, s in zip(of, m_all, s_all):
            mo, so = feature_stats(f, net.eps)
            style = style + jnp.mean(jnp.square(mo - m), -1) + jnp.mean(jnp.square(so - s), -1)
        recon = net.apply(v, feats, method=StyleNet.decode)
        ident = jnp.mean(jnp.square(recon - x), axis=(1, 2, 3))
        per = content_weight * content + style_weight * style + identity_weight * ident
        return jnp.sum(per * w) / jnp.maximum(w.sum(), 1), {}

    return loss_fn
