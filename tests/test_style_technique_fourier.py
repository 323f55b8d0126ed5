"""Fourier amplitude style sharing (style/techniques/fourier.py): no shared model. The amplitude maths itself
is tested in tests/test_style.py (style/fourier.py)."""

from fedtransfer_jax.style.techniques import TECHNIQUE_NAMES, config_defaults, fourier
from style_toy import built


def test_registered_with_its_config_keys():
    assert "fourier" in TECHNIQUE_NAMES
    d = config_defaults()
    for key in ("fourier_beta", "fourier_lam"):
        assert key in d and key in fourier.DEFAULTS


def test_fourier_has_nothing_to_train():
    assert built("fourier")[4] == []
