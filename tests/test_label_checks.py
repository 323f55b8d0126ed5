"""Label sanity checks (data/folder.py): wrong labels are errors, odd ones warnings, good data is silent.

Real hand-labelled crops (../shared/data/tbm_tint_etched, skipped when absent) and every synthetic lab
must pass without a single warning.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import ml_collections
import numpy as np
import pytest
import tifffile
from PIL import Image

from fedtransfer_jax.data import folder, load_federated_data

TBM_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "tbm_tint_etched"
FLAG = "--invert_labels"


def line_label(h: int = 24, w: int = 24, every: int = 8) -> np.ndarray:
    """0/1 grid of 1-px lines: 1 - (1 - 1/every)^2 ~ 23% boundary at every=8."""
    lab = np.zeros((h, w), np.uint8)
    lab[::every] = 1
    lab[:, ::every] = 1
    return lab


def write_client(root: Path, labels: dict[str, np.ndarray], suffix: str = ".png") -> list[tuple[Path, Path]]:
    """images/ + labels/ of one client; ``labels`` are written as given (choose the dtype/range)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for stem, lab in labels.items():
        Image.fromarray(np.full(lab.shape[:2], 128, np.uint8)).save(root / "images" / f"{stem}.png")
        if suffix == ".tif":
            tifffile.imwrite(root / "labels" / f"{stem}.tif", lab)
        else:
            Image.fromarray(lab).save(root / "labels" / f"{stem}{suffix}")
    return folder.list_pairs(root)


def check(pairs, invert: bool = False) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("error", folder.LabelWarning)  # any warning fails a "silent" check
        return folder.check_client_labels(pairs, invert=invert, invert_flag=FLAG, where="client 'c'")


def test_good_labels_are_silent(tmp_path: Path) -> None:
    pairs = write_client(tmp_path / "c", {f"a{i}": line_label() * 255 for i in range(3)})
    assert check(pairs) == []
    # 0/1 masks, 16-bit TIFF and RGB labels drawn in red are fine too.
    assert check(write_client(tmp_path / "m", {"a": line_label()})) == []
    assert check(write_client(tmp_path / "t", {"a": line_label().astype(np.uint16) * 65535}, ".tif")) == []
    red = np.zeros((24, 24, 3), np.uint8)
    red[..., 0] = line_label() * 255
    assert check(write_client(tmp_path / "r", {"a": red})) == []


def test_tbm_real_labels_pass_without_warnings() -> None:
    if not (TBM_DIR / "labels").is_dir():
        pytest.skip(f"{TBM_DIR} not present")
    pairs = folder.list_pairs(TBM_DIR)
    assert len(pairs) == 80
    assert check(pairs) == []
    stats = [folder.read_label_with_stats(lab)[1] for _, lab in pairs]
    fractions = [s.boundary_fraction for s in stats]
    lo, hi = folder.PLAUSIBLE_BOUNDARY_FRACTION
    assert lo < min(fractions) and max(fractions) < hi  # 10-24 %: well inside the plausible range
    # The same files read with the wrong polarity are caught.
    with pytest.raises(folder.LabelError, match=f"look inverted.*{FLAG}=False"):
        check(pairs, invert=True)


def test_synthetic_labs_pass_without_warnings() -> None:
    from fedtransfer_jax.data import synthetic

    for lab in synthetic.LAB_NAMES:
        _, labels, _ = synthetic.make_lab_examples(lab, 4, 64, 7, boundary_width=2)
        stats = [
            folder.label_stats(np.asarray(l, np.uint8) * 255, np.asarray(l, np.uint8), f"synthetic/{lab}/{i}")
            for i, l in enumerate(labels)
        ]
        errors, warns = folder.label_issues(stats, invert=False, invert_flag=FLAG, where=lab)
        assert errors == [] and warns == [], (lab, errors, warns)


def test_grey_image_in_labels_is_an_error_naming_the_file(tmp_path: Path) -> None:
    grey = np.tile(np.arange(24, dtype=np.uint8) * 10, (24, 1))  # a 0..230 ramp: a micrograph, not a mask
    pairs = write_client(tmp_path / "c", {"good": line_label() * 255, "grey": grey})
    with pytest.raises(folder.LabelError, match=r"not binary masks.*labels/grey\.png"):
        check(pairs)


def test_anti_aliased_labels_warn_and_are_thresholded(tmp_path: Path) -> None:
    soft = line_label(40, 40) * 255
    soft[1, :6] = 128  # a few anti-aliased pixels: 6 / 1600 = 0.4 % -> silent
    soft[3, :20] = 128  # 26 / 1600 = 1.6 % -> warning
    pairs = write_client(tmp_path / "c", {"soft": soft})
    with pytest.warns(folder.LabelWarning, match=r"grey levels.*soft\.png.*thresholded"):
        folder.check_client_labels(pairs, invert=False, invert_flag=FLAG, where="c")
    np.testing.assert_array_equal(folder.read_label(pairs[0][1])[3, :20], 1)  # 128 > 127: boundary


def test_inverted_client_is_an_error_naming_the_flag(tmp_path: Path) -> None:
    pairs = write_client(tmp_path / "c", {f"a{i}": (1 - line_label()) * 255 for i in range(3)})
    with pytest.raises(folder.LabelError, match=rf"look inverted.*a0\.png.*{FLAG}=True"):
        check(pairs)
    assert check(pairs, invert=True) == []  # the fix named in the message works


def test_one_inverted_image_is_a_warning(tmp_path: Path) -> None:
    labels = {f"a{i}": line_label() * 255 for i in range(3)}
    labels["odd"] = (1 - line_label()) * 255
    pairs = write_client(tmp_path / "c", labels)
    with pytest.warns(folder.LabelWarning, match=r"mostly boundary.*odd\.png"):
        folder.check_client_labels(pairs, invert=False, invert_flag=FLAG, where="c")


