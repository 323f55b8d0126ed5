"""Evaluation of trained segmenters on the clients' test splits and the unseen labs.

One jitted boundary-probability function per run (`inference.make_prob_fn`) serves every method.
"""

from __future__ import annotations

import numpy as np

from fedtransfer_jax.runs import inference
from fedtransfer_jax import metrics as metrics_lib
from fedtransfer_jax.fl import boundary as boundary_lib
from fedtransfer_jax.metrics import postprocess_select as pps

METRIC_KEYS = ("boundary_f1", "ari", "vi", "grain_count_rel_error", "miou")


def evaluate_split(prob_fn, params, images, labels, *, threshold: float, tolerance: float) -> dict:
    """Mean (and spread over tiles) of the metrics of one client's tiles."""
    prob = inference.batched_probs(prob_fn, params, images)
    per_tile = [
        metrics_lib.segmentation_metrics(p > threshold, l > 0, tolerance=tolerance) for p, l in zip(prob, labels)
    ]
    return metrics_lib.summarize(per_tile)


def evaluate_splits(prob_fn, params, splits: dict, **kw) -> dict:
    """`evaluate_split` for every client of `splits` ({name: (images, labels)})."""
    return {n: evaluate_split(prob_fn, params, *splits[n], **kw) for n in splits}


def mean_over_clients(per_client: dict[str, dict]) -> dict:
    """Macro mean over clients of their mean metrics; `<key>_std` = spread of client means (for a single
    client: its own spread over test tiles)."""
    if len(per_client) == 1:
        return dict(next(iter(per_client.values())))
    keys = [k for k in next(iter(per_client.values())) if not k.endswith("_std")]
    out = {}
    for k in keys:
        vals = np.array([c[k] for c in per_client.values()], np.float64)
        out[k] = float(vals.mean())
        out[k + "_std"] = float(vals.std())
    return out


def choose_postprocessing(prob_fn, params_of, val: dict, *, tolerance: float, ledger=None, client_ids=None) -> dict | None:
    """Post-processing chosen on the clients' validation tiles, federated-style: every client scores the
    candidate settings on its own tiles with the model it holds (`params_of(client)`) and sends only its
    small score table (through the boundary, so the ledger records it); the server picks the best mean.
    Returns `postprocess_select.choose`'s dict plus the clients' `tables`, or None when no client has
    validation tiles."""
    tables = {}
    for c, (images, labels) in val.items():
        if not len(images):
            continue
        probs = inference.batched_probs(prob_fn, params_of(c), images)
        table = pps.score_grid(list(probs), list(labels), tolerance=tolerance)
        if ledger is not None and client_ids is not None:
            table = boundary_lib.send_from_client({"postprocess_scores": table}, ledger, "postprocess_scores", client_ids[c]).payload["postprocess_scores"]
        tables[c] = table
    if not tables:
        return None
    return {**pps.choose(tables), "tables": tables}  # the tables: each lab's own choice (methods.postprocess)


def evaluate_split_postprocessed(prob_fn, params, images, labels, settings: pps.PostprocessSettings, *, tolerance: float) -> dict:
    """`evaluate_split` on the post-processed boundary maps (what predict writes)."""
    prob = inference.batched_probs(prob_fn, params, images)
    per_tile = [
        metrics_lib.segmentation_metrics(settings.apply(p), l > 0, tolerance=tolerance) for p, l in zip(prob, labels)
    ]
    return metrics_lib.summarize(per_tile)


# ----------------------------------------------------------------------------------------------
# Whole test images (the v2 protocol's primary endpoint, docs/PROTOCOL.md "Endpoints").
# ----------------------------------------------------------------------------------------------

WHOLE_TOLERANCE = 1.0  # boundary F1 tolerance (px) of the whole-image endpoint
WHOLE_KEYS = ("ari", "boundary_f1", "vi", "diameter_rel_error", "astm_G_diff", "astm_G_abs_diff")


def whole_image_metrics(pred_boundary: np.ndarray, gt_boundary: np.ndarray) -> dict:
    """One whole image's scores: grain ARI/VI (grains = connected non-boundary regions), boundary F1 at
    1 px, and the mean-grain-size errors: relative error of the mean equivalent diameter and the ASTM E112
    G difference (predicted - true; planimetric count, the same field for both, so the pixel size cancels:
    1 um/px is used). A map without grains has diameter error 1 and no G (None, skipped by the means)."""
    pred, gt = np.asarray(pred_boundary) > 0, np.asarray(gt_boundary) > 0
    m = metrics_lib.segmentation_metrics(pred, gt, tolerance=WHOLE_TOLERANCE)
    size = lambda b: metrics_lib.grain_size_summary(metrics_lib.grains_from_boundary(b), 1.0, check=False)
    sp, sg = size(pred), size(gt)
    d_p, d_g = sp["mean_equivalent_diameter_px"], sg["mean_equivalent_diameter_px"]
    diameter_err = 1.0 if not d_p or not d_g else abs(d_p - d_g) / d_g
    g_diff = None if sp["astm_G"] is None or sg["astm_G"] is None else float(sp["astm_G"] - sg["astm_G"])
    return {
        "ari": m["ari"],
        "boundary_f1": m["boundary_f1"],
        "vi": m["vi"],
        "diameter_rel_error": float(diameter_err),
        "astm_G_diff": g_diff,
        "astm_G_abs_diff": None if g_diff is None else abs(g_diff),
    }


def trivial_boundary_f1(labels: np.ndarray) -> float:
    """Mean F1 at 1 px of the trivial all-boundary map over label maps [N, H, W] (the floor F1 is read against)."""
    return float(
        np.mean([metrics_lib.boundary_prf(np.ones(l.shape, bool), l > 0, WHOLE_TOLERANCE)["f1"] for l in labels])
    )


def evaluate_whole_images(prob_fn, params, images, labels, settings: pps.PostprocessSettings, tile: int) -> dict:
    """Mean (and spread) of `whole_image_metrics` over whole images [N, H, W, 3] of any size, each run through
    predict's sliding window (`inference.sliding_window_prob`, scale 1, default overlap, no flips) and
    post-processed with `settings`, as predict does."""
    tile_probs = inference.tile_probs_of(prob_fn, params)
    per_image = [
        whole_image_metrics(settings.apply(inference.sliding_window_prob(tile_probs, im, tile)), l)
        for im, l in zip(images, labels)
    ]
    return metrics_lib.summarize(per_image)
