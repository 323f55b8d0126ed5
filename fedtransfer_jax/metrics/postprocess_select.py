"""Post-processing settings chosen on validation data (not by hand), in a federated-friendly way.

A network's boundary probabilities become a boundary map through a threshold and the clean-up steps of
``metrics.postprocess`` (closing, fragment removal, small-grain merging, thinning). Good values depend on
the model and the data: hand-picked defaults over-segment real micrographs (2-3x too many grains) where
other settings of the same model do much better. So the settings are *chosen*, on validation tiles,
from a small grid.

Objective (per tile, then averaged; higher is better)::

    objective = (boundary_f1 + ari + grain_count_ratio) / 3
    grain_count_ratio = min(n_pred, n_gt) / max(n_pred, n_gt)      (1 when both are 0)

Boundary F1 rewards lines in the right place, ARI rewards the right partition of the area into grains
(one gap merging two large grains costs a lot), and the grain-count ratio rewards the right *number* of
grains: small spurious grains barely move ARI (they cover few pixels) yet dominate grain counts and the
ASTM grain size number. The ratio is symmetric (2x too many and 2x too few both score 0.5) and bounded,
so it never swamps the other two terms, unlike the unbounded relative count error.

Federated protocol (only a small table of numbers leaves a client, no image or label)::

    client c:  table_c = score_grid(probs_c, labels_c, grid)     # float64 [len(grid), len(SCORE_COLUMNS)]
    server:    choice  = choose({c: table_c, ...}, grid)          # best mean objective over clients
               postprocess_choice.save_choice(workdir, method, choice)   # <workdir>/postprocess/<method>.json

Every client counts equally in the mean (as in the workdir summaries). Ties keep the built-in defaults
if they are among the best, else the first best grid point. The choice is stored in the workdir and
resolved for ``predict`` and ``evaluate`` by ``runs/postprocess_choice.py``.

Cost: the default grid (``DEFAULT_GRID``, 108 points) shares every intermediate map between the grid points
that have it in common and scores each distinct final map once; 4 clients x 8 tiles of 64 px take about
2.3 s of CPU time on the 2-core CPU (more wall time when it is busy; ``make_grid`` builds other grids).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from fedtransfer_jax.metrics import postprocess as pp
from fedtransfer_jax.metrics.boundary import as_bool_map
from fedtransfer_jax.metrics.grains import adjusted_rand_index, grains_from_boundary

__all__ = [
    "BUILTIN_DEFAULTS",
    "DEFAULT_GRID",
    "SCORE_COLUMNS",
    "SETTING_KEYS",
    "SOURCE_BUILTIN",
    "SOURCE_CHOSEN",
    "SOURCE_FLAGS",
    "PostprocessSettings",
    "choose",
    "make_grid",
    "score_grid",
    "select",
]

SETTING_KEYS = ("threshold", "close_radius", "min_fragment_px", "min_grain_area", "line_width")
SCORE_COLUMNS = ("objective", "boundary_f1", "ari", "grain_count_ratio", "grain_count_rel_error")
OBJECTIVE = (
    "(boundary_f1 + ari + min(n_pred, n_gt) / max(n_pred, n_gt)) / 3, mean over tiles, then over clients"
)

SOURCE_CHOSEN = "chosen on validation tiles"
SOURCE_FLAGS = "flags"
SOURCE_BUILTIN = "built-in defaults"


MAX_RADIUS_PX = 64  # the most --close_radius and --line_width may be
_MORPHOLOGY_KEYS = ("close_radius", "line_width")


@dataclasses.dataclass(frozen=True, order=True)
class PostprocessSettings:
    """Threshold + clean-up of one boundary probability map; field names are the CLI flag names.

    ``line_width`` 0 keeps the predicted width; ``n`` > 0 thins to 1-px lines, then dilates to ``n`` px.
    """

    threshold: float = 0.5
    close_radius: int = 1
    min_fragment_px: int = 20
    min_grain_area: int = 0
    line_width: int = 0

    def __post_init__(self) -> None:
        t = self.threshold
        if not (isinstance(t, (int, float, np.floating)) and 0.0 <= float(t) <= 1.0):
            raise ValueError(f"threshold (--threshold) must be a probability in [0, 1], got {t!r}")
        for key in SETTING_KEYS[1:]:
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"{key} (--{key}) must be an integer >= 0, got {v!r}")
            if key in _MORPHOLOGY_KEYS and v > MAX_RADIUS_PX:
                # A closing radius or line width this large is bigger than any boundary gap or line, and its
                # structuring element would run out of memory or time on a micrograph.
                raise ValueError(f"{key} (--{key}) must be at most {MAX_RADIUS_PX} px, got {v!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": float(self.threshold), **{k: int(getattr(self, k)) for k in SETTING_KEYS[1:]}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PostprocessSettings":
        unknown = set(d) - set(SETTING_KEYS)
        if unknown:
            raise ValueError(f"unknown post-processing settings {sorted(unknown)}; known: {SETTING_KEYS}")
        return cls(**{k: (float(v) if k == "threshold" else v) for k, v in d.items()})

    def binarize(self, prob: np.ndarray) -> np.ndarray:
        """The raw map: ``prob > threshold`` (what the trainer's metrics score)."""
        return np.asarray(prob) > self.threshold

    def apply(self, prob: np.ndarray) -> np.ndarray:
        """Boolean boundary map ``[H, W]`` from probabilities ``[H, W]``: threshold, then clean-up."""
        return clean_up(self.binarize(prob), self)


def clean_up(boundary: np.ndarray, s: PostprocessSettings) -> np.ndarray:
    """The clean-up steps of ``s`` on a thresholded map (``metrics.postprocess`` order)."""
    return pp.postprocess_boundary(
        boundary,
        close_radius=s.close_radius,
        thin=s.line_width > 0,
        min_fragment_px=s.min_fragment_px,
        min_grain_area=s.min_grain_area,
        dilate_to=s.line_width,
    )


BUILTIN_DEFAULTS = PostprocessSettings()


def make_grid(
    thresholds: Sequence[float] = (0.3, 0.5, 0.7),
    close_radii: Sequence[int] = (0, 1, 2),
    min_fragment_px: Sequence[int] = (20, 80),
    min_grain_area: Sequence[int] = (0, 30, 120),
    line_widths: Sequence[int] = (0, 1),
) -> tuple[PostprocessSettings, ...]:
    """Every combination of the given values, the built-in defaults first (they win ties).

    The defaults of this function are ``DEFAULT_GRID`` (3 x 3 x 2 x 3 x 2 = 108 points): thresholds
    around 0.5 for over- and under-confident models, closing that bridges gaps of up to ~4 px, fragment
    removal at two scales (0 is left out: isolated specks cost precision and never change the grains),
    small-grain merging at two scales, and thinning to 1-px lines or not (thick predicted bands lose
    boundary precision).
    """
    grid = [
        PostprocessSettings(float(t), int(c), int(f), int(m), int(w))
        for t, c, f, m, w in itertools.product(
            thresholds, close_radii, min_fragment_px, min_grain_area, line_widths
        )
    ]
    if not grid:
        raise ValueError("make_grid: every value list must be non-empty")
    if BUILTIN_DEFAULTS in grid:
        grid.remove(BUILTIN_DEFAULTS)
        grid.insert(0, BUILTIN_DEFAULTS)
    return tuple(grid)


DEFAULT_GRID = make_grid()


# ----------------------------------------------------------------------------------------------
# Client side: one table of mean scores per grid point.
# ----------------------------------------------------------------------------------------------


def _disk(tolerance: float) -> np.ndarray:
    """Pixels within Euclidean ``tolerance`` of the centre."""
    r = int(np.floor(tolerance))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return yy * yy + xx * xx <= tolerance * tolerance


def _near(boundary: np.ndarray, tolerance: float) -> np.ndarray:
    """Pixels within ``tolerance`` px of a boundary pixel: exactly ``distance_transform_edt(~b) <= tol``,
    as a dilation with a disk, which is ~5x faster for the small tolerances used here."""
    return ndimage.binary_dilation(boundary, structure=_disk(tolerance)) if boundary.any() else boundary


class _Truth:
    """What every grid point compares against, computed once per tile."""

    def __init__(self, label: np.ndarray, tolerance: float):
        self.boundary = as_bool_map(label, "label")
        self.n_boundary = int(self.boundary.sum())
        self.near = _near(self.boundary, tolerance)
        self.grains = grains_from_boundary(self.boundary)
        self.n_grains = int(self.grains.max()) if self.grains.size else 0


def _boundary_f1(pred: np.ndarray, truth: _Truth, tolerance: float) -> float:
    """``boundary.boundary_prf(...)['f1']`` with the ground truth's side computed once per tile."""
    n_pred = int(pred.sum())
    if n_pred == 0 or truth.n_boundary == 0:
        return 1.0 if n_pred == truth.n_boundary else 0.0
    precision = float(truth.near[pred].mean())
    recall = float(_near(pred, tolerance)[truth.boundary].mean())
    return 0.0 if precision + recall == 0 else 2.0 * precision * recall / (precision + recall)


def tile_scores(pred: np.ndarray, truth: _Truth | np.ndarray, tolerance: float = 2.0) -> np.ndarray:
    """The ``SCORE_COLUMNS`` of one predicted boundary map against its label (float64 vector)."""
    truth = truth if isinstance(truth, _Truth) else _Truth(truth, tolerance)
    pred = as_bool_map(pred, "pred")
    f1 = _boundary_f1(pred, truth, tolerance)
    grains = grains_from_boundary(pred)
    ari = adjusted_rand_index(grains, truth.grains)
    n_pred, n_gt = (int(grains.max()) if grains.size else 0), truth.n_grains
    ratio = 1.0 if max(n_pred, n_gt) == 0 else min(n_pred, n_gt) / max(n_pred, n_gt)
    rel_error = abs(n_pred - n_gt) / max(n_gt, 1)
    return np.array([(f1 + ari + ratio) / 3.0, f1, ari, ratio, rel_error], np.float64)


def _check_grid(grid: Sequence[PostprocessSettings]) -> tuple[PostprocessSettings, ...]:
    grid = tuple(grid)
    if not grid:
        raise ValueError("the post-processing grid is empty")
    bad = [g for g in grid if not isinstance(g, PostprocessSettings)]
    if bad:
        raise TypeError(f"grid entries must be PostprocessSettings, got {type(bad[0]).__name__}")
    if len(set(grid)) != len(grid):
        raise ValueError("the post-processing grid lists a setting twice")
    return grid


def score_grid(
    probs: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    grid: Sequence[PostprocessSettings] = DEFAULT_GRID,
    tolerance: float = 2.0,
) -> np.ndarray:
    """Client side: mean scores of every grid point over this client's validation tiles.

    Args:
      probs: boundary probability maps ``[H, W]`` (any sizes; a stacked ``[N, H, W]`` array works).
      labels: the matching label maps, nonzero = boundary (``[N, H, W]`` uint8 works).
      grid: the candidate settings; every client of one selection must use the same grid.
      tolerance: boundary F1 pixel tolerance (the config's ``eval.tolerance``).

    Returns:
      float64 ``[len(grid), len(SCORE_COLUMNS)]``: row ``g`` holds the mean over tiles of
      ``SCORE_COLUMNS`` for ``grid[g]``. This table is all a client sends (no image-shaped array).

    Raises:
      ValueError: no tiles, or probs/labels of different counts or shapes.
    """
    grid = _check_grid(grid)
    if len(probs) != len(labels):
        raise ValueError(f"score_grid: {len(probs)} probability maps but {len(labels)} label maps")
    if not tolerance >= 0:
        raise ValueError(f"score_grid: tolerance (eval.tolerance) must be >= 0, got {tolerance}")
    if len(probs) == 0:
        raise ValueError("score_grid: no validation tiles (set data.val_per_client / data.val_fraction)")
    # Evaluate in lexicographic order of the settings so that each step's input (the map after the
    # steps before it) is computed once and reused by every grid point sharing that prefix.
    order = sorted(range(len(grid)), key=lambda g: grid[g])
    table = np.zeros((len(grid), len(SCORE_COLUMNS)), np.float64)
    for prob, label in zip(probs, labels):
        prob, truth = np.asarray(prob, np.float32), _Truth(label, tolerance)
        if prob.shape != truth.boundary.shape:
            raise ValueError(
                f"score_grid: probability map {prob.shape} and label {truth.boundary.shape} differ"
            )
        cache: dict[int, tuple[tuple, np.ndarray]] = {}
        scored: dict[bytes, np.ndarray] = {}  # Different settings often give the same map: score it once.

        def stage(depth: int, key: tuple, make) -> np.ndarray:
            hit = cache.get(depth)
            if hit is None or hit[0] != key:
                hit = (key, make())
                cache[depth] = hit
            return hit[1]

        for g in order:
            s = grid[g]
            b = stage(0, (s.threshold,), lambda: prob > s.threshold)
            b = stage(1, (s.threshold, s.close_radius), lambda: pp.close_gaps(b, s.close_radius))
            k2 = (s.threshold, s.close_radius, s.min_fragment_px)
            b = stage(2, k2, lambda: pp.remove_small_fragments(b, s.min_fragment_px))
            b = stage(3, k2 + (s.min_grain_area,), lambda: pp.merge_small_grains(b, s.min_grain_area))
            if s.line_width > 0:
                b = pp.dilate_to_width(
                    stage(4, k2 + (s.min_grain_area,), lambda: pp.thin_lines(b)), s.line_width
                )
            key = np.packbits(b).tobytes()
            if key not in scored:
                scored[key] = tile_scores(b, truth, tolerance)
            table[g] += scored[key]
    return table / len(probs)


# ----------------------------------------------------------------------------------------------
# Server side: pick the setting with the best mean objective over clients.
# ----------------------------------------------------------------------------------------------


def choose(
    score_tables: Mapping[str, np.ndarray], grid: Sequence[PostprocessSettings] = DEFAULT_GRID
) -> dict[str, Any]:
    """Server side: the grid point with the best mean objective over clients.

    Args:
      score_tables: client name -> ``score_grid`` table (same grid for every client).
      grid: the grid the tables were computed on.

    Returns:
      JSON-able dict: ``settings`` (the chosen ``PostprocessSettings`` as a dict), ``source``,
      ``objective`` (its mean over clients), ``mean`` and ``per_client`` (every ``SCORE_COLUMNS`` entry
      at the chosen point), ``builtin_defaults`` (the same numbers for ``BUILTIN_DEFAULTS``, when in the
      grid), ``objective_definition``, ``n_clients`` and ``grid`` (the candidate settings).

    Raises:
      ValueError: no tables, or a table whose shape does not match the grid (names the client).
    """
    grid = _check_grid(grid)
    if not score_tables:
        raise ValueError("choose: no client score tables")
    want = (len(grid), len(SCORE_COLUMNS))
    tables = {}
    for client, table in score_tables.items():
        table = np.asarray(table, np.float64)
        if table.shape != want:
            raise ValueError(
                f"choose: client {client!r} sent a table of shape {table.shape}, expected {want}"
            )
        if not np.isfinite(table).all():
            raise ValueError(f"choose: client {client!r} sent a table with non-finite scores")
        tables[client] = table
    mean = np.mean(list(tables.values()), axis=0)
    objective = mean[:, 0]
    best = int(np.argmax(objective))  # First best: the built-in defaults when they tie (grid order).

    def row(table: np.ndarray, g: int) -> dict[str, float]:
        return {k: float(v) for k, v in zip(SCORE_COLUMNS, table[g])}

    choice = {
        "settings": grid[best].to_dict(),
        "source": SOURCE_CHOSEN,
        "objective": float(objective[best]),
        "mean": row(mean, best),
        "per_client": {c: row(t, best) for c, t in tables.items()},
        "objective_definition": OBJECTIVE,
        "n_clients": len(tables),
        "grid": [g.to_dict() for g in grid],
    }
    if BUILTIN_DEFAULTS in grid:
        choice["builtin_defaults"] = {
            "settings": BUILTIN_DEFAULTS.to_dict(),
            "mean": row(mean, grid.index(BUILTIN_DEFAULTS)),
        }
    return choice


def select(
    probs_by_client: Mapping[str, Sequence[np.ndarray]],
    labels_by_client: Mapping[str, Sequence[np.ndarray]],
    grid: Sequence[PostprocessSettings] = DEFAULT_GRID,
    tolerance: float = 2.0,
) -> dict[str, Any]:
    """Both sides in one process: ``choose({c: score_grid(probs[c], labels[c])})``; clients without
    tiles are left out."""
    tables = {
        c: score_grid(p, labels_by_client[c], grid, tolerance) for c, p in probs_by_client.items() if len(p)
    }
    return choose(tables, grid)
