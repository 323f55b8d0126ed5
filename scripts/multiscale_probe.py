"""Does averaging the boundary probabilities of several scales beat the single scale `--scale auto` picks?
A development probe, not adopted (docs/MODEL.md "Tried and not adopted" has its numbers).

  python scripts/multiscale_probe.py [WORKDIR]      # default: the shipped model; ~40 min on the 2-core CPU
                                                    # beside a study (mostly the grid lines), once cached less

Development data only: the TBM validation micrographs 13, 15, 24 (needs ../shared/data/tbm_tint_etched) and
fresh synthetic images of the nine labs (seed 515151, 2 per lab, 512 px, grains 8-140 px). For each image the
probabilities at every `auto` candidate scale are mapped back to its pixels; the variants are the scale `auto`
picks (what predict does), scale 1, the mean over `auto`'s pick and its neighbouring candidates, and the mean
over every candidate (and the elementwise max over the neighbours); each post-processed with the model's own
settings. Per variant: mean objective, boundary F1 and ARI, grains predicted per true grain, the best grid
point's scores on the set (optimistic), and the ARI paired with `auto`'s (mean difference, t-based 95 %
interval, images better). Probabilities are cached per model in /tmp/multiscale_probe_<model>.pkl.
"""
import hashlib
import os
import pickle
import sys

import numpy as np
from fedtransfer_jax.analysis import measure, scale as scale_lib
from fedtransfer_jax.data import intensity
from fedtransfer_jax.metrics import grains as grains_lib
from fedtransfer_jax.metrics import postprocess_select as pps
from fedtransfer_jax.metrics import stats

import dev_data

workdir = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else "shipped"
cache = f"/tmp/multiscale_probe_{hashlib.sha1(workdir.encode()).hexdigest()[:10]}.pkl"
if os.path.exists(cache):
    sets = pickle.load(open(cache, "rb"))
else:
    f = {"workdir": None if workdir == "shipped" else workdir, "method": None, "client": None, "overlap": None}
    model, settings, _ = measure.model_and_settings(f, {})
    target = scale_lib.target_for(model)
    sets = {"settings": settings.to_dict(), "tbm_val": [], "synthetic": []}

    def one(img, lab):
        chosen, record, _ = scale_lib.choose(model, intensity.normalise(img, intensity.mode_of(model)), settings, target=target)
        cands = scale_lib.candidates_for(img.shape[:2])
        probs = {s: scale_lib.probabilities(model, img, scale=s)[0] for s in cands}
        return {"probs": probs, "chosen": chosen, "label": lab > 0}

    for img, lab in dev_data.tbm_validation():
        sets["tbm_val"].append(one(img, lab))
    for _, img, lab in dev_data.synthetic_images(512, 515151, (8.0, 140.0)):
        sets["synthetic"].append(one(img, lab))
    pickle.dump(sets, open(cache, "wb"))
settings = pps.PostprocessSettings.from_dict(sets.pop("settings"))
print("the model's settings:", settings)


def neighbours(e):
    cands = sorted(e["probs"], reverse=True)
    i = cands.index(e["chosen"])
    return cands[max(0, i - 1): i + 2]


variants = {
    "auto (predict's)": lambda e: e["probs"][e["chosen"]],
    "scale 1": lambda e: e["probs"][1.0],
    "auto + neighbours, mean": lambda e: np.mean([e["probs"][s] for s in neighbours(e)], 0),
    "every candidate, mean": lambda e: np.mean(list(e["probs"].values()), 0),
    "auto + neighbours, max": lambda e: np.max([e["probs"][s] for s in neighbours(e)], 0),
}
for name, data in sets.items():
    print(f"== {name} ({len(data)} images; auto picked {[round(e['chosen'], 2) for e in data]})")
    base = None
    for vn, fn in variants.items():
        probs = [fn(e) for e in data]
        rows = np.array([pps.tile_scores(settings.apply(p), e["label"]) for p, e in zip(probs, data)])
        if base is None:
            base = rows[:, 2]
        else:
            c, d = stats.paired_comparison(list(rows[:, 2]), list(base)), rows[:, 2] - base
            print(f"  {vn:26s} ARI minus auto's {d.mean():+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}], "
                  f"better on {int((d > 0).sum())} of {len(d)}")
        counts = np.array([(grains_lib.grains_from_boundary(settings.apply(p)).max(), grains_lib.grains_from_boundary(e["label"]).max()) for p, e in zip(probs, data)], float)
        table = pps.score_grid(probs, [e["label"] for e in data])
        best = int(np.argmax(table[:, 0]))
        m = rows.mean(0)
        print(f"  {vn:26s} obj {m[0]:.3f} f1 {m[1]:.3f} ari {m[2]:.3f} | grains/true {np.mean(counts[:, 0] / np.maximum(counts[:, 1], 1)):.2f} "
              f"| grid best obj {table[best, 0]:.3f} ari {table[best, 2]:.3f}")
