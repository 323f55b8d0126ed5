"""Per-image intensity normalisation (data/intensity.py): the stretch against a closed form, its invariance to
exposure and gain, and that a run's data and predict feed a model as its config says."""

import importlib.util
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from fedtransfer_jax.analysis import measure, scale as scale_lib
from fedtransfer_jax.data import clients, intensity
from fedtransfer_jax.runs import engine
from fedtransfer_jax.runtime import workdir as workdir_lib
from test_predict_safety import FakeModel, grain_image, save

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("_grains_config", REPO / "experiments" / "grains.py")
grains = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(grains)


def micrograph(seed: int = 0, size: int = 48) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0.2, 0.7, (size, size, 3)).astype(np.float32)


def test_stretch_maps_the_percentiles_to_0_and_1_like_a_direct_computation():
    x = micrograph()
    lo, hi = np.percentile(x.astype(np.float64), [0.5, 99.5])  # the reference, in float64
    want = np.clip((x - lo) / (hi - lo), 0, 1)
    got = intensity.stretch(x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-4)  # float32 percentiles
    # after clipping, the percentiles interpolate between clipped and unclipped pixels: close, not exact
    assert np.isclose(np.percentile(got, 0.5), 0, atol=1e-3) and np.isclose(np.percentile(got, 99.5), 1, atol=1e-3)


@pytest.mark.parametrize("gain, offset", [(1 / 16, 0.0), (0.2, 0.4), (0.5, 0.5), (1.0, 0.0)])
def test_stretch_removes_exposure_and_gain(gain, offset):
    x = micrograph(1)
    np.testing.assert_allclose(intensity.stretch(gain * x + offset), intensity.stretch(x), atol=1e-4)


def test_stretch_is_idempotent_and_leaves_a_flat_image_alone():
    x = micrograph(2)
    once = intensity.stretch(x)
    np.testing.assert_allclose(intensity.stretch(once), once, atol=1e-4)
    flat = np.full((8, 8, 3), 0.3, np.float32)
    np.testing.assert_array_equal(intensity.stretch(flat), flat)


def test_normalise_stretches_each_image_of_a_stack_on_its_own_and_raw_is_untouched():
    stack = np.stack([micrograph(3), 0.1 * micrograph(4)])
    out = intensity.normalise(stack, "stretch")
    for i in range(2):
        np.testing.assert_array_equal(out[i], intensity.stretch(stack[i]))
    assert intensity.normalise(stack, "raw") is stack
    with pytest.raises(ValueError, match="data.intensity"):
        intensity.normalise(stack, "zscore")


def test_mode_of_configs_models_and_configs_from_before_the_key():
    old = ml_collections.ConfigDict({"data": {"source": "synthetic"}})
    assert intensity.mode_of(old) == "raw"
    new = ml_collections.ConfigDict({"data": {"intensity": "stretch"}})
    assert intensity.mode_of(new) == "stretch"
    assert intensity.mode_of({"data": {"intensity": "stretch"}}) == "stretch"  # config.json as a dict
    assert intensity.mode_of(FakeModel()) == "raw"  # a model whose config has no data section
    model = FakeModel()
    model.config = new
    assert intensity.mode_of(model) == "stretch"


def test_range_warning_names_a_dark_12_bit_image_for_a_raw_model_only():
    x = micrograph(5)
    assert intensity.range_warning(x, "raw") is None
    dark = x / 16.0  # 12-bit data read from a 16-bit file
    assert "darker or flatter" in intensity.range_warning(dark, "raw")
    assert intensity.range_warning(dark, "stretch") is None
    rec = intensity.record(dark, "raw")
    assert rec["mode"] == "raw" and rec["percentiles"][1] < 0.05 and "warning" in rec


def test_config_validation_names_the_key_and_old_workdirs_stay_compatible():
    config = grains.get_config("tiny")
    assert config.data.intensity == "raw"
    engine.validate_config(config)
    config.data.intensity = "per_tile"
    with pytest.raises(ValueError, match="data.intensity"):
        engine.validate_config(config)
    new = {"methods": ["fedavg"], "data": {"source": "synthetic", "intensity": "raw"}}
    old = {"methods": ["fedavg"], "data": {"source": "synthetic"}}
    assert workdir_lib.incompatible_keys(old, new) == []
    assert workdir_lib.incompatible_keys(old, {**new, "data": {"source": "synthetic", "intensity": "stretch"}}) == [
        "data.intensity"
    ]


