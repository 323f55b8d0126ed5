"""style.checks.context and .scoring: the fidelity measure is itself validated on toy labs of opposite
polarity, then one method's report (fidelity, polarity, classifier, structure) on those labs (16 px)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedtransfer_jax.style.checks import context, fidelity, scoring
from style_toy import toy_lab


@pytest.fixture(scope="module")
def toy_ctx():
    heldout = {}
    for i, pol in enumerate(("dark", "bright")):
        heldout[pol] = toy_lab(pol, 10 + i, 16, 16)
    return context.prepare(heldout, ("dark", "bright"), 0, dims=4, classifier_steps=30, segmenter_steps=0)


def test_fidelity_measure_ranks_same_lab_closest_and_flags_brightness_match(toy_ctx):
    val = context.validate_measure(toy_ctx)
    for lab in ("dark", "bright"):
        for g in ("texture", "global"):
            assert val[lab][g]["heldout_ratio"] < 0.5, (lab, g, val[lab][g])
            assert min(val[lab][g]["other_lab_ratios"].values()) == pytest.approx(1.0)
    # Tiles of the dark lab with the bright lab's mean / std per channel: globally 'bright', texture 'dark'.
    x, _ = toy_ctx.query["dark"]
    ref = toy_ctx.reference["bright"][0]
    z = (x - x.mean(axis=(1, 2), keepdims=True)) / (x.std(axis=(1, 2), keepdims=True) + 1e-6)
    fake = np.clip(z * ref.std(axis=(1, 2)).mean(0) + ref.mean(axis=(0, 1, 2)), 0, 1).astype(np.float32)
    fid = scoring.fidelity_of_sets(toy_ctx, {"bright": fake, "dark": toy_ctx.query["dark"][0]})
    # Flagged: its texture is as far from the bright lab as the dark lab's own (ratio ~1, goal < 0.5).
    assert fid["bright"]["texture"]["ratio"] > fidelity.GOAL_FIDELITY_RATIO
    assert not fid["bright"]["meets_goal"]
    assert fid["dark"]["ratio"] < fidelity.GOAL_FIDELITY_RATIO and fid["dark"]["meets_goal"]  # real dark tiles


def test_evaluate_report_is_jsonable_with_identity_restyler(toy_ctx):
    restyled = scoring.restyle_all(toy_ctx, lambda x, y, t, k: np.asarray(x), seed=0, per_pair=4)
    assert set(restyled) == {("dark", "bright"), ("bright", "dark")}
    rep = scoring.evaluate(toy_ctx, restyled)
    json.dumps(rep)
    assert rep["polarity"]["bright"]["agreement"] == 0.0  # dark-boundary tiles claimed 'bright'
    assert not rep["fidelity"]["bright"]["meets_goal"]  # the dark lab itself: ratio ~1
    clf = rep["classifier"]
    assert clf["real_query_accuracy"] > 0.9 and clf["target_fraction_mean"] < 0.5
    assert "structure" not in rep  # segmenter_steps=0


def test_structure_check_with_a_stub_segmenter(toy_ctx):
    """A 'segmenter' that finds boundaries only where a tile is much darker than its median: perfect on the
    dark lab's tiles, blind on the bright lab's; restyling bright -> dark by inversion makes it perfect."""

    def seg(x):
        luma = np.asarray(x).mean(-1)
        return (luma < np.median(luma, axis=(1, 2), keepdims=True) - 0.2).astype(np.float32)

    ctx = toy_ctx._replace(segment=seg)
    restyle = lambda x, y, t, k: (1.0 - np.asarray(x)) if t == "dark" else np.asarray(x)
    rep = scoring.evaluate(ctx, scoring.restyle_all(ctx, restyle, seed=0, per_pair=3))["structure"]
    into_dark, into_bright = rep["pairs"]["bright->dark"], rep["pairs"]["dark->bright"]
    assert into_dark["f1_original"] < 0.2 and into_dark["f1_restyled"] > 0.9
    assert into_bright["f1_original"] == pytest.approx(into_bright["f1_restyled"])
    assert rep["f1_relative_drop"] < 0 and set(rep["per_target"]) == {"dark", "bright"}
