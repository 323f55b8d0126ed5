"""Reconstruction scores (privacy/audit/scores.py): perfect for the true image, not for the lab baseline."""

import pytest

from audit_toy import lab16  # noqa: F401 (fixture)
from fedtransfer_jax.privacy import audit


def test_scores_of_the_true_image_are_perfect_and_the_baseline_is_not(lab16):
    images, labels = lab16
    s = audit.score_reconstruction(
        images[0], images[0], labels[0], images[1:], boundary_fraction=0.3, beta=0.25
    )
    assert s["ssim"] == pytest.approx(1.0) and s["lowpass_corr"] == pytest.approx(1.0)
    assert s["amplitude_corr"] == pytest.approx(1.0) and s["psnr"] > 100
    assert s["baseline_ssim"] < 0.5 and s["baseline_lowpass_corr"] < 0.5
    assert audit.edge_map(images[0], 0.25).mean() == pytest.approx(0.25, abs=0.02)
