"""Data pipeline: folder reader, tiling, tfds builder (array_record, no TensorFlow) and client padding."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import chex
import ml_collections
import numpy as np
import pytest
import tifffile
from PIL import Image

import fedtransfer_jax.data as data_pkg
from fedtransfer_jax.data import ClientData, load_federated_data, pad_clients, read_image, read_label
from fedtransfer_jax.data import folder, tiling

TBM_DIR = Path(__file__).parents[2] / "shared" / "data" / "tbm_tint_etched"


# ----------------------------------------------------------------------------------------------
# Fixtures.
# ----------------------------------------------------------------------------------------------


def _save_png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _make_client(root: Path, rgb: bool, stems: list[str], hw: tuple[int, int], seed: int) -> dict[str, tuple]:
    """Writes images/ + labels/ PNGs; returns stem -> (uint8 image, 0/1 label) as written."""
    rng = np.random.default_rng([seed])
    out = {}
    for stem in stems:
        shape = hw + (3,) if rgb else hw
        img = rng.integers(0, 256, size=shape, dtype=np.uint8)
        lab = (rng.random(hw) < 0.3).astype(np.uint8)
        _save_png(root / "images" / f"{stem}.png", img)
        _save_png(root / "labels" / f"{stem}.png", lab * 255)
        out[stem] = (img, lab)
    return out


@pytest.fixture
def two_clients(tmp_path: Path) -> tuple[Path, dict]:
    """'Lab A' (grey PNG, 20x27) and 'lab-b' (RGB PNG, 18x18): 3 full-image groups each."""
    root = tmp_path / "micrographs"
    stems = ["img_1-0", "img_1-1", "img_2-0", "img_3-0"]
    truth = {
        "Lab A": _make_client(root / "Lab A", rgb=False, stems=stems, hw=(20, 27), seed=1),
        "lab-b": _make_client(root / "lab-b", rgb=True, stems=stems[1:], hw=(18, 18), seed=2),
    }
    (root / "docs").mkdir()  # A non-client folder must be ignored.
    return root, truth


def _tiles_by_reshape(x: np.ndarray, t: int) -> np.ndarray:
    """Independent reference for non-overlapping tiling of [N, S, S, ...] with S % t == 0 (row-major)."""
    n, s = x.shape[:2]
    k = s // t
    y = x.reshape((n, k, t, k, t) + x.shape[3:])
    y = np.moveaxis(y, 3, 2)  # [n, ky, kx, t, t, ...]
    return y.reshape((n * k * k, t, t) + x.shape[3:])


# ----------------------------------------------------------------------------------------------
# Readers.
# ----------------------------------------------------------------------------------------------


def test_read_image_png_grey_rgb_rgba(tmp_path: Path) -> None:
    rng = np.random.default_rng([0])
    grey = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    rgba = rng.integers(0, 256, (5, 7, 4), dtype=np.uint8)
    _save_png(tmp_path / "g.png", grey)
    _save_png(tmp_path / "c.png", rgba)
    g, c = read_image(tmp_path / "g.png"), read_image(tmp_path / "c.png")
    chex.assert_shape([g, c], (5, 7, 3))
    assert g.dtype == np.float32 and c.dtype == np.float32
    for ch in range(3):
        chex.assert_trees_all_close(g[..., ch], grey / np.float32(255), atol=1e-7)
    chex.assert_trees_all_close(c, rgba[..., :3] / np.float32(255), atol=1e-7)


def test_read_image_16bit_tiff(tmp_path: Path) -> None:
    arr = np.array([[0, 1000, 65535], [32768, 7, 40000]], np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", arr)
    rgb16 = np.stack([arr, arr[::-1], 65535 - arr], -1)
    tifffile.imwrite(tmp_path / "b.tiff", rgb16, photometric="rgb")
    a, b = read_image(tmp_path / "a.tif"), read_image(tmp_path / "b.tiff")
    chex.assert_shape([a, b], (2, 3, 3))
    chex.assert_trees_all_close(a, np.repeat(arr[..., None] / 65535.0, 3, -1).astype(np.float32), atol=1e-7)
    chex.assert_trees_all_close(b, (rgb16 / 65535.0).astype(np.float32), atol=1e-7)
    assert a.max() == 1.0 and a.min() == 0.0


def test_read_label_threshold_rgb_and_invert(tmp_path: Path) -> None:
    raw = np.array([[0, 100, 127], [128, 200, 255]], np.uint8)
    _save_png(tmp_path / "l.png", raw)
    expected = np.array([[0, 0, 0], [1, 1, 1]], np.uint8)
    got = read_label(tmp_path / "l.png")
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(read_label(tmp_path / "l.png", invert=True), 1 - expected)
    # RGB label drawn in red only: any channel counts.
    red = np.zeros((2, 3, 3), np.uint8)
    red[0, 1, 0] = 255
    _save_png(tmp_path / "r.png", red)
    np.testing.assert_array_equal(read_label(tmp_path / "r.png"), [[0, 1, 0], [0, 0, 0]])
    # 16-bit TIFF label: threshold at half range.
    tifffile.imwrite(tmp_path / "t.tif", np.array([[0, 30000, 40000]], np.uint16))
    np.testing.assert_array_equal(read_label(tmp_path / "t.tif"), [[0, 0, 1]])


def test_corrupt_image_names_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ValueError, match="broken.png"):
        read_image(bad)
    bad_tif = tmp_path / "broken.tif"
    bad_tif.write_bytes(b"II*\x00garbage")
    with pytest.raises(ValueError, match="broken.tif"):
        read_image(bad_tif)


def test_missing_label_and_empty_client(tmp_path: Path) -> None:
    client = tmp_path / "c1"
    _make_client(client, rgb=True, stems=["a", "b"], hw=(4, 4), seed=0)
    (client / "labels" / "b.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"b\.png.*labels/b\.png"):
        folder.list_pairs(client)
    empty = tmp_path / "c2"
    (empty / "images").mkdir(parents=True)
    (empty / "labels").mkdir()
    with pytest.raises(ValueError, match="c2"):
        folder.list_pairs(empty)


def test_size_mismatch_names_both_files(tmp_path: Path) -> None:
    client = tmp_path / "c"
    _save_png(client / "images" / "x.png", np.zeros((6, 8), np.uint8))
    _save_png(client / "labels" / "x.tif", np.zeros((6, 7), np.uint8))
    [(img, lab)] = folder.list_pairs(client)
    assert lab.name == "x.tif"
    with pytest.raises(ValueError, match=r"x\.png is 6x8.*x\.tif is 6x7"):
        folder.load_pair(img, lab)


def test_discover_clients_layouts(two_clients: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = two_clients
    assert list(folder.discover_clients(root)) == ["Lab A", "lab-b"]
    assert list(folder.discover_clients(root / "lab-b")) == ["lab-b"]  # Single-client layout.
    with pytest.raises(ValueError, match="no clients"):
        folder.discover_clients(tmp_path / "micrographs" / "docs")


# ----------------------------------------------------------------------------------------------
# Splitting.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("fraction", [0.01, 0.3, 0.99])
def test_split_by_group_never_splits_a_group(seed: int, fraction: float) -> None:
    rng = np.random.default_rng([seed, 99])
    names = [f"TrainDataset_{g}-{y}-0.png" for g in range(1, 8) for y in range(int(rng.integers(1, 4)))]
    names += [f"TestDataset_{g}-512-0.png" for g in (2, 5)]
    train, test = folder.split_by_group(names, fraction, seed, r"_(\d+)-")
    gid = lambda n: n.split("_")[1].split("-")[0]  # noqa: E731  (independent group parser)
    assert {gid(n) for n in train}.isdisjoint({gid(n) for n in test})
    assert len(train) >= 1 and len(test) >= 1
    assert sorted(train + test) == sorted(names)
    expected_test_groups = int(np.clip(round(fraction * 7), 1, 6))
    assert len({gid(n) for n in test}) == expected_test_groups
    assert folder.split_by_group(names, fraction, seed, r"_(\d+)-") == (train, test)  # Deterministic.


def test_split_by_group_default_regex_and_errors() -> None:
    names = ["a.png", "b.png", "c.png", "d.png"]
    train, test = folder.split_by_group(names, 0.5, 0)
    assert len(train) == 2 and len(test) == 2
    with pytest.raises(ValueError, match="at least 2 groups"):
        folder.split_by_group(["x_1-0.png", "x_1-1.png"], 0.5, 0, r"_(\d+)-")
    with pytest.raises(ValueError, match="nomatch.png"):
        folder.split_by_group(["x_1-0.png", "nomatch.png"], 0.5, 0, r"_(\d+)-")


# ----------------------------------------------------------------------------------------------
# Padding.
# ----------------------------------------------------------------------------------------------


def test_pad_clients_masks_and_counts() -> None:
    rng = np.random.default_rng([3])
    a = (rng.random((3, 4, 4, 3), np.float32), rng.integers(0, 2, (3, 4, 4), np.uint8))
    b = (rng.random((1, 4, 4, 3), np.float32), rng.integers(0, 2, (1, 4, 4), np.uint8))
    cd = pad_clients([a, b], pad_to=5)
    assert isinstance(cd, ClientData)
    chex.assert_shape(cd.images, (2, 5, 4, 4, 3))
    chex.assert_shape(cd.labels, (2, 5, 4, 4))
    np.testing.assert_array_equal(cd.mask, [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    np.testing.assert_array_equal(cd.num_examples, [3, 1])
    assert cd.num_examples.dtype == np.int32
    chex.assert_trees_all_close(cd.images[0, :3], a[0])
    chex.assert_trees_all_close(cd.images[1, :1], b[0])
    assert not cd.images[1, 1:].any() and not cd.labels[0, 3:].any()
    assert pad_clients([a, b]).mask.shape == (2, 3)  # Default: the largest client.
    empty = (np.zeros((0, 4, 4, 3), np.float32), np.zeros((0, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="client 1 .'ghost'. has no examples"):
        pad_clients([a, empty], names=["real", "ghost"])
    with pytest.raises(ValueError, match="pad_to=2"):
        pad_clients([a, b], pad_to=2)


# ----------------------------------------------------------------------------------------------
# Tiling.
# ----------------------------------------------------------------------------------------------


def test_tile_positions_hand_computed() -> None:
    # stride 12: y starts 0, 12 then flush 21; x starts 0, 12, 24 then flush 34.
    expected = [(y, x) for y in (0, 12, 21) for x in (0, 12, 24, 34)]
    assert tiling.tile_positions(37, 50, 16, 4) == expected
    assert tiling.tile_positions(32, 32, 16, 0) == [(0, 0), (0, 16), (16, 0), (16, 16)]
    assert tiling.tile_positions(5, 40, 16, 0) == [(0, 0), (0, 16), (0, 24)]


@pytest.mark.parametrize("hw,tile,overlap", [((37, 50), 16, 4), ((17, 17), 8, 3), ((5, 7), 8, 2), ((33, 9), 16, 0)])
def test_tiling_round_trip(hw: tuple[int, int], tile: int, overlap: int) -> None:
    rng = np.random.default_rng([hw[0], hw[1]])
    x = rng.random(hw + (3,), np.float32)
    tiles, pos = tiling.extract_tiles(x, tile, overlap)
    chex.assert_shape(tiles, (len(pos), tile, tile, 3))
    y = tiling.stitch(tiles, pos, hw, tile, blend="mean")
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_array_equal(y, x)  # Exact.
    chex.assert_trees_all_close(tiling.stitch(tiles, pos, hw, tile, blend="hann"), x, atol=1e-6)
    # 2-D (label) arrays tile the same way.
    lt, lpos = tiling.extract_tiles(x[..., 0], tile, overlap)
    assert lpos == pos
    np.testing.assert_array_equal(lt, tiles[..., 0])


def test_stitch_hann_weights_against_hand_computation() -> None:
    # Two 4-wide tiles overlapping by 2 on a 1x6 strip (tile 4 needs height >= 4, so use 4 rows).
    tile, overlap = 4, 2
    pos = tiling.tile_positions(4, 6, tile, overlap)
    assert pos == [(0, 0), (0, 2)]
    tiles = np.stack([np.full((4, 4), 1.0, np.float32), np.full((4, 4), 3.0, np.float32)])
    out = tiling.stitch(tiles, pos, (4, 6), tile, blend="hann")
    w = np.hanning(6)[1:-1]  # Interior of a 6-point Hann window: 1-D weights of one tile.
    overlap_cols = (w[2:] * 1.0 + w[:2] * 3.0) / (w[2:] + w[:2])
    np.testing.assert_allclose(out[0], [1.0, 1.0, *overlap_cols, 3.0, 3.0], rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# tfds builder + loader.
# ----------------------------------------------------------------------------------------------


def _folder_cfg(root: Path, **overrides) -> ml_collections.ConfigDict:
    cfg = dict(source="folder", dir=str(root), clients=(), unseen_clients=(), tile_size=16, tile_overlap=4,
               test_fraction=0.4, group_regex=r"_(\d+)-", invert_labels=False, pixel_size_um=0.5, seed=0, tfds_dir="")
    cfg.update(overrides)
    return ml_collections.ConfigDict(cfg)


def test_folder_builder_splits_tiles_and_stitches_back(two_clients: tuple[Path, dict], tmp_path: Path) -> None:
    from fedtransfer_jax.data import tfds_builders as tb

    root, truth = two_clients
    config = tb.FolderConfig.create(data_dir=str(root), group_regex=r"_(\d+)-", test_fraction=0.4, seed=0,
                                    tile_size=16, tile_overlap=4)
    builder = tb.make_builder(config, tmp_path / "tfds")
    builder.download_and_prepare()
    assert builder.info.file_format.value == "array_record"
    assert set(builder.info.splits) == {"lab_a_train", "lab_a_test", "lab_b_train", "lab_b_test"}
    assert builder.info.metadata["client_names"] == {"Lab A": "lab_a", "lab-b": "lab_b"}
    for client, prefix in (("Lab A", "lab_a"), ("lab-b", "lab_b")):
        splits = {s: tb.read_split(builder, f"{prefix}_{s}") for s in ("train", "test")}
        groups = {s: {src.split("_")[1].split("-")[0] for src in splits[s]["source"]} for s in splits}
        assert groups["train"] and groups["test"] and groups["train"].isdisjoint(groups["test"])
        seen = set()
        for s, d in splits.items():
            chex.assert_shape(d["image"], (None, 16, 16, 3))
            assert d["image"].dtype == np.uint8 and d["label"].dtype == np.uint8
            for src in set(d["source"]):
                sel = d["source"] == src
                stem = Path(src).stem
                img, lab = truth[client][stem]
                pos = [tuple(p) for p in d["position"][sel]]
                assert pos == tiling.tile_positions(*lab.shape, 16, 4)
                rgb = img if img.ndim == 3 else np.repeat(img[..., None], 3, -1)  # Grey -> 3 channels.
                np.testing.assert_array_equal(tiling.stitch(d["image"][sel], pos, lab.shape, 16, "mean"), rgb)
                np.testing.assert_array_equal(tiling.stitch(d["label"][sel], pos, lab.shape, 16, "mean"), lab)
                seen.add(stem)
        assert seen == set(truth[client])  # Every image went to exactly one side.
    assert "tensorflow" not in sys.modules


def test_folder_config_hash_tracks_params_and_files(two_clients: tuple[Path, dict]) -> None:
    from fedtransfer_jax.data import tfds_builders as tb

    root, _ = two_clients
    kw = dict(data_dir=str(root), group_regex=r"_(\d+)-", test_fraction=0.4, seed=0, tile_size=16, tile_overlap=4)
    base = tb.FolderConfig.create(**kw).name
    assert tb.FolderConfig.create(**kw).name == base
    assert tb.FolderConfig.create(**{**kw, "tile_overlap": 2}).name != base
    assert tb.FolderConfig.create(**{**kw, "invert_labels": True}).name != base
    _save_png(root / "lab-b" / "images" / "img_9-0.png", np.zeros((18, 18, 3), np.uint8))
    _save_png(root / "lab-b" / "labels" / "img_9-0.png", np.zeros((18, 18), np.uint8))
    assert tb.FolderConfig.create(**kw).name != base  # New file -> new cache.


def test_load_federated_data_folder(two_clients: tuple[Path, dict], tmp_path: Path) -> None:
    root, truth = two_clients
    fd = load_federated_data(_folder_cfg(root), str(tmp_path / "work"))
    assert fd.client_names == ("Lab A", "lab-b")
    assert (tmp_path / "work" / "tfds" / "grain_micrographs").is_dir()
    chex.assert_shape(fd.train.images, (2, None, 16, 16, 3))
    assert fd.train.images.dtype == np.float32 and 0.0 <= fd.train.images.min() and fd.train.images.max() <= 1.0
    n_train = np.asarray(fd.train.num_examples)
    n_test = np.array([len(fd.test[c][0]) for c in fd.client_names])
    # Tile 16, overlap 4: Lab A 20x27 -> y (0, 4) x (0, 11) = 4 tiles x 4 images; lab-b 18x18 -> 4 x 3.
    np.testing.assert_array_equal(n_train + n_test, [4 * 4, 3 * 4])
    assert fd.unseen == {}
    # Unseen client: evaluated only.
    fd2 = load_federated_data(_folder_cfg(root, unseen_clients=("lab-b",)), str(tmp_path / "work"))
    assert fd2.client_names == ("Lab A",) and set(fd2.unseen) == {"lab-b"}
    np.testing.assert_array_equal(fd2.unseen["lab-b"][1], fd.test["lab-b"][1])
    # Inverting white-on-black labels makes them mostly boundary: refused, naming the key to change.
    with pytest.raises(folder.LabelError, match=r"look inverted.*--config\.data\.invert_labels=False"):
        load_federated_data(_folder_cfg(root, invert_labels=True), str(tmp_path / "work"))
    # Labels drawn black on white, read with invert_labels=True, give the same stored labels.
    inverted = tmp_path / "inverted"
    for client in truth:
        for stem, (img, lab) in truth[client].items():
            _save_png(inverted / client / "images" / f"{stem}.png", img)
            _save_png(inverted / client / "labels" / f"{stem}.png", (1 - lab) * 255)
    fd3 = load_federated_data(_folder_cfg(inverted, invert_labels=True), str(tmp_path / "work"))
    np.testing.assert_array_equal(fd3.test["Lab A"][1], fd.test["Lab A"][1])
    with pytest.raises(ValueError, match="'lab-c'"):
        load_federated_data(_folder_cfg(root, clients=("lab-c",)), str(tmp_path / "work"))


def test_folder_builder_reports_size_mismatch(two_clients: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = two_clients
    _save_png(root / "lab-b" / "labels" / "img_2-0.png", np.zeros((18, 17), np.uint8))
    with pytest.raises(ValueError, match=r"img_2-0\.png is 18x18.*img_2-0\.png is 18x17"):
        load_federated_data(_folder_cfg(root), str(tmp_path / "work"))


def _fake_synthetic(calls: list) -> types.ModuleType:
    """Stand-in for data.synthetic: uint8-exact images so the storage round-trip can be checked exactly."""
    mod = types.ModuleType("fedtransfer_jax.data.synthetic")
    mod.LAB_NAMES = ("brightfield", "darkfield", "sem", "tint", "lowcontrast")

    def make_lab_examples(lab, n, size, seed, *, boundary_width=2, diameter_px=None, boundary_width_max=0):
        assert diameter_px is None and boundary_width_max == 0  # the options are off in these configs
        calls.append((lab, n, size, seed, boundary_width))
        rng = np.random.default_rng([seed])
        images = rng.integers(0, 256, (n, size, size, 3)).astype(np.float32) / 255.0
        labels = (rng.random((n, size, size)) < 0.2).astype(np.uint8)
        grains = np.zeros((n, size, size), np.int32)
        return images, labels, grains

    mod.make_lab_examples = make_lab_examples
    mod.check_scale_options = lambda diameter_px, width, width_max: tuple(diameter_px) or None
    return mod


def _synth_cfg(**overrides) -> ml_collections.ConfigDict:
    cfg = dict(source="synthetic", clients=("sem", "tint"), unseen_clients=("darkfield",), image_size=16, tile_size=8,
               train_per_client=3, test_per_client=2, seed=5, boundary_width=2, tfds_dir="")
    cfg.update(overrides)
    return ml_collections.ConfigDict(cfg)


def test_load_federated_data_synthetic_plumbing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list = []
    fake = _fake_synthetic(calls)
    monkeypatch.setitem(sys.modules, "fedtransfer_jax.data.synthetic", fake)
    monkeypatch.setattr(data_pkg, "synthetic", fake, raising=False)
    fd = load_federated_data(_synth_cfg(), str(tmp_path))
    assert fd.client_names == ("sem", "tint") and set(fd.unseen) == {"darkfield"}
    chex.assert_shape(fd.train.images, (2, 3 * 4, 8, 8, 3))
    np.testing.assert_array_equal(fd.train.num_examples, [12, 12])
    assert fd.train.mask.all()
    # One generator call per (lab, split); rebuild the expected tiles with an independent reshape.
    by_key = {(c[0], c[1]): c for c in calls}
    assert len(calls) == 6 and all(c[2] == 16 and c[4] == 2 for c in calls)
    for ci, lab in enumerate(fd.client_names):
        ims, lbs, _ = fake.make_lab_examples(*by_key[(lab, 3)][:4])
        chex.assert_trees_all_close(fd.train.images[ci], _tiles_by_reshape(ims, 8), atol=1e-7)
        np.testing.assert_array_equal(fd.train.labels[ci], _tiles_by_reshape(lbs, 8))
        ims, lbs, _ = fake.make_lab_examples(*by_key[(lab, 2)][:4])
        chex.assert_trees_all_close(fd.test[lab][0], _tiles_by_reshape(ims, 8), atol=1e-7)
    assert len({c[3] for c in calls[:6]}) == 6  # Different seeds per lab and split.
    # Second call reuses the cache: the generator is not called again.
    n_calls = len(calls)
    fd_again = load_federated_data(_synth_cfg(), str(tmp_path))
    assert len(calls) == n_calls
    np.testing.assert_array_equal(fd_again.train.labels, fd.train.labels)
    # A changed parameter builds a new cache.
    load_federated_data(_synth_cfg(boundary_width=3), str(tmp_path))
    assert len(calls) > n_calls and calls[-1][4] == 3
    # Zero test images: tfds cannot write an empty split, the loader returns empty arrays instead.
    fd0 = load_federated_data(_synth_cfg(test_per_client=0), str(tmp_path))
    chex.assert_shape(fd0.test["sem"][0], (0, 8, 8, 3))
    np.testing.assert_array_equal(fd0.train.images, fd.train.images)  # Train data keyed by (lab, split) seeds.
    with pytest.raises(ValueError, match="train_per_client"):
        load_federated_data(_synth_cfg(train_per_client=0), str(tmp_path))
    with pytest.raises(ValueError, match="'confocal'"):
        load_federated_data(_synth_cfg(clients=("sem", "confocal")), str(tmp_path))
    assert "tensorflow" not in sys.modules


def test_load_federated_data_synthetic_real(tmp_path: Path) -> None:
    try:
        from fedtransfer_jax.data import synthetic
    except ImportError as e:  # Written in parallel; the plumbing test above covers the path meanwhile.
        pytest.skip(f"data.synthetic not available yet: {e}")
    labs = tuple(synthetic.LAB_NAMES[:2])
    cfg = _synth_cfg(clients=labs, unseen_clients=(synthetic.LAB_NAMES[2],), train_per_client=2, test_per_client=1,
                     image_size=32, tile_size=16)
    fd = load_federated_data(cfg, str(tmp_path))
    chex.assert_shape(fd.train.images, (2, 2 * 4, 16, 16, 3))
    chex.assert_shape(fd.unseen[synthetic.LAB_NAMES[2]][1], (4, 16, 16))
    assert set(np.unique(fd.train.labels)) <= {0, 1} and fd.train.labels.any()
    ims, lbs, _ = synthetic.make_lab_examples(labs[0], 2, 32, 123, boundary_width=2)
    assert ims.shape == (2, 32, 32, 3) and lbs.shape == (2, 32, 32)


def test_tbm_tint_etched_real_data() -> None:
    if not (TBM_DIR / "images").is_dir():
        pytest.skip(f"{TBM_DIR} not present")
    assert list(folder.discover_clients(TBM_DIR)) == ["tbm_tint_etched"]
    pairs = folder.list_pairs(TBM_DIR)
    assert len(pairs) == 80
    train, test = folder.split_by_group(pairs, 0.25, 0, r"_(\d+)-")
    gid = lambda p: p[0].stem.split("_")[1].split("-")[0]  # noqa: E731
    assert {gid(p) for p in train}.isdisjoint({gid(p) for p in test})
    assert len({gid(p) for p in pairs}) == 21 and len({gid(p) for p in test}) == 5
    image, label = folder.load_pair(*pairs[0])
    chex.assert_shape(image, (256, 256, 3))
    assert set(np.unique(label)) == {0, 1} and 0.01 < label.mean() < 0.5


# ----------------------------------------------------------------------------------------------
# Validation split (for choosing post-processing).
# ----------------------------------------------------------------------------------------------


def test_synthetic_val_split_leaves_train_and_test_unchanged(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from fedtransfer_jax.data import tfds_builders as tb

    calls: list = []
    fake = _fake_synthetic(calls)
    monkeypatch.setitem(sys.modules, "fedtransfer_jax.data.synthetic", fake)
    monkeypatch.setattr(data_pkg, "synthetic", fake, raising=False)
    plain = load_federated_data(_synth_cfg(), str(tmp_path))
    assert plain.val == {}  # default: no validation tiles
    with_val = load_federated_data(_synth_cfg(val_per_client=2), str(tmp_path))
    np.testing.assert_array_equal(with_val.train.images, plain.train.images)
    np.testing.assert_array_equal(with_val.test["sem"][1], plain.test["sem"][1])
    np.testing.assert_array_equal(with_val.unseen["darkfield"][0], plain.unseen["darkfield"][0])
    assert set(with_val.val) == {"sem", "tint"}  # trained clients only, never the unseen lab
    chex.assert_shape(with_val.val["sem"][0], (2 * 4, 8, 8, 3))
    seeds = {c[3] for c in calls if c[1] == 2 and c[0] in ("sem", "tint")}
    assert len(seeds) == 4  # val images drawn with their own seed per lab (test images: n=2 too)
    assert not np.array_equal(with_val.val["sem"][1], plain.test["sem"][1])
    again = load_federated_data(_synth_cfg(val_per_client=2), str(tmp_path / "other"))
    np.testing.assert_array_equal(again.val["tint"][0], with_val.val["tint"][0])  # same seed, same tiles
    # Caches built before val splits existed keep their names when no val split is asked for.
    kw = dict(labs=("sem",), train_per_client=3, test_per_client=2, image_size=16, tile_size=8, seed=5)
    assert tb.SyntheticConfig.create(**kw).name == tb.SyntheticConfig.create(**kw, val_per_client=0).name
    assert tb.SyntheticConfig.create(**kw).name != tb.SyntheticConfig.create(**kw, val_per_client=1).name


def test_folder_val_fraction_comes_out_of_the_training_images(two_clients: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = two_clients
    cfg = dict(tile_overlap=0, test_fraction=0.25)
    plain = load_federated_data(_folder_cfg(root, **cfg), str(tmp_path / "work"))
    assert plain.val == {}
    with_val = load_federated_data(_folder_cfg(root, val_fraction=0.5, **cfg), str(tmp_path / "work"))
    for ci, client in enumerate(plain.client_names):
        np.testing.assert_array_equal(with_val.test[client][1], plain.test[client][1])  # test split unchanged
        n_plain, n_train = int(plain.train.num_examples[ci]), int(with_val.train.num_examples[ci])
        n_val = len(with_val.val[client][0])
        assert n_val > 0 and n_train > 0 and n_train + n_val == n_plain
        # Val tiles are training tiles of the plain split (same images, same tiling), never test tiles.
        pool = {t.tobytes() for t in plain.train.labels[ci, :n_plain]}
        assert all(t.tobytes() in pool for t in with_val.val[client][1])
    again = load_federated_data(_folder_cfg(root, val_fraction=0.5, **cfg), str(tmp_path / "again"))
    np.testing.assert_array_equal(again.val["Lab A"][0], with_val.val["Lab A"][0])
