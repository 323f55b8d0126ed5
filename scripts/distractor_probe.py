"""Does the model draw grain boundaries along edges that are *not* grain boundaries? A development probe.

On the real TBM crops the model's spurious walls are about as confident as its true ones
(docs/MODEL.md, "Merging grains across weak walls"), and they follow colour changes inside grains. Real
micrographs are full of such edges: etch stains, uneven film, second-phase particles, contamination.
This probe asks whether the model treats any sharp intensity edge as a boundary: it adds unlabelled
*stains* to fresh synthetic images and scores the model on the same images with and without them.

A stain field, fixed before it was scored: a Gaussian random field (correlation length ``L`` px) thresholded
at its ``1 - coverage`` quantile, the mask softened by a Gaussian of ``edge`` px, and the image multiplied
there by a per-stain factor (one factor per connected stain, uniform in [0.6, 0.85] or [1.15, 1.4], the
same for the three channels times a small per-channel tint in [0.9, 1.1]). The stains cross grain
boundaries freely, as a stain does; the labels do not change.

  python scripts/distractor_probe.py [WORKDIR]     # default: the shipped model; ~6 min on the 2-core CPU

Development data only: fresh synthetic images of the nine labs (seed 616161, 2 per lab, 384 px, grains
8-140 px); scale 1 and the model's own post-processing. Output of the shipped model's run:
docs/results/pretrained_cpu2/distractor_probe.txt.
"""
import sys

import numpy as np
from scipy import ndimage

from fedtransfer_jax.analysis import measure, scale as scale_lib
from fedtransfer_jax.metrics import postprocess_select as pps
from fedtransfer_jax.metrics.stats import paired_comparison

import dev_data

VARIANTS = {  # name: (correlation length px, coverage, edge softness px)
    "stains, sharp, 25 % of the image": (12.0, 0.25, 0.7),
    "stains, soft, 25 % of the image": (12.0, 0.25, 3.0),
    "large stains, sharp, 40 %": (30.0, 0.4, 0.7),
}


def stains(rng, shape, length, coverage, edge):
    """The stain factor map [H, W, 3] (1 outside the stains)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), length)
    mask = field > np.quantile(field, 1.0 - coverage)
    blobs, n = ndimage.label(mask)
    dark = rng.uniform(size=n + 1) < 0.5
    strength = np.where(dark, rng.uniform(0.6, 0.85, n + 1), rng.uniform(1.15, 1.4, n + 1))
    strength[0] = 1.0
    tint = rng.uniform(0.9, 1.1, (n + 1, 3))
    tint[0] = 1.0
    factor = (strength[:, None] * tint)[blobs]
    return np.stack([ndimage.gaussian_filter(factor[..., c], edge) for c in range(3)], -1)


def main():
    f = {"workdir": sys.argv[1] if len(sys.argv) > 1 else None, "method": None, "client": None, "overlap": None}
    model, settings, _ = measure.model_and_settings(f, {})
    rows = {name: [] for name in ("clean", *VARIANTS)}
    labs = []
    for i, (lab, image, label) in enumerate(dev_data.synthetic_images(384, 616161, (8.0, 140.0))):
        labs.append(lab)
        truth = label > 0
        views = {"clean": image}
        for j, (name, (length, coverage, edge)) in enumerate(VARIANTS.items()):
            rng = np.random.default_rng([616161, i, j])
            views[name] = np.clip(image * stains(rng, image.shape[:2], length, coverage, edge), 0.0, 1.0)
        for name, img in views.items():
            prob, _ = scale_lib.probabilities(model, img.astype(np.float32), scale=1.0)
            rows[name].append(pps.tile_scores(settings.apply(prob), truth))
    clean = np.array(rows["clean"])
    print(f"{len(labs)} synthetic images (2 per lab, 384 px), scale 1, the model's own post-processing")
    for name, r in rows.items():
        r = np.array(r)
        m = r.mean(0)
        line = f"  {name:34s} ari {m[2]:.3f} f1 {m[1]:.3f} count ratio {m[3]:.3f}"
        if name != "clean":
            c = paired_comparison(r[:, 2], clean[:, 2])
            line += f" | ARI vs clean {c['diff_mean']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]"
        print(line)
    print("  per lab ARI (clean -> each variant):")
    for k, lab in enumerate(labs):
        print(f"    {lab:15s} " + " ".join(f"{rows[n][k][2]:.2f}" for n in rows))


if __name__ == "__main__":
    main()
