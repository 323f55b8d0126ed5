"""Large-image tiling in predict: output size equals input size, and boundaries stay whole across seams.

The model is a fake with the ``inference.LoadedModel`` interface whose ``predict_prob`` *is* the real
``LoadedModel.predict_prob`` (tiling, flips, stitching); only ``tile_probs`` is replaced by a cheap
per-tile function, so no training is needed. One test builds a real tiny ``LoadedModel`` with random
parameters to cover the real ``tile_probs`` batching too.
"""

from __future__ import annotations

import json
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from fedtransfer_jax.runs import inference
from fedtransfer_jax import models, predict
from fedtransfer_jax.data import tiling


class FakeModel:
  """``LoadedModel`` stand-in: boundary probability = (1 - brightness) x an optional tile-edge falloff.

  ``edge_px`` > 0 scales the probability within ``edge_px`` of every tile border by ``edge_gain``,
  imitating a real network whose receptive field is truncated at tile edges: without overlap, a line
  lying on a seam would then drop below threshold there.
  """

  predict_prob = inference.LoadedModel.predict_prob  # The real tiling/stitching logic under test.

  def __init__(self, tile: int, edge_px: int = 0, edge_gain: float = 0.2, threshold: float = 0.5):
    self.tile = tile
    self.tag = "fake"
    self.config = ml_collections.ConfigDict({"eval": {"threshold": threshold}})
    ramp = np.ones((tile, tile), np.float32)
    if edge_px:
      ramp[:edge_px] = ramp[-edge_px:] = edge_gain
      ramp[:, :edge_px] = ramp[:, -edge_px:] = edge_gain
    self.ramp = ramp
    self.tiles_seen = 0

  def tile_probs(self, tiles: np.ndarray, batch: int = 16) -> np.ndarray:
    assert tiles.shape[1:] == (self.tile, self.tile, 3), tiles.shape
    self.tiles_seen += len(tiles)
    return (1.0 - tiles.mean(axis=-1)) * self.ramp


def _line_image(h: int, w: int, pts: list[tuple[float, float]], width: float = 2.5) -> tuple[np.ndarray, np.ndarray]:
  """White image with a dark polyline through ``pts`` (y, x); returns (image [H,W,3], line mask)."""
  yy, xx = np.mgrid[:h, :w].astype(np.float64)
  mask = np.zeros((h, w), bool)
  for (y0, x0), (y1, x1) in zip(pts[:-1], pts[1:]):
    d = np.array([y1 - y0, x1 - x0])
    t = np.clip(((yy - y0) * d[0] + (xx - x0) * d[1]) / (d @ d), 0.0, 1.0)
    mask |= np.hypot(yy - (y0 + t * d[0]), xx - (x0 + t * d[1])) <= width / 2
  image = np.where(mask[..., None], 0.05, 0.95).astype(np.float32)
  return np.repeat(image, 3, axis=-1), mask


@pytest.mark.parametrize("hw", [(1601, 2563), (1600, 2560), (65, 2500)])
def test_predict_prob_keeps_input_size_and_values(hw: tuple[int, int]) -> None:
  h, w = hw
  rng = np.random.default_rng([0, h, w])
  image = rng.random((h, w, 3), dtype=np.float32)
  model = FakeModel(tile=64)
  prob = model.predict_prob(image)
  chex.assert_shape(prob, (h, w))
  # A per-pixel fake makes every tile agree on every pixel, so any stitching weight must return the
  # independent per-pixel reference exactly (a misplaced tile would break this).
  np.testing.assert_allclose(prob, 1.0 - image.mean(axis=-1), atol=1e-5)
  n_tiles = len(tiling.tile_positions(h, w, 64, 16))
  assert model.tiles_seen == n_tiles


def test_predict_folder_writes_input_sized_maps(tmp_path: Path) -> None:
  h, w = 1601, 2563
  image, line = _line_image(h, w, [(40, 30), (1500, 2500)], width=3.0)
  src = tmp_path / "in"
  src.mkdir()
  Image.fromarray((image * 255).astype(np.uint8)).save(src / "big.png")
  manifest = predict.predict_folder(FakeModel(tile=64), str(src), str(tmp_path / "out"), close_radius=0,
                                 min_fragment_px=0)
  with Image.open(tmp_path / "out" / "big.png") as im:
    out = np.asarray(im)
  chex.assert_shape(out, (h, w))
  assert manifest["images"]["big"]["height"] == h and manifest["images"]["big"]["width"] == w
  np.testing.assert_array_equal(out > 127, line)  # Per-pixel fake: the map is exactly the drawn line.
  assert json.loads((tmp_path / "out" / "grain_sizes.json").read_text())["images"]["big"]["width"] == w


