"""Real data next to synthetic labs: the 'mixed' source, the real_plus_synthetic config, sim_to_real."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import chex
import ml_collections
import numpy as np
import pytest
from PIL import Image

from fedtransfer_jax.data import folder, load_federated_data
from fedtransfer_jax.data.clients import builder_configs_from

REPO = Path(__file__).resolve().parents[1]
TBM_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "tbm_tint_etched"
sys.path.insert(0, str(REPO))
from experiments import real_plus_synthetic  # noqa: E402
from scripts import sim_to_real  # noqa: E402


def _tiles(x: np.ndarray, t: int) -> np.ndarray:
  """[N, H, W, ...] -> [N * (H/t) * (W/t), t, t, ...] row-major by reshape (independent of tiling.py)."""
  n, h, w = x.shape[:3]
  x = x.reshape((n, h // t, t, w // t, t) + x.shape[3:])
  x = np.moveaxis(x, 2, 3)
  return x.reshape((-1, t, t) + x.shape[5:])


@pytest.fixture()
def real_folder(tmp_path: Path) -> tuple[Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
  """DIR/lab_real/{images,labels}: 4 micrographs (2 crops each) of 32x32, RGB uint8, labels 255 = boundary."""
  root = tmp_path / "real"
  (root / "lab_real" / "images").mkdir(parents=True)
  (root / "lab_real" / "labels").mkdir(parents=True)
  rng = np.random.default_rng([7])
  files = {}
  for g in range(4):
    for c in range(2):
      stem = f"crop_{g}-{c}"
      img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
      lbl = (rng.random((32, 32)) < 0.2).astype(np.uint8)
      Image.fromarray(img).save(root / "lab_real" / "images" / f"{stem}.png")
      Image.fromarray(lbl * 255).save(root / "lab_real" / "labels" / f"{stem}.png")
      files[stem] = (img, lbl)
  return root, files


def _mixed_cfg(root: Path, tfds: Path, **overrides) -> ml_collections.ConfigDict:
  cfg = dict(source="mixed", dir=str(root), clients=("lab_real", "brightfield"), unseen_clients=("darkfield",),
             image_size=32, tile_size=16, tile_overlap=0, train_per_client=2, test_per_client=1,
             test_fraction=0.25, group_regex=r"_(\d+)-", seed=3, boundary_width=2, tfds_dir=str(tfds))
  cfg.update(overrides)
  return ml_collections.ConfigDict(cfg)


def test_mixed_source_merges_real_and_synthetic(real_folder, tmp_path: Path) -> None:
  root, files = real_folder
  cfg = _mixed_cfg(root, tmp_path / "tfds")
  fd = load_federated_data(cfg, tmp_path / "work")
  assert fd.client_names == ("lab_real", "brightfield") and set(fd.unseen) == {"darkfield"}
  # Real client: the group split of folder.py, each 32x32 crop cut into 4 tiles of 16.
  train_pairs, test_pairs = folder.split_by_group(folder.list_pairs(root / "lab_real"), 0.25, 3, r"_(\d+)-")
  stems = lambda pairs: [p[0].stem for p in pairs]  # noqa: E731
  want_im = _tiles(np.stack([files[s][0] for s in stems(train_pairs)]), 16).astype(np.float32) / 255
  want_lb = _tiles(np.stack([files[s][1] for s in stems(train_pairs)]), 16)
  n_real, n_syn = len(want_im), 2 * 4
  assert n_real == 6 * 4  # 3 of 4 micrographs train, 2 crops each.
  chex.assert_shape(fd.train.images, (2, n_real, 16, 16, 3))
  np.testing.assert_array_equal(fd.train.num_examples, [n_real, n_syn])
  np.testing.assert_array_equal(fd.train.mask[1], np.arange(n_real) < n_syn)  # Synthetic client padded.
  chex.assert_trees_all_close(fd.train.images[0], want_im, atol=1e-6)
  np.testing.assert_array_equal(fd.train.labels[0], want_lb)
  np.testing.assert_array_equal(fd.test["lab_real"][1], _tiles(np.stack([files[s][1] for s in stems(test_pairs)]), 16))
  assert not fd.train.images[1, n_syn:].any() and not fd.train.labels[1, n_syn:].any()
  # Synthetic clients are exactly what the 'synthetic' source yields for the same parameters.
  syn = load_federated_data(_mixed_cfg(root, tmp_path / "tfds", source="synthetic", clients=("brightfield",)),
                            tmp_path / "work")
  np.testing.assert_array_equal(fd.train.images[1, :n_syn], syn.train.images[0])
  np.testing.assert_array_equal(fd.unseen["darkfield"][1], syn.unseen["darkfield"][1])
  assert set(np.unique(fd.train.labels[1, :n_syn])) == {0, 1}


def test_mixed_source_errors_and_builders(real_folder, tmp_path: Path) -> None:
  root, _ = real_folder
  with pytest.raises(ValueError, match=r"\['confocal', 'lab_x'\].*\['lab_real'\].*brightfield"):
    load_federated_data(_mixed_cfg(root, tmp_path, clients=("lab_real", "confocal"), unseen_clients=("lab_x",)),
                        tmp_path)
  with pytest.raises(ValueError, match="cfg.dir is empty"):
    load_federated_data(_mixed_cfg(root, tmp_path, dir=""), tmp_path)
  with pytest.raises(ValueError, match="cfg.clients is empty"):
    load_federated_data(_mixed_cfg(root, tmp_path, clients=()), tmp_path)
  with pytest.raises(ValueError, match="expected 'synthetic', 'folder', 'mixed' or 'prior_labs'"):
    load_federated_data(_mixed_cfg(root, tmp_path, source="mix"), tmp_path)
  # A client folder named like a synthetic lab would be ambiguous.
  (root / "sem" / "images").mkdir(parents=True)
  with pytest.raises(ValueError, match=r"\['sem'\].*both client folders"):
    builder_configs_from(_mixed_cfg(root, tmp_path, clients=("lab_real", "sem")))
  # Only the builders that the listed clients need.
  kinds = [type(c).__name__ for c in builder_configs_from(_mixed_cfg(root, tmp_path, clients=("brightfield",),
                                                                      unseen_clients=()))]
  assert kinds == ["SyntheticConfig"]
  kinds = [type(c).__name__ for c in builder_configs_from(_mixed_cfg(root, tmp_path, clients=("lab_real",),
                                                                      unseen_clients=()))]
  assert kinds == ["FolderConfig"]


def test_real_plus_synthetic_config() -> None:
  cfg = real_plus_synthetic.get_config()
  assert Path(cfg.data.dir) == TBM_DIR.resolve()
  assert cfg.data.clients[0] == "tbm_tint_etched" and cfg.data.source == "mixed"
  assert "local" in cfg.methods and cfg.data.group_regex == r"_(\d+)-"
  with pytest.raises(ValueError, match="unknown variant"):
    real_plus_synthetic.get_config("huge")


def test_real_plus_synthetic_tiny_loads_real_data(tmp_path: Path) -> None:
  if not (TBM_DIR / "images").is_dir():
    pytest.skip(f"{TBM_DIR} not present")
  cfg = real_plus_synthetic.get_config("tiny")
  cfg.data.dir = str(TBM_DIR)
  fd = load_federated_data(cfg.data, tmp_path)
  assert fd.client_names == ("tbm_tint_etched", "brightfield")
  t = cfg.data.tile_size
  train, test = folder.split_by_group(folder.list_pairs(TBM_DIR), cfg.data.test_fraction, cfg.data.seed,
                                      cfg.data.group_regex)
  per_crop = (256 // t) ** 2
  assert len(train) + len(test) == 80
  if cfg.data.val_fraction:  # validation micrographs come out of the training side, by group too
    train, val = folder.split_by_group(train, cfg.data.val_fraction, cfg.data.seed, cfg.data.group_regex)
    chex.assert_shape(fd.val["tbm_tint_etched"][0], (len(val) * per_crop, t, t, 3))
  np.testing.assert_array_equal(fd.train.num_examples, [len(train) * per_crop, cfg.data.train_per_client])
  chex.assert_shape(fd.test["tbm_tint_etched"][0], (len(test) * per_crop, t, t, 3))
  # The first train tile is the top-left corner of the first train crop.
  image, label = folder.load_pair(*train[0])
  chex.assert_trees_all_close(fd.train.images[0, 0], image[:t, :t], atol=0.5 / 255 + 1e-6)
  np.testing.assert_array_equal(fd.train.labels[0, 0], label[:t, :t])
  assert 0.05 < fd.train.labels[0][np.asarray(fd.train.mask[0])].mean() < 0.4


def test_sim_to_real_aggregates_local_models(tmp_path: Path) -> None:
  """evaluate_workdir with a fake loader/evaluator: method order, local = mean over clients, JSON out."""
  for tag in ("fedavg", "local/a", "local/b", "centralized"):
    (tmp_path / "checkpoints" / tag).mkdir(parents=True)
  (tmp_path / "config.json").write_text(json.dumps({"methods": ["local", "fedavg", "fedprox", "centralized"]}))
  scores = {"fedavg": 0.5, "local/a": 0.2, "local/b": 0.4, "centralized": 0.9}

  def load(workdir, method, client=None):
    return method if client is None else f"{method}/{client}"

  def evaluate(tag, data_dir, invert_labels=False):
    s = scores[tag]
    return {
      "n_images": 80,
      "mean": {"boundary_f1": s, "ari": s / 2, "source": "ignored"},  # post-processed
      "mean_raw": {"boundary_f1": s - 0.1, "ari": s / 4},  # thresholded probabilities
    }

  res = sim_to_real.evaluate_workdir(str(tmp_path), "D", load=load, evaluate=evaluate)
  assert list(res["methods"]) == ["local", "fedavg", "centralized"] and res["n_images"] == 80
  np.testing.assert_allclose(res["methods"]["local"]["mean"]["boundary_f1"], 0.3)
  np.testing.assert_allclose(res["methods"]["local"]["mean"]["ari"], 0.15)
  np.testing.assert_allclose(res["methods"]["local"]["mean_raw"]["boundary_f1"], 0.2)
  np.testing.assert_allclose(res["methods"]["fedavg"]["mean_raw"]["ari"], 0.125)
  assert set(res["methods"]["local"]["per_client"]) == {"a", "b"}
  table = sim_to_real.format_table(res)  # the raw scores, as in the workdir summaries
  assert "| local | 0.200 | 0.075 | n/a |" in table and "| centralized | 0.800 |" in table
  with pytest.raises(FileNotFoundError, match="checkpoints"):
    sim_to_real.workdir_methods(str(tmp_path / "nope"))
  json.dumps(res)
