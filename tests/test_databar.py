"""The SEM data bar: which bottom rows are left out (data/databar.py), as the metadata states them or as found
in the pixels (scripts/databar_probe.py measures the detector at scale)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from fedtransfer_jax.data import calibration, databar, synthetic
from test_calibration import data_bar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scripts import databar_probe  # noqa: E402


@pytest.mark.parametrize("value,want", [("auto", "auto"), ("None", "none"), ("0", 0), ("59", 59)])
def test_parse_databar(value, want):
    assert databar.parse_databar(value) == want


@pytest.mark.parametrize("value", ["-1", "1.5", "bottom", ""])
def test_parse_databar_refuses(value):
    with pytest.raises(ValueError, match="--databar"):
        databar.parse_databar(value)


@pytest.fixture(scope="module")
def micrographs():
    """Two synthetic micrographs of every lab, grains of 8-200 px (some nearly flat rows), 160 x 480 px (each
    repeated three times across: data bars are written on images 512 px wide or so)."""
    out = []
    for lab in synthetic.LAB_NAMES:
        images, _, _ = synthetic.make_lab_examples(lab, 2, 160, 5, diameter_px=(8, 200))
        out += [np.tile(im, (1, 3, 1)) for im in images]
    return out


def test_micrographs_have_no_data_bar(micrographs):
    found = [databar.detect_databar(np.ascontiguousarray(x)) for im in micrographs for x in (im, im[::-1])]
    assert found == [0] * len(found)


@pytest.mark.parametrize("background,ink", [(0, 255), (255, 0), (40, 230)])
def test_a_data_bar_below_a_micrograph_is_found_to_the_row(micrographs, background, ink):
    bar = np.repeat((data_bar(480, 24, background, ink) / 255.0)[..., None], 3, axis=-1).astype(np.float32)
    found = [databar.detect_databar(np.concatenate([im, bar])) for im in micrographs]
    # Far from the background value (a black bar under a bright image) every bar is found; a bar of the
    # image's own grey can hide (missed, never mis-sized).
    assert set(found) <= {0, 24} and found.count(24) >= 0.75 * len(found)
    if background in (0, 255):
        assert found.count(24) >= len(found) - 2


def test_databar_rows_prefers_the_metadata_and_obeys_the_flag():
    image = np.random.default_rng(0).random((100, 480, 3)).astype(np.float32)
    image[-20:] = (data_bar(480, 20) / 255.0)[..., None]
    stated = calibration.Calibration(databar_rows=12, databar_source="FEI")
    assert databar.databar_rows(image, stated) == (12, "FEI")
    rows, source = databar.databar_rows(image, calibration.Calibration())
    assert rows == 20 and "pixels" in source
    assert databar.databar_rows(image, stated, "none") == (0, "")
    assert databar.databar_rows(image, stated, 5) == (5, "--databar")
    with pytest.raises(ValueError, match="--databar"):
        databar.databar_rows(image, stated, 100)


def test_a_framed_bar_is_found_and_a_flat_band_without_writing_is_not(micrographs):
    grains = np.tile(micrographs[0], (1, 2, 1))[:, :600]  # 160 x 600
    bar = np.repeat(databar_probe.framed_bar(600, 48)[..., None], 3, axis=-1)  # FEI's style: frame lines
    assert databar.detect_databar(np.concatenate([grains, bar])) == 48
    band = np.full((48, 600, 3), 0.62, np.float32)  # a flat twin lamella across the bottom
    band[:, ::150] = 0.1  # crossed by grain boundaries
    assert databar.detect_databar(np.concatenate([grains, band])) == 0
