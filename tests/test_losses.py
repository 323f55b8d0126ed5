"""The segmentation loss's centreline-Dice term against an independent numpy/scipy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from fedtransfer_jax.models.losses import cldice, segmentation_loss, soft_skeleton

_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)


def _np_erode(x):
    # The min of a 3x1 and a 1x3 min-filter is a min over the 3 px cross; outside the image counts as +inf.
    return ndimage.minimum_filter(x, footprint=_CROSS, mode="constant", cval=np.inf)


def _np_dilate(x):
    return ndimage.maximum_filter(x, size=3, mode="constant", cval=-np.inf)


def _np_skeleton(x, iterations):
    relu = lambda v: np.maximum(v, 0.0)  # noqa: E731
    skel = relu(x - _np_dilate(_np_erode(x)))
    for _ in range(iterations):
        x = _np_erode(x)
        delta = relu(x - _np_dilate(_np_erode(x)))
        skel = skel + relu(delta - skel * delta)
    return skel


def _walls(size=48, width=5):
    t = np.zeros((size, size), np.float32)
    for c in (12, 30):
        t[:, c - width // 2 : c + width // 2 + 1] = 1.0
    t[20 - width // 2 : 20 + width // 2 + 1, :] = 1.0
    return t


def test_soft_skeleton_matches_scipy_reference():
    rng = np.random.default_rng(0)
    x = np.clip(_walls() + 0.3 * rng.standard_normal((48, 48)), 0, 1).astype(np.float32)
    got = np.asarray(soft_skeleton(jnp.asarray(x[None]), 5))[0]
    np.testing.assert_allclose(got, _np_skeleton(x.astype(np.float64), 5), atol=1e-5)


def test_skeleton_of_a_thick_wall_is_thin():
    skel = np.asarray(soft_skeleton(jnp.asarray(_walls(width=5)[None]), 5))[0]
    # Five pixels wide in, about one out: along a column away from the crossing, one pixel is on.
    assert skel[40, 8:17].sum() == pytest.approx(1.0)


def test_cldice_counts_a_gap_and_a_spurious_wall_by_length():
    t = _walls(width=5)
    perfect = cldice(jnp.asarray(t[None]), jnp.asarray(t[None]))
    assert float(perfect[0]) == pytest.approx(0.0, abs=1e-6)
    gap = t.copy()
    gap[30:40, 10:15] = 0.0  # a 10 px break in a wall: the grains on either side merge
    spurious = {}
    for width in (3, 5):  # a wall across grains, of the same length, thin or thick
        spurious[width] = t.copy()
        spurious[width][36 : 36 + width, :] = 1.0
    stack = np.stack([gap, spurious[3], spurious[5]])
    losses = np.asarray(cldice(jnp.asarray(stack), jnp.asarray(np.stack([t, t, t]))))
    assert (losses > 0.03).all()  # the gap: 0.044 (10 px of ~150 px of skeleton), the walls: 0.13
    # clDice charges a spurious wall by its length: thin and thick cost within 5 % of each other, where
    # area Dice charges the thick one ~1.6x the thin one.
    assert abs(losses[2] / losses[1] - 1) < 0.05
    area_dice = [1 - 2 * (p * t).sum() / (p.sum() + t.sum()) for p in (spurious[3], spurious[5])]
    assert area_dice[1] / area_dice[0] > 1.4


def test_weight_zero_is_the_plain_loss_and_gradients_are_finite():
    rng = np.random.default_rng(1)
    labels = jnp.asarray(np.stack([_walls(), _walls(width=3)]).astype(np.int32))
    logits = jnp.asarray(rng.standard_normal((2, 48, 48, 2)).astype(np.float32))
    mask = jnp.array([1.0, 1.0])
    plain, aux = segmentation_loss(logits, labels, mask)
    off, aux_off = segmentation_loss(logits, labels, mask, cldice_weight=0.0)
    assert float(plain) == float(off) and set(aux_off) == {"ce", "dice"}
    # The plain loss, written out in numpy: boundary-weighted (x3) cross-entropy + soft Dice (smoothing 1).
    z, y = np.asarray(logits, np.float64), np.asarray(labels)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    ce = -np.take_along_axis(logp, y[..., None], -1)[..., 0]
    w = np.where(y == 1, 3.0, 1.0)
    p = np.exp(logp[..., 1])
    dice = (2 * (p * y).sum((1, 2)) + 1) / (p.sum((1, 2)) + y.sum((1, 2)) + 1)
    assert float(plain) == pytest.approx(((ce * w).sum((1, 2)) / w.sum((1, 2))).mean() + (1 - dice).mean(), rel=1e-5)
    on, aux_on = segmentation_loss(logits, labels, mask, cldice_weight=0.5)
    assert float(on) == pytest.approx(float(plain) + 0.5 * float(aux_on["cldice"]), rel=1e-6)
    grad = jax.grad(lambda z: segmentation_loss(z, labels, mask, cldice_weight=0.5)[0])(logits)
    assert np.isfinite(np.asarray(grad)).all() and float(jnp.abs(grad).sum()) > 0
    # A padded example changes nothing.
    padded, _ = segmentation_loss(
        jnp.concatenate([logits, logits[:1]]), jnp.concatenate([labels, labels[:1]]), jnp.array([1.0, 1.0, 0.0]),
        cldice_weight=0.5,
    )
    assert float(padded) == pytest.approx(float(on), rel=1e-6)