class RecordingModel(FakeModel):
    def __init__(self, mode: str):
        super().__init__()
        self.config = ml_collections.ConfigDict({"eval": {"threshold": 0.5}, "data": {"intensity": mode}})
        self.inputs: list[np.ndarray] = []

    def predict_prob(self, image, *, overlap=None, flips=False):
        self.inputs.append(np.array(image))
        return super().predict_prob(image)


@pytest.mark.parametrize("mode", ["raw", "stretch"])
def test_predict_feeds_the_model_as_its_config_says(mode):
    image = 0.2 * micrograph(6, 40)  # dark, and many grey levels: a second stretch would show
    model = RecordingModel(mode)
    scale_lib.probabilities(model, image, scale=1.0)
    (seen,) = model.inputs
    want = intensity.stretch(image) if mode == "stretch" else image
    np.testing.assert_array_equal(seen, want)


def test_measure_records_the_intensity_and_warns_a_raw_model_of_a_dark_image(tmp_path):
    dark = (grain_image(40, 40).astype(np.uint16) * 16)  # 12-bit levels in a 16-bit file: max 3680 of 65535
    path = save(tmp_path / "dark.png", dark)
    settings = measure.postprocess_choice.resolve_settings(None, None, {}, 0.5)[0]
    raw = measure.measure_image(RecordingModel("raw"), str(path), pixel_size_um=None, exclude_border=False, settings=settings)
    assert raw.summary["intensity"]["mode"] == "raw"
    assert any("darker or flatter" in w for w in raw.summary["warnings"])
    stretched = measure.measure_image(
        RecordingModel("stretch"), str(path), pixel_size_um=None, exclude_border=False, settings=settings
    )
    assert stretched.summary["intensity"]["mode"] == "stretch"
    assert not any("darker or flatter" in w for w in stretched.summary.get("warnings", []))


def _assert_stretched_from(stretched: np.ndarray, raw_8bit: np.ndarray) -> None:
    """``stretched`` (whole images) is the stretch of the full-precision images that ``raw_8bit`` stores: the
    8-bit rounding of the raw pixel and of the two percentiles (half a level each) times the stretch's gain,
    plus the stored result's own half level."""
    for got, raw in zip(stretched, raw_8bit):
        lo, hi = intensity.percentiles(raw)
        tol = (1.5 / 255) / (hi - lo) + 0.5 / 255 + 1e-4
        np.testing.assert_allclose(got, intensity.stretch(raw), atol=tol)


def _whole_images(tiles: np.ndarray, per_side: int) -> np.ndarray:
    """Tiles cut row by row from square images (``tiling.extract_tiles`` order), put back together."""
    n, t = len(tiles) // per_side**2, tiles.shape[1]
    grid = tiles.reshape(n, per_side, per_side, t, t, -1)
    return grid.transpose(0, 1, 3, 2, 4, 5).reshape(n, per_side * t, per_side * t, -1)


