"""Scoring one style technique against a prepared ``CheckContext``.

``restyle_all`` renders held-out tiles of every target lab into every other target lab's style;
``evaluate`` turns those tiles into one JSON-able report: fidelity to the target lab (and its goal),
polarity, border seams, the domain classifier's verdict and, with a reference segmenter, how much
boundary F1 / ARI the restyling costs against the unchanged source labels.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import numpy as np

from fedtransfer_jax.style.checks.context import _TAG_RESTYLE, CheckContext, Restyler
from fedtransfer_jax.style.checks.fidelity import (
    GOAL_FIDELITY_RATIO,
    POLARITY_MIN_CONTRAST,
    border_ratio,
    boundary_contrast,
    describe_all,
    frechet_distance,
    project,
)
from fedtransfer_jax.style.checks.judges import tile_scores
from fedtransfer_jax.style.features import GROUPS


def fidelity_of_sets(ctx: CheckContext, sets: Mapping[str, np.ndarray]) -> dict:
    """``sets[k]``: images claimed to be in lab k's style -> per target k: distance and ratio per
    descriptor group, and the headline ``ratio`` = max over groups."""
    out = {}
    for k, images in sets.items():
        feats = describe_all(ctx.describe, images)
        entry: dict[str, Any] = {}
        for g in GROUPS:
            dist = ctx.real_distance[g]
            d = frechet_distance(project(ctx.spaces[g], feats[g]), ctx.ref_feats[g][k])
            nearest = min(dist[j][k] for j in ctx.labs if j != k)
            entry[g] = {
                "distance": d,
                "ratio": d / max(nearest, 1e-12),
                "heldout_ratio": dist[k][k] / max(nearest, 1e-12),
            }
        entry["ratio"] = max(entry[g]["ratio"] for g in GROUPS)
        entry["heldout_ratio"] = max(entry[g]["heldout_ratio"] for g in GROUPS)
        entry["meets_goal"] = bool(entry["ratio"] < GOAL_FIDELITY_RATIO)
        out[k] = entry
    return out


def restyle_all(ctx: CheckContext, restyle: Restyler, seed: int, *, per_pair: int = 16) -> dict:
    """Restyle up to ``per_pair`` query tiles of every target lab j into every other target lab k:
    ``{(j, k): (restyled images, source labels, source images)}``."""
    out = {}
    key = jax.random.fold_in(jax.random.PRNGKey(seed), _TAG_RESTYLE)
    for s, src in enumerate(ctx.targets):
        x, y = ctx.query[src][0][:per_pair], ctx.query[src][1][:per_pair]
        for t, tgt in enumerate(ctx.targets):
            if t != s:
                out[(src, tgt)] = (
                    np.asarray(restyle(x, y, tgt, jax.random.fold_in(key, s * 1000 + t))),
                    y,
                    x,
                )
    return out


def evaluate(ctx: CheckContext, restyled: Mapping[tuple, tuple]) -> dict:
    """All checks of one method's restyled tiles (from ``restyle_all``): a JSON-able dict."""
    by_target = {k: [v[0] for (j, kk), v in restyled.items() if kk == k] for k in ctx.targets}
    fid = fidelity_of_sets(ctx, {k: np.concatenate(v) for k, v in by_target.items() if v})
    report: dict[str, Any] = {"fidelity": fid}
    report["fidelity_ratio_mean"] = float(np.mean([v["ratio"] for v in fid.values()]))
    report["fidelity_ratio_max"] = float(np.max([v["ratio"] for v in fid.values()]))
    report["fidelity_goal"] = {
        "ratio_below": GOAL_FIDELITY_RATIO,
        "met_for": [k for k, v in fid.items() if v["meets_goal"]],
    }

    pol = {}
    for k in ctx.targets:
        c = np.concatenate([boundary_contrast(v[0], v[1]) for (j, kk), v in restyled.items() if kk == k])
        want = ctx.polarity[k]
        has = abs(want) >= POLARITY_MIN_CONTRAST
        pol[k] = {
            "real_contrast": want,
            "restyled_contrast": float(np.median(c)),
            "agreement": float(np.mean(np.sign(c) == np.sign(want))) if has else None,
        }
    report["polarity"] = pol
    borders = {
        k: float(
            np.median(np.concatenate([border_ratio(v[0]) for (j, kk), v in restyled.items() if kk == k]))
        )
        for k in ctx.targets
    }
    report["border_ratio"] = {
        "restyled": borders,
        "real": {k: float(np.median(border_ratio(ctx.query[k][0]))) for k in ctx.targets},
    }

    if ctx.classify is not None:
        acc = {}
        for t, k in enumerate(ctx.targets):
            pred = np.concatenate([ctx.classify(v[0]) for (j, kk), v in restyled.items() if kk == k])
            acc[k] = float(np.mean(pred == t))
        real_acc = float(
            np.mean(np.concatenate([ctx.classify(ctx.query[k][0]) == t for t, k in enumerate(ctx.targets)]))
        )
        report["classifier"] = {
            "target_fraction": acc,
            "target_fraction_mean": float(np.mean(list(acc.values()))),
            "real_query_accuracy": real_acc,
        }

    if ctx.segment is not None:
        pairs, orig_cache = {}, {}
        for (j, k), (img, lab, src_img) in restyled.items():
            if j not in orig_cache:
                orig_cache[j] = tile_scores(ctx.segment(src_img), lab)
            new = tile_scores(ctx.segment(img), lab)
            o = orig_cache[j]
            pairs[f"{j}->{k}"] = {
                "f1_original": float(o["f1"].mean()),
                "f1_restyled": float(new["f1"].mean()),
                "ari_original": float(o["ari"].mean()),
                "ari_restyled": float(new["ari"].mean()),
            }
        f1o = np.mean([p["f1_original"] for p in pairs.values()])
        f1r = np.mean([p["f1_restyled"] for p in pairs.values()])
        ario = np.mean([p["ari_original"] for p in pairs.values()])
        arir = np.mean([p["ari_restyled"] for p in pairs.values()])
        per_target = {}
        for k in ctx.targets:
            ps = [p for name, p in pairs.items() if name.endswith(f"->{k}")]
            per_target[k] = {m: float(np.mean([p[m] for p in ps])) for m in ps[0]} if ps else {}
        report["structure"] = {
            "pairs": pairs,
            "per_target": per_target,
            "f1_original": float(f1o),
            "f1_restyled": float(f1r),
            "f1_relative_drop": float((f1o - f1r) / max(f1o, 1e-9)),
            "ari_original": float(ario),
            "ari_restyled": float(arir),
            "ari_relative_drop": float((ario - arir) / max(ario, 1e-9)),
        }
    return report


def method_restyler(method, shared, bank, client_names: Sequence[str]) -> Restyler:
    """A ``Restyler`` for a ``StyleTechnique`` whose bank rows are ``client_names`` (one compiled render)."""
    from fedtransfer_jax.style.techniques.base import render_in_batches

    fn = jax.jit(method.render)
    names = list(client_names)

    def restyle(images, labels, target, key):
        t = np.full(len(images), names.index(target), np.int32)
        return render_in_batches(
            method, shared, bank, np.asarray(images), np.asarray(labels), t, key, render_fn=fn
        )

    return restyle


__all__ = ["fidelity_of_sets", "restyle_all", "evaluate", "method_restyler"]
