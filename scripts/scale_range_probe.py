"""Should `--scale auto` go below 1/4 for micrographs of few, large grains? A development probe.

The search tries scales 1, 1/1.5, 1/2, 1/3 and 1/4 and aims the grains at the model's trained ~29 px. A
micrograph whose grains are 150-250 px across (coarse grains, or a high magnification; issue 18's
low-contrast SEM image with 51 grains failed at every scale down to 1/4) still shows them at 40-60 px at
1/4, outside the band, and the search stops there. This probe adds 1/6 and 1/8 as candidates (the 64 px
floor on the image's shorter side still applies, so small images keep their candidates) and compares.

Rules, data and the bar for adopting, fixed before it was scored:
  * ``shipped``: candidates 1 ... 1/4 (analysis/scale.CANDIDATES);
  * ``down to 1/8``: the same rule (scale.pick) over candidates 1 ... 1/4, 1/6, 1/8.
  * Sets: *coarse* = fresh synthetic images of the nine labs, 1024 px, mean grain diameter log-uniform in
    80-260 px (2 per lab, seed 737373); *control* = the development images of scale_rule_probe.py (TBM
    validation crops, whose 256 px sides allow no new candidate, and 18 synthetic images of 768 px, grains
    8-200 px, seed 515151).
  * Adopt if on the coarse set the mean ARI gain is >= +0.05 with its paired 95 % interval above 0, and on
    the control synthetic set the mean ARI changes by no less than -0.01.

  python scripts/scale_range_probe.py [WORKDIR]   # default: the shipped model; ~20 min on the 2-core CPU

Cached in /tmp/scale_range_probe.pkl. Output of the shipped model's run:
docs/results/pretrained_cpu2/scale_range_probe.txt.
"""
import sys

from fedtransfer_jax.analysis import scale as scale_lib

import dev_data

CACHE = "/tmp/scale_range_probe.pkl"
EXTENDED = (*scale_lib.CANDIDATES, 1 / 6, 1 / 8)


def one(model, settings, image, label, target):
    """Each candidate of EXTENDED the image allows, scored (dev_data.candidates_scored)."""
    return dev_data.candidates_scored(model, settings, image, label, target, EXTENDED)


def compute():
    workdir = sys.argv[1] if len(sys.argv) > 1 else None
    coarse = dev_data.synthetic_images(1024, 737373, (80.0, 260.0))
    return dev_data.score_with_controls(one, workdir, "coarse", coarse)


def main():
    sets = dev_data.cached(CACHE, compute)
    target_px = sets.pop("target_px")
    shipped = set(scale_lib.CANDIDATES)

    def rule(extended):
        def choose(r):
            cands = [s for s in r["cands"] if extended or s in shipped]
            return dev_data.earlier_pick(cands, r["diam"], r["rejected"], target_px)[0]
        return choose

    print(f"trained grain size {target_px:.1f} px; candidates {', '.join(scale_lib._key(s) for s in EXTENDED)}")
    dev_data.report_rules(sets, {"shipped": rule(False), "down to 1/8": rule(True)}, width=12, f1=False)


if __name__ == "__main__":
    main()
