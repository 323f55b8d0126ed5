"""Gradient inversion (privacy/audit/gradient_inversion.py): leaks without DP, not with strong DP."""

import jax
import jax.numpy as jnp
import numpy as np

from audit_toy import SEED, _key, lab16  # noqa: F401 (fixture)
from fedtransfer_jax.privacy import audit


def test_gradient_inversion_beats_the_lab_baseline_without_dp_and_not_with_strong_dp(lab16):
    images, labels = lab16
    _, params, loss_fn = audit.tiny_segmenter(16, SEED, features=(8,))  # one level: compiles in seconds
    scores, recovered = audit.gradient_inversion_audit(
        loss_fn, params, images, labels, _key(3), batch_sizes=(1,), noise_multipliers=(1.0,), steps=40
    )
    s = scores["batch1"]
    assert recovered["batch1/no_dp"].shape == (1, 16, 16, 3)
    no_dp, dp1, control = s["no_dp"], s["dp_z1"], s["control"]
    # Without DP the delta gives the image away: SSIM and layout beyond both the lab baseline and what the
    # known label alone gives (the control inverts pure noise).
    assert no_dp["ssim"] > max(no_dp["baseline_ssim"], control["ssim"]) + 0.15
    assert no_dp["lowpass_corr"] > max(no_dp["baseline_lowpass_corr"], control["lowpass_corr"]) + 0.3
    assert {"ssim", "lowpass_corr"} <= set(audit.leaked_scores(no_dp, control))
    # z = 1 with C = ||delta||: the noise norm is ~sqrt(#params) times the signal.
    assert dp1["ssim"] < no_dp["ssim"] - 0.15


def test_dp_release_clips_and_adds_noise_of_the_right_scale():
    delta = {"a": jnp.full((50, 40), 3.0), "b": jnp.full((7,), -1.0)}
    clip, z = 2.0, 0.5
    out = audit.dp_release(delta, clip, z, _key(4))
    clipped = jax.tree_util.tree_map(lambda x: x * clip / float(jnp.sqrt(50 * 40 * 9.0 + 7.0)), delta)
    noise = np.concatenate(
        [np.ravel(o - c) for o, c in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(clipped))]
    )
    assert abs(noise.std() / (z * clip) - 1) < 0.05 and abs(noise.mean()) < 0.05 * z * clip
