"""Self-render diagnostic: lab k's own held-out labels rendered in lab k's fitted styles vs real k tiles;
prints the descriptor dims with the largest standardized mean difference."""

import sys, numpy as np, jax, jax.numpy as jnp
from research.common import *
from fedtransfer_jax.style.features import make_descriptor, describe, descriptor_names
from fedtransfer_jax.style.methods import get_style_method
from fedtransfer_jax.style.checks.fidelity import describe_all
from fedtransfer_jax.style.checks.scoring import method_restyler

seed = int(sys.argv[1])
lab = sys.argv[2]
cfg = eval(sys.argv[3]) if len(sys.argv) > 3 else {}
d = lab_data(seed)
m = get_style_method("gen", cfg)
msgs = [
    {
        k: np.asarray(v)
        for k, v in m.client_message(
            None,
            jnp.asarray(d[l]["images"][:8]),
            jnp.asarray(d[l]["labels"][:8]),
            jnp.ones(8, bool),
            jax.random.PRNGKey(0),
        ).items()
    }
    for l in SEEN
]
bank = m.build_bank(msgs)
rs = method_restyler(m, None, bank, SEEN)
real = d[lab]["images"][8:56]
lbl = d[lab]["labels"][56:104]
fake = rs(d[lab]["images"][56:104], lbl, lab, jax.random.PRNGKey(1))
desc = make_descriptor()
f = jax.jit(lambda x: describe(desc, x))
names = descriptor_names(desc)
a, b = describe_all(f, real), describe_all(f, fake)
for g in a:
    z = (b[g].mean(0) - a[g].mean(0)) / (a[g].std(0) + 1e-6)
    zs = (b[g].std(0) - a[g].std(0)) / (a[g].std(0) + 1e-6)
    o = np.argsort(-np.abs(z))[:8]
    print(g, "mean-diff", [(names[g][i], round(float(z[i]), 1)) for i in o])
    o = np.argsort(-np.abs(zs))[:5]
    print(g, "std-diff", [(names[g][i], round(float(zs[i]), 1)) for i in o])
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

fig, ax = plt.subplots(2, 6, figsize=(12, 4))
for i in range(6):
    ax[0, i].imshow(real[i])
    ax[1, i].imshow(fake[i])
for x in ax.ravel():
    x.axis("off")
plt.tight_layout()
plt.savefig(f"/tmp/style_report/selfrender_{lab}.png", dpi=70)
