import time, numpy as np, jax, jax.numpy as jnp, optax
from research.common import *
from fedtransfer_jax.style.methods import get_style_method, mix_batch
from fedtransfer_jax.style import federated
from fedtransfer_jax.models import UNet, segmentation_loss

d = lab_data(100)
clients = [
    {"images": d[l]["images"][:8], "labels": d[l]["labels"][:8], "mask": np.ones(8, bool)} for l in SEEN
]


def timeit(f, *a, n=20):
    jax.block_until_ready(f(*a))
    t = time.time()
    for _ in range(n):
        r = f(*a)
    jax.block_until_ready(r)
    return (time.time() - t) / n


batch = {
    "images": jnp.asarray(clients[0]["images"]),
    "labels": jnp.asarray(clients[0]["labels"]),
    "mask": jnp.ones(8, bool),
}
for name in ["gen", "fourier"]:
    m = get_style_method(name, {})
    t = time.time()
    bank, _ = federated.share_styles(m, None, clients, k=8, seed=0)
    tm = time.time() - t
    t = time.time()
    bank, _ = federated.share_styles(m, None, clients, k=8, seed=0)
    tm2 = time.time() - t
    f = jax.jit(lambda b, k: mix_batch(m, None, bank, b, jnp.int32(0), k, 0.5))
    t = time.time()
    jax.block_until_ready(f(batch, jax.random.PRNGKey(0)))
    tc = time.time() - t
    print(
        name,
        f"messages first {tm:.1f}s again {tm2:.2f}s | mix_batch(8 tiles, p=0.5) compile {tc:.1f}s run {1e3*timeit(f, batch, jax.random.PRNGKey(1)):.1f} ms",
    )
unet = UNet((16, 32, 64))
p = unet.init(jax.random.PRNGKey(0), batch["images"][:1])["params"]
opt = optax.adam(1e-3)
s = opt.init(p)


@jax.jit
def step(p, s, b):
    g = jax.grad(
        lambda p: segmentation_loss(unet.apply({"params": p}, b["images"]), b["labels"], b["mask"])[0]
    )(p)
    u, s = opt.update(g, s, p)
    return optax.apply_updates(p, u), s


print(f"U-Net train step (batch 8): {1e3*timeit(lambda: step(p, s, batch)[0]):.1f} ms")
