"""`--scale`: predict on a resampled image, map the probabilities back to the image's own pixels; `auto`
picks per image the scale at which the predicted grains come closest to the trained grain size.

The models are fakes with ``LoadedModel``'s interface whose probability is the image's own boundary map
(darkness), so the grain size a scale gives is known without training.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import ml_collections
import numpy as np
import pytest
from PIL import Image

from fedtransfer_jax import evaluate, predict
from fedtransfer_jax.analysis import report
from fedtransfer_jax.analysis import scale as scale_lib
from fedtransfer_jax.data import folder, microstructure, synthetic
from fedtransfer_jax.metrics import postprocess_select as pps
from fedtransfer_jax.runs import grain_size
from test_predict_safety import FakeModel, grain_image, save

REPO = Path(__file__).resolve().parents[1]
SETTINGS = pps.BUILTIN_DEFAULTS


class ShapeModel(FakeModel):
    """FakeModel that also remembers the sizes it was given and returns a not-quite-binary map."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.seen: list[tuple[int, int]] = []

    def predict_prob(self, image, *, overlap=None, flips=False):
        self.seen.append(tuple(image.shape[:2]))
        x = image.mean(axis=-1)
        return (1.0 - x) * 0.8 + 0.1 * np.sin(np.arange(x.shape[1]) / 3.0)[None]


def render(size: int, diameter: float, width: int, seed: int = 0) -> np.ndarray:
    """A micrograph [size, size, 3]: bright Voronoi grains of ``diameter`` px, dark boundaries ``width`` px
    wide (a k times larger magnification makes both k times larger)."""
    g = microstructure.generate_microstructure(
        np.random.default_rng(seed), size, method="voronoi", mean_grain_diameter_px=diameter, warp=0.0
    )
    b = microstructure.boundary_map(g, width)
    return np.repeat(np.where(b > 0, 0.1, 0.9).astype(np.float32)[..., None], 3, axis=-1)


@pytest.fixture(scope="module")
def target() -> tuple[float, str]:
    """What the fake model 'was trained on': 12-px grains with 2-px boundaries, measured as auto measures."""
    ref = render(128, 12.0, 2, seed=1)
    px, _ = grain_size.mean_grain_diameter(SETTINGS.apply(1.0 - ref.mean(axis=-1)))
    return px, "test: 12-px grains"


# ----------------------------------------------------------------------------------------------
# --scale 1 is the old path, bit for bit; any scale comes back at the image's size.
# ----------------------------------------------------------------------------------------------


def test_scale_one_is_bit_identical_to_the_old_path(tmp_path: Path) -> None:
    rng = np.random.default_rng([3])
    image = rng.random((37, 53, 3), dtype=np.float32)
    model = ShapeModel()
    old = SETTINGS.apply(model.predict_prob(image))
    prob, record = scale_lib.probabilities(model, image, scale=1.0, settings=SETTINGS)
    assert np.array_equal(prob, model.predict_prob(image)) and prob.dtype == model.predict_prob(image).dtype
    assert np.array_equal(predict.segment(model, image, settings=SETTINGS, scale="1"), old)
    assert record["used"] == 1.0 and record["mode"] == "fixed"
    assert set(model.seen) == {(37, 53)}  # never resampled
    # Through predict_folder: the written map is the old map.
    src = save(tmp_path / "in" / "a.png", (image[..., 0] * 255).astype(np.uint8))
    manifest = predict.predict_folder(model, str(src), str(tmp_path / "out"), settings=SETTINGS, scale=1.0)
    expected = SETTINGS.apply(model.predict_prob(folder.read_image(src)))
    with Image.open(tmp_path / "out" / "a.png") as im:
        assert np.array_equal(np.asarray(im) > 0, expected)
    assert manifest["images"]["a"]["scale"]["used"] == 1.0


@pytest.mark.parametrize("s", [0.5, 1 / 3, 0.37, 1.7])
def test_a_map_predicted_at_scale_s_keeps_the_image_size(s: float) -> None:
    image = np.random.default_rng([4]).random((70, 101, 3), dtype=np.float32)
    model = ShapeModel()
    prob = scale_lib.prob_at_scale(model, image, s)
    assert prob.shape == (70, 101) and prob.dtype == np.float32
    assert model.seen == [(round(70 * s), round(101 * s))]  # the model saw the resampled image
    boundary = predict.segment(model, image, settings=SETTINGS, scale=s)
    assert boundary.shape == (70, 101) and boundary.dtype == bool
    # A constant probability map survives the round trip (bilinear, no ringing or border drift).
    assert np.allclose(scale_lib.back_to(np.full((35, 50), 0.25, np.float32), (70, 101)), 0.25, atol=1e-6)


