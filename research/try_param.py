import numpy as np, jax, jax.numpy as jnp, time, matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from research.common import *
from fedtransfer_jax.style.parametric import fit_style, render_style

seed = 100
d = lab_data(seed)
labs = SEEN + UNSEEN
fit = jax.jit(jax.vmap(lambda x, y: fit_style(x, y)))
rend = jax.jit(jax.vmap(render_style))
styles = {}
for l in labs:
    t = time.time()
    styles[l] = fit(jnp.asarray(d[l]["images"][:8]), jnp.asarray(d[l]["labels"][:8]))
    jax.block_until_ready(styles[l])
    print(l, "fit", time.time() - t)
    s = jax.tree_util.tree_map(lambda a: np.asarray(a), styles[l])
    print(
        "  tone",
        s.tone_mean.mean(0).round(2),
        "blur",
        s.blur,
        "prof0",
        s.profile[:, :, 0].mean(0).round(3),
        "cstd",
        s.contrast_std.round(2),
    )
fig, ax = plt.subplots(len(labs) + 1, len(labs) + 1, figsize=(2 * (len(labs) + 1), 2 * (len(labs) + 1)))
for i, src in enumerate(labs):
    ax[i + 1, 0].imshow(d[src]["images"][60])
    ax[i + 1, 0].set_ylabel(src)
    for j, tgt in enumerate(labs):
        st = jax.tree_util.tree_map(lambda a: a[:1], styles[tgt])
        out = rend(
            st, jnp.asarray(d[src]["labels"][60:61]), jax.random.split(jax.random.PRNGKey(i * 10 + j), 1)
        )
        ax[i + 1, j + 1].imshow(np.asarray(out[0]))
for j, tgt in enumerate(labs):
    ax[0, j + 1].imshow(d[tgt]["images"][61])
    ax[0, j + 1].set_title(tgt)
for a in ax.ravel():
    a.set_xticks([])
    a.set_yticks([])
plt.tight_layout()
plt.savefig("/tmp/style_report/try_param.png", dpi=70)
