"""How wide should `--scale auto`'s acceptance band be? A development probe of the scale rule's tolerance.

`--scale auto` keeps the largest candidate scale whose measured mean grain diameter lies within TOLERANCE x
of the model's trained grain size, else the closest one (fedtransfer_jax/analysis/scale.py). A model trained
on a broad range of grain sizes may need the search less: this probe scores the rule at several tolerances,
scale 1 always, the best scale per image (an oracle, for reference) and two signals of the model's own
certainty (``uncertainty``), from one set of predictions.

  python scripts/scale_rule_probe.py [WORKDIR]      # default: the shipped model; ~15 min on the 2-core CPU

Development data only: the TBM validation micrographs 13, 15, 24 (needs ../shared/data/tbm_tint_etched) and
fresh synthetic images of the nine labs (seed 515151, 2 per lab, 768 px, grains 8-200 px). Cached in
/tmp/scale_rule_probe.pkl and /tmp/scale_rule_probe_signals.pkl. Output of the shipped model's run:
docs/results/pretrained_cpu2/scale_rule_probe.txt.
"""
import sys

import numpy as np

from fedtransfer_jax.analysis import measure, scale as scale_lib
from fedtransfer_jax.data import intensity
from fedtransfer_jax.metrics import postprocess_select as pps
from fedtransfer_jax.metrics.stats import paired_comparison

import dev_data

CACHE = "/tmp/scale_rule_probe.pkl"
SIGNALS = "/tmp/scale_rule_probe_signals.pkl"
TOLERANCES = (1.25, 1.5, 2.0, 2.5, 3.0)


def uncertainty(prob):
    """Signals of how sure the model is at a scale, fixed before they were scored: ``U`` = pixels with
    0.2 < p < 0.8 per pixel with p > 0.5 (faint, undecided boundary per confident boundary; about
    scale-free for crisp lines), ``H`` = mean binary entropy."""
    p = np.clip(np.asarray(prob, np.float64), 1e-6, 1 - 1e-6)
    u = float(((p > 0.2) & (p < 0.8)).sum() / max(1, (p > 0.5).sum()))
    h = float(np.mean(-(p * np.log(p) + (1 - p) * np.log(1 - p))))
    return u, h


def signals():
    """Each image's view-based uncertainty at each candidate scale (the views `--scale auto` predicts)."""
    f = {"workdir": sys.argv[1] if len(sys.argv) > 1 else None, "method": None, "client": None, "overlap": None}
    model, _, _ = measure.model_and_settings(f, {})

    def one_image(image):
        image = intensity.normalise(image, intensity.mode_of(model))
        return {s: uncertainty(scale_lib.predict_at(model, scale_lib._view(image, s)[0], s))
                for s in scale_lib.candidates_for(image.shape[:2])}

    return {
        "tbm_val": [one_image(img) for img, _ in dev_data.tbm_validation()],
        "synthetic": [one_image(img) for _, img, _ in dev_data.synthetic_images(768, 515151, (8.0, 200.0))],
    }


def one(model, settings, image, label, target):
    image = intensity.normalise(image, intensity.mode_of(model))
    _, record, _ = scale_lib.choose(model, image, settings, target=target)
    cands = scale_lib.candidates_for(image.shape[:2])
    scores = {}
    for s in cands:
        prob = scale_lib.prob_at_scale(model, image, s)
        scores[s] = pps.tile_scores(settings.apply(prob), label > 0)
    diam = {s: record["candidates"][scale_lib._key(s)] for s in cands}
    return {"cands": cands, "diam": diam, "rejected": record["rejected"], "scores": scores}


def compute():
    return dev_data.score_dev_sets(one, sys.argv[1] if len(sys.argv) > 1 else None)


def main():
    sets = dev_data.cached(CACHE, compute)
    target_px = sets.pop("target_px")
    sig = dev_data.cached(SIGNALS, signals)
    for name in sets:
        for (_, r), u in zip(sets[name], sig[name]):
            r["signals"] = u
    print(f"trained grain size {target_px:.1f} px; rule: largest scale within T x of it, else the closest")
    for name, data in sets.items():
        print(f"== {name} ({len(data)} images)")
        rules = {"scale 1": lambda r: 1.0}
        for t in TOLERANCES:
            rules[f"T={t:g}"] = (lambda t: lambda r: dev_data.earlier_pick(r["cands"], r["diam"], r["rejected"], target_px, t)[0])(t)

        def pool(r):
            with_grains = [s for s in r["cands"] if r["diam"][s] is not None]
            return [s for s in with_grains if scale_lib._key(s) not in r["rejected"]] or with_grains or [1.0]

        rules["least U"] = lambda r: min(pool(r), key=lambda s: (r["signals"][s][0], -s))
        rules["least H"] = lambda r: min(pool(r), key=lambda s: (r["signals"][s][1], -s))

        def band_then_u(r):
            near = [s for s in pool(r) if r["diam"][s] is not None
                    and abs(np.log(r["diam"][s] / target_px)) <= np.log(scale_lib.TOLERANCE) + 1e-12]
            if len(near) > 1:
                return min(near, key=lambda s: (r["signals"][s][0], -s))
            return dev_data.earlier_pick(r["cands"], r["diam"], r["rejected"], target_px)[0]

        rules["band, then least U"] = band_then_u
        rules["oracle (best ARI)"] = lambda r: max(r["cands"], key=lambda s: r["scores"][s][2])
        ref = np.array([r["scores"][1.0] for _, r in data])
        current = None
        for rn, rule in rules.items():
            chosen = [rule(r) for _, r in data]
            rows = np.array([r["scores"][s] for (_, r), s in zip(data, chosen)])
            m = rows.mean(0)
            line = f"  {rn:18s} ari {m[2]:.3f} f1 {m[1]:.3f} ratio {m[3]:.3f} obj {m[0]:.3f}"
            if rn != "scale 1":
                c = paired_comparison(rows[:, 2], ref[:, 2])
                line += f" | ARI vs scale 1 {c['diff_mean']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]"
            if rn == "T=1.25":
                current = rows
            elif current is not None:
                c = paired_comparison(rows[:, 2], current[:, 2])
                line += f" | vs T=1.25 {c['diff_mean']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]"
            print(line)
            print("    scales: " + " ".join(f"{s:.2f}" for s in chosen))
        for lab, r in data:
            d = dev_data.per_scale_text(r, lambda s: f"ari {r['scores'][s][2]:.2f}")
            print(f"    {lab:15s} {d}")


if __name__ == "__main__":
    main()