def test_grains_are_measured_in_the_original_pixels(tmp_path: Path) -> None:
    """At scale 0.5 the map, the grain table and the sizes stay in the input's pixels: the grains of a
    grid of 24-px cells are about 24 px, not 12."""
    img = grain_image(192, 192, 24)
    img = np.minimum(img, np.roll(img, 1, axis=0))  # 2-px lines: they survive halving
    img = np.minimum(img, np.roll(img, 1, axis=1))
    src = save(tmp_path / "in" / "g.png", img)
    manifest = predict.predict_folder(FakeModel(), str(src), str(tmp_path / "out"), settings=SETTINGS, scale=0.5)
    e = manifest["images"]["g"]
    with Image.open(tmp_path / "out" / "g.png") as im:
        assert im.size == (192, 192)
    assert (e["height"], e["width"]) == (192, 192)
    assert e["n_grains"] == 64 and e["mean_equivalent_diameter_px"] * np.sqrt(np.pi / 4) == pytest.approx(24, abs=1)
    assert e["scale"] == {
        "used": 0.5, "mode": "fixed", "candidates": {}, "target_px": None, "reason": "given with --scale"
    }


# ----------------------------------------------------------------------------------------------
# auto
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 1.5, 2, 3])
def test_auto_picks_the_scale_that_brings_the_grains_to_the_trained_size(k: float, target) -> None:
    image = render(256, 12.0 * k, int(round(2 * k)))
    prob, record = scale_lib.probabilities(FakeModel(), image, scale="auto", settings=SETTINGS, target=target)
    assert record["used"] == pytest.approx(1 / k, abs=1e-3), record
    assert prob.shape == (256, 256)
    assert record["mode"] == "auto" and record["target_px"] == pytest.approx(target[0], abs=0.01)
    assert set(record["candidates"]) == {"1", "0.667", "0.5", "0.333", "0.25"}
    d = record["candidates"][f"{1 / k:.3g}"]
    assert abs(np.log(d / target[0])) < np.log(1.25)
    assert "the trained" in record["reason"]


def test_auto_prefers_the_largest_scale_near_the_target(monkeypatch) -> None:
    """Within 1.25x of the target, the larger scale wins over a closer smaller one (a model shown grains at or
    below its size merges some); outside that band, the closest wins."""
    image = render(256, 24.0, 4)
    for by_side, expected in (
        ({256: 40.0, 171: 12.4, 128: 11.5, 85: 9.0, 64: 7.0}, 1 / 1.5),  # 12.4 (1.24x), 11.5, 9 all near
        ({256: 40.0, 171: 30.0, 128: 16.0, 85: 10.5, 64: 8.0}, 1 / 3),  # only 10.5 near
        ({256: 40.0, 171: 30.0, 128: 20.0, 85: 15.0, 64: 6.0}, 1 / 3),  # none near: the closest (1.5x)
    ):
        monkeypatch.setattr(
            scale_lib.grain_size, "mean_diameter_of_labels", lambda lab, m=by_side: (m[lab.shape[0]], 50)
        )
        _, record = scale_lib.probabilities(FakeModel(), image, scale="auto", settings=SETTINGS, target=(10.0, "t"))
        assert record["used"] == pytest.approx(expected, abs=1e-3), record



