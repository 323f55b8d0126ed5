"""The v2 primary endpoint (docs/PROTOCOL.md "Endpoints"): whole test images through predict's sliding window,
post-processed, scored (ARI, F1 at 1 px, grain-size errors) beside the trivial all-boundary map; the whole
images' own seed path; the run's summary entry; the study comparisons on them."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from fedtransfer_jax.data import clients as clients_lib
from fedtransfer_jax.data import synthetic
from fedtransfer_jax.data.seeds import lab_seed
from fedtransfer_jax.metrics import postprocess_select as pps
from fedtransfer_jax.runs import evaluation, inference, sweep, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from experiments import grains  # noqa: E402

DATA = {"source": "synthetic", "seed": 3, "boundary_width": 2}


def test_true_boundary_prob_scores_perfectly_and_trivial_map_does_not():
    whole, notes = clients_lib.whole_test_images(DATA, ["brightfield"], 2, 64)
    assert not notes
    _, labels = whole["brightfield"]
    # A fake model whose "image" carries the true boundary map in channel 0: its probability is the truth.
    images = np.repeat(labels[..., None].astype(np.float32), 3, axis=-1)
    prob_fn = lambda params, x: x[..., 0]
    prob = inference.sliding_window_prob(inference.tile_probs_of(prob_fn, None), images[0], 32)
    np.testing.assert_allclose(prob, labels[0], atol=1e-6)  # the window covers and stitches exactly
    settings = pps.PostprocessSettings(threshold=0.5, close_radius=0, min_fragment_px=0, min_grain_area=0, line_width=0)
    out = evaluation.evaluate_whole_images(prob_fn, None, images, labels, settings, 32)
    assert out["ari"] == pytest.approx(1.0)
    assert out["boundary_f1"] == pytest.approx(1.0)
    assert out["diameter_rel_error"] == pytest.approx(0.0)
    assert out["astm_G_abs_diff"] == pytest.approx(0.0)
    assert evaluation.trivial_boundary_f1(labels) < 1.0


def test_predict_uses_the_same_sliding_window(monkeypatch):
    calls = []
    real = inference.sliding_window_prob
    monkeypatch.setattr(inference, "sliding_window_prob", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = inference.LoadedModel.__new__(inference.LoadedModel)
    model.tile, model.params, model._prob_fn = 32, None, lambda params, x: x[..., 0]
    model.predict_prob(np.zeros((40, 50, 3), np.float32))
    assert calls == [1]


def test_whole_images_are_deterministic_and_on_their_own_seed_path():
    a, _ = clients_lib.whole_test_images(DATA, ["sem"], 2, 64)
    b, _ = clients_lib.whole_test_images(DATA, ["sem"], 2, 64)
    np.testing.assert_array_equal(a["sem"][0], b["sem"][0])
    np.testing.assert_array_equal(a["sem"][1], b["sem"][1])
    seeds = {lab_seed(3, "sem", s) for s in ("train", "val", "test")}
    assert lab_seed(3, "sem", clients_lib.WHOLE_TEST_SPLIT) not in seeds
    # Not a tile of the training images: the training split's images of the same size differ everywhere.
    train_images, _, _ = synthetic.make_lab_examples("sem", 2, 64, lab_seed(3, "sem", "train"))
    for im in a["sem"][0]:
        assert all(np.abs(im - t).mean() > 1e-3 for t in train_images)
    none, notes = clients_lib.whole_test_images({**DATA, "source": "folder"}, ["lab_a"], 1, 64)
    assert none == {} and "only synthetic" in notes[0]


def test_tiny_run_writes_whole_images_for_each_method(tmp_path):
    config = grains.get_config("tiny")
    config.methods = ("fedavg", "local")
    config.data.val_per_client = 1
    config.data.unseen_clients = ("tint",)
    config.eval.whole_images = 1
    config.eval.whole_image_size = 64
    train.train_and_evaluate(config, str(tmp_path))
    with open(tmp_path / "summary.json") as f:
        summary = json.load(f)
    for m in config.methods:
        w = summary["methods"][m]["whole_images"]
        assert w["image_size"] == 64 and w["images_per_lab"] == 1
        assert set(w["per_client"]) == set(summary["clients"])
        assert set(w["unseen"]["per_client"]) == {"tint"}
        assert 0.0 <= w["trivial_f1"]["mean"] < 1.0
        for k in ("ari", "boundary_f1", "diameter_rel_error"):
            assert np.isfinite(w["mean"][k]) and np.isfinite(w["unseen"]["mean"][k])
    assert summary["methods"]["fedavg"]["whole_images"]["settings"]["source"] == pps.SOURCE_CHOSEN
    # The endpoint's floor: the starting model through the same path, with its own post-processing choice.
    floor = summary["whole_images_untrained"]
    assert floor["settings"]["source"] == pps.SOURCE_CHOSEN and set(floor["unseen"]["per_client"]) == {"tint"}
    assert -1.0 <= floor["mean"]["ari"] <= 1.0 and np.isfinite(floor["unseen"]["mean"]["ari"])
    assert floor["mean"] != summary["methods"]["fedavg"]["whole_images"]["mean"]  # untrained is not the trained model
    md = (tmp_path / "summary.md").read_text()
    assert "Whole test images" in md and "- fedavg: post-processed ARI seen" in md
    assert "- untrained (the starting model through the same path: the endpoint's floor)" in md


def _seed_summary(aris: dict[str, float]) -> dict:
    metrics = lambda a: {"ari": a, "boundary_f1": 0.0, "vi": 0.0, "grain_count_rel_error": 0.0}
    whole = lambda a: {"ari": a, "boundary_f1": 0.5, "diameter_rel_error": 0.1, "astm_G_abs_diff": 0.2}
    return {
        "methods": {
            m: {
                "mean": metrics(a),
                "per_client": {"lab": metrics(a)},
                "whole_images": {"mean": whole(a - 0.1), "unseen": {"mean": whole(a - 0.2)}},
            }
            for m, a in aris.items()
        }
    }


def test_study_compares_whole_image_ari_in_the_holm_family():
    rng = np.random.default_rng(0)
    fedavg = rng.normal(0.5, 0.03, 4)
    gen = fedavg + rng.normal(0.05, 0.01, 4)
    study = sweep.aggregate({s: _seed_summary({"fedavg": fedavg[s], "gen": gen[s]}) for s in range(4)})
    e = study["methods"]["gen"]
    assert e["whole_seen"]["ari"]["per_seed"] == pytest.approx(list(gen - 0.1))
    assert e["whole_unseen"]["ari"]["mean"] == pytest.approx(float(np.mean(gen - 0.2)))
    row = study["comparisons"]["gen vs fedavg"]
    assert {"seen_ari", "whole_seen_ari", "whole_unseen_ari"} <= set(row)
    assert row["whole_seen_ari"]["diff_mean"] == pytest.approx(float(np.mean(gen - fedavg)))
    assert row["whole_seen_ari"]["p_holm"] >= row["whole_seen_ari"]["p"]
    text = sweep.markdown(study)
    assert "whole-image seen ARI diff" in text and "Whole test images" in text
    assert "whole_untrained" not in study and "untrained" not in text  # no seed recorded a floor
    floors = [0.2, 0.3, 0.1, 0.25]
    per_seed = {s: _seed_summary({"fedavg": fedavg[s], "gen": gen[s]}) for s in range(4)}
    for s in range(4):
        per_seed[s]["whole_images_untrained"] = {
            "mean": {"ari": floors[s], "boundary_f1": 0.4, "diameter_rel_error": 0.5, "astm_G_abs_diff": 1.0}
        }
    study = sweep.aggregate(per_seed)
    assert study["whole_untrained"]["whole_seen"]["ari"]["mean"] == pytest.approx(np.mean(floors))
    assert "whole_unseen" not in study["whole_untrained"]  # no seed had unseen labs for it
    assert "| *untrained (the endpoint's floor)* | 0.212" in sweep.markdown(study)
    # A seed without whole images: no whole entries (and no comparison on them), nothing else changes.
    per_seed = {s: _seed_summary({"fedavg": fedavg[s], "gen": gen[s]}) for s in range(4)}
    del per_seed[2]["methods"]["gen"]["whole_images"]
    study = sweep.aggregate(per_seed)
    assert "whole_seen" not in study["methods"]["gen"]
    assert "whole_seen_ari" not in study["comparisons"]["gen vs fedavg"]


def test_floor_scores_the_random_init_even_when_the_run_starts_from_a_trained_model(monkeypatch):
    """`init_from` runs start from a trained model; the floor must still be the untrained network."""
    import types

    import jax

    from fedtransfer_jax.runs import engine, runners

    config = grains.get_config("tiny")
    model, tile = engine.build_model(config), int(config.data.tile_size)
    fresh = engine.init_params(config, model, tile)
    trained = jax.tree.map(lambda x: x + 1.0, fresh)
    seen = []
    monkeypatch.setattr(evaluation, "evaluate_whole_images", lambda fn, params, *a: seen.append(params) or {"ari": 0.0})
    images = np.zeros((1, tile, tile, 3), np.float32), np.zeros((1, tile, tile), np.uint8)
    ctx = types.SimpleNamespace(
        config=config, model=model, init_params=trained, prob_fn=None, whole_test={"lab": images}, whole_unseen={},
        data=types.SimpleNamespace(val={"lab": (images[0][:0], images[1][:0])}),  # no validation tiles
    )
    for init_from, expected in (("", trained), ("shipped", fresh)):
        config.init_from, seen[:] = init_from, []
        out = runners.untrained_whole_images(ctx)
        assert out["mean"]["ari"] == 0.0 and "unseen" not in out
        for a, b in zip(jax.tree.leaves(seen[0]), jax.tree.leaves(expected)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
