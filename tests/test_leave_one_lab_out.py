"""experiments/leave_one_lab_out.py (docs/PROTOCOL.md v2, study b): each lab held out once with the other
labs as clients, and the macro-mean comparison paired over seeds (checked against a hand computation)."""

import json
import math

import numpy as np

import pytest
from scipy import stats as sp_stats

from experiments import leave_one_lab_out as lolo
from experiments import study_driver
from fedtransfer_jax.data import synthetic


@pytest.mark.parametrize("lab", synthetic.LAB_NAMES)
def test_each_lab_is_held_out_with_every_other_lab_as_a_client(lab):
    config = lolo.get_config(lab)
    assert config.data.unseen_clients == (lab,)
    assert set(config.data.clients) == set(synthetic.LAB_NAMES) - {lab}
    assert config.eval.select == "best_val" and config.fl.lr_schedule == "cosine" and config.augment.enabled
    assert config.eval.whole_images > 0  # the endpoint
    assert len(config.seeds) == len(config.data_seeds) == 10


def test_tiny_and_bad_variants():
    tiny = lolo.get_config("sem,tiny")
    assert tiny.data.unseen_clients == ("sem",) and tiny.data.image_size == 32 and len(tiny.seeds) == 2
    for bad in (None, "", "nolab", "sem,tint", "tiny"):
        with pytest.raises(ValueError, match="held-out lab"):
            lolo.get_config(bad)


def fake_study(seeds, per_method):
    return {
        "seeds": list(seeds),
        "methods": {m: {"whole_unseen": {"ari": {"per_seed": list(v)}}} for m, v in per_method.items()},
    }


def test_macro_mean_comparison_matches_a_paired_t_test():
    a = {"fedavg": [0.2, 0.3, 0.4], "fedtransfer_gen": [0.3, 0.3, 0.6], "gen_random_style": [0.1, 0.2, 0.3]}
    b = {"fedavg": [0.5, 0.5, 0.5], "fedtransfer_gen": [0.6, 0.4, 0.5], "gen_random_style": [0.5, 0.6, 0.4]}
    study = lolo.aggregate({"sem": fake_study((0, 1, 2), a), "tint": fake_study((0, 1, 2), b)})
    macro_gen = [(x + y) / 2 for x, y in zip(a["fedtransfer_gen"], b["fedtransfer_gen"])]
    macro_avg = [(x + y) / 2 for x, y in zip(a["fedavg"], b["fedavg"])]
    assert study["macro_per_seed"]["fedtransfer_gen"] == pytest.approx(macro_gen)
    c = study["comparisons"]["fedtransfer_gen vs fedavg"]
    assert c["p"] == pytest.approx(sp_stats.ttest_rel(macro_gen, macro_avg).pvalue)
    assert c["diff_mean"] == pytest.approx(sum(macro_gen) / 3 - sum(macro_avg) / 3)
    # Holm over the two comparisons present (gen_own_style is absent): the smaller p doubled.
    ps = sorted(x["p"] for x in study["comparisons"].values())
    assert min(x["p_holm"] for x in study["comparisons"].values()) == pytest.approx(min(1.0, 2 * ps[0]))
    assert study["per_lab"]["sem"]["fedavg"] == pytest.approx(0.3)
    md = lolo.markdown(study)
    assert "| sem | 0.300 |" in md and "fedtransfer_gen vs fedavg" in md
    json.dumps(study)  # summary.json


def test_labs_must_share_seeds_and_have_the_endpoint():
    a = fake_study((0, 1), {"fedavg": [0.1, 0.2], "fedtransfer_gen": [0.2, 0.3]})
    with pytest.raises(ValueError, match="different seeds"):
        lolo.aggregate({"sem": a, "tint": fake_study((0, 2), {"fedavg": [0, 0], "fedtransfer_gen": [0, 0]})})
    with pytest.raises(ValueError, match="eval.whole_images"):
        lolo.aggregate({"sem": {"seeds": [0], "methods": {"fedavg": {}}}})
    one = lolo.aggregate({"sem": a})  # one lab: the macro mean is that lab's
    assert one["macro_per_seed"] == {"fedavg": [0.1, 0.2], "fedtransfer_gen": [0.2, 0.3]}


def test_unknown_lab_exits_2(capsys, tmp_path):
    assert lolo.main(["--workdir", str(tmp_path), "--labs", "sem,nolab"]) == 2
    assert "nolab" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing started