def test_pick_is_the_rule_on_measured_sizes_alone() -> None:
    """The rule without a model: implausible candidates lose while any other has grains, and the tolerance
    sets how far from the target the largest scale may be."""
    cands = [1.0, 1 / 1.5, 1 / 2]
    diam = {1.0: 40.0, 1 / 1.5: 27.0, 1 / 2: 21.0}
    assert scale_lib.pick(cands, diam, {}, 20.0)[0] == 1 / 2  # only 21 px within 1.25x
    assert scale_lib.pick(cands, diam, {}, 20.0, tolerance=1.5)[0] == 1 / 1.5  # 27 and 21 near: the larger
    assert scale_lib.pick(cands, diam, {}, 20.0, tolerance=2.0)[0] == 1.0
    assert scale_lib.pick(cands, diam, {"0.5": "too few grains"}, 20.0)[0] == 1 / 1.5
    best, reason = scale_lib.pick(cands, {s: None for s in cands}, {}, 20.0)
    assert best == 1.0 and "no grains" in reason
    # Every map implausible: scale 1, not the rejected size closest to the target (1/2 here).
    every = {"1": "more than half boundary", "0.667": "more than half boundary", "0.5": "too few grains"}
    best, reason = scale_lib.pick(cands, diam, every, 20.0)
    assert best == 1.0 and "no scale's map was plausible" in reason
    assert scale_lib.pick(cands, diam, {"1": "x", "0.667": "x"}, 20.0)[0] == 1 / 2  # one plausible map: it wins
    mixed = {1.0: None, 1 / 1.5: 27.0, 1 / 2: 21.0}  # no grains at 1, the others rejected: still scale 1
    assert scale_lib.pick(cands, mixed, {"0.667": "x", "0.5": "x"}, 20.0)[0] == 1.0
    best, reason = scale_lib.pick([1.0], {1.0: 9.0}, {"1": "x"}, 20.0)  # a small image's only candidate
    assert best == 1.0 and reason.startswith("only scale 1 tried") and "no scale's map was plausible" in reason


def test_a_map_implausible_at_every_scale_stays_at_scale_1_with_a_warning() -> None:
    class Everywhere:  # boundary everywhere: more than half of every candidate's map
        tile, config = 16, None

        def predict_prob(self, image, *, overlap=None, flips=False):
            return np.ones(image.shape[:2], np.float32)

    image = render(200, 12.0, 1)
    _, record = scale_lib.probabilities(Everywhere(), image, scale="auto", settings=SETTINGS, target=(12.0, "t"))
    assert record["used"] == 1.0 and set(record["rejected"]) == set(record["candidates"])
    assert record["warning"] == scale_lib.ALL_REJECTED_WARNING
    _, plausible = scale_lib.probabilities(ShapeModel(), image, scale="auto", settings=SETTINGS, target=(12.0, "t"))
    assert "warning" not in plausible


def test_auto_never_goes_below_64_px_and_small_images_stay_as_they_are() -> None:
    assert scale_lib.candidates_for((40, 900)) == [1.0]
    assert scale_lib.candidates_for((130, 130)) == [1.0, 1 / 1.5, 0.5]
    image = render(80, 20.0, 2)
    model = ShapeModel()
    prob, record = scale_lib.probabilities(model, image, scale="auto", settings=SETTINGS, target=(12.0, "t"))
    assert record["used"] == 1.0 and list(record["candidates"]) == ["1"] and model.seen == [(80, 80)]
    assert np.array_equal(prob, model.predict_prob(image))  # auto at scale 1 reuses the very same map


def test_auto_through_predict_records_and_shows_the_scale(tmp_path: Path, target) -> None:
    save(tmp_path / "in" / "big.png", (render(256, 24.0, 4)[..., 0] * 255).astype(np.uint8))
    save(tmp_path / "in" / "small.png", grain_image(40, 40, 8))
    model = FakeModel()
    model.trained_grain_px = target
    manifest = predict.predict_folder(model, str(tmp_path / "in"), str(tmp_path / "out"), settings=SETTINGS, scale="auto")
    big, small = manifest["images"]["big"]["scale"], manifest["images"]["small"]["scale"]
    assert big["used"] == 0.5 and big["mode"] == "auto" and big["candidates"]["0.5"] is not None
    assert small["used"] == 1.0 and list(small["candidates"]) == ["1"]
    assert manifest["inference"]["scale"] == "auto" and manifest["inference"]["trained_grain_px"] == round(target[0], 2)
    with Image.open(tmp_path / "out" / "big.png") as im:
        assert im.size == (256, 256)
    on_disk = json.loads((tmp_path / "out" / "grain_sizes.json").read_text())
    assert on_disk["images"]["big"]["scale"]["used"] == 0.5
    table = report.text_table(manifest["images"])
    assert table.splitlines()[0].split() == ["image", "grains", "mean", "diameter", "ASTM", "G", "scale", "warnings"]
    assert "0.5 auto" in table
    page = (tmp_path / "out" / "report.html").read_text()
    assert "model scale" in page and "0.5 auto" in page and "the trained" in page
    summary = (tmp_path / "out" / "grain_sizes_summary.csv").read_text()
    assert ",scale," in summary.splitlines()[0] and "0.5 auto" in summary


