"""The no-learning references (metrics/classical.py) and `evaluate --baseline`: they find what they are
built to find on images whose truth is known, fail where they say they fail, and the CLI refuses model
flags with one line and exit status 2."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fedtransfer_jax import metrics as metrics_lib
from fedtransfer_jax.metrics import classical

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def voronoi(size=128, grains=30, seed=0):
    """Grain ids of a Voronoi tiling and its boundary (pixels whose right/lower neighbour differs, 2 px)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, size, (grains, 2))
    yy, xx = np.mgrid[:size, :size]
    ids = np.argmin((yy[..., None] - centres[:, 0]) ** 2 + (xx[..., None] - centres[:, 1]) ** 2, -1)
    edge = np.zeros((size, size), bool)
    edge[:-1] |= ids[:-1] != ids[1:]
    edge[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    return ids, edge | np.roll(edge, 1, 0) | np.roll(edge, 1, 1)


def bright_field(ids, edge, seed=0, dark_lines=True):
    """Grey grains of slightly different tone, lines 0.35 darker (or brighter), noise 0.03."""
    rng = np.random.default_rng(seed + 1)
    tone = rng.uniform(0.55, 0.75, ids.max() + 1)[ids]
    grey = tone + (-0.35 if dark_lines else 0.35) * edge + rng.normal(0, 0.03, ids.shape)
    return np.repeat(np.clip(grey, 0, 1)[..., None], 3, -1)


@pytest.mark.parametrize("dark_lines", [True, False])
def test_adaptive_threshold_finds_lines_of_either_polarity(dark_lines):
    ids, edge = voronoi()
    pred = classical.segment(bright_field(ids, edge, dark_lines=dark_lines))
    m = metrics_lib.segmentation_metrics(pred, edge)
    assert m["boundary_f1"] > 0.85 and m["ari"] > 0.8, m
    # the polarity is read from each image: its negative gives the same lines
    other = classical.segment(1.0 - bright_field(ids, edge, dark_lines=dark_lines), "adaptive_threshold")
    assert metrics_lib.segmentation_metrics(other, edge)["boundary_f1"] > 0.85


def test_colour_edges_finds_colour_only_boundaries_where_grey_fails():
    ids, edge = voronoi(seed=3)
    rng = np.random.default_rng(4)
    colours = rng.uniform(0.2, 0.9, (ids.max() + 1, 3))
    colours *= (0.55 / (colours @ np.array([0.299, 0.587, 0.114])))[:, None]  # same luma: no grey contrast
    image = np.clip(colours[ids] + rng.normal(0, 0.01, ids.shape + (3,)), 0, 1)
    colour = metrics_lib.segmentation_metrics(classical.segment(image, "colour_edges"), edge)
    grey = metrics_lib.segmentation_metrics(classical.segment(image, "adaptive_threshold"), edge)
    assert colour["boundary_f1"] > 0.8 and colour["ari"] > 0.7, colour
    assert grey["ari"] < colour["ari"] - 0.3, (grey, colour)


def test_flat_image_has_no_boundary_and_unknown_method_is_named():
    for method in classical.NAMES:
        assert not classical.segment(np.full((40, 50, 3), 0.5), method).any()
    with pytest.raises(ValueError, match="unknown classical baseline 'otsu'"):
        classical.boundary_candidates(np.zeros((8, 8)), "otsu")


def write_folder(root, n=2):
    for sub in ("images", "labels"):
        os.makedirs(root / sub)
    for i in range(n):
        ids, edge = voronoi(96, 15, seed=i)
        Image.fromarray((bright_field(ids, edge, seed=i) * 255).astype(np.uint8)).save(root / "images" / f"m{i}.png")
        Image.fromarray((edge * 255).astype(np.uint8)).save(root / "labels" / f"m{i}.png")


def evaluate(*args):
    return subprocess.run(
        [sys.executable, "-m", "fedtransfer_jax.evaluate", *args],
        capture_output=True, text=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), timeout=300,
    )


def test_evaluate_baseline_cli(tmp_path):
    data = tmp_path / "data"
    write_folder(data)
    out = tmp_path / "baseline.json"
    proc = evaluate("--baseline", "adaptive_threshold", "--data_dir", str(data), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["method"] == "baseline:adaptive_threshold" and result["n_images"] == 2
    assert result["mean"]["boundary_f1"] > result["trivial_boundary_f1"] and result["mean"]["ari"] > 0.7
    assert "marking every pixel as boundary scores boundary F1" in proc.stdout
    # Model flags make no sense with a baseline; a baseline has no workdir to write into.
    x = ["--out", str(tmp_path / "x.json")]
    for extra, named in (
        (["--workdir", str(tmp_path), *x], "--workdir"),
        ([], "--out"),
        (["--scale", "auto", *x], "--scale"),  # even at its default value: it would be silently ignored
        (["--flips", *x], "--flips"),
        (["--overlap", "0", *x], "--overlap"),  # 0 is a valid overlap, so refused by presence, not value
    ):
        proc = evaluate("--baseline", "colour_edges", "--data_dir", str(data), *extra)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and named in lines[0], proc.stderr
    assert not (tmp_path / "x.json").exists()
