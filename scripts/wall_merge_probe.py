"""Does merging grains across *weak walls* cut over-segmentation? A development probe.

A wall is the stretch of boundary between two neighbouring grains of the thresholded map; its strength is
the mean boundary probability where the two grains meet (the ridge of the band). Walls weaker than
``min_wall_prob`` are dissolved and the grains on either side merged (one pass, as a region-adjacency cut).
With a low pixel threshold this is a hysteresis by wall: faint pixels may close a gap, but a whole wall
must be convincing to split two grains.

  python scripts/wall_merge_probe.py [WORKDIR]      # default: the shipped model; ~8 min on the 2-core CPU

Development data only: the TBM validation micrographs 13, 15, 24 (needs ../shared/data/tbm_tint_etched) and
fresh synthetic images of the nine labs (seed 424242, 2 per lab, 384 px, grains 8-140 px). Probabilities at
scale 1, at scale 1 with flips, and at the scale ``--scale auto`` picks are cached in
/tmp/wall_merge_probe_probs.pkl.
"""
import dataclasses
import sys

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from fedtransfer_jax.analysis import measure, scale as scale_lib
from fedtransfer_jax.metrics import postprocess as pp
from fedtransfer_jax.metrics.grains import grains_from_boundary
from fedtransfer_jax.metrics import postprocess_select as pps
from fedtransfer_jax.metrics.stats import paired_comparison

import dev_data

CACHE = "/tmp/wall_merge_probe_probs.pkl"
VIEWS = ("scale 1", "scale 1 + flips", "scale auto")


def compute():
    f = {"workdir": sys.argv[1] if len(sys.argv) > 1 else None, "method": None, "client": None, "overlap": None}
    model, settings, _ = measure.model_and_settings(f, {})

    def views(img):
        p1, _ = scale_lib.probabilities(model, img, scale=1.0)
        pf, _ = scale_lib.probabilities(model, img, scale=1.0, flips=True)
        pa, rec = scale_lib.probabilities(model, img, scale="auto", settings=settings)
        return {"scale 1": p1, "scale 1 + flips": pf, "scale auto": pa, "auto_used": rec["used"]}

    return {
        "settings": settings.to_dict(),
        "tbm_val": [(views(img), lab > 0) for img, lab in dev_data.tbm_validation()],
        "synthetic": [(views(img), lab > 0) for _, img, lab in dev_data.synthetic_images(384, 424242, (8.0, 140.0))],
    }


def wall_strengths(tiling: np.ndarray, prob: np.ndarray):
    """(pairs [E, 2], mean ridge probability [E]) of every pair of 4-adjacent labels of ``tiling``."""
    keys, vals = [], []
    for a, b, pa, pb in (
        (tiling[:, :-1], tiling[:, 1:], prob[:, :-1], prob[:, 1:]),
        (tiling[:-1, :], tiling[1:, :], prob[:-1, :], prob[1:, :]),
    ):
        sel = a != b
        lo, hi = np.minimum(a[sel], b[sel]).astype(np.int64), np.maximum(a[sel], b[sel]).astype(np.int64)
        keys.append(lo * (int(tiling.max()) + 1) + hi)
        vals.append(np.maximum(pa[sel], pb[sel]))
    keys, vals = np.concatenate(keys), np.concatenate(vals)
    if not keys.size:
        return np.zeros((0, 2), np.int64), np.zeros(0)
    uniq, inv = np.unique(keys, return_inverse=True)
    mean = np.bincount(inv, weights=vals) / np.bincount(inv)
    n = int(tiling.max()) + 1
    return np.stack([uniq // n, uniq % n], 1), mean


def merge_weak_walls(boundary: np.ndarray, prob: np.ndarray, min_wall_prob: float) -> np.ndarray:
    b = np.asarray(boundary, bool)
    if not b.any() or b.all():
        return b.copy()
    tiling = grains_from_boundary(b, connectivity=4, assign_boundary=True)
    pairs, strength = wall_strengths(tiling, prob)
    weak = pairs[strength < min_wall_prob]
    n = int(tiling.max()) + 1
    g = coo_matrix((np.ones(len(weak)), (weak[:, 0], weak[:, 1])), shape=(n, n))
    _, comp = connected_components(g, directed=False)
    merged = comp[tiling]
    depth = ndimage.distance_transform_edt(b)
    radius = max(1, int(np.ceil(np.percentile(depth[b], 95))))
    return b & pp._local_label_span(merged, radius)


def main():
    sets = dev_data.cached(CACHE, compute)
    chosen = pps.PostprocessSettings.from_dict(sets.pop("settings"))
    print("the model's settings:", chosen)
    variants = {"model's settings": lambda p: chosen.apply(p)}
    for t in (0.3, 0.5):
        base = dataclasses.replace(chosen, threshold=t)
        for w in (0.6, 0.7, 0.8, 0.9):
            variants[f"t={t} walls<{w} merged"] = (
                lambda base, w: lambda p: merge_weak_walls(base.apply(p), p, w)
            )(base, w)
    for name, data in sets.items():
        for view in VIEWS:
            print(f"== {name}, {view} ({len(data)} maps)")
            ref = None
            for vn, fn in variants.items():
                rows = np.array([pps.tile_scores(fn(v[view]), lab) for v, lab in data])
                m = rows.mean(0)
                extra = ""
                if ref is None:
                    ref = rows
                else:
                    diff = rows[:, 2] - ref[:, 2]
                    extra = f"  dARI {diff.mean():+.3f} (better on {(diff > 0).sum()}/{len(diff)})"
                print(f"  {vn:24s} obj {m[0]:.3f} f1 {m[1]:.3f} ari {m[2]:.3f} ratio {m[3]:.3f}{extra}")
        # Flips (test-time augmentation) against none, both with the model's settings, paired per image.
        with_flips = np.array([pps.tile_scores(chosen.apply(v["scale 1 + flips"]), lab) for v, lab in data])
        without = np.array([pps.tile_scores(chosen.apply(v["scale 1"]), lab) for v, lab in data])
        for j, col in ((2, "ari"), (1, "boundary_f1"), (3, "grain_count_ratio")):
            r = paired_comparison(with_flips[:, j], without[:, j])
            better = int((with_flips[:, j] > without[:, j]).sum())
            print(f"  flips minus none, {col}: {r['diff_mean']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}],"
                  f" better on {better}/{len(data)}")


if __name__ == "__main__":
    main()
