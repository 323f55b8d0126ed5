r"""FedTransfer's style checks: does style sharing change the *style* and keep the *structure*?

  python scripts/style_checks.py --workdir runs/grains [--classifier_steps 400]

Reads a finished run of `python launch.py --config experiments/grains.py` (needs checkpoints/centralized
and checkpoints/fedtransfer_style_net) and, for every restyling variant,

  1. domain check: a small CNN domain classifier (trained here on the clients' real training images,
     label = client id) looks at each client's test images re-rendered in every *other* client's style;
     we report the fraction it assigns to the *target* client (goal >= 80%), the per (source, target)
     matrix, and its accuracy on real test images (sanity: a classifier that cannot tell the labs apart
     says nothing about restyling);
  2. structure check: the centrally trained segmenter scores boundary F1 on the restyled tiles against the
     unchanged labels, vs on the originals; we report the relative drop (goal within 10%).

Variants: `adain` (the federatedly trained AdaIN style net), `adain_untrained` (the same net at its
initialisation: random decoder, i.e. what federated style-net training buys) and `fourier` (low-frequency
amplitude swap, lam = 1). The style banks are rebuilt exactly as the trainer builds them
(fedtransfer_jax/style/sharing.py). Prints a table and writes `<workdir>/style_checks.json` atomically.

All randomness derives from config.seed (jax.random.fold_in / np.random.default_rng([seed, ...])).
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Mapping, Sequence

from absl import app, flags, logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from fedtransfer_jax import checkpointing, inference, io_utils
from fedtransfer_jax import style as style_lib
from fedtransfer_jax.metrics.boundary import boundary_prf
from fedtransfer_jax.models import conv as conv_lib
from fedtransfer_jax.style import sharing

_WORKDIR = flags.DEFINE_string("workdir", None, "Finished run of launch.py (config.json + checkpoints/).")
_STEPS = flags.DEFINE_integer("classifier_steps", 400, "Adam steps of the domain classifier.")
_BATCH = flags.DEFINE_integer("classifier_batch", 32, "Domain classifier batch size.")
_LR = flags.DEFINE_float("classifier_lr", 3e-3, "Domain classifier Adam learning rate.")
_STYLE_TAG = flags.DEFINE_string(
    "style_net_tag",
    "fedtransfer_style_net",
    "Checkpoint folder (under checkpoints/) of the AdaIN style network.",
)
_SEG_METHOD = flags.DEFINE_string("segmenter", "centralized", "Checkpoint of the segmenter for the F1 check.")
_OUTPUT = flags.DEFINE_string(
    "output",
    None,
    "Where to write the JSON report (default <workdir>/style_checks.json; "
    "set it to check a workdir you may not write to).",
)

GOAL_TARGET_FRACTION = 0.80  # domain check: restyled images must look like the target lab
GOAL_F1_RELATIVE_DROP = 0.10  # structure check: restyling may cost at most 10% boundary F1
OUTPUT_NAME = "style_checks.json"

# fold_in tags: one independent stream per use of the config seed.
_TAG_STYLE_NET = 0x57  # the trainer's style-net init key (train.train_style_network)
_TAG_CLASSIFIER = 0xD0C
_TAG_STYLE_PICK = 0x5C

Array = jnp.ndarray


# ----------------------------------------------------------------------------------------------------------
# Workdir: config, style network.
# ----------------------------------------------------------------------------------------------------------
load_config = inference.config_from_workdir  # the run's config.json


def style_net_from_config(config: ml_collections.ConfigDict) -> tuple[style_lib.StyleNet, Any]:
    """(StyleNet, its initial params) built exactly as train.train_style_network builds them, so the
    untrained ablation is the very starting point of federated style-net training."""
    sc = config.style
    net = style_lib.StyleNet(features=tuple(sc.features), train_encoder=bool(sc.train_encoder))
    key = jax.random.fold_in(jax.random.PRNGKey(int(config.seed)), _TAG_STYLE_NET)
    return net, style_lib.init_style_net(net, key, int(config.data.tile_size))


def restore_style_params(
    workdir: str, config: ml_collections.ConfigDict, init_params: Any, tag: str = "fedtransfer_style_net"
) -> tuple[Any, int]:
    """The trained style net's params from `<workdir>/checkpoints/<tag>` (the federated server state);
    returns (params, round)."""
    ckpt_dir = os.path.join(workdir, "checkpoints", tag)
    if not os.path.isdir(ckpt_dir):
        raise FileNotFoundError(
            f"no style-network checkpoint at {ckpt_dir}: did the run include the " f"'fedtransfer' method?"
        )
    try:
        params, _, step = checkpointing.restore_params(ckpt_dir, init_params)
    except ValueError as e:  # orbax: stored and requested shapes differ
        raise ValueError(
            f"{ckpt_dir} does not match the StyleNet of this code (config.style.features="
            f"{list(config.style.features)}): was it trained by an older version? ({e})"
        ) from e
    if params is None:
        raise FileNotFoundError(f"no complete checkpoint in {ckpt_dir}")
    return params, int(step)


# ----------------------------------------------------------------------------------------------------------
# Style banks and restyling (the trainer's protocol, minus the privacy ledger: this is an offline check).
# ----------------------------------------------------------------------------------------------------------
def build_style_bank(
    config: ml_collections.ConfigDict,
    train_images: np.ndarray,
    train_mask: np.ndarray,
    mode: str,
    *,
    style_net: style_lib.StyleNet | None = None,
    style_params: Any = None,
) -> style_lib.StyleBank:
    """Every client's shared styles, sampled and computed as train.setup_style_sharing does."""
    sc = config.style
    messages = []
    for c in range(train_images.shape[0]):
        idx = sharing.style_sample(np.asarray(train_mask[c]), int(sc.styles_per_client), int(config.seed), c)
        msg = sharing.client_style_message(
            jnp.asarray(np.asarray(train_images[c])[idx]),
            mode,
            style_net=style_net,
            style_params=style_params,
            beta=float(sc.fourier_beta),
        )
        messages.append({**{k: np.asarray(v) for k, v in msg.items()}, "valid": np.ones(len(idx), bool)})
    return style_lib.build_bank(messages)


