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