def test_implausible_fraction_warns_and_lists_at_most_five_files(tmp_path: Path) -> None:
    sparse = np.zeros((40, 40), np.uint8)
    sparse[20, 5:10] = 255  # 0.3 % boundary
    labels = {"good": line_label(40, 40) * 255, **{f"sparse{i}": sparse for i in range(7)}}
    pairs = write_client(tmp_path / "c", labels)
    with pytest.warns(
        folder.LabelWarning, match=r"7 label\(s\).*outside the plausible 1\.0%-40\.0%.*and 2 more"
    ) as rec:
        folder.check_client_labels(pairs, invert=False, invert_flag=FLAG, where="c")
    assert len(rec) == 1  # one warning per kind, not one per file


def test_empty_labels_warn_once_and_fail_for_a_whole_client(tmp_path: Path) -> None:
    pairs = write_client(
        tmp_path / "some", {"good": line_label() * 255, "blank": np.zeros((24, 24), np.uint8)}
    )
    with pytest.warns(folder.LabelWarning, match=r"no boundary pixel.*blank\.png"):
        folder.check_client_labels(pairs, invert=False, invert_flag=FLAG, where="c")
    pairs = write_client(tmp_path / "all", {"b0": np.zeros((24, 24), np.uint8)})
    with pytest.raises(folder.LabelError, match=r"every label.*empty.*b0\.png.*all black"):
        check(pairs)


def test_8bit_values_in_a_16bit_label_are_explained(tmp_path: Path) -> None:
    pairs = write_client(tmp_path / "c", {"a": line_label().astype(np.uint16) * 255}, ".tif")
    with pytest.raises(folder.LabelError, match=r"a\.tif.*values go up to 255 of 65535"):
        check(pairs)


def _grain_ids(size: int = 48, cell: int = 8) -> np.ndarray:
    """A grain-ID map: square grains of `cell` px, each its own id from 1 (no walls, as tools export)."""
    idx = np.arange(size) // cell
    return 1 + idx[:, None] * (size // cell) + idx[None, :]


def test_red_lines_on_white_are_named_in_either_polarity(tmp_path: Path) -> None:
    rgb = np.full((40, 40, 3), 255, np.uint8)
    rgb[line_label(40, 40) == 1] = (255, 0, 0)  # red boundaries on white: every pixel has a bright channel
    pairs = write_client(tmp_path / "c", {f"a{i}": rgb for i in range(3)})
    for invert in (False, True):  # before, each polarity's message pointed at the other
        with pytest.raises(folder.LabelError, match=r"coloured lines on a light background.*white \(255\)") as e:
            check(pairs, invert=invert)
        assert FLAG not in str(e.value)


def test_grain_id_maps_are_named_8_and_16_bit(tmp_path: Path) -> None:
    ids = _grain_ids()
    for name, lab, suffix in (("u8", ids.astype(np.uint8), ".png"), ("u16", ids.astype(np.uint16), ".tif")):
        pairs = write_client(tmp_path / name, {"g": lab}, suffix)
        with pytest.raises(folder.LabelError, match=r"look like grain-ID maps.*g\.(png|tif) \(36 values\)") as e:
            check(pairs)
        assert "micrograph" not in str(e.value) and "values go up to" not in str(e.value)
    few = _grain_ids(48, 16).astype(np.uint8)  # nine grains: values 1-9
    with pytest.raises(folder.LabelError, match=r"look like grain-ID maps.*\(9 values\)"):
        check(write_client(tmp_path / "few", {"g": few}))
    # A colour grain map (here with black walls) is named too, in either polarity.
    colour = np.stack([(ids * 37) % 200 + 40, (ids * 91) % 200 + 40, (ids * 53) % 200 + 40], -1).astype(np.uint8)
    colour[line_label(48, 48) == 1] = 0
    for invert in (False, True):
        with pytest.raises(folder.LabelError, match="look like grain-ID maps"):
            check(write_client(tmp_path / "colour", {"g": colour}), invert=invert)
    # An antialiased mask has many grey values too, but it is not a grain map: a warning, thresholded.
    soft = (line_label(48, 48) * 255).astype(np.uint8)
    soft[5, :] = np.arange(48) * 5  # 48 distinct values, 1 % of pixels mid-grey
    with pytest.warns(folder.LabelWarning, match="grey levels"):
        folder.check_client_labels(write_client(tmp_path / "soft", {"s": soft}), invert=False, invert_flag=FLAG, where="c")


def test_tfds_folder_build_refuses_inverted_labels_and_leaves_no_cache(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for client in ("lab1", "lab2"):
        labels = {f"img_{g}": line_label() * 255 for g in range(3)}
        if client == "lab2":
            labels = {k: 255 - v for k, v in labels.items()}
        write_client(root / client, labels)
    cfg = ml_collections.ConfigDict(
        dict(
            source="folder",
            dir=str(root),
            clients=(),
            unseen_clients=(),
            tile_size=16,
            tile_overlap=0,
            test_fraction=0.34,
            seed=0,
            tfds_dir=str(tmp_path / "tfds"),
        )
    )
    with pytest.raises(folder.LabelError, match=r"client 'lab2'.*--config\.data\.invert_labels=True"):
        load_federated_data(cfg, tmp_path / "work")
    built = [d for d, _, files in os.walk(tmp_path / "tfds") for f in files if f.endswith(".array_record")]
    assert built == []  # nothing half-built that a later run could pick up
    assert not any("incomplete" in d for d, _, _ in os.walk(tmp_path / "tfds"))
