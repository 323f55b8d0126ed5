"""What the development probes share: the development images and a pickle cache of what they computed.

Development data only, never a test image: the TBM validation micrographs 13, 15, 24 (../shared/data/
tbm_tint_etched, split by full-micrograph id) and fresh synthetic images of the nine labs.
"""
import glob
import os
import pickle
import re

from fedtransfer_jax.data import folder, synthetic

TBM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "tbm_tint_etched")
TBM_VALIDATION = re.compile(r"_(13|15|24)-")


def cached(path, compute):
    """``compute()``, stored in ``path`` the first time and read from there after."""
    if os.path.exists(path):
        with open(path, "rb") as f:
            return pickle.load(f)
    value = compute()
    with open(path, "wb") as f:
        pickle.dump(value, f)
    return value


def tbm_crops(micrographs: re.Pattern):
    """``(image, label)`` of each TBM crop whose file name ``micrographs`` matches, in file order."""
    for ip in sorted(glob.glob(os.path.join(TBM, "images", "*.png"))):
        if micrographs.search(ip):
            yield folder.load_pair(ip, ip.replace(os.sep + "images" + os.sep, os.sep + "labels" + os.sep))


def tbm_validation():
    """``(image, label)`` of each TBM validation crop, in file order."""
    return tbm_crops(TBM_VALIDATION)


def synthetic_images(size, seed, diameter_px, boundary_width=2, boundary_width_max=5):
    """``(lab, image, label)``: two fresh images of each synthetic lab, label lines 2-5 px wide (or as given)."""
    for lab in list(synthetic.LABS):
        images, labels, _ = synthetic.make_lab_examples(
            lab, 2, size, seed, diameter_px=diameter_px, boundary_width=boundary_width,
            boundary_width_max=boundary_width_max,
        )
        for image, label in zip(images, labels):
            yield lab, image, label


def score_dev_sets(one, workdir=None):
    """``one(model, settings, image, label, target)`` for each TBM validation crop and each synthetic image
    (768 px, seed 515151, grains 8-200 px), with the model of ``workdir`` (None: the shipped one):
    ``{"target_px", "tbm_val": [("tbm", result)], "synthetic": [(lab, result)]}``."""
    from fedtransfer_jax.analysis import measure, scale as scale_lib  # noqa: PLC0415 (only the probes need a model)

    f = {"workdir": workdir, "method": None, "client": None, "overlap": None}
    model, settings, _ = measure.model_and_settings(f, {})
    target = scale_lib.target_for(model)
    return {
        "target_px": target[0],
        "tbm_val": [("tbm", one(model, settings, img, lab, target)) for img, lab in tbm_validation()],
        "synthetic": [
            (lab_name, one(model, settings, img, lab, target))
            for lab_name, img, lab in synthetic_images(768, 515151, (8.0, 200.0))
        ],
    }


def candidates_scored(model, settings, image, label, target, candidates):
    """Each scale of ``candidates`` (in place of analysis/scale.CANDIDATES) the image allows: its measured grain
    size, whether the auto rule rejects it, and its scores against the label, as
    ``{"cands", "diam", "rejected", "scores"}`` (``per_scale_text`` prints it)."""
    from fedtransfer_jax.analysis import scale as scale_lib  # noqa: PLC0415
    from fedtransfer_jax.data import intensity  # noqa: PLC0415
    from fedtransfer_jax.metrics import postprocess_select as pps  # noqa: PLC0415

    image = intensity.normalise(image, intensity.mode_of(model))
    shipped = scale_lib.CANDIDATES
    try:
        scale_lib.CANDIDATES = tuple(candidates)
        _, record, _ = scale_lib.choose(model, image, settings, target=target)
        cands = scale_lib.candidates_for(image.shape[:2])
    finally:
        scale_lib.CANDIDATES = shipped
    scores = {s: pps.tile_scores(settings.apply(scale_lib.prob_at_scale(model, image, s)), label > 0) for s in cands}
    diam = {s: record["candidates"][scale_lib._key(s)] for s in cands}
    return {"cands": cands, "diam": diam, "rejected": record["rejected"], "scores": scores}


