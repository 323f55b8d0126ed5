"""Labs drawn from the population prior (``population``) as the clients of an ordinary run: ``data.source =
'prior_labs'`` with ``data.prior_labs = L`` (docs/PROTOCOL.md v2, study d: 2, 4, 8, 16 labs drawn from the
style space at a fixed total number of labelled tiles; experiments/lab_count.py).

Prior lab ``i`` (named ``prior_<i>``, ``lab_names``) is client ``i`` of ``population.PopulationSpec(
num_clients=L, seed=data.seed)``: one of the seen labs' four base imaging styles with its own sub-range of
every imaging parameter, its own microstructure generator (Voronoi or Laguerre) and grain-size range
(``population.client_params``). Its parameters depend only on ``(data.seed, i)``, never on L, so with one data
seed the labs of a smaller study are the first labs of a larger one (L = 2's two labs are among L = 4's),
and its images of split ``s`` only on ``(data.seed, i, s, image index)`` (``population.render_split``), so
asking for fewer images keeps the first ones.

A prior lab's splits are made as a synthetic lab's are (``tfds_builders._synthetic_examples``): full images of
``data.image_size`` px cut into ``data.tile_size`` tiles, stored as 8 bits; the whole test images of the v2
endpoint are the split ``'test_whole'``. They are rendered here directly, not through the tfds cache: a
lab's tiles are a pure function of a few numbers, rendered in well under a second. The runs load this
source with ``load_federated_data`` / ``whole_test_images`` below, which hand the rendered labs to
``clients``' loaders (the unseen synthetic labs come from the tfds cache there, the same test images as with
source 'synthetic'). ``clients`` does not import this module: ``population`` imports ``clients``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from fedtransfer_jax.data import clients, population, synthetic, tiling
from fedtransfer_jax.data import intensity
from fedtransfer_jax.runtime.pixels import decode_uint8, encode_uint8

PREFIX = "prior_"


def lab_names(count: int) -> tuple[str, ...]:
    """``('prior_00', 'prior_01', ...)``: the names of ``count`` prior labs (zero-padded, so they sort)."""
    width = max(2, len(str(count - 1)))
    return tuple(f"{PREFIX}{i:0{width}d}" for i in range(count))


def population_spec(count: int, seed: int, boundary_width: int = 2) -> population.PopulationSpec:
    """The prior the labs are drawn from: the population's own defaults (its styles, microstructures and
    ranges), only the seed and the label width from the data config."""
    return population.PopulationSpec(num_clients=count, seed=int(seed), boundary_width=int(boundary_width))


def lab_index(name: str, count: int) -> int:
    names = lab_names(count)
    if name not in names:
        raise ValueError(f"unknown prior lab {name!r}; data.prior_labs={count} gives {names[0]} .. {names[-1]}")
    return names.index(name)


def describe(name: str, count: int, seed: int) -> dict:
    """What the lab is (``Population.describe``: base style, microstructure, grain-size and style ranges)."""
    spec = population_spec(count, seed)
    return {"name": name, **population.Population(spec).describe(lab_index(name, count))}


def lab_images(
    name: str, count: int, seed: int, split: str, n: int, size: int, *, boundary_width: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` full images of ``size`` px of prior lab ``name`` for ``split``: uint8 ``[n,S,S,3]``, labels uint8
    ``[n,S,S]`` (1 = boundary)."""
    spec = population_spec(count, seed, boundary_width)
    images, labels = population.render_split(spec, lab_index(name, count), split, int(n), int(size))
    return images, (labels > 0).astype(np.uint8)


