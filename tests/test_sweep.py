"""Multi-seed aggregation (fedtransfer_jax.runs.sweep): mean ± std, paired differences to FedAvg against numpy,
and the FedAvg -> centralized gap reported only where it exists."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedtransfer_jax.runs import sweep


def _run(aris: dict[str, float]) -> dict:
    """One seed's summary.json 'methods' with the given seen ARI per method (one lab, other metrics 0)."""
    metrics = lambda a: {"ari": a, "boundary_f1": 0.0, "vi": 0.0, "grain_count_rel_error": 0.0}
    return {
        "methods": {
            m: {"mean": metrics(a), "per_client": {"lab": metrics(a)}, "unseen": {"mean": metrics(a / 2), "per_client": {}}}
            for m, a in aris.items()
        }
    }


def test_paired_difference_and_gap_closed_match_numpy():
    fedavg, central, gen = [0.50, 0.55, 0.60], [0.60, 0.66, 0.69], [0.55, 0.61, 0.64]
    per_seed = {s: _run({"fedavg": fedavg[s], "centralized": central[s], "gen": gen[s]}) for s in range(3)}
    study = sweep.aggregate(per_seed)
    d = np.subtract(gen, fedavg)
    vs = study["methods"]["gen"]["vs_fedavg"]
    assert vs["seen_ari"]["diff_mean"] == pytest.approx(d.mean())
    assert vs["seen_ari"]["diff_se"] == pytest.approx(d.std(ddof=1) / math.sqrt(3))
    assert study["methods"]["gen"]["seen"]["ari"]["std"] == pytest.approx(np.std(gen, ddof=1))
    assert study["seen_gap"]["defined"]
    assert vs["seen_gap_closed"] == pytest.approx(d.mean() / np.subtract(central, fedavg).mean())
    assert study["methods"]["centralized"]["vs_fedavg"]["seen_gap_closed"] == pytest.approx(1.0)


def test_gap_closed_is_not_reported_when_centralized_does_not_beat_fedavg():
    # centralized below FedAvg (as measured on the main job): the ratio would divide by a negative gap.
    fedavg, central, gen = [0.50, 0.55, 0.60], [0.49, 0.56, 0.57], [0.62, 0.66, 0.70]
    per_seed = {s: _run({"fedavg": fedavg[s], "centralized": central[s], "gen": gen[s]}) for s in range(3)}
    study = sweep.aggregate(per_seed)
    assert not study["seen_gap"]["defined"]
    assert all(e["vs_fedavg"]["seen_gap_closed"] is None for e in study["methods"].values())
    text = sweep.markdown(study)
    assert "no FedAvg -> centralized gap to close" in text and "%" not in text.split("| gen |")[1].split("\n")[0]


def test_comparisons_against_every_reference_with_ci_and_holm():
    from scipy import stats as sp_stats  # noqa: PLC0415

    rng = np.random.default_rng(1)
    fedavg = rng.normal(0.5, 0.03, 6)
    own = fedavg + rng.normal(0.02, 0.01, 6)
    gen = fedavg + rng.normal(0.05, 0.01, 6)
    per_seed = {s: _run({"fedavg": fedavg[s], "own": own[s], "gen": gen[s]}) for s in range(6)}
    study = sweep.aggregate(per_seed, ("fedavg", "own"))
    c = study["comparisons"]
    assert set(c) == {"own vs fedavg", "gen vs fedavg", "gen vs own"}  # each pair once
    ref = sp_stats.ttest_rel(gen, own)
    assert c["gen vs own"]["seen_ari"]["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    ps = sorted(row[k]["p"] for row in c.values() for k in ("seen_ari", "unseen_ari"))
    assert min(row[k]["p_holm"] for row in c.values() for k in row) == pytest.approx(min(1.0, ps[0] * len(ps)))
    assert "gen vs own" in sweep.markdown(study) and "95 % CI" in sweep.markdown(study)


def test_data_seeds_are_separate_from_the_seed():
    import ml_collections  # noqa: PLC0415

    cfg = ml_collections.ConfigDict({"seeds": (0, 1), "data_seeds": (1000, 1001), "seed": 0, "data": {"seed": 0}})
    assert sweep.data_seeds(cfg) == [1000, 1001]
    c = sweep.seed_config(cfg, 1, 1001)
    assert (c.seed, c.data.seed, tuple(c.seeds)) == (1, 1001, ())
    cfg.data_seeds = (5,)
    with pytest.raises(ValueError, match="config key data_seeds"):
        sweep.data_seeds(cfg)


def test_a_seed_resumed_on_other_devices_is_named_in_the_study():
    per_seed = {s: _run({"fedavg": 0.5 + s / 10, "gen": 0.6}) for s in range(3)}
    per_seed[1]["provenance"] = {"starts": [{}, {}], "differs": ["device"]}
    per_seed[2]["provenance"] = {"starts": [{}], "differs": []}
    study = sweep.aggregate(per_seed)
    assert study["provenance_differs"] == {"1": ["device"]}
    assert "**Seed 1: Resumed on other device than an earlier start" in sweep.markdown(study)
    clean = sweep.aggregate({s: _run({"fedavg": 0.5 + s / 10}) for s in range(2)})
    assert "provenance_differs" not in clean and "Resumed" not in sweep.markdown(clean)
