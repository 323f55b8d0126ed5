"""A population of many simulated clients (10^3 .. 10^5: one per microscope or operator), generated lazily.

Each client is a small lab drawn from a continuous prior that shares the style machinery of ``styles`` and
``synthetic`` (not a copy of it):

  * a base imaging style (one of ``PopulationSpec.styles``, keys of ``styles.STYLE_RANGES``) and, for every
    parameter of that style, its own sub-range drawn inside the style's range (``STYLE_RANGES``: the prior
    over instruments); each tile's imaging parameters are then drawn from the client's sub-ranges by
    ``styles.sample_style_params(..., ranges=...)``, exactly as a built-in lab draws from its full ranges;
  * a microstructure (``PopulationSpec.methods``, ``microstructure.generate_microstructure``) and a
    grain-size range whose lower end is drawn log-uniformly from ``PopulationSpec.diameter_px`` (the spread
    of magnifications x materials), with its own dispersion and warp ranges;
  * a few labelled tiles (``PopulationSpec.tiles_per_client``, e.g. 2-4 tiles of 32-64 px).

Memory: the population stores only these per-client parameters (``PARAM_BYTES`` ~ 130 bytes a client,
~13 MB for 100,000 clients); a client's tiles are rendered on demand by ``tiles``.

Determinism: client ``c``'s parameters depend only on ``(seed, c)`` (generator
``default_rng([seed, PARAM_TAG, c])``) and its tile ``t`` only on ``(seed, c, t)`` and those parameters
(``default_rng([seed, TILE_TAG, c, t])``), never on the population size or on the order of access.
``client_params`` is defined for every id, so clients ``>= num_clients`` form a held-out set of the same
prior that training never samples.
"""

from __future__ import annotations

import dataclasses
import time
import zlib

import numpy as np

from fedtransfer_jax.data import styles, synthetic
from fedtransfer_jax.data.clients import ClientData
from fedtransfer_jax.data.microstructure import boundary_map, generate_microstructure

__all__ = [
    "PopulationSpec",
    "Population",
    "ClientParams",
    "client_params",
    "render_tiles",
    "render_split",
    "measure",
]

# The unseen lab of the main job (tint) stays out of the population: it is the held-out style.
DEFAULT_STYLES = ("brightfield", "darkfield", "sem", "lowcontrast")
# Tessellations only: Potts growth runs jitted sweeps, too slow for tiles rendered between rounds.
DEFAULT_METHODS = ("voronoi", "laguerre")
PARAM_TAG = 0x0B0B1  # numpy seed words: (seed, tag, client[, tile])
TILE_TAG = 0x711E5


@dataclasses.dataclass(frozen=True)
class PopulationSpec:
    """The prior over clients. Every per-client parameter is drawn from these ranges."""

    num_clients: int
    seed: int = 0
    tile_size: int = 32
    tiles_per_client: tuple[int, int] = (2, 4)  # inclusive
    styles: tuple[str, ...] = DEFAULT_STYLES
    methods: tuple[str, ...] = DEFAULT_METHODS
    diameter_px: tuple[float, float] = (5.0, 20.0)  # log-uniform prior of the client's smallest grain size
    diameter_spread: tuple[float, float] = (1.1, 1.6)  # the client's largest / smallest grain size
    sub_range: tuple[float, float] = (0.15, 0.5)  # width of a client's sub-range, fraction of the style's
    dispersion: tuple[float, float] = (0.0, 0.6)  # Laguerre seed-radius sigma (voronoi clients: 0)
    warp: tuple[float, float] = (0.04, 0.16)
    boundary_width: int = 2

    def __post_init__(self):
        if self.num_clients < 1:
            raise ValueError(f"num_clients must be >= 1, got {self.num_clients}")
        lo, hi = self.tiles_per_client
        if not 1 <= lo <= hi <= 255:
            raise ValueError(f"tiles_per_client must be 1 <= lo <= hi <= 255, got {self.tiles_per_client}")
        if self.tile_size < 8:
            raise ValueError(f"tile_size must be >= 8 px, got {self.tile_size}")
        for s in self.styles:
            styles._check_style(s)
        if not 0 < self.sub_range[0] <= self.sub_range[1] <= 1:
            raise ValueError(f"sub_range must be fractions 0 < lo <= hi <= 1, got {self.sub_range}")

    @property
    def max_keys(self) -> int:
        return max(len(styles.STYLE_RANGES[s]) for s in self.styles)

    @property
    def max_tiles(self) -> int:
        return int(self.tiles_per_client[1])


