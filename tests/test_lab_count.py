"""experiments/lab_count.py (docs/PROTOCOL.md v2, study d): L labs from the population prior at a fixed total
of labelled tiles and the same budget for every L; the per-L comparisons (checked against scipy) with Holm
over the study's family; the tiny study end to end."""
import json
import os

import pytest
from scipy import stats as sp_stats

from experiments import lab_count
from fedtransfer_jax.runs import engine


def budget(config):
    return config.fl.rounds * config.fl.clients_per_round * config.fl.local_steps * config.fl.batch_size


@pytest.mark.parametrize("labs", lab_count.LAB_COUNTS)
def test_fixed_labels_and_the_same_budget_for_every_l(labs):
    config = lab_count.get_config(str(labs))
    engine.validate_config(config)
    assert config.data.source == "prior_labs" and config.data.prior_labs == labs and config.data.clients == ()
    assert labs * config.data.train_per_client == lab_count.TRAIN_TILES == 32
    assert labs * config.data.val_per_client == lab_count.VAL_TILES == 16
    assert config.fl.batch_size <= config.data.train_per_client  # engine.check_batch_size passes at every L
    assert config.fl.clients_per_round <= labs
    # The main study's examples (20 rounds x 4 clients x 10 steps x batch 8), at every L.
    assert budget(config) == 20 * 4 * 10 * 8
    assert config.data.unseen_clients == lab_count.UNSEEN
    assert config.eval.select == "best_val" and config.fl.lr_schedule == "cosine" and config.augment.enabled
    assert config.eval.whole_images > 0 and config.methods == lab_count.METHODS
    assert config.seeds == tuple(range(10)) and config.data_seeds == tuple(1000 + i for i in range(10))


@pytest.mark.parametrize("part,labs", [(p, n) for p, ns in lab_count.SESSION_PARTS.items() for n in ns])
def test_session_variant_is_the_protocols(part, labs):
    """docs/PROTOCOL.md "Study (d) in one session": L = 2, 16 (then L = 4, 8 as `session2`); seed pairs 0-4; no
    centralized; the full budget."""
    config, full = lab_count.get_config(f"{labs},{part}"), lab_count.get_config(str(labs))
    assert config.name == f"lab-count-{labs}-{part}"
    engine.validate_config(config)
    assert config.methods == ("fedavg", "fedtransfer_gen", "gen_own_style", "gen_random_style")
    assert config.seeds == tuple(range(5)) and config.data_seeds == tuple(range(1000, 1005))
    assert budget(config) == budget(full) and config.data == full.data and config.eval == full.eval


def test_bad_variants_name_the_lab_count():
    assert sorted(n for ns in lab_count.SESSION_PARTS.values() for n in ns) == sorted(lab_count.LAB_COUNTS)
    for bad in ("4,session", "8,session", "2,session,tiny", "2,session2", "16,session2", "4,session,session2",
                "4,session2,tiny"):
        with pytest.raises(ValueError, match="number of labs"):
            lab_count.get_config(bad)
    assert lab_count.main(["--workdir", "/nonexistent/never", "--variant", "session", "--labs", "4"]) == 2
    assert lab_count.main(["--workdir", "/nonexistent/never", "--variant", "session2", "--labs", "16"]) == 2
    for bad in (None, "", "0", "3", "tiny", "2,4", "two"):
        with pytest.raises(ValueError, match="number of labs"):
            lab_count.get_config(bad)
    assert lab_count.main(["--workdir", "/nonexistent/never", "--labs", "2,5"]) == 2


def fake_study(seeds, unseen, seen):
    methods = {m: {"whole_unseen": {"ari": {"per_seed": list(v)}}} for m, v in unseen.items()}
    for m, v in seen.items():
        methods[m]["whole_seen"] = {"ari": {"per_seed": list(v)}}
    return {"seeds": list(seeds), "methods": methods, "data_seeds": {str(s): 1000 + s for s in seeds}}


def test_session2_launches_its_own_lab_counts(monkeypatch, tmp_path):
    """`--variant session2` without --labs runs L = 4 then 8 (each launch named `<L>,session2`)."""
    from experiments import study_driver

    launched = []

    def fake_launch(study, what, path, variant, workdir, cpu_devices):
        launched.append((variant, os.path.basename(workdir)))
        return len(launched) < 2  # the second launch "fails": main stops there, having named both

    monkeypatch.setattr(study_driver, "launch", fake_launch)
    monkeypatch.setattr(study_driver, "read_json", lambda path: {})
    assert lab_count.main(["--workdir", str(tmp_path), "--variant", "session2"]) == 1
    assert launched == [("4,session2", "L4"), ("8,session2", "L8")]


