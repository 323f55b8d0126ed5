"""Validation curves and model selection (runners.Validation): rows in metrics.jsonl every
eval.every_rounds rounds (and after the last), kept once through a kill and resume (rows past the restored
checkpoint are re-written, the stored best is matched again), and best_val scoring the recorded best round."""

import json
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROUNDS = 4


def launch(workdir, tfds_dir, crash_at=None):
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("FEDTRANSFER_CRASH_AT", None)
    if crash_at:
        env["FEDTRANSFER_CRASH_AT"] = crash_at
    args = [
        sys.executable,
        os.path.join(REPO, "launch.py"),
        "--config",
        os.path.join(REPO, "experiments/grains.py:tiny"),
        "--config.methods=('fedavg',)",
        f"--config.data.tfds_dir={tfds_dir}",
        "--config.data.val_per_client=2",
        f"--config.fl.rounds={ROUNDS}",
        "--config.checkpoint_every=2",
        "--config.eval.every_rounds=1",
        "--config.eval.select=best_val",
        "--config.fl.lr_schedule=cosine",
        "--config.figures=True",
        "--workdir",
        str(workdir),
    ]
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO, timeout=900)


def rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def summary(workdir):
    with open(os.path.join(workdir, "summary.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    base = tmp_path_factory.mktemp("val")
    proc = launch(base / "straight", base / "tfds")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return base


def test_rows_every_round_and_best_val_scores_the_recorded_best(straight):
    workdir = straight / "straight"
    val = [r for r in rows(workdir) if r.get("eval") == "val"]
    assert [r["round"] for r in val] == list(range(1, ROUNDS + 1))
    assert all(r["method"] == "fedavg" and {"ari", "boundary_f1"} <= set(r) for r in val)
    best = max(val, key=lambda r: (r["ari"], -r["round"]))  # the earliest round on ties
    entry = summary(workdir)["methods"]["fedavg"]
    assert entry["model_selection"] == {
        "select": "best_val",
        "every_rounds": 1,
        "chosen_round": best["round"],
        "best_val_ari": best["ari"],
    }
    assert entry["lr_schedule"]["name"] == "cosine" and entry["lr_schedule"]["index"] == "round"
    # The scores crossed the boundary: one val_scores message per client per validated round.
    assert "val_scores" in json.dumps(entry["privacy_ledger"])
    assert os.path.exists(workdir / "convergence.png")


def test_predict_loads_the_params_the_run_scored(straight):
    """A best_val run's model for predict/evaluate is the chosen round's, not the last round's."""
    import jax
    import numpy as np

    from fedtransfer_jax.runtime import checkpointing
    from fedtransfer_jax.runs import engine, inference

    workdir = str(straight / "straight")
    chosen = summary(workdir)["methods"]["fedavg"]["model_selection"]["chosen_round"]
    model = inference.load_model(workdir, "fedavg")
    assert (model.round, model.rounds, model.selection) == (chosen, ROUNDS, "best_val")
    template = engine.params_template(model.config)
    best, _, _ = checkpointing.restore_params(os.path.join(workdir, "best_val", "fedavg"), template)
    last, _, step = checkpointing.restore_params(os.path.join(workdir, "checkpoints", "fedavg"), template)
    assert step == ROUNDS
    same = lambda a, b: all(jax.tree.leaves(jax.tree.map(lambda x, y: np.array_equal(x, y), a, b)))
    assert same(model.params, best)
    assert same(model.params, last) == (chosen == ROUNDS)


def test_kill_and_resume_keeps_every_validation_row_once(straight):
    workdir = straight / "killed"
    killed = launch(workdir, straight / "tfds", crash_at=f"checkpoint:fedavg:{ROUNDS}")
    assert killed.returncode == -9, killed.stderr[-2000:]
    # As if the process had died after round 4's rows and best but before its checkpoint: the resume restores
    # round 2 and re-runs rounds 3-4 (their rows, training and validation, are dropped and written again).
    shutil.rmtree(workdir / "checkpoints" / "fedavg" / str(ROUNDS))
    resumed = launch(workdir, straight / "tfds")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got, ref = rows(workdir), rows(straight / "straight")
    keys = [(r["method"], r.get("round"), r.get("eval")) for r in got]
    assert len(keys) == len(set(keys)), "duplicated rows"
    pick = lambda rs: sorted((r["round"], r["ari"], r["boundary_f1"]) for r in rs if r.get("eval") == "val")
    assert pick(got) == pick(ref)  # deterministic: the same scores, once each
    a, b = summary(workdir)["methods"]["fedavg"], summary(straight / "straight")["methods"]["fedavg"]
    assert a["resumed_from_round"] == 2
    assert a["model_selection"] == b["model_selection"]
    assert a["mean"] == b["mean"]