class ClientParams:
    """One client's parameters (what the population stores for it)."""

    __slots__ = ("style", "method", "n_tiles", "diameter", "dispersion", "warp", "sub")

    def __init__(self, style, method, n_tiles, diameter, dispersion, warp, sub):
        self.style, self.method, self.n_tiles = int(style), int(method), int(n_tiles)
        self.diameter, self.dispersion, self.warp = diameter, dispersion, warp  # float32 [2] each
        self.sub = sub  # float32 [max_keys, 2]: sub-range as fractions of the style's range, per key

    def style_ranges(self, spec: PopulationSpec) -> dict[str, tuple[float, float]]:
        """The client's imaging-parameter ranges: sub-ranges of its base style's ``STYLE_RANGES``."""
        full = styles.STYLE_RANGES[spec.styles[self.style]]
        return {
            key: (lo + (hi - lo) * float(self.sub[j, 0]), lo + (hi - lo) * float(self.sub[j, 1]))
            for j, (key, (lo, hi)) in enumerate(full.items())
        }


def client_params(spec: PopulationSpec, client: int) -> ClientParams:
    """Client ``client``'s parameters: a function of ``(spec's prior, spec.seed, client)`` only."""
    rng = np.random.default_rng([spec.seed, PARAM_TAG, int(client)])
    style = rng.integers(len(spec.styles))
    method = rng.integers(len(spec.methods))
    n_tiles = rng.integers(spec.tiles_per_client[0], spec.tiles_per_client[1] + 1)
    d_lo = np.exp(rng.uniform(np.log(spec.diameter_px[0]), np.log(spec.diameter_px[1])))
    d_hi = d_lo * rng.uniform(*spec.diameter_spread)
    disp_lo = rng.uniform(*spec.dispersion)
    disp = (disp_lo, disp_lo + rng.uniform(0.0, 0.5) * (spec.dispersion[1] - disp_lo))
    if spec.methods[method] == "voronoi":  # Voronoi has no seed weights
        disp = (0.0, 0.0)
    w_lo = rng.uniform(*spec.warp)
    warp = (w_lo, w_lo + rng.uniform(0.0, 0.5) * (spec.warp[1] - w_lo))
    width = rng.uniform(*spec.sub_range, size=spec.max_keys)
    start = rng.uniform(size=spec.max_keys) * (1.0 - width)
    sub = np.stack([start, start + width], axis=1).astype(np.float32)
    f32 = lambda pair: np.asarray(pair, np.float32)  # noqa: E731
    return ClientParams(style, method, n_tiles, f32((d_lo, d_hi)), f32(disp), f32(warp), sub)


