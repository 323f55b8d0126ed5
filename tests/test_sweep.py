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
