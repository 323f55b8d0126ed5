"""Evaluation metrics for grain-boundary segmentation (numpy / scipy / scikit-image, no JAX).

``segmentation_metrics`` is the one call the trainer and evaluator make per example; it reports
pixel metrics (tolerant boundary F1, mIoU) next to grain-topology metrics (ARI, VI, grain count
and mean-size errors), because a one-pixel gap barely changes the former but merges two grains.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from fedtransfer_jax.metrics.boundary import as_bool_map, boundary_prf, miou
from fedtransfer_jax.metrics.grains import (
    GRAIN_TABLE_COLUMNS,
    adjusted_rand_index,
    ari_and_vi,
    astm_grain_size_number,
    grain_count,
    grain_count_rel_error,
    grain_size_summary,
    grain_table,
    grains_from_boundary,
    variation_of_information,
    write_grain_table_csv,
)
from fedtransfer_jax.metrics.postprocess import postprocess_boundary

__all__ = [
    "GRAIN_TABLE_COLUMNS",
    "adjusted_rand_index",
    "ari_and_vi",
    "astm_grain_size_number",
    "boundary_prf",
    "grain_count",
    "grain_count_rel_error",
    "grain_size_summary",
    "grain_table",
    "grains_from_boundary",
    "miou",
    "postprocess_boundary",
    "segmentation_metrics",
    "summarize",
    "variation_of_information",
    "write_grain_table_csv",
]


def _mean_area_rel_error(n_pred: int, n_gt: int, n_pixels: int) -> float:
    """Relative error of the mean grain area of two tilings of the same image.

    With boundary pixels assigned to grains both tilings cover all ``n_pixels``, so the mean
    area is ``n_pixels / K``.  A prediction with no grains (all boundary) has mean area 0 and
    error 1; no ground-truth grains falls back to a denominator of the whole image.
    """
    mean_gt = n_pixels / n_gt if n_gt else float(n_pixels)
    mean_pred = n_pixels / n_pred if n_pred else 0.0
    return abs(mean_pred - mean_gt) / mean_gt


def segmentation_metrics(
    pred_boundary: np.ndarray, gt_boundary: np.ndarray, tolerance: float = 2.0
) -> dict[str, float]:
    """All per-example metrics for one predicted vs ground-truth boundary map.

    Grains are 4-connected interior components with boundary pixels assigned to the nearest
    grain (``grains_from_boundary`` defaults), so ARI/VI compare two tilings of the whole image.
    Keys: boundary_f1, boundary_precision, boundary_recall, miou, ari, vi,
    grain_count_rel_error, n_grains_pred, n_grains_gt, mean_grain_area_rel_error; every value
    is a plain Python float (JSON-serialisable).
    """
    pred = as_bool_map(pred_boundary, "pred_boundary")
    gt = as_bool_map(gt_boundary, "gt_boundary")
    if pred.shape != gt.shape:
        raise ValueError(f"pred_boundary {pred.shape} and gt_boundary {gt.shape} differ in shape")
    prf = boundary_prf(pred, gt, tolerance)
    pred_labels = grains_from_boundary(pred)
    gt_labels = grains_from_boundary(gt)
    ari, vi = ari_and_vi(pred_labels, gt_labels)
    n_pred = int(pred_labels.max()) if pred_labels.size else 0  # labels are 1..K
    n_gt = int(gt_labels.max()) if gt_labels.size else 0
    return {
        "boundary_f1": float(prf["f1"]),
        "boundary_precision": float(prf["precision"]),
        "boundary_recall": float(prf["recall"]),
        "miou": float(miou(pred, gt)),
        "ari": float(ari),
        "vi": float(vi),
        "grain_count_rel_error": float(abs(n_pred - n_gt) / max(n_gt, 1)),
        "n_grains_pred": float(n_pred),
        "n_grains_gt": float(n_gt),
        "mean_grain_area_rel_error": float(_mean_area_rel_error(n_pred, n_gt, pred.size)),
    }


def summarize(per_example: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Mean of every metric over examples, plus ``<key>_std`` (population std, ddof=0).

    Keys come from the first example and every example must have them (a KeyError names the
    example and key); ``None`` values are skipped and a key with no numeric values gives NaN.
    An empty list gives ``{}``.
    """
    if not per_example:
        return {}
    keys = list(per_example[0].keys())
    out: dict[str, float] = {}
    for key in keys:
        values = []
        for i, example in enumerate(per_example):
            if key not in example:
                raise KeyError(f"summarize: example {i} has no metric {key!r}")
            if example[key] is not None:
                values.append(float(example[key]))
        arr = np.asarray(values, dtype=np.float64)
        out[key] = float(arr.mean()) if arr.size else float("nan")
        out[f"{key}_std"] = float(arr.std()) if arr.size else float("nan")
    return out
