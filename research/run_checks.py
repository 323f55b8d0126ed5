"""Style checks of every style method on one dev seed: python -m research.run_checks SEED [methods...]"""

import json, sys, time
import numpy as np, jax, jax.numpy as jnp
from research.common import *
from fedtransfer_jax.style import checks
from fedtransfer_jax.style.methods import get_style_method


def build(method, d, seed, cfg_rounds=15, local_steps=8, lr=2e-3):
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 0x57)
    shared = method.init_shared(key, 64)
    secs = 0.0
    if method.shared_loss is not None:
        clients = [
            {
                "images": jnp.asarray(d[l]["images"][:N_TRAIN]),
                "labels": jnp.asarray(d[l]["labels"][:N_TRAIN]),
                "mask": jnp.ones(N_TRAIN, bool),
            }
            for l in SEEN
        ]
        shared, secs, losses = fedavg(
            method.shared_loss,
            shared,
            clients,
            rounds=cfg_rounds,
            local_steps=local_steps,
            batch=8,
            lr=lr,
            seed=seed,
        )
    t0 = time.time()
    msgs = []
    for c, l in enumerate(SEEN):
        m = method.client_message(
            shared,
            jnp.asarray(d[l]["images"][:N_TRAIN]),
            jnp.asarray(d[l]["labels"][:N_TRAIN]),
            jnp.ones(N_TRAIN, bool),
            jax.random.fold_in(jax.random.PRNGKey(seed), c),
        )
        msgs.append({k: np.asarray(v) for k, v in m.items()})
    bank = method.build_bank(msgs)
    return shared, bank, secs, time.time() - t0


