"""Statistics inversion (privacy/audit/statistics_inversion.py): the attack recovers what a statistic reveals."""

import jax.numpy as jnp
import numpy as np

from audit_toy import _key, lab16  # noqa: F401 (fixture)
from fedtransfer_jax.privacy import audit
from fedtransfer_jax.style.fourier import low_freq_amplitude


def test_invert_statistics_recovers_what_a_generic_statistic_reveals(lab16):
    # A statistic that keeps the coarse layout (4x4 block means) must give the layout back: the optimiser and
    # the relative loss work for any stats_fn, and the low-pass correlation detects it.
    images, labels = lab16
    stats_fn = lambda x: x.reshape(4, 4, 4, 4, 3).mean(axis=(1, 3))  # noqa: E731
    rec = audit.invert_statistics(
        stats_fn, stats_fn(jnp.asarray(images[0])), images.shape[1:], _key(1), steps=150, lr=0.1
    )
    s = audit.score_reconstruction(rec, images[0], labels[0], images[1:], boundary_fraction=0.3)
    assert s["lowpass_corr"] > 0.9 and s["lowpass_corr"] > s["baseline_lowpass_corr"] + 0.3


def test_inverting_fourier_amplitudes_recovers_the_low_frequency_content(lab16):
    images, labels = lab16
    beta = 0.25  # 16 px: a 5x5 window
    stats_fn = lambda x: low_freq_amplitude(x[None], beta)[0]  # noqa: E731
    rec = audit.invert_statistics(
        stats_fn, stats_fn(jnp.asarray(images[0])), images.shape[1:], _key(2), steps=150, lr=0.1
    )
    s = audit.score_reconstruction(
        rec, images[0], labels[0], images[1:], boundary_fraction=0.3, beta=beta, twin=True
    )
    assert s["amplitude_corr"] > 0.98 and s["amplitude_corr"] > s["baseline_amplitude_corr"] + 0.05
    # The mean colour (the DC term) is recovered exactly, which a random image of the lab does not give.
    err = np.abs(rec.mean((0, 1)) - images[0].mean((0, 1))).max()
    assert err < 0.02 and err < np.abs(images[1:].mean((1, 2)) - images[0].mean((0, 1))).max(1).mean()