def test_evaluate_records_the_scale_per_image(tmp_path: Path) -> None:
    img = grain_image(40, 48, 8)
    save(tmp_path / "d" / "images" / "m.png", img)
    save(tmp_path / "d" / "labels" / "m.png", (img < 128).astype(np.uint8) * 255)
    fixed = evaluate.evaluate_folder(FakeModel(), str(tmp_path / "d"), settings=SETTINGS, scale=1.0)
    old = evaluate.evaluate_folder(FakeModel(), str(tmp_path / "d"), settings=SETTINGS)
    assert fixed["per_image"] == old["per_image"] and fixed["scale"]["m.png"]["used"] == 1.0
    auto = evaluate.evaluate_folder(FakeModel(), str(tmp_path / "d"), settings=SETTINGS, scale="auto")
    assert auto["scale"]["m.png"]["mode"] == "auto" and auto["scale"]["m.png"]["used"] == 1.0


# ----------------------------------------------------------------------------------------------
# The trained grain size.
# ----------------------------------------------------------------------------------------------


def test_trained_grain_size_from_config_record_and_default(tmp_path: Path) -> None:
    cfg = ml_collections.ConfigDict({"data": {"source": "synthetic", "clients": ["sem", "tint"], "image_size": 256}})
    px, why = grain_size.trained_grain_size(None, cfg)
    assert px == pytest.approx((9.0 * 13.0 * 20.0 * 30.0) ** 0.25) and "sem, tint" in why
    # Tiny training images cap the generator's grains at image_size / 3.5.
    cfg.data.image_size = 32
    px, why = grain_size.trained_grain_size(None, cfg)
    cap = 32 / synthetic.MIN_GRAINS_ACROSS
    assert px == pytest.approx((9.0 * min(13.0, cap) * cap * cap) ** 0.25) and "capped" in why
    # A workdir with a config gets it recorded; the record wins afterwards.
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "config.json").write_text("{}")
    px, _ = grain_size.trained_grain_size(str(wd), cfg)
    assert json.loads((wd / grain_size.FILE).read_text())["diameter_px"] == pytest.approx(px)
    grain_size.record(str(wd), 21.0, "measured")
    assert grain_size.trained_grain_size(str(wd), cfg) == (21.0, f"recorded in {wd / grain_size.FILE}: measured")
    # Nothing known: the documented default.
    assert grain_size.trained_grain_size(None, ml_collections.ConfigDict({"eval": {}}))[0] == grain_size.DEFAULT_PX


def test_trained_grain_size_of_folder_data_is_measured_on_its_training_labels_only(tmp_path: Path) -> None:
    # Eight micrographs, two crops each: the run's validation and test micrographs have grains twice as
    # large, and must not move the trained grain size (it sets predict's --scale auto target).
    data = {"source": "folder", "dir": str(tmp_path / "data"), "clients": [], "group_regex": r"_(\d+)-",
            "test_fraction": 0.25, "val_fraction": 0.2, "seed": 0}
    names = [f"m_{g}-{i}" for g in range(8) for i in range(2)]
    pairs = [(Path(f"{n}.png"), Path(f"{n}.png")) for n in names]
    held_out = {p[0].stem for part in ("val", "test") for p in folder.split_pairs(
        pairs, test_fraction=0.25, seed=0, group_regex=r"_(\d+)-", val_fraction=0.2)[part]}
    assert held_out and len(held_out) < len(names)
    for n in names:
        cell = 32 if n in held_out else 16
        save(tmp_path / "data" / "labA" / "images" / f"{n}.png", grain_image(96, 96, cell))
        save(tmp_path / "data" / "labA" / "labels" / f"{n}.png", ((grain_image(96, 96, cell) < 128) * 255).astype(np.uint8))
    cfg = ml_collections.ConfigDict({"data": data})
    px, why = grain_size.trained_grain_size(None, cfg)
    assert px == pytest.approx(16 * np.sqrt(4 / np.pi), rel=0.02) and "training label" in why
    # Fewer training micrographs (a few-label lab) measure only those, and still not the held-out ones.
    cfg.data.train_groups = 1
    assert grain_size.trained_grain_size(None, cfg)[0] == pytest.approx(px, rel=0.02)
    assert "in 2 training label(s)" in grain_size.trained_grain_size(None, cfg)[1]
    # A lab held out of training (unseen_clients) is not measured either.
    for i in range(4):
        n = f"u_{i}-0"
        save(tmp_path / "data" / "labU" / "images" / f"{n}.png", grain_image(96, 96, 32))
        save(tmp_path / "data" / "labU" / "labels" / f"{n}.png", ((grain_image(96, 96, 32) < 128) * 255).astype(np.uint8))
    cfg.data.unseen_clients = ["labU"]
    assert grain_size.trained_grain_size(None, cfg)[0] == pytest.approx(px, rel=0.02)