def main(seed, names, tag="", fast=False):
    d = lab_data(seed)
    heldout = {l: (d[l]["images"][N_TRAIN:], d[l]["labels"][N_TRAIN:]) for l in SEEN + UNSEEN}
    t0 = time.time()
    ctx = checks.prepare(heldout, SEEN, seed, **(dict(classifier_steps=0, segmenter_steps=0) if fast else {}))
    print(f"prepare {time.time() - t0:.1f}s", flush=True)
    results = {"validation": checks.validate_measure(ctx), "polarity_real": ctx.polarity}
    grains = {}
    for l in SEEN:
        for y, g in zip(d[l]["labels"][N_TRAIN:][1::2], d[l]["grains"][N_TRAIN:][1::2]):
            grains[y.tobytes()] = g
    for name in names:
        t0 = time.time()
        if name == "none":
            restyle = lambda x, y, t, k: x
            info = {}
        elif name == "oracle":
            restyle = lambda x, y, t, k: oracle_render(
                t, [grains[l.tobytes()] for l in y], seed, int(jax.random.randint(k, (), 0, 2**30))
            )
            info = {}
        elif name == "brightness_match":  # known-bad: source tiles given the target's mean/std per channel

            def restyle(x, y, t, k):
                ref = ctx.reference[t][0]
                m, s = ref.mean(axis=(0, 1, 2)), ref.std(axis=(1, 2)).mean(0)
                z = (x - x.mean(axis=(1, 2), keepdims=True)) / (x.std(axis=(1, 2), keepdims=True) + 1e-6)
                return np.clip(z * s + m, 0, 1)

            info = {}
        elif name == "adain_foreign":
            from research.adain_foreign import make_loss
            from fedtransfer_jax.style.network import StyleNet

            method = get_style_method("adain", {})
            key = jax.random.fold_in(jax.random.PRNGKey(seed), 0x57)
            params = method.init_shared(key, 64)
            net = StyleNet()
            stats = [
                net.apply(
                    {"params": params}, jnp.asarray(d[l]["images"][:N_TRAIN]), method=StyleNet.style_stats
                )
                for l in SEEN
            ]
            bm, bs = jnp.concatenate([a for a, _ in stats]), jnp.concatenate([b for _, b in stats])
            clients = [
                {
                    "images": jnp.asarray(d[l]["images"][:N_TRAIN]),
                    "labels": jnp.asarray(d[l]["labels"][:N_TRAIN]),
                    "mask": jnp.ones(N_TRAIN, bool),
                }
                for l in SEEN
            ]
            shared, secs, _ = fedavg(
                make_loss(net, bm, bs), params, clients, rounds=15, local_steps=8, batch=8, lr=2e-3, seed=seed
            )
            msgs = [
                {
                    k: np.asarray(v)
                    for k, v in method.client_message(
                        shared, c["images"], c["labels"], c["mask"], None
                    ).items()
                }
                for c in clients
            ]
            bank = method.build_bank(msgs)
            restyle = checks.method_restyler(method, shared, bank, SEEN)
            info = {"train_seconds": secs}
        elif name.startswith("neural"):
            from research import neural_gen
            from fedtransfer_jax.style.methods.base import StyleMethod, stack_messages

            kw = dict(kv.split("=") for kv in name.partition(":")[2].split(",") if kv)
            kw = {k: (float(v) if k == "lr" else int(v)) for k, v in kw.items()}
            clients = [
                {
                    "images": jnp.asarray(d[l]["images"][:N_TRAIN]),
                    "labels": jnp.asarray(d[l]["labels"][:N_TRAIN]),
                    "mask": jnp.ones(N_TRAIN, bool),
                }
                for l in SEEN
            ]
            gen, g, codes, secs = neural_gen.train(clients, seed, **kw)
            bank = stack_messages([{"code": np.asarray(codes[c])[None]} for c in range(len(SEEN))])

            def render(shared, bank, images, labels, targets, key, gen=gen):
                return gen.apply(
                    {"params": shared},
                    neural_gen.label_features(labels, key),
                    bank.styles["code"][targets, 0],
                )

            m = StyleMethod("neural", None, None, None, None, render)
            restyle = checks.method_restyler(m, g, bank, SEEN)
            info = {"train_seconds": secs}
        else:
            mname, _, variant = name.partition(":")
            cfg = {}
            if variant:
                for kv in variant.split(","):
                    k, v = kv.split("=")
                    cfg[k] = eval(v) if isinstance(get_default(k), (tuple, bool)) else type(get_default(k))(v)
            method = get_style_method(mname, cfg)
            shared, bank, train_s, msg_s = build(method, d, seed)
            restyle = checks.method_restyler(method, shared, bank, SEEN)
            info = {"train_seconds": train_s, "message_seconds": msg_s}
        restyled = checks.restyle_all(ctx, restyle, seed)
        rep = checks.evaluate(ctx, restyled)
        rep.update(info)
        rep["seconds"] = time.time() - t0
        results[name] = rep
        checks.style_grid_figure(
            f"/tmp/style_report/grid_{name.replace(':', '_').replace('=', '')}_{seed}{tag}.png",
            ctx,
            restyle,
            seed,
            title=f"{name} (dev seed {seed})",
        )
        f = rep["fidelity"]
        s = rep.get("structure", {})
        c = rep.get("classifier", {})
        print(
            f"{name:24s} tex/glob "
            + " ".join(
                f"{k[:4]}={v['texture']['ratio']:.2f}/{v['global']['ratio']:.2f}" for k, v in f.items()
            )
            + f" | pol "
            + " ".join(
                f"{k[:5]}={v['agreement'] if v['agreement'] is None else round(v['agreement'], 2)}"
                for k, v in rep["polarity"].items()
            )
            + " | border "
            + " ".join(f"{v:.2f}" for v in rep["border_ratio"]["restyled"].values())
            + f" | clf {c.get('target_fraction_mean', float('nan')):.2f}"
            + f" | F1 {s.get('f1_original', 0):.3f}->{s.get('f1_restyled', 0):.3f} ARI {s.get('ari_original', 0):.3f}->{s.get('ari_restyled', 0):.3f}"
            + f" | {rep['seconds']:.0f}s {info}",
            flush=True,
        )
    json.dump(results, open(f"/tmp/style_report/checks_{seed}{tag}.json", "w"), indent=1, default=float)


def get_default(k):
    from fedtransfer_jax.style.methods import config_defaults

    return config_defaults()[k]


if __name__ == "__main__":
    fast = sys.argv[1] == "fast"
    args = sys.argv[2:] if fast else sys.argv[1:]
    main(int(args[0]), args[1:], tag="_fast" if fast else "", fast=fast)
