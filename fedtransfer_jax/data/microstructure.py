"""Synthetic polycrystal grain maps: tessellations, Potts grain growth and exact boundary labels.

A grain map is an int32 ``[H, W]`` array whose values are grain ids ``0..K-1``; every id is one
4-connected region (``relabel_connected`` enforces this), so grain counts and sizes measured on a map
are the ones a segmentation metric would see.

Three generators are offered because real microstructures differ in how their grains look:

* ``voronoi``: Poisson-Voronoi cells, the classic model of nucleation-and-growth.  Plain Voronoi cells
  are convex polygons with straight edges, which no micrograph shows, so the pixel coordinates are
  warped by a smooth random displacement field before the nearest seed is found: the edges curve while
  the cells stay connected (the warp is a small diffeomorphism).
* ``laguerre``: power-weighted (Laguerre) cells; per-seed weights give a controllable spread of grain
  sizes (``dispersion`` is the log-normal sigma of the seed radii).  Same warp.
* ``potts``: Monte-Carlo Potts grain growth (Anderson-Srolovitz) started from a fine tessellation and run
  until the mean grain size reaches the target.  Curvature-driven growth gives the curved boundaries and
  ~120 degree triple junctions of annealed metals.  The Metropolis sweep is a jitted JAX loop over the
  four sub-lattices of the Moore neighbourhood, so all non-interacting sites update at once.

Three more for microstructures beyond equiaxed single-phase grains (each a tessellation plus a physical
modification; their per-image shape parameters are drawn from the ranges below, so a ``LabSpec`` names them
by ``method`` alone):

* ``twinned``: annealing twins (FCC metals of low stacking-fault energy, some ceramics).  A fraction of the
  Laguerre grains get one or two parallel-sided lamellae that cross the whole grain with straight traces
  (coherent Sigma-3 boundaries).  Twin boundaries are **labelled** like any grain boundary (they are
  boundaries in the map: a segmentation that misses them misses real interfaces).  Limitation: the two
  matrix pieces either side of a lamella get separate ids, so renderers give them independent orientations,
  whereas in a real crystal they share one.  ``mean_grain_diameter_px`` is that of the parent grains.
* ``rolled``: cold-rolled sheet seen on the RD-ND or RD-TD section: Laguerre grains elongated along x
  (the rolling direction) with aspect ratio ``ROLLED_ASPECT``, made by computing the power diagram in a
  frame stretched along y, so the size search measures the final, elongated map.
* ``bimodal``: abnormal grain growth: a fine Laguerre matrix in which a few coarse cells (``BIMODAL_FACTOR``
  x the diameter, each selected with probability ``BIMODAL_FRACTION``) have consumed the fine grains.
  ``mean_grain_diameter_px`` is that of the fine matrix.

Grain size is controlled as the mean *equivalent circle diameter* ``mean(sqrt(4 A_g / pi))`` over the
grains of the map (grains cut by the frame included: that is what an image analyst measures).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage, sparse
from scipy.sparse import csgraph
from scipy.spatial import cKDTree

METHODS: tuple[str, ...] = ("voronoi", "laguerre", "potts", "twinned", "rolled", "bimodal")
# Per-image shape parameters of the modified tessellations (uniform ranges, drawn from the image's rng).
TWIN_FRACTION = (0.25, 0.5)  # fraction of grains (large enough to hold one) that carry twin lamellae
TWIN_WIDTH = (0.12, 0.3)  # lamella width as a fraction of the grain's extent across the lamella
ROLLED_ASPECT = (2.0, 3.5)  # grain length along RD / thickness along ND
BIMODAL_FACTOR = (3.0, 4.0)  # coarse / fine grain diameter
BIMODAL_FRACTION = (0.15, 0.35)  # probability that a coarse cell has grown abnormally
# Grains smaller than this (px) are merged into a neighbour: see merge_small_grains.
MIN_GRAIN_AREA = 4

# Relative tolerance at which the seed-count search stops (the public contract is 15 %).
_SIZE_RTOL = 0.05
_MAX_SIZE_ITERS = 5


# ----------------------------------------------------------------------------------------------
# Measurements and label hygiene
# ----------------------------------------------------------------------------------------------


def grain_areas(grains: np.ndarray) -> np.ndarray:
    """Pixel count of every grain id present (ids need not be contiguous; absent ids are dropped)."""
    counts = np.bincount(np.asarray(grains).ravel().astype(np.int64))
    return counts[counts > 0]


def mean_equivalent_diameter(grains: np.ndarray) -> float:
    """Mean equivalent-circle diameter ``mean(sqrt(4 A / pi))`` in px over the grains of a map."""
    areas = grain_areas(grains).astype(np.float64)
    return float(np.mean(np.sqrt(4.0 * areas / np.pi)))


def relabel_connected(grains: np.ndarray) -> np.ndarray:
    """Split every id into its 4-connected pieces and renumber them ``0..K-1`` (int32).

    Warps, row jitter and Potts growth can leave an id in several pieces; downstream grain metrics
    treat each connected region as one grain, so the map must say the same.  Uses a sparse graph
    whose edges join equal 4-neighbours, which is one vectorised pass instead of a loop over ids.
    """
    g = np.asarray(grains)
    if g.ndim != 2:
        raise ValueError(f"grain map must be 2-D [H, W], got shape {g.shape}")
    h, w = g.shape
    idx = np.arange(h * w).reshape(h, w)
    right = g[:, :-1] == g[:, 1:]
    down = g[:-1, :] == g[1:, :]
    rows = np.concatenate([idx[:, :-1][right], idx[:-1, :][down]])
    cols = np.concatenate([idx[:, 1:][right], idx[1:, :][down]])
    graph = sparse.coo_matrix((np.ones(rows.size, np.int8), (rows, cols)), shape=(h * w, h * w))
    _, comp = csgraph.connected_components(graph.tocsr(), directed=False)
    # Renumber in raster order of first appearance so the result does not depend on scipy internals.
    _, first, inverse = np.unique(comp, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    return order[inverse].reshape(h, w).astype(np.int32)


def merge_small_grains(grains: np.ndarray, min_area: int) -> np.ndarray:
    """Give every pixel of a grain smaller than ``min_area`` px to the nearest larger grain.

    1-3 px "grains" are pixelisation debris of warped cells or frame corners, not grains anyone would
    annotate; left in, they add label noise and skew grain counts.  Output is relabelled ``0..K-1``.
    """
    g = relabel_connected(grains)
    counts = np.bincount(g.ravel())
    small = (counts < min_area)[g]
    if not small.any() or small.all():
        return g
    _, (iy, ix) = ndimage.distance_transform_edt(small, return_indices=True)
    return relabel_connected(g[iy, ix])


def boundary_map(grains: np.ndarray, width: int = 2) -> np.ndarray:
    """Exact grain-boundary label (uint8 ``[H, W]``, 1 = boundary) of a grain map.

    The physical boundary runs *between* pixel centres, so a symmetric label is naturally 2 px wide:
    both pixels of every 4-neighbour pair with different ids (``width=2``).  ``width=1`` keeps only
    the pixel on the upper/left side of each such pair (forward differences), a 1-px line.  Larger
    widths dilate these (4-connected cross) symmetrically: even widths from the 2-px band, odd widths
    from the 1-px line, ``(width - base) / 2`` dilation steps each side.
    """
    if not isinstance(width, (int, np.integer)) or width < 1:
        raise ValueError(f"boundary width must be a positive int, got {width!r}")
    g = np.asarray(grains)
    if g.ndim != 2:
        raise ValueError(f"grain map must be 2-D [H, W], got shape {g.shape}")
    dx = g[:, :-1] != g[:, 1:]
    dy = g[:-1, :] != g[1:, :]
    band = np.zeros(g.shape, bool)
    band[:, :-1] |= dx
    band[:-1, :] |= dy
    if width % 2 == 0:
        band[:, 1:] |= dx
        band[1:, :] |= dy
        steps = (width - 2) // 2
    else:
        steps = (width - 1) // 2
    if steps > 0:
        band = ndimage.binary_dilation(
            band, structure=ndimage.generate_binary_structure(2, 1), iterations=steps
        )
    return band.astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Smooth random fields (coordinate warps, etch non-uniformity, illumination ...)
# ----------------------------------------------------------------------------------------------


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], corr_len: float) -> np.ndarray:
    """Zero-mean, unit-std random field with correlation length ~``corr_len`` px (float32).

    White noise on a coarse grid (one node per ``corr_len`` px) upsampled with cubic splines: much
    cheaper than a large Gaussian filter and smooth by construction.
    """
    h, w = shape
    step = max(float(corr_len), 1.0)
    ch, cw = int(np.ceil(h / step)) + 3, int(np.ceil(w / step)) + 3
    coarse = rng.standard_normal((ch, cw))
    yy = np.arange(h) / step + 1.0
    xx = np.arange(w) / step + 1.0
    field = ndimage.map_coordinates(coarse, np.meshgrid(yy, xx, indexing="ij"), order=3, mode="nearest")
    field = field - field.mean()
    std = field.std()
    return (field / std if std > 0 else field).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Tessellations
# ----------------------------------------------------------------------------------------------


def _pixel_coords(
    size: int, rng: np.random.Generator, warp_px: float, corr_len: float, stretch: float = 1.0
) -> np.ndarray:
    """Pixel centres ``[H*W, 2]`` (y, x), displaced by a smooth random warp of RMS ``warp_px``; with
    ``stretch != 1`` the y coordinate is then multiplied by it (cells round in that frame come out
    elongated along x by ``stretch`` in the image)."""
    yy, xx = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64), indexing="ij")
    if warp_px > 0:
        yy = yy + warp_px * smooth_field(rng, (size, size), corr_len)
        xx = xx + warp_px * smooth_field(rng, (size, size), corr_len)
    if stretch != 1.0:
        yy = yy * stretch
    return np.stack([yy.ravel(), xx.ravel()], axis=1)


def _assign_cells(coords: np.ndarray, seeds: np.ndarray, radii: np.ndarray | None) -> np.ndarray:
    """Index of the nearest seed (Voronoi) or of the smallest power distance (Laguerre).

    Laguerre trick: ``|x - s|^2 - r^2`` equals ``|x - s|^2 + z^2 - C`` with ``z = sqrt(C - r^2)``, so
    lifting each seed to 3-D height ``z`` turns the power diagram into a plain 3-D nearest-neighbour
    query on a KD-tree (query points at height 0).
    """
    if radii is None:
        _, idx = cKDTree(seeds).query(coords, k=1)
        return idx
    r2 = radii**2
    z = np.sqrt(r2.max() - r2)
    tree = cKDTree(np.column_stack([seeds, z]))
    _, idx = tree.query(np.column_stack([coords, np.zeros(len(coords))]), k=1)
    return idx


def _tessellation(
    rng: np.random.Generator,
    size: int,
    mean_diameter: float,
    dispersion: float,
    warp: float,
    max_iters: int = _MAX_SIZE_ITERS,
    stretch: float = 1.0,
) -> np.ndarray:
    """Voronoi (``dispersion == 0``) or Laguerre tessellation with mean equivalent diameter ~target.

    The seed count is found by a few multiplicative updates ``K <- K (d_measured / d_target)^2``
    (diameter scales like ``K^-1/2``).  Seeds are prefixes of one fixed random pool, so successive
    trials differ only by the seeds added or removed and the search converges instead of re-rolling
    noise.  Seeds cover a frame one grain wider than the image: a micrograph is a crop of a larger
    sample, so grains must be cut by the border, not squeezed against it.

    ``stretch > 1`` (``rolled``): the diagram is computed in a frame where y is multiplied by ``stretch``;
    cells there have diameter ``mean_diameter * sqrt(stretch)``, so in the image they are elongated along x
    by ``stretch`` with about the target equivalent diameter.  ``stretch == 1`` is the plain path.
    """
    if stretch != 1.0:
        return _stretched_tessellation(rng, size, mean_diameter, dispersion, warp, max_iters, stretch)
    pad = mean_diameter
    span = size + 2 * pad
    target_area = np.pi / 4.0 * mean_diameter**2
    # Mean sqrt(A) is below sqrt(mean A) for the broad Voronoi area distribution; frame-cut grains
    # shrink the mean further.  0.85 is an empirical start, the loop below corrects it.
    k = max(int(round(0.85 * span**2 / target_area)), 2)
    pool_n = 4 * k + 16
    pool = rng.uniform(-pad, size + pad, size=(pool_n, 2))
    radii_pool = None
    if dispersion > 0:
        radii_pool = rng.lognormal(mean=0.0, sigma=dispersion, size=pool_n)
    coords = _pixel_coords(size, rng, warp * mean_diameter, 1.2 * mean_diameter)
    return _size_search(size, mean_diameter, coords, pool, radii_pool, k, span, max_iters)


def _stretched_tessellation(
    rng: np.random.Generator,
    size: int,
    mean_diameter: float,
    dispersion: float,
    warp: float,
    max_iters: int,
    stretch: float,
) -> np.ndarray:
    """``_tessellation`` in a frame stretched along y (see there); seeds cover the stretched frame."""
    d_round = mean_diameter * np.sqrt(stretch)  # cell diameter in the stretched frame
    pad = d_round
    span_y, span_x = size * stretch + 2 * pad, size + 2 * pad
    k = max(int(round(0.85 * span_y * span_x / (np.pi / 4.0 * d_round**2))), 2)
    pool_n = 4 * k + 16
    pool = rng.uniform(0.0, 1.0, size=(pool_n, 2)) * np.array([span_y, span_x]) - pad
    radii_pool = None
    if dispersion > 0:
        radii_pool = rng.lognormal(mean=0.0, sigma=dispersion, size=pool_n)
    coords = _pixel_coords(size, rng, warp * mean_diameter, 1.2 * mean_diameter, stretch=stretch)
    span = float(np.sqrt(span_y * span_x))  # side of the square of the same area
    return _size_search(size, mean_diameter, coords, pool, radii_pool, k, span, max_iters)


def _size_search(
    size: int,
    mean_diameter: float,
    coords: np.ndarray,
    pool: np.ndarray,
    radii_pool: np.ndarray | None,
    k: int,
    span: float,
    max_iters: int,
) -> np.ndarray:
    """The seed-count search of ``_tessellation`` (the grain map closest to the target diameter);
    ``span``: side of the (square-equivalent) seed frame, which sets the Laguerre radii."""
    pool_n = len(pool)

    best: tuple[float, np.ndarray] | None = None
    for _ in range(max_iters):
        k = int(np.clip(k, 2, pool_n))
        radii = None
        if radii_pool is not None:
            # Radii relative to the mean seed spacing: large enough to skew cell sizes, small enough
            # that few cells vanish (a vanished cell just lowers the count; the loop compensates).
            spacing = span / np.sqrt(k)
            radii = 0.45 * spacing * radii_pool[:k] / np.mean(radii_pool[:k])
        cells = merge_small_grains(_assign_cells(coords, pool[:k], radii).reshape(size, size), MIN_GRAIN_AREA)
        d = mean_equivalent_diameter(cells)
        err = abs(d / mean_diameter - 1.0)
        if best is None or err < best[0]:
            best = (err, cells)
        if err < _SIZE_RTOL:
            break
        k = int(round(k * (d / mean_diameter) ** 2))
    assert best is not None
    return best[1]


# ----------------------------------------------------------------------------------------------
# Potts grain growth
# ----------------------------------------------------------------------------------------------

_MOORE = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
_SUBLATTICES = ((0, 0), (1, 1), (0, 1), (1, 0))
POTTS_KT = 0.6
# Sweeps between host-side size checks, and images grown together (one compile per image size).
_POTTS_CHUNK = 4
_POTTS_BATCH = 8  # largest batch; smaller work lists use the next power of two
_POTTS_MAX_CHUNKS = 400


def _acceptance_thresholds(kT: float) -> np.ndarray:
    """Metropolis acceptance ``exp(-dE/kT)`` for ``dE = 0..8`` as 24-bit integer thresholds.

    Comparing integer random bits with integer thresholds keeps the sweep free of float math, so a
    batched (vmapped) run is bit-identical to a single-image run: images never depend on batch mates.
    """
    d_e = np.arange(9, dtype=np.float64)
    thr = np.floor(np.exp(-d_e / kT) * float(1 << 24)).astype(np.uint32)
    thr[0] = 1 << 24  # dE <= 0 always accepted
    return thr


def _potts_sweeps_single(spins: jax.Array, key: jax.Array, thresholds: jax.Array, n_sweeps: int) -> jax.Array:
    """``n_sweeps`` Metropolis sweeps of the Q-state Potts model (Moore neighbourhood, free edges).

    Each site proposes the id of a random one of its 8 neighbours (the usual growth move set: an id
    unlike every neighbour can only raise the energy) and accepts with probability
    ``min(1, exp(-dE / kT))``, ``dE`` = change in the number of unlike neighbours.  The lattice is
    split into 4 sub-lattices by the parity of (y, x); no two sites of one sub-lattice are Moore
    neighbours, so a whole sub-lattice updates at once and detailed balance holds.  Outside the frame
    is id -1: never proposed and unlike everything, so the edges neither attract nor repel boundaries.
    """
    h, w = spins.shape

    def substep(s: jax.Array, key: jax.Array, oy: int, ox: int) -> jax.Array:
        p = jnp.pad(s, 1, constant_values=-1)
        # Neighbours of the sub-lattice sites (oy::2, ox::2) only: 4x less work than masking.
        nb = [p[1 + oy + dy : 1 + dy + h : 2, 1 + ox + dx : 1 + dx + w : 2] for dy, dx in _MOORE]
        cur = s[oy::2, ox::2]
        bits = jax.random.bits(key, cur.shape, jnp.uint32)
        choice = bits & jnp.uint32(7)  # low 3 bits pick the neighbour, high 24 bits are the uniform
        prop = nb[0]
        for k in range(1, 8):
            prop = jnp.where(choice == k, nb[k], prop)
        d_e = sum((x == cur).astype(jnp.int32) for x in nb) - sum((x == prop).astype(jnp.int32) for x in nb)
        thr = thresholds[jnp.clip(d_e, 0, 8)]
        accept = (prop >= 0) & (prop != cur) & ((bits >> 8) < thr)
        return s.at[oy::2, ox::2].set(jnp.where(accept, prop, cur))

    def sweep(i: jax.Array, s: jax.Array) -> jax.Array:
        keys = jax.random.split(jax.random.fold_in(key, i), 4)
        for j, (oy, ox) in enumerate(_SUBLATTICES):
            s = substep(s, keys[j], oy, ox)
        return s

    return jax.lax.fori_loop(0, n_sweeps, sweep, spins)


@jax.jit
def _potts_chunk(
    spins: jax.Array, base_keys: jax.Array, chunk: int, active: jax.Array, thresholds: jax.Array
) -> jax.Array:
    """Chunk ``chunk`` of sweeps for a batch ``[B, H, W]``; inactive (finished) images stay unchanged."""
    keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(base_keys, chunk)
    grown = jax.vmap(_potts_sweeps_single, in_axes=(0, 0, None, None))(spins, keys, thresholds, _POTTS_CHUNK)
    return jnp.where(active[:, None, None], grown, spins)


_potts_sweeps_jit = jax.jit(_potts_sweeps_single, static_argnums=3)


def potts_sweeps(spins: np.ndarray, seed: int, n_sweeps: int, kT: float = POTTS_KT) -> np.ndarray:
    """Run ``n_sweeps`` Potts sweeps on one grain map (for benchmarks/figures; no size control)."""
    key = jax.random.key(seed)
    out = _potts_sweeps_jit(
        jnp.asarray(spins, jnp.int32), key, jnp.asarray(_acceptance_thresholds(kT)), n_sweeps
    )
    return np.asarray(out)


def potts_start(
    rng: np.random.Generator, size: int, mean_diameter: float, dispersion: float
) -> tuple[np.ndarray, int]:
    """Initial state of a Potts run: a tessellation 2x finer than the target, and the run's key seed.

    Growing the area ~4x erases the straight Voronoi edges; growing more would only cost sweeps.
    The start's size needs no search (one pass): growth stops on the target, not on the start.
    """
    start = max(mean_diameter / 2.0, 2.5)
    spins = _tessellation(rng, size, start, dispersion, warp=0.0, max_iters=1)
    return spins, int(rng.integers(0, 2**31 - 1))


def potts_grow(starts: list[np.ndarray], seeds: list[int], targets: list[float]) -> list[np.ndarray]:
    """Grow each start until its mean equivalent diameter reaches its target; returns the maps.

    Images are grown in batches of 8 (sorted by target so batch mates need similar sweep
    counts) with a fixed chunk schedule and integer-only sweeps, so every result depends only on its
    own (start, seed, target), never on which other images were grown alongside.  After the chunk
    that first reaches the target, the closer of the last two states is kept.
    """
    if not (len(starts) == len(seeds) == len(targets)):
        raise ValueError(f"potts_grow: {len(starts)} starts, {len(seeds)} seeds, {len(targets)} targets")
    results: list[np.ndarray | None] = [None] * len(starts)
    thresholds = jnp.asarray(_acceptance_thresholds(POTTS_KT))
    order = np.argsort(np.asarray(targets, dtype=np.float64), kind="stable")
    for g0 in range(0, len(order), _POTTS_BATCH):
        members = list(order[g0 : g0 + _POTTS_BATCH])
        # Only two batch shapes (1 and 8) so each image size compiles at most twice.
        batch = 1 if len(order) == 1 else _POTTS_BATCH
        pad = members + [members[-1]] * (batch - len(members))
        state = np.stack([starts[i] for i in pad]).astype(np.int32)
        base_keys = jax.vmap(jax.random.key)(jnp.asarray([seeds[i] for i in pad], dtype=jnp.uint32))
        prev = state.copy()
        prev_d = np.array([mean_equivalent_diameter(s) for s in state])
        tgt = np.array([targets[i] for i in pad], dtype=np.float64)
        active = prev_d < tgt
        active[len(members) :] = False
        dev_state = jnp.asarray(state)
        chunk = 0
        while active.any() and chunk < _POTTS_MAX_CHUNKS:
            dev_state = _potts_chunk(dev_state, base_keys, chunk, jnp.asarray(active), thresholds)
            cur = np.asarray(dev_state)
            for b in np.flatnonzero(active):
                d = mean_equivalent_diameter(cur[b])
                if d >= tgt[b]:
                    active[b] = False
                    if abs(prev_d[b] - tgt[b]) < abs(d - tgt[b]):
                        continue  # keep prev[b]
                prev[b], prev_d[b] = cur[b], d
            chunk += 1
        for b, i in enumerate(members):
            results[i] = prev[b]
    return [r for r in results if r is not None]


# ----------------------------------------------------------------------------------------------
# Microstructures beyond equiaxed single-phase grains
# ----------------------------------------------------------------------------------------------


def add_annealing_twins(
    rng: np.random.Generator,
    grains: np.ndarray,
    fraction: float,
    width: tuple[float, float] = TWIN_WIDTH,
    min_lamella_px: float = 2.0,
) -> np.ndarray:
    """Cut parallel-sided twin lamellae across a ``fraction`` of the grains (relabelled ``0..K-1``).

    A lamella is the slab ``c <= (x - x0) . n < c + w`` of the grain for a random trace normal ``n``: its two
    boundaries are straight, parallel and run across the whole grain, as coherent annealing twins do.  Each
    twinned grain gets one lamella, or two with probability 1/4 (parallel: one twin system).  Grains too thin
    across ``n`` for a lamella of ``min_lamella_px`` with matrix either side are left alone.
    """
    g = np.asarray(grains).astype(np.int32)
    h, w = g.shape
    n_ids = int(g.max()) + 1
    out = g.copy()
    next_id = n_ids
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    order = np.argsort(g.ravel(), kind="stable")
    bounds = np.searchsorted(g.ravel()[order], np.arange(n_ids + 1))
    for gid in range(n_ids):
        pix = order[bounds[gid] : bounds[gid + 1]]
        # Draw the same number of values for every grain so one grain's shape never shifts another's twins.
        u_twin, angle, n_lam, u_w, u_c1, u_c2 = rng.uniform(size=6)
        if u_twin >= fraction or pix.size < 4 * MIN_GRAIN_AREA:
            continue
        theta = np.pi * angle
        t = yy.ravel()[pix] * np.sin(theta) + xx.ravel()[pix] * np.cos(theta)
        lo, hi = float(t.min()), float(t.max()) + 1.0
        extent = hi - lo
        lam_w = max(min_lamella_px, (width[0] + (width[1] - width[0]) * u_w) * extent)
        lamellae = 2 if n_lam < 0.25 else 1
        room = extent - lamellae * lam_w - (lamellae + 1) * min_lamella_px
        if room <= 0:
            continue
        # Start positions leaving matrix (>= min_lamella_px) before, between and after the lamellae.
        gaps = np.sort([u_c1, u_c2][:lamellae]) * room
        start = lo + min_lamella_px
        for j in range(lamellae):
            c = start + gaps[j] + j * (lam_w + min_lamella_px)
            sel = pix[(t >= c) & (t < c + lam_w)]
            out.ravel()[sel] = next_id
            next_id += 1
    return merge_small_grains(out, MIN_GRAIN_AREA)


def _bimodal(
    rng: np.random.Generator, size: int, mean_diameter: float, dispersion: float, warp: float
) -> np.ndarray:
    """A fine Laguerre matrix in which a few coarse cells have grown abnormally (see the module docstring)."""
    fine = _tessellation(rng, size, mean_diameter, dispersion, warp)
    factor = float(rng.uniform(*BIMODAL_FACTOR))
    p_big = float(rng.uniform(*BIMODAL_FRACTION))
    coarse = _tessellation(rng, size, min(mean_diameter * factor, 2.0 * size), 0.0, warp, max_iters=2)
    big = rng.uniform(size=int(coarse.max()) + 1) < p_big
    grains = np.where(big[coarse], coarse + int(fine.max()) + 1, fine)
    return merge_small_grains(grains, MIN_GRAIN_AREA)


# ----------------------------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------------------------


def generate_microstructure(
    rng: np.random.Generator,
    size: int,
    *,
    method: str,
    mean_grain_diameter_px: float,
    dispersion: float = 0.0,
    warp: float = 0.1,
) -> np.ndarray:
    """A ``size x size`` grain map (int32, ids ``0..K-1``, each 4-connected).

    ``mean_grain_diameter_px`` is the target mean equivalent-circle diameter; ``dispersion`` the
    log-normal sigma of the Laguerre seed radii (``laguerre``, ``twinned``, ``rolled``, ``bimodal``; for
    ``potts`` it shapes the starting tessellation); ``warp`` the RMS boundary displacement as a fraction of
    the grain diameter (tessellations only; Potts boundaries curve by themselves).  ``twinned``, ``rolled``
    and ``bimodal`` draw their shape parameters (``TWIN_*``, ``ROLLED_ASPECT``, ``BIMODAL_*``) from ``rng``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown microstructure method {method!r}; valid: {', '.join(METHODS)}")
    if size < 4:
        raise ValueError(f"size must be >= 4 px, got {size}")
    if not 1.5 <= mean_grain_diameter_px <= 2.0 * size:
        raise ValueError(
            f"mean_grain_diameter_px={mean_grain_diameter_px} outside [1.5, {2 * size}] for size {size}"
        )
    if dispersion < 0:
        raise ValueError(f"dispersion must be >= 0, got {dispersion}")
    if method == "voronoi" and dispersion > 0:
        raise ValueError("dispersion needs power weights: use method='laguerre' (or 'potts'), not 'voronoi'")
    d = float(mean_grain_diameter_px)
    if method == "potts":
        start, seed = potts_start(rng, size, d, float(dispersion))
        grains = potts_grow([start], [seed], [d])[0]
    elif method == "twinned":
        parents = _tessellation(rng, size, d, float(dispersion), float(warp))
        grains = add_annealing_twins(rng, parents, float(rng.uniform(*TWIN_FRACTION)))
    elif method == "rolled":
        aspect = float(rng.uniform(*ROLLED_ASPECT))
        grains = _tessellation(rng, size, d, float(dispersion), float(warp), stretch=aspect)
    elif method == "bimodal":
        grains = _bimodal(rng, size, d, float(dispersion), float(warp))
    else:
        grains = _tessellation(rng, size, float(mean_grain_diameter_px), float(dispersion), float(warp))
    return merge_small_grains(grains, MIN_GRAIN_AREA)