def pick_target_styles(bank: style_lib.StyleBank, target: int, n: int, seed: int, source: int) -> np.ndarray:
    """n slot indices into the target's valid styles, drawn uniformly (with replacement) per image."""
    valid = np.flatnonzero(np.asarray(bank.valid[target]))
    if valid.size == 0:
        raise ValueError(f"client {target} shares no valid style")
    rng = np.random.default_rng([seed, _TAG_STYLE_PICK, source, target])
    return valid[rng.integers(0, valid.size, size=n)]


def in_fixed_batches(fn: Callable[..., Array], *arrays: np.ndarray, batch: int = 16) -> np.ndarray:
    """fn over the leading axis in zero-padded batches of one size (one compilation for any N)."""
    n = arrays[0].shape[0]
    out = []
    for s in range(0, n, batch):
        chunk = [a[s : s + batch] for a in arrays]
        m = chunk[0].shape[0]
        if m < batch:
            chunk = [np.concatenate([a, np.zeros((batch - m,) + a.shape[1:], a.dtype)]) for a in chunk]
        out.append(np.asarray(fn(*[jnp.asarray(a) for a in chunk]))[:m])
    return np.concatenate(out)


def make_restyler(
    mode: str,
    config: ml_collections.ConfigDict,
    bank: style_lib.StyleBank,
    *,
    style_net: style_lib.StyleNet | None = None,
    style_params: Any = None,
) -> Callable:
    """`restyle(images [n,H,W,3], source, target) -> [n,H,W,3]`: each image in a random style of `target`.

    Uses sharing.make_renderer (the trainer's renderer): AdaIN with config.style.alpha, Fourier with lam=1
    (a full amplitude swap; training draws lam from config.style.fourier_lam).
    """
    render = sharing.make_renderer(
        mode,
        style_net=style_net,
        style_params=style_params,
        alpha=float(config.style.alpha),
        beta=float(config.style.fourier_beta),
    )
    seed = int(config.seed)
    if mode == "adain":
        fn = jax.jit(render)

        def styles(slots, t):
            return np.asarray(bank.adain_mean[t])[slots], np.asarray(bank.adain_std[t])[slots]

    else:
        fn = jax.jit(lambda images, amp: render(images, amp, 1.0))

        def styles(slots, t):
            return (np.asarray(bank.fourier_amp[t])[slots],)

    def restyle(images: np.ndarray, source: int, target: int) -> np.ndarray:
        slots = pick_target_styles(bank, target, len(images), seed, source)
        return in_fixed_batches(fn, np.asarray(images, np.float32), *styles(slots, target))

    return restyle


