"""Grain-level (topological) metrics and grain-size statistics, the way a metallographer reads them.

Pixel metrics (boundary F1, mIoU) barely move when a short boundary segment is missing, yet that
gap merges two grains and corrupts every grain-size statistic.  The functions here therefore turn a
boundary map into a grain label map (connected components of interior pixels) and compare
partitions (adjusted Rand index, variation of information), grain counts, and ASTM E112 grain size.

Label maps are integer ``[H, W]`` arrays; ``0`` means "no grain" (an unassigned boundary pixel) and
grains are labelled ``1..K``.
"""

from __future__ import annotations

import csv
import io
import math
import os
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from fedtransfer_jax.runtime import io_utils
from fedtransfer_jax.metrics.boundary import as_bool_map
from fedtransfer_jax.metrics.intercept import astm_grain_size_from_intercept, count_intercepts

__all__ = [
    "GRAIN_TABLE_COLUMNS",
    "adjusted_rand_index",
    "ari_and_vi",
    "astm_grain_size_number",
    "grain_count",
    "grain_count_rel_error",
    "grain_size_plausibility",
    "grain_size_summary",
    "grain_table",
    "grains_from_boundary",
    "variation_of_information",
    "write_grain_table_csv",
]

GRAIN_TABLE_COLUMNS = (
    "grain_id",
    "area_px",
    "area_um2",
    "equivalent_diameter_px",
    "equivalent_diameter_um",
)

# ASTM E112 planimetric relation G = A*log10(N_A) - B, with N_A in grains per mm^2 at 1x.
_ASTM_A = 3.321928
_ASTM_B = 2.954


# --------------------------------------------------------------------------------------------
# Boundary map -> grain label map
# --------------------------------------------------------------------------------------------


def _structure(connectivity: int) -> np.ndarray:
    if connectivity == 4:
        return ndimage.generate_binary_structure(2, 1)
    if connectivity == 8:
        return ndimage.generate_binary_structure(2, 2)
    raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")


def _fill_from_nearest(labels: np.ndarray) -> np.ndarray:
    """Give every ``0`` pixel the label of the nearest (Euclidean) labelled pixel.

    ``distance_transform_edt(..., return_indices=True)`` returns, for every pixel, the
    coordinates of the nearest zero of its input; feeding it ``labels == 0`` makes those the
    nearest labelled pixel, so one transform fills all gaps at once.
    """
    indices = ndimage.distance_transform_edt(labels == 0, return_distances=False, return_indices=True)
    return labels[indices[0], indices[1]]


def _relabel_sequential(labels: np.ndarray) -> np.ndarray:
    """Map the positive labels present in ``labels`` to ``1..K`` (order preserved), 0 stays 0."""
    present = np.bincount(labels.ravel()) > 0
    present[0] = False
    lut = np.zeros(present.size, dtype=np.int32)
    lut[present] = np.arange(1, int(present.sum()) + 1, dtype=np.int32)
    return lut[labels]


def grains_from_boundary(
    boundary: np.ndarray,
    connectivity: int = 4,
    assign_boundary: bool = True,
    min_area: int = 0,
) -> np.ndarray:
    """Label the grains of a boundary map: connected components of non-boundary pixels.

    Args:
      boundary: bool/0-1 ``[H, W]`` map, nonzero = grain boundary.
      connectivity: 4 (default) or 8 for the interior components.  4 makes a 1-px diagonal
        (8-connected) boundary line separate the grains on either side, as drawn boundaries do.
      assign_boundary: give every boundary pixel the label of its nearest grain so the label map
        tiles the whole image (needed for ARI/VI and for grain areas that include half of each
        boundary, as a planimetric count would).  Without it, boundary pixels stay 0.
      min_area: grains with fewer than ``min_area`` interior pixels are dissolved and their pixels
        given to the nearest remaining grain(s) (a small grain may be split between neighbours).
        If every grain is smaller than ``min_area`` the largest one is kept.

    Returns:
      int32 ``[H, W]`` labels ``1..K`` (``0`` only for unassigned boundary pixels).  An all-boundary
      map has no grains and returns all zeros.
    """
    b = as_bool_map(boundary, "boundary")
    if min_area < 0:
        raise ValueError(f"min_area must be >= 0, got {min_area}")
    labels, k = ndimage.label(~b, structure=_structure(connectivity))
    labels = labels.astype(np.int32, copy=False)
    if k == 0:
        return labels
    dissolved = False
    if min_area > 0:
        areas = np.bincount(labels.ravel(), minlength=k + 1)
        areas[0] = 0
        keep = areas >= min_area
        keep[0] = False
        if not keep.any():
            keep[int(np.argmax(areas))] = True
        if not keep[1:].all():
            labels = np.where(keep[labels], labels, 0).astype(np.int32)
            dissolved = True
    if assign_boundary or dissolved:
        filled = _fill_from_nearest(labels)
        if not assign_boundary:
            filled[b] = 0
        labels = filled
    if dissolved:
        labels = _relabel_sequential(labels)
    return labels.astype(np.int32, copy=False)


