"""data/augment.py: geometric ops move labels with images, photometric ops never touch labels, keys decide
everything, jit/vmap, off = identity, config checks name the key, and the composed transform inside one
jitted local step of a tiny U-Net (engine.local_training, as every method builds it)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fedtransfer_jax import models
from fedtransfer_jax.data import augment
from fedtransfer_jax.fl.algorithms.base import LocalTraining, run_local_training
from fedtransfer_jax.models.unet import UNet

H = W = 16
ALL_OFF = {k: 0.0 for k in augment.DEFAULTS if k.endswith("_prob")}


def only(**probs) -> augment.Augment:
    """Every op off except those given (with their default ranges unless overridden)."""
    cfg = {**augment.DEFAULTS, **ALL_OFF, **probs}
    return augment.resolve(cfg)


def boundary_example(seed=0, h=H, w=W):
    """A label of thin lines (1 px and 2 px wide, plus a corner dot) and an image whose channel 0 is the
    label (channels 1, 2: a ramp that tells orientation apart)."""
    rng = np.random.default_rng(seed)
    label = np.zeros((h, w), np.uint8)
    label[rng.integers(1, h - 2), :] = 1
    c = rng.integers(1, w - 3)
    label[:, c : c + 2] = 1
    label[0, w - 1] = 1
    ramp = np.add.outer(np.arange(h), 2 * np.arange(w)).astype(np.float32)
    ramp /= ramp.max()
    image = np.stack([label.astype(np.float32), ramp, ramp[::-1]], -1)
    return jnp.asarray(image), jnp.asarray(label)


def batch_of(n=4, h=H, w=W):
    pairs = [boundary_example(i, h, w) for i in range(n)]
    return {
        "images": jnp.stack([p[0] for p in pairs]),
        "labels": jnp.stack([p[1] for p in pairs]),
        "mask": jnp.ones((n,), bool),
    }


# ----------------------------------------------------------------------------------------------------------
# Geometric ops keep labels on the image's edges.
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["flip_h", "flip_v", "rot90"])
def test_flips_and_rot90_move_labels_exactly_with_images(op):
    aug = only(**{f"{op}_prob": 1.0})
    batch = batch_of(8)
    out = jax.jit(lambda b, k: augment.augment_batch(aug, b, k))(batch, jax.random.PRNGKey(3))
    np.testing.assert_array_equal(np.asarray(out["images"][..., 0]).astype(np.uint8), np.asarray(out["labels"]))
    # The op did something (the ramp channels moved) on some example, and it is a dihedral transform.
    assert not np.array_equal(np.asarray(out["images"]), np.asarray(batch["images"]))
    for x, y in zip(np.asarray(batch["images"]), np.asarray(out["images"])):
        assert any(np.array_equal(np.rot90(t, k, axes=(0, 1)), y) for t in (x, x[:, ::-1]) for k in range(4))


def test_rot90_k_covers_all_four_turns():
    aug = only(rot90_prob=1.0)
    image, label = boundary_example()
    seen = set()
    for i in range(24):
        y, _ = augment.augment_example(aug, jax.random.PRNGKey(i), image, label)
        seen.add(next(k for k in range(4) if np.array_equal(np.rot90(np.asarray(image), k, axes=(0, 1)), np.asarray(y))))
    assert seen == {0, 1, 2, 3}


def test_non_square_tiles_keep_their_shape_and_alignment():
    aug = only(flip_h_prob=1.0, rot90_prob=1.0, rescale_prob=1.0)
    batch = batch_of(6, h=12, w=20)
    out = augment.augment_batch(aug, batch, jax.random.PRNGKey(0))
    assert out["images"].shape == (6, 12, 20, 3) and out["labels"].shape == (6, 12, 20)
    lab, img0 = np.asarray(out["labels"]).astype(bool), np.asarray(out["images"][..., 0])
    assert np.all(img0[lab] > 0)


def test_rescale_keeps_labels_on_image_edges_and_never_loses_a_line():
    aug = only(rescale_prob=1.0)  # default range (0.7, 1.4)
    batch = batch_of(8)
    for seed in range(6):
        out = jax.jit(lambda b, k: augment.augment_batch(aug, b, k))(batch, jax.random.PRNGKey(seed))
        img0, lab = np.asarray(out["images"][..., 0]), np.asarray(out["labels"]).astype(bool)
        # Labelled pixels lie on the resampled boundary (it has weight among their bilinear neighbours) ...
        assert np.all(img0[lab] > 0)
        # ... and where the image is mostly boundary, its nearest source pixel is one: labelled.
        assert np.all(lab[img0 > 0.75 + 1e-6])
        assert lab.sum(axis=(1, 2)).min() > 0
    # Zooming out to the smallest scale still keeps the 1 px line: every row/column line survives.
    image, label = boundary_example()
    row = int(np.argmax(np.asarray(label)[:, 0]))
    for scale in (0.7, 0.8, 0.9):
        _, lab = augment.rescale(image, label, jnp.float32(scale), jnp.zeros(2), samples=augment.footprint_samples(0.7))
        lab = np.asarray(lab)
        c = (H - 1) / 2
        out_row = c + (row - c) * scale
        assert lab[int(np.floor(out_row)) : int(np.ceil(out_row)) + 1, W // 2].any()


def test_rescale_by_one_is_the_identity_and_zoom_in_magnifies():
    image, label = boundary_example()
    y, lab = augment.rescale(image, label, jnp.float32(1.0), jnp.zeros(2))
    np.testing.assert_array_equal(np.asarray(y), np.asarray(image))
    np.testing.assert_array_equal(np.asarray(lab), np.asarray(label))
    _, lab2 = augment.rescale(image, label, jnp.float32(1.4), jnp.zeros(2))
    cols = np.asarray(label)[H // 2].sum(), np.asarray(lab2)[H // 2].sum()
    assert cols[1] >= cols[0]  # the 2 px line is at least as wide


# ----------------------------------------------------------------------------------------------------------
# Photometric ops: image only, inside [0, 1].
# ----------------------------------------------------------------------------------------------------------
PHOTOMETRIC = ["invert", "brightness", "contrast", "gamma", "colour", "blur", "noise"]


@pytest.mark.parametrize("op", PHOTOMETRIC)
def test_photometric_ops_change_images_only(op):
    aug = only(**{f"{op}_prob": 1.0})
    batch = batch_of(4)
    out = augment.augment_batch(aug, batch, jax.random.PRNGKey(1))
    np.testing.assert_array_equal(np.asarray(out["labels"]), np.asarray(batch["labels"]))
    np.testing.assert_array_equal(np.asarray(out["mask"]), np.asarray(batch["mask"]))
    x = np.asarray(out["images"])
    assert x.dtype == np.float32 and x.min() >= 0.0 and x.max() <= 1.0
    assert not np.allclose(x, np.asarray(batch["images"]))


def test_invert_is_one_minus_x():
    batch = batch_of(2)
    out = augment.augment_batch(only(invert_prob=1.0), batch, jax.random.PRNGKey(0))
    np.testing.assert_allclose(np.asarray(out["images"]), 1.0 - np.asarray(batch["images"]), atol=0)


def test_blur_of_a_constant_image_is_that_image():
    x = jnp.full((H, W, 3), 0.3, jnp.float32)
    np.testing.assert_allclose(np.asarray(augment.gaussian_blur(x, jnp.float32(1.0), 3)), 0.3, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# Keys, jit, vmap, off.
# ----------------------------------------------------------------------------------------------------------
def test_deterministic_given_the_key_and_different_for_another():
    aug = augment.resolve(augment.DEFAULTS)
    batch = batch_of(6)
    f = jax.jit(lambda b, k: augment.augment_batch(aug, b, k))
    a, b = f(batch, jax.random.PRNGKey(5)), f(batch, jax.random.PRNGKey(5))
    c = f(batch, jax.random.PRNGKey(6))
    for k in ("images", "labels"):
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))
    assert not np.array_equal(np.asarray(a["images"]), np.asarray(c["images"]))
    # Eager and jitted agree.
    e = augment.augment_batch(aug, batch, jax.random.PRNGKey(5))
    np.testing.assert_array_equal(np.asarray(e["labels"]), np.asarray(a["labels"]))
    np.testing.assert_allclose(np.asarray(e["images"]), np.asarray(a["images"]), atol=1e-5)


def test_vmap_over_clients_matches_one_client_at_a_time():
    aug = augment.resolve(augment.DEFAULTS)
    batches = [batch_of(3) for _ in range(2)]
    stacked = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *batches)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    out = jax.jit(jax.vmap(lambda b, k: augment.augment_batch(aug, b, k)))(stacked, keys)
    for i in range(2):
        one = augment.augment_batch(aug, batches[i], keys[i])
        np.testing.assert_array_equal(np.asarray(out["labels"][i]), np.asarray(one["labels"]))
        np.testing.assert_allclose(np.asarray(out["images"][i]), np.asarray(one["images"]), atol=1e-5)


def test_disabled_or_absent_is_no_transform_at_all():
    assert augment.resolve({**augment.DEFAULTS, "enabled": False}) is None
    assert augment.resolve(None) is None
    assert augment.describe({**augment.DEFAULTS, "enabled": False}) == "off"
    assert augment.make_batch_transform(None) is None
    inner = lambda b, c, k: b  # noqa: E731
    assert augment.make_batch_transform(None, inner) is inner
    batch = batch_of(2)
    assert augment.augment_batch(None, batch, jax.random.PRNGKey(0)) is batch
    # Every probability 0: the batch comes back unchanged.
    out = augment.augment_batch(only(), batch, jax.random.PRNGKey(0))
    for k in batch:
        np.testing.assert_array_equal(np.asarray(out[k]), np.asarray(batch[k]))


def test_composition_runs_the_inner_transform_first_with_its_own_key():
    seen = {}

    def inner(batch, client_id, rng):
        seen["rng"] = rng
        return {**batch, "images": jnp.zeros_like(batch["images"])}  # the "re-rendering"

    aug = only(brightness_prob=1.0, brightness_range=(0.1, 0.2))
    t = augment.make_batch_transform(aug, inner)
    rng = jax.random.PRNGKey(9)
    out = t(batch_of(2), jnp.int32(0), rng)
    np.testing.assert_array_equal(np.asarray(seen["rng"]), np.asarray(rng))  # style draws unchanged
    x = np.asarray(out["images"])
    assert x.min() >= 0.1 - 1e-6 and x.max() <= 0.2 + 1e-6  # augmented after the inner transform


def test_summary_records_settings_in_order():
    d = augment.describe(augment.DEFAULTS)
    assert d["order"] == list(augment.OPS)
    assert d["rescale_range"] == [0.7, 1.4] and d["flip_h_prob"] == 0.5


# ----------------------------------------------------------------------------------------------------------
# Config checks name the key.
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "override, key",
    [
        ({"flip_h_prob": 1.5}, "augment.flip_h_prob"),
        ({"noise_prob": -0.1}, "augment.noise_prob"),
        ({"rescale_range": (1.4, 0.7)}, "augment.rescale_range"),
        ({"gamma_range": (0.0, 1.5)}, "augment.gamma_range"),
        ({"contrast_range": 0.5}, "augment.contrast_range"),
        ({"brightness_range": (-2.0, 0.1)}, "augment.brightness_range"),
        ({"noise_std_range": (-0.01, 0.1)}, "augment.noise_std_range"),
        ({"rescale_range": (0.3, 1.0)}, "augment.rescale_range"),
        ({"rotate_prob": 0.5}, "augment.rotate_prob"),
    ],
)
def test_validate_config_names_the_key(override, key):
    from experiments import grains
    from fedtransfer_jax.runs import engine

    config = grains.get_config("tiny")
    with config.unlocked():  # a whole new section: a type-safe ConfigDict refuses e.g. a float for a pair
        config.augment = ml_collections.ConfigDict({**config.augment.to_dict(), **override})
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        engine.validate_config(config)


def test_experiment_configs_carry_the_section_with_every_key():
    from experiments import grains, grains_seeds, privacy, real_plus_synthetic

    for mod in (grains, grains_seeds, privacy, real_plus_synthetic):
        config = mod.get_config("tiny")
        assert set(config.augment) == set(augment.DEFAULTS), mod.__name__
        assert augment.resolve(config.augment) is not None


# ----------------------------------------------------------------------------------------------------------
# Inside one jitted local step of a tiny U-Net, built the way every method builds it.
# ----------------------------------------------------------------------------------------------------------
def test_augmentation_inside_a_jitted_local_step_of_a_tiny_unet():
    from experiments import grains
    from fedtransfer_jax.runs import engine

    model = UNet(features=(4, 8), groups=2)
    loss_fn = models.make_segmentation_loss(model, boundary_weight=3.0, dice_weight=1.0)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, H, W, 3)))["params"]
    b = batch_of(4)
    data = {"images": (b["images"] * 255).astype(jnp.uint8), "labels": b["labels"], "mask": b["mask"]}
    config = grains.get_config("tiny")
    config.fl.local_steps, config.fl.batch_size = 2, 2
    results = {}
    for enabled in (True, False):
        config.augment.enabled = enabled
        lt = engine.local_training(config, loss_fn)
        assert (lt.batch_transform is None) == (not enabled)
        step = jax.jit(lambda p, d, k, lt=lt: run_local_training(lt, p, d, jnp.int32(0), k))
        new, loss = step(params, data, jax.random.PRNGKey(1))
        assert np.isfinite(float(loss))
        results[enabled] = (new, float(loss))
    # Off: exactly the step without any transform.
    plain = LocalTraining(loss_fn, engine.local_training(config, loss_fn).optimizer, 2, 2)
    new, loss = jax.jit(lambda p, d, k: run_local_training(plain, p, d, jnp.int32(0), k))(params, data, jax.random.PRNGKey(1))
    assert loss == results[False][1]
    jax.tree_util.tree_map(np.testing.assert_array_equal, new, results[False][0])
    assert results[True][1] != results[False][1]
    # A style technique's own model never gets the augmentation.
    config.augment.enabled = True
    assert engine.local_training(config, loss_fn, augment=False).batch_transform is None


def test_workdir_resume_treats_a_config_without_the_section_as_augmentation_off():
    from fedtransfer_jax.runtime import workdir

    old = {"methods": ["fedavg"], "fl": {"rounds": 2}}
    off = {**old, "augment": {**augment.DEFAULTS, "enabled": False}}
    on = {**old, "augment": dict(augment.DEFAULTS)}
    assert workdir.incompatible_keys(old, off) == []
    assert workdir.incompatible_keys(off, {**off, "augment": {**off["augment"], "noise_prob": 0.9}}) == []
    assert "augment.enabled" in workdir.incompatible_keys(old, on)
    assert "augment.noise_prob" in workdir.incompatible_keys(on, {**on, "augment": {**on["augment"], "noise_prob": 0.9}})