# ----------------------------------------------------------------------------------------------------------
# Domain classifier.
# ----------------------------------------------------------------------------------------------------------
class DomainClassifier(nn.Module):
    """Tiny CNN: three 3x3 conv levels, global mean + std pooling (style lives in feature statistics).

    The convolutions are models.conv.Conv (canonical-layout custom VJP): XLA:CPU's own filter gradient
    inside lax.scan is ~15x slower, which made a 400-step run take minutes instead of seconds.
    """

    num_classes: int
    features: Sequence[int] = (16, 32, 32)

    @nn.compact
    def __call__(self, images: Array) -> Array:
        x = images.astype(jnp.float32) * 2.0 - 1.0
        for i, width in enumerate(self.features):
            if i > 0:
                x = nn.avg_pool(x, (2, 2), strides=(2, 2))
            x = nn.relu(conv_lib.Conv(width, 3, impl=conv_lib.default_impl())(x))
        pooled = jnp.concatenate([jnp.mean(x, axis=(1, 2)), jnp.std(x, axis=(1, 2))], axis=-1)
        return nn.Dense(self.num_classes)(pooled)


def _augment(images: Array, key: Array) -> Array:
    """Random flips and 90-degree rotations: geometry-only, so the classifier keys on style, not pose."""
    k_flip, k_rot = jax.random.split(key)
    flip = jax.random.bernoulli(k_flip, 0.5, (images.shape[0],))[:, None, None, None]
    images = jnp.where(flip, images[:, :, ::-1], images)
    if images.shape[1] == images.shape[2]:
        rot = jax.random.bernoulli(k_rot, 0.5, (images.shape[0],))[:, None, None, None]
        images = jnp.where(rot, jnp.swapaxes(images, 1, 2), images)
    return images


