"""Scale-robust synthetic data: grain diameters log-uniform over a range for every lab, label line widths
drawn per image; off by default, where the data are bit-identical to before the options existed."""

import hashlib

import numpy as np
import pytest

from fedtransfer_jax.data import clients, synthetic
from fedtransfer_jax.data.microstructure import boundary_map


# sha256 of the labels and grain maps (integers: no float-rounding differences between CPUs) that
# make_lab_examples gave before the scale options existed (commit 73ebdbb), for these labs and arguments.
BEFORE_THE_OPTIONS = "b5f6d1e113b6f0bf0c25294133367c10c7b5e6bf560ceb45ec046c79c673d1db"


def test_defaults_leave_the_data_unchanged():
    a = synthetic.make_lab_examples("brightfield", 2, 48, 3)
    b = synthetic.make_lab_examples("brightfield", 2, 48, 3, diameter_px=None, boundary_width_max=0)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    h = hashlib.sha256()
    for lab in ("brightfield", "darkfield", "tint"):
        _, labels, grains = synthetic.make_lab_examples(lab, 2, 40, 11, boundary_width=2)
        h.update(np.ascontiguousarray(labels).tobytes())
        h.update(np.ascontiguousarray(grains.astype(np.int32)).tobytes())
    assert h.hexdigest() == BEFORE_THE_OPTIONS


def test_only_training_labels_vary_in_width():
    from fedtransfer_jax.data import tfds_builders as tb

    cfg = tb.SyntheticConfig.create(labs=("tint",), image_size=32, tile_size=32, boundary_width=2, boundary_width_max=5)
    width = lambda split: [ex["label"].sum() for ex in tb._synthetic_examples(cfg, "tint", split, 6)]
    fixed = tb.SyntheticConfig.create(labs=("tint",), image_size=32, tile_size=32, boundary_width=2)
    fixed_width = lambda split: [ex["label"].sum() for ex in tb._synthetic_examples(fixed, "tint", split, 6)]
    assert width("test") == fixed_width("test") and width("val") == fixed_width("val")
    assert width("train") != fixed_width("train")


def test_diameters_are_log_uniform_in_the_range():
    spec = synthetic.LABS["sem"]
    draws = [
        synthetic._sample_grain_params(np.random.default_rng([7, i]), spec, 10_000, (8.0, 200.0))[0]
        for i in range(4000)
    ]
    logs = np.log(draws)
    assert np.min(draws) >= 8.0 and np.max(draws) <= 200.0
    # log-uniform: each quarter of the log range holds a quarter of the draws (binomial sd ~0.7 %)
    edges = np.linspace(np.log(8.0), np.log(200.0), 5)
    share = np.histogram(logs, edges)[0] / len(draws)
    assert np.all(np.abs(share - 0.25) < 0.03), share
    capped = synthetic._sample_grain_params(np.random.default_rng(1), spec, 64, (100.0, 200.0))[0]
    assert capped == pytest.approx(64 / synthetic.MIN_GRAINS_ACROSS)  # small images still hold grains


def test_images_follow_the_requested_grain_size():
    small = synthetic.make_lab_examples("brightfield", 2, 128, 0, diameter_px=(9.0, 10.0))[2]
    large = synthetic.make_lab_examples("brightfield", 2, 128, 0, diameter_px=(30.0, 32.0))[2]
    count = lambda g: np.mean([len(np.unique(x)) for x in g])
    assert count(small) > 5 * count(large)  # (30/9.5)^2 ~ 10x fewer grains


def test_label_widths_vary_per_image_within_the_range():
    images, labels, grains = synthetic.make_lab_examples("tint", 6, 64, 2, boundary_width=2, boundary_width_max=5)
    widths = []
    for lab, g in zip(labels, grains):
        match = [w for w in range(1, 7) if np.array_equal(lab > 0, boundary_map(g, w) > 0)]
        assert match and 2 <= match[0] <= 5
        widths.append(match[0])
    assert len(set(widths)) > 1
    # Rendering does not depend on the width: the images are those of the fixed-width data.
    fixed = synthetic.make_lab_examples("tint", 6, 64, 2)[0]
    np.testing.assert_array_equal(images, fixed)


@pytest.mark.parametrize(
    "diam,width,width_max,match",
    [((8.0,), 2, 0, "grain_diameter_px"), ((20.0, 10.0), 2, 0, "grain_diameter_px"), ((1.0, 10.0), 2, 0, "2 <="),
     ((), 0, 0, "boundary_width"), ((), 3, 2, "boundary_width_max")],
)
def test_bad_options_name_the_key(diam, width, width_max, match):
    with pytest.raises(ValueError, match=match):
        synthetic.make_lab_examples("sem", 1, 32, 0, diameter_px=diam, boundary_width=width, boundary_width_max=width_max)
    cfg = dict(source="synthetic", clients=("sem",), grain_diameter_px=diam, boundary_width=width,
               boundary_width_max=width_max)
    with pytest.raises(ValueError, match=match):
        clients.builder_config_from(cfg)


def test_builder_cache_key_changes_only_when_the_options_are_used():
    base = dict(source="synthetic", clients=("sem",))
    plain = clients.builder_config_from(base)
    assert "grain_diameter_px" not in plain.params() and "boundary_width_max" not in plain.params()
    scaled = clients.builder_config_from({**base, "grain_diameter_px": (8, 200), "boundary_width_max": 5})
    assert scaled.params()["grain_diameter_px"] == (8.0, 200.0) and scaled.name != plain.name