def test_one_seed_pairs_over_labs_against_scipy():
    """The session study: one seed per lab, so the labs are the pairs (the seed analysis has nothing to say)."""
    per = {
        "sem": {"fedavg": [0.30], "fedtransfer_gen": [0.35], "gen_own_style": [0.31]},
        "tint": {"fedavg": [0.20], "fedtransfer_gen": [0.28], "gen_own_style": [0.26]},
        "ebsd_ipf": {"fedavg": [0.50], "fedtransfer_gen": [0.49], "gen_own_style": [0.40]},
    }
    study = lolo.aggregate({lab: fake_study((0,), v) for lab, v in per.items()})
    assert study["primary_analysis"] == "labs"
    labs = study["labs"]
    gen = [per[lab]["fedtransfer_gen"][0] for lab in labs]
    avg = [per[lab]["fedavg"][0] for lab in labs]
    c = study["comparisons_over_labs"]["fedtransfer_gen vs fedavg"]
    assert c["n"] == 3 and c["p"] == pytest.approx(sp_stats.ttest_rel(gen, avg).pvalue)
    ci = sp_stats.t.interval(0.95, 2, loc=np.mean(np.subtract(gen, avg)), scale=sp_stats.sem(np.subtract(gen, avg)))
    assert (c["ci_low"], c["ci_high"]) == pytest.approx(ci)
    assert math.isnan(study["comparisons"]["fedtransfer_gen vs fedavg"]["p"])  # n = 1 seed
    md = lolo.markdown(study)
    assert "paired over held-out labs (the protocol's analysis)" in md and "n/a" in md
    json.dumps(study)


def test_session_variant_is_the_protocols():
    config = lolo.get_config("tint,session")
    assert tuple(config.methods) == ("fedavg", "fedtransfer_gen", "gen_own_style", "gen_random_style")
    assert tuple(config.seeds) == (0,) and tuple(config.data_seeds) == (1000,)
    assert tuple(config.data.unseen_clients) == ("tint",) and "tint" not in config.data.clients
    full = lolo.get_config("tint")
    assert config.fl.rounds == full.fl.rounds and config.data.tile_size == full.data.tile_size


def test_verdict_needs_every_reference_beaten_and_the_floor_is_a_column():
    refs = ("fedavg", "gen_own_style", "gen_random_style")
    win = {"diff_mean": 0.1, "p_holm": 0.01}
    rows = {f"fedtransfer_gen vs {r}": dict(win) for r in refs}
    assert study_driver.verdict(rows, refs, "fedtransfer_gen")["sharing_shown"] is True
    rows["fedtransfer_gen vs gen_random_style"] = {"diff_mean": -0.1, "p_holm": 0.001}  # significantly worse
    v = study_driver.verdict(rows, refs, "fedtransfer_gen")
    assert v["sharing_shown"] is False and "2 of 3" in v["why"]
    rows["fedtransfer_gen vs gen_random_style"] = {"diff_mean": 0.1, "p_holm": float("nan")}  # undefined p
    assert study_driver.verdict(rows, refs, "fedtransfer_gen")["sharing_shown"] is None
    del rows["fedtransfer_gen vs gen_random_style"]  # a missing reference does not shrink the family
    assert study_driver.verdict(rows, refs, "fedtransfer_gen")["sharing_shown"] is None
    per = {lab: fake_study((0,), {"fedavg": [0.3 + i / 10], "fedtransfer_gen": [0.2 + i / 9]}) for i, lab in enumerate(("sem", "tint", "ebsd_ipf"))}
    for i, s in enumerate(per.values()):
        s["whole_untrained"] = {"whole_unseen": {"ari": {"mean": 0.1 * i}}}
    study = lolo.aggregate(per, references=("fedavg",))
    assert study["untrained_floor_per_lab"] == pytest.approx({"sem": 0.0, "tint": 0.1, "ebsd_ipf": 0.2})
    md = lolo.markdown(study)
    assert "*untrained (floor)* |" in md and "| **macro mean** |" in md and "Verdict (the protocol's rule)" in md


def test_study_parts_a_flag_names(capsys):
    """study_driver.pick, shared by the three study drivers' --labs / --labels."""
    assert study_driver.pick("", (0, 1, 2, 4), "--labels", "k") == [0, 1, 2, 4]
    assert study_driver.pick("4,04,0", (0, 1, 2, 4), "--labels", "k") == [0, 4]  # the study's order, once each
    assert study_driver.pick("tint,sem", ("sem", "tint", "ebsd_ipf"), "--labs", "lab") == ["sem", "tint"]
    assert study_driver.pick("2,5", (2, 4, 8, 16), "--labs", "lab count") is None
    assert "--labs: unknown lab count '5'" in capsys.readouterr().err