def train_domain_classifier(
    images: np.ndarray, labels: np.ndarray, num_classes: int, key: Array, *, steps: int, batch: int, lr: float
) -> tuple[DomainClassifier, Any]:
    """Adam on the pooled real training images (label = client id); the whole loop is one jitted scan."""
    if len(images) == 0:
        raise ValueError("no training images to train the domain classifier on")
    model = DomainClassifier(num_classes)
    k_init, k_train = jax.random.split(key)
    params = model.init(k_init, jnp.zeros((1,) + images.shape[1:], jnp.float32))["params"]
    opt = optax.adam(lr)
    x_all, y_all = jnp.asarray(images, jnp.float32), jnp.asarray(labels, jnp.int32)

    def loss_fn(p, x, y):
        logits = model.apply({"params": p}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def train(params):
        def step(carry, i):
            p, s = carry
            k = jax.random.fold_in(k_train, i)
            k_idx, k_aug = jax.random.split(k)
            idx = jax.random.randint(k_idx, (batch,), 0, x_all.shape[0])
            loss, g = jax.value_and_grad(loss_fn)(p, _augment(x_all[idx], k_aug), y_all[idx])
            updates, s = opt.update(g, s, p)
            return (optax.apply_updates(p, updates), s), loss

        (p, _), losses = jax.lax.scan(step, (params, opt.init(params)), jnp.arange(steps))
        return p, losses

    params, losses = train(params)
    logging.info(
        "domain classifier: loss %.4f -> %.4f in %d steps", float(losses[0]), float(losses[-1]), steps
    )
    return model, params


def make_classify(model: DomainClassifier, params: Any) -> Callable[[np.ndarray], np.ndarray]:
    """images [n,H,W,3] -> predicted client ids [n]."""
    fn = jax.jit(lambda x: jnp.argmax(model.apply({"params": params}, x), axis=-1))
    return lambda images: in_fixed_batches(fn, np.asarray(images, np.float32))


# ----------------------------------------------------------------------------------------------------------
# Scoring.
# ----------------------------------------------------------------------------------------------------------
def tile_f1(probs: np.ndarray, labels: np.ndarray, *, threshold: float, tolerance: float) -> np.ndarray:
    """Boundary F1 of each tile (the trainer's metric, metrics.boundary.boundary_prf)."""
    return np.array(
        [boundary_prf(p > threshold, l > 0, tolerance)["f1"] for p, l in zip(probs, labels)], np.float64
    )


def relative_drop(before: float, after: float) -> float:
    """(before - after) / before: positive when restyling hurts; 0 when both are 0."""
    if before == 0.0:
        return 0.0 if after == 0.0 else -np.inf
    return (before - after) / before


def check_variant(
    restyle: Callable,
    names: Sequence[str],
    test: Mapping[str, tuple[np.ndarray, np.ndarray]],
    classify: Callable,
    seg_probs: Callable,
    f1_original: Mapping[str, np.ndarray],
    *,
    threshold: float,
    tolerance: float,
) -> dict:
    """Domain and structure checks of one restyling variant over every (source, target != source) pair."""
    hits = total = to_source = 0
    frac, f1_pair, restyled_f1 = {}, {}, []
    by_target = {n: {"hits": 0, "total": 0, "f1": [], "f1_orig": []} for n in names}
    for s, src in enumerate(names):
        images, labels = test[src]
        frac[src], f1_pair[src] = {}, {}
        for t, tgt in enumerate(names):
            if t == s or len(images) == 0:
                continue
            styled = restyle(images, s, t)
            pred = classify(styled)
            hits += int(np.sum(pred == t))
            to_source += int(np.sum(pred == s))
            total += len(pred)
            frac[src][tgt] = float(np.mean(pred == t))
            f1 = tile_f1(seg_probs(styled), labels, threshold=threshold, tolerance=tolerance)
            f1_pair[src][tgt] = float(f1.mean())
            restyled_f1.append(f1)
            bt = by_target[tgt]
            bt["hits"] += int(np.sum(pred == t))
            bt["total"] += len(pred)
            bt["f1"].append(f1)
            bt["f1_orig"].append(f1_original[src])
    if total == 0:
        raise ValueError("no (source, target) pair with test images: need >= 2 clients with test data")
    # Each source tile appears once per target, so the restyled mean weights tiles like the original mean.
    f1_orig = float(np.mean(np.concatenate([f1_original[n] for n in names if len(test[n][0])])))
    f1_rest = float(np.mean(np.concatenate(restyled_f1)))
    drop = relative_drop(f1_orig, f1_rest)
    # Per target style: restyled-into-t F1 against the originals of the very same source tiles.
    per_target = {}
    for tgt, bt in by_target.items():
        if bt["total"]:
            before, after = float(np.mean(np.concatenate(bt["f1_orig"]))), float(
                np.mean(np.concatenate(bt["f1"]))
            )
            per_target[tgt] = {
                "target_fraction": bt["hits"] / bt["total"],
                "f1_original": before,
                "f1_restyled": after,
                "f1_relative_drop": relative_drop(before, after),
            }
    return {
        "target_fraction": hits / total,
        "source_fraction": to_source / total,
        "n_restyled": total,
        "target_fraction_matrix": frac,
        "f1_original": f1_orig,
        "f1_restyled": f1_rest,
        "f1_relative_drop": drop,
        "f1_matrix": f1_pair,
        "per_target": per_target,
        "meets_domain_goal": hits / total >= GOAL_TARGET_FRACTION,
        "meets_structure_goal": drop <= GOAL_F1_RELATIVE_DROP,
    }


# ----------------------------------------------------------------------------------------------------------
# Driver.
# ----------------------------------------------------------------------------------------------------------
def run_checks(
    workdir: str,
    *,
    classifier_steps: int = 400,
    classifier_batch: int = 32,
    classifier_lr: float = 3e-3,
    style_net_tag: str = "fedtransfer_style_net",
    segmenter: str = "centralized",
) -> dict:
    """All checks on one workdir; returns the report that main() writes to style_checks.json."""
    from fedtransfer_jax.data.clients import load_federated_data  # tfds lazily, as the trainer does

    config = load_config(workdir)
    seed = int(config.seed)
    data = load_federated_data(config.data, workdir)  # reuses the run's tfds cache
    names = list(data.client_names)
    if len(names) < 2:
        raise ValueError(f"style checks need >= 2 clients, {workdir}/config.json has {names}")
    train_images, train_mask = np.asarray(data.train.images), np.asarray(data.train.mask)

    # Domain classifier on the clients' real training images.
    ids = np.broadcast_to(np.arange(len(names))[:, None], train_mask.shape)
    clf_model, clf_params = train_domain_classifier(
        train_images[train_mask],
        ids[train_mask],
        len(names),
        jax.random.fold_in(jax.random.PRNGKey(seed), _TAG_CLASSIFIER),
        steps=classifier_steps,
        batch=classifier_batch,
        lr=classifier_lr,
    )
    classify = make_classify(clf_model, clf_params)
    per_client_acc = {
        n: float(np.mean(classify(data.test[n][0]) == c)) if len(data.test[n][0]) else None
        for c, n in enumerate(names)
    }
    n_test = {n: len(data.test[n][0]) for n in names}
    test_acc = sum(per_client_acc[n] * n_test[n] for n in names if n_test[n]) / max(sum(n_test.values()), 1)
    train_acc = float(np.mean(classify(train_images[train_mask]) == ids[train_mask]))

    # Segmenter on the original test tiles.
    seg = inference.load_model(workdir, segmenter)
    ev = dict(threshold=float(config.eval.threshold), tolerance=float(config.eval.tolerance))
    f1_original = {
        n: tile_f1(seg.tile_probs(data.test[n][0]), data.test[n][1], **ev) if n_test[n] else np.zeros(0)
        for n in names
    }

    # Style banks and restylers, as the trainer builds them.
    net, init_params = style_net_from_config(config)
    trained_params, style_round = restore_style_params(workdir, config, init_params, style_net_tag)
    restylers = {}
    for variant, params in (("adain", trained_params), ("adain_untrained", init_params)):
        bank = build_style_bank(config, train_images, train_mask, "adain", style_net=net, style_params=params)
        restylers[variant] = make_restyler("adain", config, bank, style_net=net, style_params=params)
    bank = build_style_bank(config, train_images, train_mask, "fourier")
    restylers["fourier"] = make_restyler("fourier", config, bank)

    variants = {
        v: check_variant(r, names, data.test, classify, seg.tile_probs, f1_original, **ev)
        for v, r in restylers.items()
    }
    return {
        "workdir": os.path.abspath(workdir),
        "clients": names,
        "goals": {"target_fraction_min": GOAL_TARGET_FRACTION, "f1_relative_drop_max": GOAL_F1_RELATIVE_DROP},
        "classifier": {
            "steps": classifier_steps,
            "batch": classifier_batch,
            "lr": classifier_lr,
            "train_accuracy": train_acc,
            "test_accuracy": float(test_acc),
            "per_client_test_accuracy": per_client_acc,
        },
        "segmenter": segmenter,
        "style_net": {
            "checkpoint": style_net_tag,
            "round": style_round,
            "train_encoder": bool(config.style.train_encoder),
            "alpha": float(config.style.alpha),
        },
        "fourier": {"beta": float(config.style.fourier_beta), "lam": 1.0},
        "variants": variants,
    }


def format_table(report: dict) -> str:
    """Plain-text summary: one row per variant."""
    clf = report["classifier"]
    lines = [
        f"domain classifier: test accuracy {clf['test_accuracy']:.3f} "
        f"(train {clf['train_accuracy']:.3f}, {clf['steps']} steps)",
        f"{'variant':<16} {'->target':>9} {'->source':>9} {'F1 orig':>8} {'F1 rest':>8} {'rel drop':>9}  goals",
        "-" * 72,
    ]
    for name, v in report["variants"].items():
        goals = (
            "domain "
            + ("ok" if v["meets_domain_goal"] else "MISS")
            + ", structure "
            + ("ok" if v["meets_structure_goal"] else "MISS")
        )
        lines.append(
            f"{name:<16} {v['target_fraction']:>9.3f} {v['source_fraction']:>9.3f} {v['f1_original']:>8.3f} "
            f"{v['f1_restyled']:>8.3f} {v['f1_relative_drop']:>9.3f}  {goals}"
        )
    lines.append("per target style (->target fraction / F1 relative drop):")
    for name, v in report["variants"].items():
        cells = ", ".join(
            f"{t} {d['target_fraction']:.2f}/{d['f1_relative_drop']:.2f}" for t, d in v["per_target"].items()
        )
        lines.append(f"  {name:<16} {cells}")
    lines.append(
        f"goals: ->target >= {report['goals']['target_fraction_min']:.2f}, "
        f"rel drop <= {report['goals']['f1_relative_drop_max']:.2f}"
    )
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not _WORKDIR.value:
        raise app.UsageError("--workdir is required")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO
    report = run_checks(
        _WORKDIR.value,
        classifier_steps=_STEPS.value,
        classifier_batch=_BATCH.value,
        classifier_lr=_LR.value,
        style_net_tag=_STYLE_TAG.value,
        segmenter=_SEG_METHOD.value,
    )
    out = _OUTPUT.value or os.path.join(_WORKDIR.value, OUTPUT_NAME)
    io_utils.write_json_atomic(out, report)
    print(format_table(report))
    print(f"wrote {out}")


if __name__ == "__main__":
    app.run(main)