def _components_and_gaps(boundary: np.ndarray, line: np.ndarray) -> tuple[int, int]:
  """(8-connected boundary components touching the line, line pixels missed by the boundary map)."""
  labels, _ = ndimage.label(boundary, structure=np.ones((3, 3)))
  touching = np.unique(labels[line & boundary])
  return int((touching > 0).sum()), int((line & ~boundary).sum())


def test_line_across_seams_stays_one_component() -> None:
  tile, overlap = 64, 16
  h, w = 300, 420
  # Seams of the overlap-0 grid lie at multiples of 64; the horizontal run sits exactly on the seam
  # y = 128 (rows 127-128), the diagonal crosses many vertical and horizontal seams.
  image, line = _line_image(h, w, [(127.5, 20), (127.5, 200), (280, 400)], width=2.0)
  model = FakeModel(tile=tile, edge_px=6, edge_gain=0.2)

  stitched = model.predict_prob(image, overlap=overlap) > 0.5
  n_comp, missed = _components_and_gaps(stitched, line)
  assert n_comp == 1 and missed == 0
  seg = predict.segment(model, image, overlap=overlap, close_radius=0, min_fragment_px=0)
  assert _components_and_gaps(seg, line) == (1, 0)
  # Control: without overlap the weak tile edges do cut the line at the seams (the test can fail).
  n_comp0, missed0 = _components_and_gaps(model.predict_prob(image, overlap=0) > 0.5, line)
  assert missed0 > 0 and n_comp0 > 1
  # Flip test-time augmentation goes through the same stitching and keeps the line whole.
  assert _components_and_gaps(model.predict_prob(image, overlap=overlap, flips=True) > 0.5, line) == (1, 0)


def test_real_loaded_model_random_params_any_size() -> None:
  """A real tiny U-Net (random params) through LoadedModel: batching pads the last chunk, sizes match."""
  config = ml_collections.ConfigDict({
      "data": {"tile_size": 32},
      "model": {"name": "unet", "features": (8, 16), "groups": 4, "conv_impl": "", "dtype": "float32",
                "remat": False},
      "eval": {"threshold": 0.5},
  })
  model_def = models.build_model(config.model)
  # Random params from the shapes alone: tracing only (compiling model.init costs ~25 s on a busy CPU).
  shapes = jax.eval_shape(model_def.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))["params"]
  rng = np.random.default_rng([2])
  params = jax.tree_util.tree_map(lambda s: jnp.asarray(rng.normal(0, 0.2, s.shape), s.dtype), shapes)
  model = inference.LoadedModel(config, params, "random")
  image = np.random.default_rng([1]).random((70, 101, 3), dtype=np.float32)
  prob = model.predict_prob(image)
  chex.assert_shape(prob, (70, 101))
  assert np.all((prob >= 0) & (prob <= 1))
  # A single tile fully inside the image must match a direct application of the network there.
  tiles, positions = tiling.extract_tiles(image, 32, 8)
  logits = jax.jit(model_def.apply)({"params": params}, jnp.asarray(tiles[:3]))
  direct = np.asarray(jax.nn.softmax(logits, -1)[..., 1])
  chex.assert_trees_all_close(model.tile_probs(tiles)[:3], direct, atol=1e-5)
  chex.assert_shape(predict.segment(model, image), (70, 101))


@pytest.mark.parametrize("flips", [False, True])
def test_tile_progress_counts_every_tile_and_changes_nothing(flips: bool) -> None:
  """predict's bar follows a large image tile by tile: the callback sees counts that rise to the total (four
  views with flips), and the probabilities are those of a run without it."""
  model = FakeModel(tile=32)
  image, _ = _line_image(300, 700, [(10.0, 10.0), (290.0, 690.0)])
  plain = model.predict_prob(image, flips=flips)
  seen: list[tuple[int, int]] = []
  with inference.tile_progress(lambda done, total: seen.append((done, total))):
    followed = model.predict_prob(image, flips=flips)
  np.testing.assert_array_equal(followed, plain)
  n_tiles = len(tiling.extract_tiles(image, 32, 8)[0]) * (4 if flips else 1)
  assert len(seen) > 2 and seen[-1] == (n_tiles, n_tiles)
  assert all(b[0] > a[0] for a, b in zip(seen, seen[1:])) and {t for _, t in seen} == {n_tiles}
  n_reports = len(seen)
  model.predict_prob(image, flips=flips)  # outside the block: nothing reported
  assert len(seen) == n_reports
