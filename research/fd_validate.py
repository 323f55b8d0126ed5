import numpy as np, jax, jax.numpy as jnp, scipy.linalg, time, sys
from research.common import *
from fedtransfer_jax.style.features import make_descriptor, describe

desc = make_descriptor()
GROUP = sys.argv[1] if len(sys.argv) > 1 else "texture"
f = jax.jit(lambda x: describe(desc, x)[GROUP])


def feats(x):
    return np.concatenate([np.asarray(f(x[i : i + 16])) for i in range(0, len(x), 16)])


def fd(a, b, mode):
    mu = a.mean(0) - b.mean(0)
    if mode == "diag":
        return float(mu @ mu + np.sum((a.std(0) - b.std(0)) ** 2))
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    s = scipy.linalg.sqrtm(ca @ cb).real
    return float(mu @ mu + np.trace(ca + cb - 2 * s))


for seed in DEV_SEEDS:
    d = lab_data(seed)
    labs = SEEN + UNSEEN
    ref = {l: feats(d[l]["images"][8:56]) for l in labs}
    qry = {l: feats(d[l]["images"][56:104]) for l in labs}
    allref = np.concatenate([ref[l] for l in labs])
    m, s = allref.mean(0), allref.std(0) + 1e-6
    z = lambda a: (a - m) / s
    # PCA
    u, sv, vt = np.linalg.svd(z(allref) - z(allref).mean(0), full_matrices=False)
    for mode in ("full", "diag", "pca16", "pca32"):
        if mode.startswith("pca"):
            P = vt[: int(mode[3:])].T
            tr = lambda a: z(a) @ P
            md = "full"
        else:
            tr, md = z, mode
        M = np.array([[fd(tr(qry[j]), tr(ref[k]), md) for k in labs] for j in labs])
        ratios = []
        for k in range(len(labs)):
            other = min(M[j, k] for j in range(len(labs)) if j != k)
            ratios.append(M[k, k] / other)
        print(seed, mode, "same/nearest-other ratio per lab", np.round(ratios, 3))
