"""When `--scale auto` finds every candidate scale's map implausible, should it fall back to scale 1?

The auto rule (analysis/scale.py) rejects a candidate whose map cannot give a grain size (more than half of it
boundary, fewer than 5 whole grains, ...) "unless every candidate is": then it takes, among the rejected maps,
the one whose grains come closest to the trained size. On micrographs of very fine grains (5-14 px, a low
magnification) scripts/upscale_probe.py found every candidate rejected on all 18 development images, and that
fallback chose 1/3 or 1/4 on many of them, where the grains vanish: ARI 0.178 against 0.312 at scale 1. On
the same development sets, falling back to scale 1 instead (the model's own resolution: with no plausible map
anywhere, resampling has nothing to go on) scored +0.134 [+0.054, +0.213] on those images, +0.000 on the 9 TBM
validation crops (one crop all rejected, the same choice) and +0.031 [-0.012, +0.073] on 18 synthetic images of
768 px (three all rejected). Found on development data; this script checks it on images not yet used.

Rule, sets and the bar, fixed before this is run:
  * ``shipped``: analysis/scale.pick over the candidates 1 ... 1/4;
  * ``all rejected -> 1``: the same, but scale 1 where every candidate with grains is rejected;
  * sets: *fine* = fresh synthetic images of the nine labs, 512 px, grains 5-14 px, label lines 1-2 px
    (2 per lab, seed 757575); *normal* = fresh synthetic images, 768 px, grains 8-200 px, lines 2-5 px
    (2 per lab, seed 525252). Scores: ARI and boundary F1 at 2 px on the whole image, the model's own
    post-processing.
  * Adopt if on *fine* the mean ARI gain is >= +0.03 with its paired 95 % interval above 0, and on *normal*
    the mean ARI changes by no less than -0.01.

  python scripts/all_rejected_check.py [WORKDIR]   # default: the shipped model; ~10 min on the 2-core CPU

Cached in /tmp/all_rejected_check.pkl. Output of the shipped model's run:
docs/results/pretrained_cpu2/all_rejected_check.txt.
"""
import sys

import numpy as np

from fedtransfer_jax.analysis import measure, scale as scale_lib
from fedtransfer_jax.metrics.stats import paired_comparison

import dev_data

CACHE = "/tmp/all_rejected_check.pkl"
SHIPPED = tuple(scale_lib.CANDIDATES)


def compute():
    f = {"workdir": sys.argv[1] if len(sys.argv) > 1 else None, "method": None, "client": None, "overlap": None}
    model, settings, _ = measure.model_and_settings(f, {})
    target = scale_lib.target_for(model)
    sets = {
        "fine": dev_data.synthetic_images(512, 757575, (5.0, 14.0), boundary_width=1, boundary_width_max=2),
        "normal": dev_data.synthetic_images(768, 525252, (8.0, 200.0)),
    }
    return {"target_px": target[0]} | {
        name: [(lab, dev_data.candidates_scored(model, settings, img, label, target, SHIPPED))
               for lab, img, label in images]
        for name, images in sets.items()
    }


def main():
    sets = dev_data.cached(CACHE, compute)
    target_px = sets.pop("target_px")

    def shipped(r):
        return dev_data.earlier_pick(r["cands"], r["diam"], r["rejected"], target_px)[0]

    def all_rejected_to_1(r):
        with_grains = [s for s in r["cands"] if r["diam"][s] is not None]
        if with_grains and all(scale_lib._key(s) in r["rejected"] for s in with_grains):
            return 1.0
        return shipped(r)

    print(f"trained grain size {target_px:.1f} px")
    for name, data in sets.items():
        a = np.array([r["scores"][shipped(r)] for _, r in data])
        b = np.array([r["scores"][all_rejected_to_1(r)] for _, r in data])
        changed = sum(shipped(r) != all_rejected_to_1(r) for _, r in data)
        c = paired_comparison(b[:, 2], a[:, 2])
        f1 = paired_comparison(b[:, 1], a[:, 1])
        print(f"== {name} ({len(data)} images, {changed} choices changed)")
        print(f"  shipped            ari {a[:, 2].mean():.3f} f1 {a[:, 1].mean():.3f}")
        print(f"  all rejected -> 1  ari {b[:, 2].mean():.3f} f1 {b[:, 1].mean():.3f} | ARI vs shipped "
              f"{c['diff_mean']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}], F1 {f1['diff_mean']:+.3f}")
        for lab, r in data:
            print(f"    {lab:15s} shipped {scale_lib._key(shipped(r))} -> {scale_lib._key(all_rejected_to_1(r))}  "
                  + dev_data.per_scale_text(r, lambda s: f"ari {r['scores'][s][2]:.2f}"))


if __name__ == "__main__":
    main()
