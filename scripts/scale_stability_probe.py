"""Does the scale at which the grain map is most *stable* make a better `--scale auto` choice?

`--scale auto` keeps the largest candidate scale whose measured mean grain diameter lies within 1.25x of
the model's trained grain size (fedtransfer_jax/analysis/scale.py). An oracle that takes the best scale per
image gains much more than that rule (docs/MODEL.md, "A wider band for the scale search"), so the measured
grain size is a weak guide. Stability selection is a classic alternative: at a scale the model handles well,
its grain map should change little when the scale moves a step, while at a scale where it segments texture
the map changes with every step. This probe scores that idea.

Signal, fixed before it was scored: ``stability(s)`` = mean adjusted Rand index between the grain map at
``s`` and the grain maps at its neighbouring candidates (one or two), all mapped back to the image's pixels
and post-processed with the model's own settings. Rules, fixed before they were scored:
  * ``most stable``: among the candidates the shipped rule would not reject, the most stable (ties: larger);
  * ``band, then most stable``: where several candidates lie within 1.25x of the trained grain size, the
    most stable of them, else the shipped rule;
  * ``within 2x, most stable``: the most stable candidate within 2x of the trained grain size, else the
    shipped rule.
What would count as a win, fixed before: a mean ARI gain of at least +0.02 over the shipped rule on *both*
development sets, with boundary F1 no more than 0.01 lower.

  python scripts/scale_stability_probe.py [WORKDIR]   # default: the shipped model; ~20 min on the 2-core CPU

Development data only (scripts/dev_data.py): the TBM validation micrographs 13, 15, 24 and fresh synthetic
images of the nine labs (seed 515151, 2 per lab, 768 px, grains 8-200 px), as in scale_rule_probe.py.
Cached in /tmp/scale_stability_probe.pkl. Output of the shipped model's run:
docs/results/pretrained_cpu2/scale_stability_probe.txt.
"""
import math
import sys

import numpy as np

from fedtransfer_jax.analysis import scale as scale_lib
from fedtransfer_jax.data import intensity
from fedtransfer_jax.metrics import grains as grains_lib, postprocess_select as pps
from fedtransfer_jax.metrics.stats import paired_comparison

import dev_data

CACHE = "/tmp/scale_stability_probe.pkl"


def one(model, settings, image, label, target):
    """The shipped rule's record, and at every candidate scale: scores against the label and the grain map."""
    image = intensity.normalise(image, intensity.mode_of(model))
    _, record, _ = scale_lib.choose(model, image, settings, target=target)
    cands = scale_lib.candidates_for(image.shape[:2])
    scores, maps = {}, {}
    for s in cands:
        boundary = settings.apply(scale_lib.prob_at_scale(model, image, s))
        scores[s] = pps.tile_scores(boundary, label > 0)
        maps[s] = grains_lib.grains_from_boundary(boundary)
    stability = {}
    for i, s in enumerate(cands):
        near = [cands[j] for j in (i - 1, i + 1) if 0 <= j < len(cands)]
        stability[s] = float(np.mean([grains_lib.adjusted_rand_index(maps[s], maps[t]) for t in near])) if near else 1.0
    diam = {s: record["candidates"][scale_lib._key(s)] for s in cands}
    return {"cands": cands, "diam": diam, "rejected": record["rejected"], "scores": scores, "stability": stability}


def compute():
    return dev_data.score_dev_sets(one, sys.argv[1] if len(sys.argv) > 1 else None)


def rules(target_px):
    def shipped(r):
        return dev_data.earlier_pick(r["cands"], r["diam"], r["rejected"], target_px)[0]

    def pool(r):
        with_grains = [s for s in r["cands"] if r["diam"][s] is not None]
        return [s for s in with_grains if scale_lib._key(s) not in r["rejected"]] or with_grains or [1.0]

    def stablest(r, among):
        return max(among, key=lambda s: (r["stability"][s], s))

    def within(r, factor):
        return [s for s in pool(r) if r["diam"][s] is not None
                and abs(math.log(r["diam"][s] / target_px)) <= math.log(factor) + 1e-12]

    def band_then_stable(r):
        near = within(r, scale_lib.TOLERANCE)
        return stablest(r, near) if len(near) > 1 else shipped(r)

    def within2_stable(r):
        near = within(r, 2.0)
        return stablest(r, near) if near else shipped(r)

    return {
        "scale 1": lambda r: 1.0,
        "shipped (T=1.25)": shipped,
        "most stable": lambda r: stablest(r, pool(r)),
        "band, then most stable": band_then_stable,
        "within 2x, most stable": within2_stable,
        "oracle (best ARI)": lambda r: max(r["cands"], key=lambda s: r["scores"][s][2]),
    }


def main():
    sets = dev_data.cached(CACHE, compute)
    target_px = sets.pop("target_px")
    print(f"trained grain size {target_px:.1f} px; stability = mean ARI with the neighbouring scales' grain maps")
    for name, data in sets.items():
        print(f"== {name} ({len(data)} images)")
        shipped_rows = None
        for rn, rule in rules(target_px).items():
            chosen = [rule(r) for _, r in data]
            rows = np.array([r["scores"][s] for (_, r), s in zip(data, chosen)])
            m = rows.mean(0)
            line = f"  {rn:24s} ari {m[2]:.3f} f1 {m[1]:.3f} ratio {m[3]:.3f} obj {m[0]:.3f}"
            if shipped_rows is not None:
                c = paired_comparison(rows[:, 2], shipped_rows[:, 2])
                better = int((rows[:, 2] > shipped_rows[:, 2] + 1e-12).sum())
                line += (f" | ARI vs shipped {c['diff_mean']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}],"
                         f" better on {better}/{len(data)}; F1 {m[1] - shipped_rows[:, 1].mean():+.3f}")
            if rn == "shipped (T=1.25)":
                shipped_rows = rows
            print(line)
            print("    scales: " + " ".join(f"{s:.2f}" for s in chosen))
        # Does stability track accuracy at all? Rank correlation across an image's scales, averaged.
        rho = []
        for _, r in data:
            a = np.array([r["stability"][s] for s in r["cands"]])
            b = np.array([r["scores"][s][2] for s in r["cands"]])
            if a.std() > 0 and b.std() > 0:
                ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
                rho.append(float(np.corrcoef(ra, rb)[0, 1]))
        print(f"  Spearman(stability, ARI) across an image's scales: mean {np.mean(rho):+.2f} over {len(rho)} images")
        for lab, r in data:
            d = dev_data.per_scale_text(r, lambda s: f"stab {r['stability'][s]:.2f} ari {r['scores'][s][2]:.2f}")
            print(f"    {lab:15s} {d}")


if __name__ == "__main__":
    main()