def score_with_controls(one, workdir, name, images):
    """``one`` (as for ``score_dev_sets``) on ``images`` (``(lab, image, label)``) and on the development
    sets: ``{"target_px", name: [(lab, result)], "control: tbm_val": ..., "control: synthetic": ...}``."""
    from fedtransfer_jax.analysis import measure, scale as scale_lib  # noqa: PLC0415

    f = {"workdir": workdir, "method": None, "client": None, "overlap": None}
    model, settings, _ = measure.model_and_settings(f, {})
    target = scale_lib.target_for(model)
    control = score_dev_sets(one, workdir)
    return {
        "target_px": target[0],
        name: [(lab, one(model, settings, img, lab_map, target)) for lab, img, lab_map in images],
        "control: tbm_val": control["tbm_val"],
        "control: synthetic": control["synthetic"],
    }


def earlier_pick(cands, diam, rejected, target_px, tolerance=None):
    """analysis/scale.pick as it was until 2026-12-07: where every candidate with grains was rejected, the one
    closest to the target among them all (since then: scale 1, scripts/all_rejected_check.py). The probes'
    "shipped" rule, so that their committed outputs reproduce (multiscale_probe.py and stability_check.py
    go through scale.choose and get the current rule)."""
    from fedtransfer_jax.analysis import scale as scale_lib  # noqa: PLC0415

    tolerance = scale_lib.TOLERANCE if tolerance is None else tolerance
    with_grains = [s for s in cands if diam[s] is not None]
    if with_grains and all(scale_lib._key(s) in rejected for s in with_grains):
        rejected = {}
    return scale_lib.pick(cands, diam, rejected, target_px, tolerance)


def report_rules(sets, rules, width=14, f1=True):
    """Prints each set's mean scores under each scale rule (``rules``: name -> r -> scale; the first is the
    baseline the others are paired against), the scales chosen, the oracle and every image's candidates."""
    import numpy as np  # noqa: PLC0415
    from fedtransfer_jax.metrics.stats import paired_comparison  # noqa: PLC0415

    base = next(iter(rules))
    for name, data in sets.items():
        print(f"== {name} ({len(data)} images)")
        rows = {}
        for rn, rule in rules.items():
            chosen = [rule(r) for _, r in data]
            rows[rn] = np.array([r["scores"][s] for (_, r), s in zip(data, chosen)])
            m = rows[rn].mean(0)
            line = f"  {rn:{width}s} ari {m[2]:.3f} f1 {m[1]:.3f} count ratio {m[3]:.3f}"
            if rn != base:
                c = paired_comparison(rows[rn][:, 2], rows[base][:, 2])
                line += f" | ARI vs {base} {c['diff_mean']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]"
                if f1:
                    line += f", F1 {paired_comparison(rows[rn][:, 1], rows[base][:, 1])['diff_mean']:+.3f}"
            print(line)
            print("    scales: " + " ".join(f"{s:.3g}" for s in chosen))
        oracle = np.array([max(r["scores"][s][2] for s in r["cands"]) for _, r in data])
        print(f"  oracle ari {oracle.mean():.3f}")
        for lab, r in data:
            print(f"    {lab:15s} " + per_scale_text(r, lambda s: f"ari {r['scores'][s][2]:.2f}"))


def per_scale_text(r, detail):
    """One image's candidates as '1:16x(detail) 0.667:18(...)': mean grain px, x = rejected by the rule."""
    from fedtransfer_jax.analysis import scale as scale_lib  # noqa: PLC0415

    return " ".join(
        f"{scale_lib._key(s)}:{'-' if r['diam'][s] is None else format(r['diam'][s], '.0f')}"
        f"{'x' if scale_lib._key(s) in r['rejected'] else ''}({detail(s)})" for s in r["cands"]
    )