def lab_tiles(
    name: str,
    count: int,
    seed: int,
    split: str,
    n: int,
    image_size: int,
    tile_size: int,
    *,
    boundary_width: int = 2,
    intensity_mode: str = intensity.RAW,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``tile_size`` tiles (no overlap) of ``n`` full images of ``image_size`` px, in image order: uint8
    images ``[T,t,t,3]`` and labels ``[T,t,t]``, as the synthetic builder stores a lab's split (each full
    image normalised by ``intensity_mode`` before it is tiled)."""
    images, labels = lab_images(name, count, seed, split, n, image_size, boundary_width=boundary_width)
    if intensity_mode != intensity.RAW and n:
        images = encode_uint8(intensity.normalise(decode_uint8(images), intensity_mode))
    if n == 0:
        return np.zeros((0, tile_size, tile_size, 3), np.uint8), np.zeros((0, tile_size, tile_size), np.uint8)
    img_t = [tiling.extract_tiles(im, tile_size, 0)[0] for im in images]
    lab_t = [tiling.extract_tiles(lb, tile_size, 0)[0] for lb in labels]
    return np.concatenate(img_t), np.concatenate(lab_t)


def lab_names_from(cfg: Any) -> tuple[str, ...]:
    """The prior labs of a data config (source 'prior_labs'), its fields checked.

    Raises:
      ValueError naming the key: another source, ``data.prior_labs`` not an integer >= 1, a split count out of
      range, or an option of the synthetic labs that the prior draws itself (grain sizes, label widths).
    """
    field = functools.partial(clients.data_field, cfg)
    if field("source") != "prior_labs":
        raise ValueError(f"data.source must be 'prior_labs' to draw labs from the prior, got {field('source')!r}")
    count = field("prior_labs")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"data.prior_labs must be an integer >= 1 for data.source='prior_labs', got {count!r}")
    for key in ("train_per_client", "val_per_client", "test_per_client"):
        low = 1 if key == "train_per_client" else 0
        if int(field(key)) < low:
            raise ValueError(f"data.{key} must be >= {low} for data.source='prior_labs', got {field(key)}")
    # Each prior lab draws its grain sizes from its own range: one override for all would undo the prior.
    for key in ("grain_diameter_px", "boundary_width_max"):
        if field(key):
            raise ValueError(f"data.{key} is not supported by data.source='prior_labs' (leave it at its default)")
    synthetic.check_scale_options(None, int(field("boundary_width")), 0)  # names data.boundary_width
    return lab_names(count)


def _split(cfg: Any, name: str, split: str) -> clients.Arrays:
    """A prior lab's train/val/test tiles (``data.<split>_per_client`` full images, tiled), decoded."""
    field = functools.partial(clients.data_field, cfg)
    images, labels = lab_tiles(
        name,
        int(field("prior_labs")),
        int(field("seed")),
        split,
        int(field(f"{split}_per_client")),
        int(field("image_size")),
        int(field("tile_size")),
        boundary_width=int(field("boundary_width")),
        intensity_mode=clients._intensity(cfg),
    )
    return clients._to_arrays({"image": images, "label": labels})


def _whole(cfg: Any, name: str, n: int, size: int) -> clients.Arrays:
    field = functools.partial(clients.data_field, cfg)
    count, seed, width = int(field("prior_labs")), int(field("seed")), int(field("boundary_width"))
    images, labels = lab_images(name, count, seed, clients.WHOLE_TEST_SPLIT, n, size, boundary_width=width)
    return clients._to_arrays({"image": images, "label": labels})


def load_federated_data(cfg: Any, workdir: str | Path) -> clients.FederatedData:
    """``clients.load_federated_data`` with the prior labs as the clients (``data.clients`` empty: all of
    them; else a subset of their names) and ``data.unseen_clients`` synthetic labs as the unseen ones."""
    names = lab_names_from(cfg)
    rendered = {n: functools.partial(_split, cfg, n) for n in names}
    return clients.load_federated_data(cfg, workdir, rendered=rendered)


def whole_test_images(cfg: Any, labs, n: int, size: int) -> tuple[dict[str, clients.Arrays], list[str]]:
    """``clients.whole_test_images`` with the prior labs' own whole test images (split 'test_whole')."""
    names = lab_names_from(cfg)
    rendered = {x: functools.partial(_whole, cfg, x) for x in names}
    return clients.whole_test_images(cfg, labs, n, size, rendered=rendered)