# --------------------------------------------------------------------------------------------
# Partition comparison: ARI and VI from one contingency table
# --------------------------------------------------------------------------------------------


def _compact_codes(x: np.ndarray) -> tuple[np.ndarray, int]:
    """Return (codes 0..n-1, n) for a flat label array.

    Label maps from ``grains_from_boundary`` are already small non-negative ints, and empty
    codes cost nothing (C(0,2) = 0, 0*log 0 = 0), so those are used directly; anything else
    (negative, huge or non-integer labels) goes through ``np.unique``.
    """
    if np.issubdtype(x.dtype, np.integer) and x.size > 0:
        lo, hi = int(x.min()), int(x.max())
        if lo >= 0 and hi < 4 * x.size + 16:
            return x.astype(np.int64, copy=False), hi + 1
    uniq, inv = np.unique(x, return_inverse=True)
    return inv.ravel().astype(np.int64, copy=False), int(uniq.size)


def _contingency(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Nonzero cells of the contingency table of two label maps, plus its marginals and n."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"label maps must have the same shape, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("label maps are empty")
    ca, na = _compact_codes(a.ravel())
    cb, nb = _compact_codes(b.ravel())
    pair = ca * nb + cb
    if na * nb <= 8 * pair.size:  # dense table is cheap: one bincount
        nij = np.bincount(pair, minlength=na * nb)
        nij = nij[nij > 0]
    else:  # many labels: only the occupied cells (sparse)
        _, nij = np.unique(pair, return_counts=True)
    ai = np.bincount(ca)
    bj = np.bincount(cb)
    return nij.astype(np.float64), ai.astype(np.float64), bj.astype(np.float64), int(a.size)


def _comb2(x: np.ndarray | float) -> np.ndarray | float:
    """x choose 2 in float64 (no int64 overflow for megapixel images)."""
    return x * (x - 1.0) / 2.0


def _ari_from_counts(nij: np.ndarray, ai: np.ndarray, bj: np.ndarray, n: int) -> float:
    sum_ij = float(np.sum(_comb2(nij)))
    sum_a = float(np.sum(_comb2(ai)))
    sum_b = float(np.sum(_comb2(bj)))
    total = float(_comb2(float(n)))
    if total == 0.0:  # a single pixel: the partitions cannot disagree
        return 1.0
    expected = sum_a * sum_b / total
    max_index = 0.5 * (sum_a + sum_b)
    denom = max_index - expected
    if denom == 0.0:
        # Only when both partitions are trivial in the same way (both one cluster, or both all
        # singletons); they are then identical.
        return 1.0
    return (sum_ij - expected) / denom


def _entropy(counts: np.ndarray, n: int) -> float:
    p = counts[counts > 0] / n
    return float(-np.sum(p * np.log(p)))


def _vi_from_counts(nij: np.ndarray, ai: np.ndarray, bj: np.ndarray, n: int) -> float:
    # VI = H(A|B) + H(B|A) = 2 H(A,B) - H(A) - H(B); clipped at 0 against rounding.
    vi = 2.0 * _entropy(nij, n) - _entropy(ai, n) - _entropy(bj, n)
    return max(0.0, vi)


def adjusted_rand_index(a: np.ndarray, b: np.ndarray) -> float:
    """Adjusted Rand index (Hubert & Arabie) between two label maps of the same shape.

    1 for identical partitions (label values themselves do not matter), ~0 for chance agreement.
    Every pixel counts, label 0 included, so pass boundary-assigned maps to compare grain tilings.
    """
    return float(_ari_from_counts(*_contingency(a, b)))


def variation_of_information(a: np.ndarray, b: np.ndarray) -> float:
    """Variation of information H(A|B) + H(B|A) in nats (natural log); 0 iff identical partitions.

    Splits and merges both raise it, and unlike ARI it is a true metric on partitions.
    """
    return float(_vi_from_counts(*_contingency(a, b)))


def ari_and_vi(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Both partition scores from a single contingency table (the evaluation hot path)."""
    counts = _contingency(a, b)
    return float(_ari_from_counts(*counts)), float(_vi_from_counts(*counts))


# --------------------------------------------------------------------------------------------
# Grain counts, tables and ASTM grain size
# --------------------------------------------------------------------------------------------


def _as_label_map(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D [H, W] label map, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name}: expected an integer label map, got dtype {arr.dtype}")
    if arr.size and int(arr.min()) < 0:
        raise ValueError(f"{name}: labels must be >= 0 (0 = no grain), got min {int(arr.min())}")
    return arr


def grain_count(labels: np.ndarray) -> int:
    """Number of distinct positive labels (grains) in a label map."""
    lab = _as_label_map(labels)
    if lab.size == 0:
        return 0
    return int(np.count_nonzero(np.bincount(lab.ravel())[1:]))


def grain_count_rel_error(pred_labels: np.ndarray, gt_labels: np.ndarray) -> float:
    """``|n_pred - n_gt| / n_gt``; with no ground-truth grains the denominator is taken as 1."""
    n_pred = grain_count(pred_labels)
    n_gt = grain_count(gt_labels)
    return abs(n_pred - n_gt) / max(n_gt, 1)


# E112's tables run from G 00 to 14; nanocrystalline metals (~10 nm grains) reach G ~30 and very coarse
# castings G ~-3 (~1 mm grains). Outside this the pixel size is almost surely wrong (a nm value given as
# µm, or the reverse), and the numbers say nothing about grains.
ASTM_G_PLAUSIBLE = (-3.0, 30.0)


def _check_pixel_size(pixel_size_um: float | None) -> None:
    if pixel_size_um is not None and not (math.isfinite(pixel_size_um) and pixel_size_um > 0):
        raise ValueError(f"pixel_size_um must be a positive finite number or None, got {pixel_size_um}")


def _border_labels(lab: np.ndarray, outside: np.ndarray | None = None) -> np.ndarray:
    """The grains cut by the edge of the measured field: those on the image's edge and, with ``outside``
    (bool [H, W], pixels left out of the field: a burned-in scale bar, data/overlays.py), those next to it."""
    edge = np.concatenate([lab[0, :], lab[-1, :], lab[:, 0], lab[:, -1]])
    if outside is not None and outside.any():
        near = ndimage.binary_dilation(outside, structure=_structure(4)) & ~outside
        edge = np.concatenate([edge, lab[near]])
    return np.unique(edge[edge > 0])


def _outside_mask(outside: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """``outside`` as a bool map of ``shape`` (None where it is None or marks nothing)."""
    if outside is None:
        return None
    out = np.asarray(outside, bool)
    if out.shape != tuple(shape):
        raise ValueError(f"outside must be a bool map of the labels' shape {tuple(shape)}, got {out.shape}")
    return out if out.any() else None


def grain_table(
    labels: np.ndarray,
    pixel_size_um: float | None = None,
    exclude_border: bool = False,
    outside: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """One row per grain: id, area and equivalent-circle diameter, in px and (if known) micrometres.

    ``equivalent_diameter = sqrt(4 * area / pi)`` (diameter of the circle of equal area).
    ``exclude_border`` drops grains touching the image edge, whose true size is unknown (the
    usual choice for size distributions).  ``*_um*`` fields are ``None`` without a pixel size.
    """
    lab = _as_label_map(labels)
    _check_pixel_size(pixel_size_um)
    if lab.size == 0:
        return []
    outside = _outside_mask(outside, lab.shape)
    if outside is not None:
        lab = np.where(outside, 0, lab)  # no grain's area includes a left-out pixel
    areas = np.bincount(lab.ravel())
    ids = np.flatnonzero(areas)
    ids = ids[ids > 0]
    if exclude_border:
        ids = np.setdiff1d(ids, _border_labels(lab, outside), assume_unique=True)
    rows = []
    for gid in ids:
        area_px = int(areas[gid])
        diam_px = math.sqrt(4.0 * area_px / math.pi)
        rows.append(
            {
                "grain_id": int(gid),
                "area_px": area_px,
                "area_um2": None if pixel_size_um is None else area_px * pixel_size_um**2,
                "equivalent_diameter_px": diam_px,
                "equivalent_diameter_um": None if pixel_size_um is None else diam_px * pixel_size_um,
            }
        )
    return rows


def write_grain_table_csv(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> None:
    """Write grain-table rows to CSV atomically (``io_utils.write_text_atomic``: temp file, os.replace,
    the permissions of a plain ``open()`` under the umask).

    A reader never sees a half-written table, even if the process dies mid-write.  ``None`` is
    written as an empty cell.  Columns are ``GRAIN_TABLE_COLUMNS``; extra keys raise.
    """
    path = os.fspath(path)
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=GRAIN_TABLE_COLUMNS)
    writer.writeheader()
    for i, row in enumerate(rows):
        extra = set(row) - set(GRAIN_TABLE_COLUMNS)
        if extra:
            raise ValueError(f"{path}: row {i} has unknown columns {sorted(extra)}")
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in GRAIN_TABLE_COLUMNS})
    io_utils.write_text_atomic(path, buf.getvalue())


def astm_grain_size_number(mean_grain_area_um2: float) -> float:
    """ASTM E112 planimetric grain size number G from the mean grain area in um^2.

    N_A (grains per mm^2 at 1x) = 1 / mean area in mm^2, and G = 3.321928 log10(N_A) - 2.954
    (so G = 1 <-> N_A = 15.5 /mm^2, and each +1 in G halves the mean area).
    """
    area = float(mean_grain_area_um2)
    if not (math.isfinite(area) and area > 0):
        raise ValueError(f"mean_grain_area_um2 must be a positive finite number, got {mean_grain_area_um2}")
    n_a = 1.0 / (area * 1e-6)  # um^2 -> mm^2
    return _ASTM_A * math.log10(n_a) - _ASTM_B


# Plausibility limits of a grain-size estimate (grain_size_plausibility explains each).
MIN_SIDE_PX = 32
MAX_BOUNDARY_FRACTION = 0.5
MIN_COMPLETE_GRAINS = 5
MAX_GRAIN_FRACTION = 0.5
E112_MIN_GRAINS = 50
OUTLIER_GRAIN_FRACTION = 0.15
OUTLIER_GRAIN_RATIO = 20.0


def grain_size_plausibility(
    labels: np.ndarray, boundary: np.ndarray | None = None, outside: np.ndarray | None = None
) -> tuple[list[str], list[str]]:
    """``(withhold, notes)``: why a grain size measured on this map would be nonsense, and soft notes.

    A segmentation map always yields *some* grains, so a grain size is only reported when the map could
    plausibly be a micrograph's grain structure. Each limit follows from what a grain-size measurement
    needs, not from any data set:

    * the image is at least ``MIN_SIDE_PX`` = 32 px a side: a grain needs a few pixels across plus a
      boundary line of 1-3 px, and a field must hold several grains (a 1x1 px image gave G = 18);
    * boundary pixels are at most ``MAX_BOUNDARY_FRACTION`` = 50 % of the map (when ``boundary`` is
      given): boundaries of width w around grains of diameter d cover about 2w/d of the area, so more
      than half means grains hardly wider than their own boundary lines, i.e. noise or texture was
      segmented (or the map is inverted); and not 0 %: a map without a single boundary pixel measures the
      field, not a grain;
    * at least ``MIN_COMPLETE_GRAINS`` = 5 grains lie wholly inside the image: with fewer, the Jeffries
      count is dominated by the half-weighted grains cut by the edge, whose true size is unknown (a
      relative error of the order of 1/sqrt(N) > 45 %);
    * no single grain covers ``MAX_GRAIN_FRACTION`` = 50 % of the image or more: the field then does not
      sample a grain-size distribution (one grain is the field), whatever the others do.

    Soft notes (the size is still reported): fewer than ``E112_MIN_GRAINS`` = 50 grains in E112's count
    (edge grains as halves), the minimum ASTM E112 asks of a planimetric field; and one grain both covering
    ``OUTLIER_GRAIN_FRACTION`` = 15 % of the image and ``OUTLIER_GRAIN_RATIO`` = 20x the median grain area
    or more: in a grain structure the largest of a field's grains is seldom a tenth of that (the largest of
    200 log-normal grains, sigma 0.8 in log area, is ~9x the median), so it is more likely mounting resin, a
    pore, an unetched or out-of-focus area read as one grain, or grains whose boundaries the map missed,
    which shifts every mean and G.

    Args:
      labels: grain label map [H, W] (``grains_from_boundary``).
      boundary: the boolean boundary map it came from, for the boundary-fraction checks (optional).
      outside: bool [H, W], pixels left out of the measured field (a scale bar): every fraction is of the
        field, and grains next to them count as cut, like those on the image's edge.
    """
    lab = _as_label_map(labels)
    outside = _outside_mask(outside, lab.shape)
    field = lab.size if outside is None else int(lab.size - outside.sum())
    if outside is not None:
        lab = np.where(outside, 0, lab)
    withhold: list[str] = []
    notes: list[str] = []
    h, w = lab.shape
    if min(h, w) < MIN_SIDE_PX:
        withhold.append(f"image too small: {h}x{w} px, below {MIN_SIDE_PX} px a side")
    if boundary is not None:
        b = as_bool_map(boundary, "boundary")
        if outside is not None and b.shape == outside.shape:
            b = b[~outside]  # of the measured field only
        fraction = float(b.mean()) if b.size else 0.0
        if fraction > MAX_BOUNDARY_FRACTION:
            shown = f"{100 * fraction:.0f}%"
            if float(shown[:-1]) <= 100 * MAX_BOUNDARY_FRACTION:  # 50.3% is over the limit: not "50%"
                shown = f"just over {100 * MAX_BOUNDARY_FRACTION:.0f}%"
            withhold.append(
                f"boundary pixels {shown} of the map (plausible <= {100 * MAX_BOUNDARY_FRACTION:.0f}%): "
                "noise or texture segmented, or an inverted map?"
            )
        elif fraction == 0.0:
            withhold.append("no boundary pixel: the map is one grain")
    if lab.size == 0:
        return withhold, notes
    areas = np.bincount(lab.ravel())
    areas[0] = 0
    n = int(np.count_nonzero(areas))
    if n == 0:
        withhold.append("no grain at all")
        return withhold, notes
    n_complete = n - int(_border_labels(lab, outside).size)
    if n_complete < MIN_COMPLETE_GRAINS:
        withhold.append(
            f"only {n_complete} grain(s) not cut by the image edge (need >= {MIN_COMPLETE_GRAINS})"
        )
    largest = float(areas.max()) / max(1, field)
    if largest >= MAX_GRAIN_FRACTION:
        withhold.append(f"one grain covers {100 * largest:.0f}% of the image")
    n_astm = n_complete + 0.5 * (n - n_complete)
    if n_astm < E112_MIN_GRAINS and not withhold:
        notes.append(
            f"{n_astm:g} grains counted (E112's count, edge grains as halves): ASTM E112 asks for >= "
            f"{E112_MIN_GRAINS} per field, G is uncertain"
        )
    median = float(np.median(areas[areas > 0]))
    if not withhold and largest >= OUTLIER_GRAIN_FRACTION and areas.max() >= OUTLIER_GRAIN_RATIO * median:
        notes.append(
            f"one grain covers {100 * largest:.0f}% of the image, {areas.max() / median:.0f}x the median grain: "
            "boundaries missed, or not a grain (mounting resin, a pore, an unetched or blurred area)? check the "
            "overlay; every mean and G here includes it"
        )
    return withhold, notes


def grain_size_summary(
    labels: np.ndarray,
    pixel_size_um: float | None = None,
    *,
    boundary: np.ndarray | None = None,
    check: bool = True,
    outside: np.ndarray | None = None,
) -> dict[str, Any]:
    """Grain-size statistics of one label map.

    Keys: ``n_grains`` (all grains), ``mean_area_px``, ``mean_equivalent_diameter_px``,
    ``mean_area_um2``, ``mean_equivalent_diameter_um`` (means over all grains), ``n_grains_astm``
    and ``astm_G``; ``mean_intercept_px``, ``mean_intercept_um`` and ``astm_G_intercept`` (Heyn's mean
    lineal intercept on every row, column and diagonal, metrics/intercept.py, and E112's G from it); with ``check``
    also ``warnings`` (short strings) and ``size_withheld`` (None, or why the sizes are not reported).

    ``astm_G`` follows the E112 planimetric (Jeffries) count: grains cut by the field edge count
    one half, N = N_inside + 0.5 * N_intersected, N_A = N / field area, where the field is the
    whole image less the ``outside`` pixels (bool [H, W]: a burned-in scale bar left out; grains next to
    them are cut, the intercept's test lines stop there).  Edge grains are truncated, so this is less
    biased than ``astm(mean_area_um2)`` on small fields; the two agree when few grains touch the edge.  (The E112 rectangle-corner
    correction is not applied.)  Quantities needing a pixel size are ``None`` without one, and the
    means/G are ``None`` when there are no grains.

    ``check`` (default): ``grain_size_plausibility`` (with ``boundary``, the map the labels came from,
    when given); when the map cannot plausibly give a grain size, every mean and ``astm_G`` is ``None``,
    ``size_withheld`` says why and ``warnings`` lists the reasons (plus soft notes, sizes kept).
    """
    lab = _as_label_map(labels)
    _check_pixel_size(pixel_size_um)
    outside = _outside_mask(outside, lab.shape)
    if outside is not None:
        lab = np.where(outside, 0, lab)
    rows = grain_table(lab)
    n = len(rows)
    out: dict[str, Any] = {
        "n_grains": n,
        "mean_area_px": None,
        "mean_equivalent_diameter_px": None,
        "mean_area_um2": None,
        "mean_equivalent_diameter_um": None,
        "n_grains_astm": None,
        "astm_G": None,
        "mean_intercept_px": None,
        "mean_intercept_um": None,
        "astm_G_intercept": None,
    }
    withhold: list[str] = []
    if check:
        withhold, notes = grain_size_plausibility(lab, boundary, outside)
        out["warnings"] = withhold + notes
        out["size_withheld"] = ("grain size not reported: " + "; ".join(withhold)) if withhold else None
    if n == 0 or withhold:
        return out
    areas = np.array([r["area_px"] for r in rows], dtype=np.float64)
    diams = np.array([r["equivalent_diameter_px"] for r in rows], dtype=np.float64)
    n_edge = int(_border_labels(lab, outside).size)
    n_astm = (n - n_edge) + 0.5 * n_edge
    out["mean_area_px"] = float(areas.mean())
    out["mean_equivalent_diameter_px"] = float(diams.mean())
    out["n_grains_astm"] = float(n_astm)
    intercept = count_intercepts(lab, outside=outside).mean_px
    out["mean_intercept_px"] = None if intercept is None else float(intercept)
    if pixel_size_um is not None:
        out["mean_area_um2"] = float(areas.mean() * pixel_size_um**2)
        out["mean_equivalent_diameter_um"] = float(diams.mean() * pixel_size_um)
        field_um2 = (lab.size - (0 if outside is None else int(outside.sum()))) * pixel_size_um**2
        out["astm_G"] = astm_grain_size_number(field_um2 / n_astm)
        if intercept is not None:
            out["mean_intercept_um"] = float(intercept * pixel_size_um)
            out["astm_G_intercept"] = astm_grain_size_from_intercept(intercept * pixel_size_um)
        g = out["astm_G"]
        if check and not ASTM_G_PLAUSIBLE[0] <= g <= ASTM_G_PLAUSIBLE[1]:
            out.setdefault("warnings", []).append(
                f"ASTM G {g:.1f} is outside the range of real grain sizes (G {ASTM_G_PLAUSIBLE[0]:g} to "
                f"{ASTM_G_PLAUSIBLE[1]:g}: mean diameters from ~1 mm down to ~10 nm): is the pixel size "
                f"({pixel_size_um:.4g} µm per pixel) right?"
            )
    return out