def test_a_stretch_run_stretches_whole_images_before_they_are_tiled(tmp_path):
    """Training tiles come from whole images stretched as predict stretches a micrograph (not tile by tile),
    stored on 8-bit levels so they stay uint8 on device; labels never change."""
    cfg = grains.get_config("tiny").data
    cfg.tfds_dir = str(tmp_path / "tfds")
    cfg.image_size, cfg.val_per_client = 64, 1  # 2 x 2 tiles of 32 px per image
    raw = clients.load_federated_data(cfg, tmp_path)
    cfg.intensity = "stretch"
    stretched = clients.load_federated_data(cfg, tmp_path)
    for c, name in enumerate(raw.client_names):
        n = int(np.asarray(raw.train.mask[c]).sum())
        whole_raw = _whole_images(np.asarray(raw.train.images[c, :n]), 2)
        whole = _whole_images(np.asarray(stretched.train.images[c, :n]), 2)
        _assert_stretched_from(whole, whole_raw)
        per_tile = intensity.normalise(np.asarray(raw.train.images[c, :n]), "stretch")
        assert np.abs(_whole_images(per_tile, 2) - whole).max() > 0.05, name  # and not tile by tile
        np.testing.assert_array_equal(np.asarray(stretched.train.labels[c]), np.asarray(raw.train.labels[c]))
    assert clients.as_uint8_images(stretched.train.images) is not None  # still 8-bit on device
    for split in ("test", "val"):
        for name, (images, labels) in getattr(stretched, split).items():
            np.testing.assert_array_equal(labels, getattr(raw, split)[name][1])
            _assert_stretched_from(_whole_images(images, 2), _whole_images(getattr(raw, split)[name][0], 2))
    whole, _ = clients.whole_test_images(cfg, ["brightfield"], 1, 48)
    (images, _), = whole.values()
    cfg.intensity = "raw"
    (raw_images, _), = clients.whole_test_images(cfg, ["brightfield"], 1, 48)[0].values()
    _assert_stretched_from(images, raw_images)


def test_stretch_batch_in_jax_equals_the_numpy_stretch_per_image():
    import jax

    batch = np.stack([micrograph(7, 16), 0.1 * micrograph(8, 16) + 0.3, np.full((16, 16, 3), 0.4, np.float32)])
    got = np.asarray(jax.jit(intensity.stretch_batch)(batch))
    for i in range(len(batch)):
        np.testing.assert_allclose(got[i], intensity.stretch(batch[i]), atol=1e-4)


def test_re_rendered_style_tiles_are_stretched_inside_the_step():
    import jax
    import jax.numpy as jnp

    from fedtransfer_jax.style.techniques import StyleBank, StyleTechnique, mix_batch, stack_messages

    def render(shared, bank, images, labels, targets, key):  # a dim, low-contrast style
        return 0.3 + 0.1 * images

    m = StyleTechnique("dim", lambda k, t: None, None, None, stack_messages, render)
    bank = StyleBank({"a": jnp.zeros((2, 1, 1))}, jnp.asarray([[True], [True]]))
    images = jnp.asarray(np.stack([micrograph(i, 8) for i in range(4)]))
    batch = {"images": images, "labels": jnp.zeros((4, 8, 8), jnp.uint8), "mask": jnp.ones(4, bool)}
    out = jax.jit(lambda b, k: mix_batch(m, None, bank, b, jnp.int32(0), k, 1.0, "foreign", intensity.stretch_batch))(
        batch, jax.random.PRNGKey(0)
    )
    for i in range(4):  # every example re-rendered, then stretched back to the stretched original
        np.testing.assert_allclose(np.asarray(out["images"][i]), intensity.stretch(np.asarray(images[i])), atol=1e-4)
    plain = jax.jit(lambda b, k: mix_batch(m, None, bank, b, jnp.int32(0), k, 1.0))(batch, jax.random.PRNGKey(0))
    assert float(jnp.max(plain["images"])) <= 0.4 + 1e-6  # without it the style's own gain stays


def test_the_population_trainer_refuses_stretch():
    from fedtransfer_jax.runs import population_training

    spec = importlib.util.spec_from_file_location("_mc", REPO / "experiments" / "many_clients.py")
    mc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mc)
    config = mc.get_config("tiny")
    population_training.validate_config(config)
    with config.unlocked():
        config.data = ml_collections.ConfigDict({"intensity": "stretch"})
    with pytest.raises(ValueError, match="data.intensity"):
        population_training.validate_config(config)


def test_evaluate_records_how_it_fed_the_model(tmp_path):
    from fedtransfer_jax import evaluate

    save(tmp_path / "d" / "images" / "a.png", grain_image(40, 40))
    save(tmp_path / "d" / "labels" / "a.png", np.where(grain_image(40, 40) < 128, 255, 0).astype(np.uint8))
    for mode in ("raw", "stretch"):
        result = evaluate.evaluate_folder(RecordingModel(mode), str(tmp_path / "d"), scale=1.0)
        assert result["intensity"] == mode
    assert evaluate.evaluate_folder(None, str(tmp_path / "d"))["intensity"] == "raw"  # the classical baseline
