"""style.checks.judges: the structure judge's per-tile scores on a hand case (the trained judges are
exercised end to end in test_style_checks_scoring.py)."""

from __future__ import annotations

import numpy as np
import pytest

from fedtransfer_jax.style.checks import judges as checks


def test_structure_scores_hand_case():
    lab = np.zeros((1, 16, 16), np.uint8)
    lab[0, 8] = 1
    perfect = checks.tile_scores(lab.astype(np.float32), lab)
    assert perfect["f1"][0] == pytest.approx(1.0) and perfect["ari"][0] == pytest.approx(1.0)
    nothing = checks.tile_scores(np.zeros((1, 16, 16), np.float32), lab)
    assert nothing["f1"][0] == 0.0