def render_tiles(spec: PopulationSpec, client: int, params: ClientParams | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Client ``client``'s labelled tiles: images uint8 ``[n, S, S, 3]`` (8-bit, as a microscope stores them),
    labels uint8 ``[n, S, S]`` (exactly ``boundary_map`` of the final grain map). Tile ``t`` depends only on
    ``(spec, client, t)``: the same pipeline as ``synthetic.make_lab_examples`` (grain parameters, grain map,
    instrument distortion, labels, render), with the client's ranges instead of a lab's."""
    p = client_params(spec, client) if params is None else params
    rngs = [np.random.default_rng([spec.seed, TILE_TAG, int(client), t]) for t in range(p.n_tiles)]
    return _render(spec, p, rngs, int(spec.tile_size))


def render_split(
    spec: PopulationSpec, client: int, split: str, n: int, size: int, params: ClientParams | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images of ``size`` px of client ``client`` for a named split (train/val/test/test_whole of a
    client used as a lab, data/prior_labs.py), as ``render_tiles`` renders them: image ``i`` depends only on
    ``(spec.seed, client, split, i)``, so the splits are disjoint by seed and asking for more images never
    changes earlier ones. ``n`` overrides the client's own tile count (``params.n_tiles``)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if size < 8:
        raise ValueError(f"size must be >= 8 px, got {size}")
    p = client_params(spec, client) if params is None else params
    tag = zlib.crc32(split.encode())  # by name, as seeds.lab_seed keys a synthetic lab's splits
    rngs = [np.random.default_rng([spec.seed, TILE_TAG, int(client), tag, i]) for i in range(n)]
    return _render(spec, p, rngs, int(size))


def _render(spec: PopulationSpec, p: ClientParams, rngs: list, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One image per generator in ``rngs``, every draw of an image from its own generator, in this order."""
    style, method = spec.styles[p.style], spec.methods[p.method]
    ranges = p.style_ranges(spec)
    images = np.zeros((len(rngs), size, size, 3), np.uint8)
    labels = np.zeros((len(rngs), size, size), np.uint8)
    cap = size / synthetic.MIN_GRAINS_ACROSS
    for t, rng in enumerate(rngs):
        d = min(float(np.exp(rng.uniform(np.log(p.diameter[0]), np.log(p.diameter[1])))), cap)
        disp = float(rng.uniform(p.dispersion[0], p.dispersion[1]))
        warp = float(rng.uniform(p.warp[0], p.warp[1]))
        grains = generate_microstructure(
            rng, size, method=method, mean_grain_diameter_px=d, dispersion=disp, warp=warp
        )
        sp = styles.sample_style_params(style, rng, ranges)
        grains = styles.distort_grains(style, rng, grains, sp)
        labels[t] = boundary_map(grains, spec.boundary_width)
        img = styles.render(style, rng, grains, sp)
        images[t] = np.rint(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
    return images, labels


class Population:
    """``spec.num_clients`` clients; stores their parameters only (struct-of-arrays), renders tiles on demand.

        pop = Population(PopulationSpec(num_clients=100_000, seed=0))
        images, labels = pop.tiles(42)          # client 42's tiles (uint8), rendered now
        batch = pop.client_data([3, 17, 99])    # ClientData [3, max_tiles, ...] + mask: a round's data
    """

    def __init__(self, spec: PopulationSpec):
        self.spec = spec
        n, k = spec.num_clients, spec.max_keys
        self.style = np.zeros(n, np.uint8)
        self.method = np.zeros(n, np.uint8)
        self.n_tiles = np.zeros(n, np.uint8)
        self.ranges = np.zeros((n, 3, 2), np.float32)  # diameter, dispersion, warp
        self.sub = np.zeros((n, k, 2), np.float32)
        for c in range(n):
            p = client_params(spec, c)
            self.style[c], self.method[c], self.n_tiles[c] = p.style, p.method, p.n_tiles
            self.ranges[c] = (p.diameter, p.dispersion, p.warp)
            self.sub[c] = p.sub

    def __len__(self) -> int:
        return self.spec.num_clients

    @property
    def nbytes(self) -> int:
        """Bytes of stored per-client parameters."""
        return sum(a.nbytes for a in (self.style, self.method, self.n_tiles, self.ranges, self.sub))

    def params(self, client: int) -> ClientParams:
        """Stored parameters of a member, computed afresh (``client_params``) for an id outside the population
        (held-out clients of the same prior)."""
        c = int(client)
        if not 0 <= c < len(self):
            return client_params(self.spec, c)
        r = self.ranges[c]
        return ClientParams(self.style[c], self.method[c], self.n_tiles[c], r[0], r[1], r[2], self.sub[c])

    def describe(self, client: int) -> dict:
        p = self.params(client)
        return {
            "client": int(client),
            "style": self.spec.styles[p.style],
            "method": self.spec.methods[p.method],
            "tiles": p.n_tiles,
            "diameter_px": [float(x) for x in p.diameter],
            "dispersion": [float(x) for x in p.dispersion],
            "warp": [float(x) for x in p.warp],
            "style_ranges": p.style_ranges(self.spec),
        }

    def tiles(self, client: int) -> tuple[np.ndarray, np.ndarray]:
        return render_tiles(self.spec, client, self.params(client))

    def client_data(self, clients, executor=None) -> ClientData:
        """The tiles of ``clients`` as ``ClientData`` ``[len(clients), max_tiles, S, S, ...]`` (uint8 images,
        zero-padded, ``mask`` marking real tiles): always the same shapes, so a round compiles once.

        ``executor`` (e.g. a spawn-context ``ProcessPoolExecutor``) renders the clients in parallel with the
        pure ``render_tiles(spec, client)``: the same tiles, since each depends only on (seed, client)."""
        ids = [int(c) for c in clients]
        if executor is None:
            parts = [self.tiles(c) for c in ids]
        else:
            chunk = max(1, len(ids) // (4 * max(1, getattr(executor, "_max_workers", 1))))
            parts = list(executor.map(render_tiles, [self.spec] * len(ids), ids, chunksize=chunk))
        return stack_tiles(self.spec, parts)

    def held_out(self, count: int, *, first: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Tiles of ``count`` clients the population never samples (ids ``num_clients ..``, or from ``first``),
        concatenated: a test set of new clients from the same prior."""
        start = len(self) if first is None else int(first)
        if start < len(self):
            raise ValueError(f"held-out clients must have ids >= num_clients={len(self)}, got {start}")
        parts = [self.tiles(c) for c in range(start, start + int(count))]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def stack_tiles(spec: PopulationSpec, parts) -> ClientData:
    """``[(images, labels) per client]`` -> zero-padded ``ClientData`` with ``spec.max_tiles`` slots."""
    s, m = spec.tile_size, spec.max_tiles
    images = np.zeros((len(parts), m, s, s, 3), np.uint8)
    labels = np.zeros((len(parts), m, s, s), np.uint8)
    mask = np.zeros((len(parts), m), bool)
    for i, (im, lb) in enumerate(parts):
        images[i, : len(im)], labels[i, : len(lb)], mask[i, : len(im)] = im, lb, True
    return ClientData(images, labels, mask)


PARAM_BYTES = 3 + 3 * 2 * 4 + max(len(r) for r in styles.STYLE_RANGES.values()) * 2 * 4  # at import time


def measure(num_clients: int, *, seed: int = 0, sample_clients: int = 50, **spec_kw) -> dict:
    """Memory and speed of a population: stored bytes (total and per client), the process's peak RSS growth
    while building it, the build rate (clients/s of parameters) and the tile rendering rate (clients/s and
    tiles/s over ``sample_clients`` clients)."""
    import resource  # noqa: PLC0415 (Unix only; measuring, not training)

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    pop = Population(PopulationSpec(num_clients=num_clients, seed=seed, **spec_kw))
    build_s = time.perf_counter() - t0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    tiles = 0
    for c in range(min(sample_clients, num_clients)):
        tiles += len(pop.tiles(c)[0])
    render_s = time.perf_counter() - t0
    n_render = min(sample_clients, num_clients)
    return {
        "num_clients": num_clients,
        "tile_size": pop.spec.tile_size,
        "stored_bytes": pop.nbytes,
        "bytes_per_client": pop.nbytes / num_clients,
        "peak_rss_growth_bytes": max(0, rss1 - rss0),
        "build_s": build_s,
        "build_clients_per_s": num_clients / build_s,
        "render_clients_per_s": n_render / render_s,
        "render_tiles_per_s": tiles / render_s,
    }
