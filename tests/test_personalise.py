"""experiments/personalise.py: the shipped model fine-tuned by one of its labs on its own labels."""

import math

import pytest

from experiments import few_labels, personalise
from fedtransfer_jax.runs import engine


def test_config_is_few_labels_local_recipe_on_every_micrograph_from_the_shipped_model():
    config = personalise.get_config()
    engine.validate_config(config)
    recipe = few_labels.get_config("1,local,cpu")
    assert config.init_from == "shipped" and config.data.train_groups == 0
    assert config.data.clients == ("tbm_tint_etched",) and tuple(config.methods) == ("local",)
    for key in ("rounds", "local_steps", "batch_size", "client_lr"):
        assert config.fl[key] == recipe.fl[key], key
    assert config.data.intensity == recipe.data.intensity == "stretch"  # as the shipped model reads images
    assert config.model.to_dict() == recipe.model.to_dict()
    assert config.data.seed == 0  # the training seed varies, the split does not


def test_tiny_variant_is_valid_and_needs_no_shipped_model():
    config = personalise.get_config("tiny")
    engine.validate_config(config)
    assert config.init_from == "" and config.data.train_groups == 0


def test_unknown_variant_names_the_file():
    with pytest.raises(ValueError, match="experiments/personalise.py"):
        personalise.get_config("big")


def scores(shift: dict[str, float], crops=6) -> dict:
    """few_labels.model_scores-shaped scores: the shipped model's ARI is 0.3 + 0.01 i on crop i, each seed's
    that plus its shift (and a small crop-dependent wobble, so the differences have a spread)."""
    out = {}
    for model, d in shift.items():
        per = {}
        for scale in personalise.SCALES:
            ari = {f"c{i}": 0.3 + 0.01 * i + d + (0.002 * (i % 3) if d else 0.0) for i in range(crops)}
            per[scale] = {"ari": ari, "boundary_f1": dict(ari), "ari_raw": dict(ari),
                          "intercept_rel_error": {"12": 0.2, "14": 0.3}}
        out[model] = per
    return out


def test_paired_differences_and_the_rule():
    study = personalise.aggregate(scores({"shipped": 0.0, "seed0": 0.05, "seed1": 0.03, "seed2": 0.04}))
    c = study["comparisons"]
    assert math.isclose(c["seed0 vs shipped @ 1"]["ari"]["diff_mean"], 0.05 + 0.002)  # the wobble averages 0.002
    mean = c["mean of 3 seeds vs shipped @ 1"]["ari"]
    assert math.isclose(mean["diff_mean"], 0.04 + 0.002) and mean["ci_low"] > 0
    assert study["gain"] == {"seeds": 3, "seeds_positive": 3, "shown": True}
    assert study["models"]["shipped"]["1"]["ari"]["n"] == 6
    assert "met (3 of 3 seeds positive)" in personalise.markdown(study)


def test_one_negative_seed_or_a_missing_seed_is_not_a_gain():
    negative = personalise.aggregate(scores({"shipped": 0.0, "seed0": 0.05, "seed1": -0.01, "seed2": 0.04}))
    assert negative["gain"]["shown"] is False and negative["gain"]["seeds_positive"] == 2
    missing = personalise.aggregate(scores({"shipped": 0.0, "seed0": 0.05, "seed1": 0.04}))
    assert missing["gain"] == {"seeds": 2, "seeds_positive": 2, "shown": False}
    assert "3 needed" in personalise.markdown(missing)


def test_models_scored_on_different_crops_are_refused():
    s = scores({"shipped": 0.0, "seed0": 0.05})
    s["seed0"]["1"]["ari"]["extra"] = 0.5
    with pytest.raises(ValueError, match="different crops"):
        personalise.aggregate(s)


def test_driver_refuses_an_unknown_seed_and_a_missing_folder(tmp_path, capsys):
    assert personalise.main(["--workdir", str(tmp_path / "w"), "--seeds", "7"]) == 2
    assert "--seeds: unknown seed '7'" in capsys.readouterr().err
    assert personalise.main(["--workdir", str(tmp_path / "w"), "--data_dir", str(tmp_path / "nope")]) == 2
    assert "--data_dir" in capsys.readouterr().err and not (tmp_path / "w").exists()
