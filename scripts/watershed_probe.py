"""Does a marker-controlled watershed on the boundary probabilities (h-minima markers, optional Gaussian
smoothing) beat threshold + morphology as post-processing? A development probe, not adopted: docs/MODEL.md
"Tried and not adopted" has its numbers.

  python scripts/watershed_probe.py [WORKDIR]      # default: the shipped model; ~5 min on the 2-core CPU

Development data only: the TBM validation micrographs 13, 15, 24 (needs ../shared/data/tbm_tint_etched) and
fresh synthetic images of the nine labs (seed 424242, 2 per lab, 384 px, grains 8-140 px), all at scale 1.
Probabilities are cached in /tmp/watershed_probe_probs.pkl.
"""
import os
import pickle
import sys

import numpy as np
from scipy import ndimage
from skimage.morphology import h_minima
from skimage.segmentation import watershed
from fedtransfer_jax.analysis import measure, scale as scale_lib
from fedtransfer_jax.metrics import postprocess_select as pps

import dev_data

cache = "/tmp/watershed_probe_probs.pkl"
if os.path.exists(cache):
    sets = pickle.load(open(cache, "rb"))
else:
    f = {"workdir": sys.argv[1] if len(sys.argv) > 1 else None, "method": None, "client": None, "overlap": None}
    model, settings, _ = measure.model_and_settings(f, {})
    sets = {"settings": settings.to_dict(), "tbm_val": [], "synthetic": []}
    for img, lab in dev_data.tbm_validation():
        prob, _ = scale_lib.probabilities(model, img, scale=1.0, settings=settings, target=None)
        sets["tbm_val"].append((prob, lab > 0))
    for _, img, lab in dev_data.synthetic_images(384, 424242, (8.0, 140.0)):
        prob, _ = scale_lib.probabilities(model, img, scale=1.0, settings=settings, target=None)
        sets["synthetic"].append((prob, lab > 0))
    pickle.dump(sets, open(cache, "wb"))
chosen = pps.PostprocessSettings.from_dict(sets.pop("settings"))  # the model's own post-processing choice
print("the model's settings:", chosen)

def ws(prob, h, sigma):
    p = ndimage.gaussian_filter(prob, sigma) if sigma else prob
    markers, _ = ndimage.label(h_minima(p, h))
    return watershed(p, markers, watershed_line=True) == 0

variants = {"model's settings": chosen.apply}
for h in (0.05, 0.1, 0.2, 0.3, 0.5):
    for sigma in (0, 1, 2):
        variants[f"ws h={h} s={sigma}"] = (lambda h, s: lambda p: ws(p, h, s))(h, sigma)
for name, data in sets.items():
    print(f"== {name} ({len(data)} maps)")
    # best grid point on this set (an optimistic reference)
    table = pps.score_grid([p for p, _ in data], [l for _, l in data])
    best = int(np.argmax(table[:, 0]))
    print(f"  grid best on this set {pps.DEFAULT_GRID[best]}: obj {table[best,0]:.3f} f1 {table[best,1]:.3f} ari {table[best,2]:.3f} ratio {table[best,3]:.3f}")
    for vn, fn in variants.items():
        rows = np.array([pps.tile_scores(fn(p), l) for p, l in data])
        m = rows.mean(0)
        print(f"  {vn:22s} obj {m[0]:.3f} f1 {m[1]:.3f} ari {m[2]:.3f} ratio {m[3]:.3f}")
