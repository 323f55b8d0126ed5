"""Should `--scale auto` enlarge micrographs of very fine grains? A development probe.

The search tries scales 1, 1/1.5, 1/2, 1/3 and 1/4 and never enlarges. A micrograph taken at low
magnification shows its grains 5-14 px across with boundary lines a pixel or two wide, below most of the
8-140 px the shipped model trained on (2-5 px lines) and far below the ~29 px the search aims at; scale 1
is then the closest candidate and the model sees grains smaller than it handles well. This probe adds the
enlargements 1.5 and 2 (bilinear, as `--scale X` does; the view each candidate predicts stays 384 px at
the model) and compares.

Rules, data and the bar for adopting, fixed before it was scored:
  * ``shipped``: candidates 1 ... 1/4 (analysis/scale.CANDIDATES), scale.pick;
  * ``up, same rule``: scale.pick over candidates 2, 1.5, 1 ... 1/4 (where several lie within the 1.25x
    band, the largest: an enlargement wins there too);
  * ``up when small``: the shipped choice, unless scale 1 was not rejected and its mean grain diameter is
    below the band (trained size / 1.25): then scale.pick over 2, 1.5 and 1 alone. Images whose grains
    already reach the band at scale 1 keep exactly the shipped choice;
  * an oracle (the best candidate per image), for the headroom.
  * Sets: *fine* = fresh synthetic images of the nine labs, 512 px, mean grain diameter log-uniform in
    5-14 px, label lines 1-2 px (2 per lab, seed 747474); *control* = the development images of
    scale_rule_probe.py (the 9 TBM validation crops and 18 synthetic images of 768 px, grains 8-200 px,
    seed 515151). Scores: ARI and boundary F1 at 2 px on the whole image, the model's own post-processing.
  * Adopt a rule if on the fine set its mean ARI gain over ``shipped`` is >= +0.03 with the paired 95 %
    interval above 0, and on each control set its mean ARI changes by no less than -0.01. If both pass,
    ``up when small`` (it changes fewer images and costs less).

  python scripts/upscale_probe.py [WORKDIR]   # default: the shipped model; ~25 min on the 2-core CPU

Cached in /tmp/upscale_probe.pkl. Output of the shipped model's run:
docs/results/pretrained_cpu2/upscale_probe.txt.
"""
import sys

from fedtransfer_jax.analysis import scale as scale_lib

import dev_data

CACHE = "/tmp/upscale_probe.pkl"
UP = (2.0, 1.5)
EXTENDED = (*UP, *scale_lib.CANDIDATES)


def one(model, settings, image, label, target):
    """Each candidate of EXTENDED the image allows, scored (dev_data.candidates_scored)."""
    return dev_data.candidates_scored(model, settings, image, label, target, EXTENDED)


def compute():
    workdir = sys.argv[1] if len(sys.argv) > 1 else None
    fine = dev_data.synthetic_images(512, 747474, (5.0, 14.0), boundary_width=1, boundary_width_max=2)
    return dev_data.score_with_controls(one, workdir, "fine", fine)


def main():
    sets = dev_data.cached(CACHE, compute)
    target_px = sets.pop("target_px")
    shipped = set(scale_lib.CANDIDATES)

    def choose_shipped(r):
        return dev_data.earlier_pick([s for s in r["cands"] if s in shipped], r["diam"], r["rejected"], target_px)[0]

    def choose_up(r):
        return dev_data.earlier_pick(r["cands"], r["diam"], r["rejected"], target_px)[0]

    def choose_up_when_small(r):
        d1 = r["diam"][1.0]
        if d1 is None or scale_lib._key(1.0) in r["rejected"] or d1 >= target_px / scale_lib.TOLERANCE:
            return choose_shipped(r)
        return dev_data.earlier_pick([s for s in r["cands"] if s >= 1.0], r["diam"], r["rejected"], target_px)[0]

    rules = {"shipped": choose_shipped, "up, same rule": choose_up, "up when small": choose_up_when_small}
    print(f"trained grain size {target_px:.1f} px; candidates {', '.join(scale_lib._key(s) for s in EXTENDED)}")
    dev_data.report_rules(sets, rules)


if __name__ == "__main__":
    main()