# ----------------------------------------------------------------------------------------------
# The flag.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["0", "-1", "abc", "nan", "inf", "", "100", "4.01"])
def test_bad_scale_values_name_the_flag(bad: str) -> None:
    with pytest.raises(ValueError, match="--scale"):
        scale_lib.parse_scale(bad)
    assert scale_lib.parse_scale("AUTO") == "auto" and scale_lib.parse_scale("0.5") == 0.5
    assert scale_lib.parse_scale("4") == 4.0


def test_an_enlargement_past_the_pixel_budget_is_refused_before_resampling(monkeypatch) -> None:
    scale_lib.check_scaled_size((1000, 1000), 4.0)  # 16 Mpx: fine
    scale_lib.check_scaled_size((10000, 10000), 1.0)  # not an enlargement: not this check's business
    with pytest.raises(ValueError, match=r"--scale 4 would enlarge this 5000x5000 px image to 20000x20000"):
        scale_lib.check_scaled_size((5000, 5000), 4.0)

    class NeverCalled:
        def predict_prob(self, image, **kw):
            raise AssertionError("the model ran on an image past the budget")

    monkeypatch.setattr(scale_lib, "MAX_SCALED_PIXELS", 1000)
    with pytest.raises(ValueError, match="would enlarge"):
        scale_lib.predict_at(NeverCalled(), np.zeros((20, 20, 3), np.float32), 2.0)
    # Shrunk under 16 px a side no grain is left to see: refused, not measured as a nonsense number.
    scale_lib.check_scaled_size((64, 300), 0.25)
    with pytest.raises(ValueError, match=r"--scale 0.001 would shrink this 256x256 px image to 1x1 px"):
        scale_lib.predict_at(NeverCalled(), np.zeros((256, 256, 3), np.float32), 0.001)


def test_predict_run_refuses_a_bad_scale_before_the_model_load(tmp_path: Path, capsys) -> None:
    values = dict(
        workdir=str(tmp_path / "missing"), method="fedavg", client=None, images=str(tmp_path), out=str(tmp_path / "o"),
        overlap=None, flips=False, pixel_size_um=0.0, exclude_border=False, settings={}, scale="0",
    )
    assert predict.cli(values, progress=False) == predict.EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--scale" in err


@pytest.mark.parametrize("tool,extra", [("predict", ["--images", "x", "--out", "y"]), ("evaluate", ["--data_dir", "x"])])
@pytest.mark.parametrize("bad", ["0", "abc"])
def test_cli_bad_scale_is_one_line_and_exit_2(tmp_path: Path, tool: str, extra: list[str], bad: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", f"fedtransfer_jax.{tool}", "--workdir", str(tmp_path), *extra, f"--scale={bad}"],
        capture_output=True, text=True, cwd=str(tmp_path), timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"},
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--scale" in lines[0] and lines[0].startswith(f"{tool}: error"), proc.stderr


def test_a_run_at_mixed_scales_says_so_once() -> None:
    auto = lambda s: {"scale": {"mode": "auto", "used": s}}  # noqa: E731
    assert scale_lib.mixed_scales_note([auto(1.0), auto(1.0), {"scale": {"mode": "fixed", "used": 0.5}}]) is None
    note = scale_lib.mixed_scales_note([auto(1.0), auto(0.6667), auto(1.0), {}])
    assert note.startswith("--scale auto chose different scales (1: 2 image(s), 0.667: 1 image(s))")
    assert "one fixed --scale" in note
