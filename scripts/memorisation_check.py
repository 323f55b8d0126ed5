"""Does the shipped model know its training images better than new ones from the same labs? A diagnostic.

Each synthetic lab of `experiments/pretrained.py` trains on only 8 images of 512 px (32 tiles), seen ~50
times each over 20 rounds x 10 steps x batch 8 (~100 for the shipped model's two cycles); the labs could render any number of new ones. If the model
scores much better on its own training images than on fresh images drawn by the same generator, it has
memorised those few grain structures, and more distinct images per lab (at the same number of steps) is
the cheap remedy to try. If the two score alike, data count is not what limits it.

Scored for each of the nine synthetic labs: the 8 training images (`lab_seed(0, lab, 'train')`, as the
tfds builder draws them: 512 px, grains 8-140 px, label lines 2-5 px) and 8 fresh images from the same
generator and settings (seed 919191); scale 1, the model's own post-processing, ARI and boundary F1 at 2 px.
The gap is paired by lab (mean over its 8 images each). Where the ARI goes is split in two (grain maps with
every boundary pixel given to its nearest grain, as the ARI compares them): *merges*, H(true | predicted) in
nats, grow when one predicted grain covers several true ones (a gap in a wall), *splits*, H(predicted |
true), when a true grain is cut (a spurious wall); and the predicted grains per true grain.

  python scripts/memorisation_check.py [WORKDIR]     # default: the shipped model; ~6 min on the 2-core CPU

Output of the shipped model's run: docs/results/pretrained_cpu2/memorisation_check.txt.
"""
import sys

import numpy as np

from fedtransfer_jax.analysis import measure, scale as scale_lib
from fedtransfer_jax.data import synthetic
from fedtransfer_jax.data.seeds import lab_seed
from fedtransfer_jax.metrics import grains as grains_lib, postprocess_select as pps
from fedtransfer_jax.metrics.stats import paired_comparison

SIZE, N, DIAMETER, FRESH_SEED = 512, 8, (8.0, 140.0), 919191


def merges_splits(pred, label):
    """(H(true | pred), H(pred | true), predicted grains / true grains) of two boundary maps."""
    a = grains_lib.grains_from_boundary(pred)
    b = grains_lib.grains_from_boundary(label)
    nij, ai, bj, n = grains_lib._contingency(a, b)
    joint = grains_lib._entropy(nij, n)
    return joint - grains_lib._entropy(ai, n), joint - grains_lib._entropy(bj, n), a.max() / max(b.max(), 1)


def main():
    f = {"workdir": sys.argv[1] if len(sys.argv) > 1 else None, "method": None, "client": None, "overlap": None}
    model, settings, _ = measure.model_and_settings(f, {})
    rows = {"train": [], "fresh": []}
    labs = list(synthetic.LAB_NAMES)
    for lab in labs:
        for split, seed in (("train", lab_seed(0, lab, "train")), ("fresh", FRESH_SEED)):
            images, labels, _ = synthetic.make_lab_examples(
                lab, N, SIZE, seed, diameter_px=DIAMETER, boundary_width=2, boundary_width_max=5
            )
            scores = []
            for image, label in zip(images, labels):
                prob, _ = scale_lib.probabilities(model, image.astype(np.float32), scale=1.0)
                pred = settings.apply(prob)
                scores.append([*pps.tile_scores(pred, label > 0), *merges_splits(pred, label > 0)])
            rows[split].append(np.mean(scores, 0))
        t, r = rows["train"][-1], rows["fresh"][-1]
        print(f"  {lab:15s} train ari {t[2]:.3f} f1 {t[1]:.3f} | fresh ari {r[2]:.3f} f1 {r[1]:.3f} "
              f"merges {r[5]:.2f} splits {r[6]:.2f} grains/true {r[7]:.2f}", flush=True)
    train, fresh = np.array(rows["train"]), np.array(rows["fresh"])
    print(f"{len(labs)} labs x {N} images of {SIZE} px each, scale 1, the model's own post-processing")
    for col, name in ((2, "ARI"), (1, "boundary F1"), (5, "merges H(true|pred)"), (6, "splits H(pred|true)")):
        c = paired_comparison(train[:, col], fresh[:, col])
        print(f"  {name}: training images {train[:, col].mean():.3f}, fresh {fresh[:, col].mean():.3f}, "
              f"training minus fresh {c['diff_mean']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}] (paired by lab)")


if __name__ == "__main__":
    main()