def test_per_l_comparisons_match_paired_t_tests_with_holm_over_every_l():
    a = {"fedavg": [0.2, 0.3, 0.4], "fedtransfer_gen": [0.3, 0.3, 0.6], "gen_random_style": [0.1, 0.2, 0.3]}
    b = {"fedavg": [0.5, 0.5, 0.5], "fedtransfer_gen": [0.6, 0.4, 0.5], "gen_random_style": [0.5, 0.6, 0.4]}
    study = lab_count.aggregate({2: fake_study((0, 1, 2), a, b), 16: fake_study((0, 1, 2), b, a)})
    l2 = study["per_lab_count"]["2"]["endpoints"]
    per_l = study["per_lab_count"]
    primary = [c for n in ("2", "16") for c in per_l[n]["endpoints"]["whole_unseen"]["comparisons"].values()]
    c = l2["whole_unseen"]["comparisons"]["fedtransfer_gen vs fedavg"]
    assert c["p"] == pytest.approx(sp_stats.ttest_rel(a["fedtransfer_gen"], a["fedavg"]).pvalue)
    assert l2["whole_unseen"]["methods"]["fedavg"]["mean"] == pytest.approx(0.3)
    ci = sp_stats.t.interval(0.95, 2, loc=0.3, scale=sp_stats.sem([0.2, 0.3, 0.4]))
    fedavg = l2["whole_unseen"]["methods"]["fedavg"]
    assert (fedavg["ci_low"], fedavg["ci_high"]) == pytest.approx(ci)
    # Holm over the four comparisons (two references x two L) of the primary endpoint.
    ps = sorted(c["p"] for c in primary)
    assert len(ps) == 4 and min(c["p_holm"] for c in primary) == pytest.approx(min(1.0, 4 * ps[0]))
    # The secondary endpoint is the prior labs' own images, its own family.
    assert per_l["16"]["endpoints"]["whole_seen"]["methods"]["fedavg"]["mean"] == pytest.approx(0.3)
    styles = study["per_lab_count"]["16"]["base_styles"]
    assert sorted(styles) == ["1000", "1001", "1002"] and all(len(v) == 16 for v in styles.values())
    assert styles["1000"][:2] == study["per_lab_count"]["2"]["base_styles"]["1000"]  # nested labs
    # The protocol's rule per L (on the unseen labs): gen_own_style is not among these fakes, so it stays open.
    assert per_l["2"]["verdict"]["sharing_shown"] is None and "gen_own_style" in per_l["2"]["verdict"]["why"]
    md = lab_count.markdown(study)
    assert "## L = 2 labs" in md and "## L = 16 labs" in md and "| fedtransfer_gen vs fedavg | unseen |" in md
    assert "**L = 16, unseen labs (the protocol's rule): undetermined**" in md
    json.dumps(study)


def test_lab_counts_must_share_seeds_and_have_the_endpoint():
    one = fake_study((0, 1), {"fedavg": [0.1, 0.2]}, {"fedavg": [0.1, 0.2]})
    with pytest.raises(ValueError, match="different seeds"):
        lab_count.aggregate({2: one, 4: fake_study((0, 2), {"fedavg": [0, 0]}, {"fedavg": [0, 0]})})
    with pytest.raises(ValueError, match="eval.whole_images"):
        lab_count.aggregate({2: {"seeds": [0], "methods": {"fedavg": {}}}})


def test_tiny_study_runs_end_to_end(tmp_path):
    """One L (16 labs of 2 tiles: the smallest labs), one seed pair, 2 rounds: the driver launches the run
    and writes the study's summary for that L."""
    assert lab_count.main(["--workdir", str(tmp_path), "--variant", "tiny", "--labs", "16"]) == 0
    run = json.loads((tmp_path / "L16" / "summary.json").read_text())
    assert run["config"]["data"]["source"] == "prior_labs"
    seed = json.loads((tmp_path / "L16" / "seed_0" / "summary.json").read_text())
    assert seed["clients"] == [f"prior_{i:02d}" for i in range(16)] and seed["unseen_clients"] == ["tint"]
    whole = seed["methods"]["fedavg"]["whole_images"]
    assert set(whole["per_client"]) == set(seed["clients"]) and set(whole["unseen"]["per_client"]) == {"tint"}
    study = json.loads((tmp_path / "summary_L16.json").read_text())
    assert study["complete"] is False and study["lab_counts"] == [16] and study["seeds"] == [0]
    ends = study["per_lab_count"]["16"]["endpoints"]
    for key in ("whole_unseen", "whole_seen"):
        assert set(ends[key]["methods"]) == set(lab_count.TINY_METHODS)
        assert all(0.0 <= s["mean"] <= 1.0 for s in ends[key]["methods"].values())
    assert "fedtransfer_gen vs fedavg" in ends["whole_unseen"]["comparisons"]
    assert len(study["per_lab_count"]["16"]["base_styles"]["1000"]) == 16
    assert "## L = 16 labs" in (tmp_path / "summary_L16.md").read_text()
