"""Evaluation of trained segmenters on the clients' test splits and the unseen labs.

One jitted boundary-probability function per run (`inference.make_prob_fn`) serves every method.
"""

from __future__ import annotations

import numpy as np

from fedtransfer_jax import inference, metrics as metrics_lib

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
