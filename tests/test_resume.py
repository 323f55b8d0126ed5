"""Resume that cannot lie: kills at several moments (SIGKILL via fedtransfer_jax.runtime.faults), config changes,
concurrent launches, stale temporary files, unfinished models in evaluate/predict."""

import json
import os
import subprocess
import sys

import chex
import pytest

from fedtransfer_jax.runs import inference, train
from fedtransfer_jax.runtime import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from experiments import grains  # noqa: E402

METHODS = ("local", "fedavg", "fedtransfer_fourier")


def launch(workdir, tfds_dir, *extra, crash_at=None, timeout=600):
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("FEDTRANSFER_CRASH_AT", None)
    if crash_at:
        env["FEDTRANSFER_CRASH_AT"] = crash_at
    args = [
        sys.executable,
        os.path.join(REPO, "launch.py"),
        "--config",
        os.path.join(REPO, "experiments/grains.py:tiny"),
        f"--config.methods=({','.join(repr(m) for m in METHODS)})",
        f"--config.data.tfds_dir={tfds_dir}",
        "--config.figures=False",
        "--workdir",
        str(workdir),
        *extra,
    ]
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout)


def read_summary(workdir):
    with open(os.path.join(workdir, "summary.json")) as f:
        return json.load(f)


def metric_rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted run: the reference every resumed run must reproduce."""
    base = tmp_path_factory.mktemp("resume")
    proc = launch(base / "straight", base / "tfds")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return base


# Kill points in the order a run reaches them; one workdir is killed at each in turn, then finishes.
CRASH_CHAIN = (
    "checkpoint:local/darkfield:1",  # inside the per-client local models
    "checkpoint:fedavg:1",  # mid-federation, right after a checkpoint
    "method_done:fedavg",  # between two methods
    "atomic_write:summary.json",  # while the summary is being written (next write: fourier's round 1)
    "checkpoint:fedtransfer_fourier:2",  # last checkpoint written, evaluation not done
)


def test_kills_at_every_stage_then_resume_reproduce_the_uninterrupted_run(straight):
    workdir = straight / "killed"
    for crash_at in CRASH_CHAIN:
        killed = launch(workdir, straight / "tfds", crash_at=crash_at)
        assert killed.returncode == -9, (crash_at, killed.returncode, killed.stderr[-2000:])
        if os.path.exists(workdir / "summary.json"):  # a killed run never claims to be complete
            assert read_summary(workdir)["status"] == "running", crash_at
        if crash_at == "checkpoint:fedavg:1":  # an unfinished model is refused unless asked for
            with pytest.raises(inference.IncompleteModelError, match="round 1 of 2"):
                inference.load_model(str(workdir), "fedavg")
            model = inference.load_model(str(workdir), "fedavg", allow_incomplete=True)
            assert (model.round, model.rounds) == (1, 2)
    resumed = launch(workdir, straight / "tfds")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ref, got = read_summary(straight / "straight"), read_summary(workdir)
    assert got["status"] == "complete"
    # Every start is on record (the five killed ones and the last), all on the same code and devices.
    assert len(got["provenance"]["starts"]) == len(CRASH_CHAIN) + 1 and got["provenance"]["differs"] == []
    for m in METHODS:
        chex.assert_trees_all_close(got["methods"][m]["mean"], ref["methods"][m]["mean"], rtol=1e-6)
        assert got["methods"][m]["round_compilations"] == 1, m
        assert got["progress"][m]["status"] == "complete"
    for m in ("fedavg", "fedtransfer_fourier"):  # the ledger covers every round, not the last process's
        assert got["methods"][m]["privacy_ledger"] == ref["methods"][m]["privacy_ledger"], m
    rows = metric_rows(workdir)
    keys = [(r["method"], r.get("round"), r.get("eval")) for r in rows]
    assert len(keys) == len(set(keys)), "metrics.jsonl has duplicated rows"
    ref_keys = [(r["method"], r.get("round"), r.get("eval")) for r in metric_rows(straight / "straight")]
    assert sorted(keys, key=str) == sorted(ref_keys, key=str)
    assert not [f for f in os.listdir(workdir) if f.startswith(".tmp-")]
    done = inference.load_model(str(workdir), "fedavg")
    assert (done.round, done.rounds) == (2, 2)


def tiny(tfds_dir, **fl):
    config = grains.get_config("tiny")
    config.methods = ("fedavg",)
    config.figures = False
    config.data.tfds_dir = str(tfds_dir)
    for k, v in fl.items():
        config.fl[k] = v
    return config


def test_incompatible_config_change_is_refused_and_nothing_changes(straight, tmp_path):
    workdir = tmp_path / "w"
    train.train_and_evaluate(tiny(straight / "tfds", rounds=1), str(workdir))
    before = (workdir / "config.json").read_text()
    with pytest.raises(workdir_lib.WorkdirError, match=r"fl\.client_lr: 0\.002 -> 0\.5"):
        train.train_and_evaluate(tiny(straight / "tfds", rounds=1, client_lr=0.5), str(workdir))
    assert (workdir / "config.json").read_text() == before  # nothing overwritten
    # Compatible changes: evaluation settings, and training longer.
    config = tiny(straight / "tfds", rounds=1)
    config.eval.threshold = 0.4
    train.train_and_evaluate(config, str(workdir))
    train.train_and_evaluate(tiny(straight / "tfds", rounds=2), str(workdir))
    rounds = [r["round"] for r in metric_rows(workdir) if r["method"] == "fedavg" and "round" in r]
    assert rounds == [1, 2]
    # The CLI: one clear message, exit status 2, no traceback.
    proc = launch(workdir, straight / "tfds", "--config.methods=('fedavg',)", "--config.model.features=(4,8)")
    assert proc.returncode == 2 and "model.features" in proc.stderr and "Traceback" not in proc.stderr
    # A fresh start keeps the old outputs in archive/. The change: fewer rounds than trained, which a resume
    # refuses (incompatible_keys) like any other; the first run's program, so the session's compilation
    # cache (conftest.py) has it, where a new client_lr would compile another round.
    train.train_and_evaluate(tiny(straight / "tfds", rounds=1), str(workdir), fresh_start=True)
    (archived,) = os.listdir(workdir / "archive")
    assert json.loads((workdir / "archive" / archived / "config.json").read_text())["fl"]["rounds"] == 2
    assert json.loads((workdir / "config.json").read_text())["fl"]["rounds"] == 1


def test_second_launch_on_a_locked_workdir_is_refused(tmp_path):
    config = grains.get_config("tiny")
    config.methods = ("fedavg",)
    with workdir_lib.lock(str(tmp_path)):
        with pytest.raises(workdir_lib.WorkdirError, match="in use by pid"):
            train.train_and_evaluate(config, str(tmp_path))


def test_stale_temporary_files_are_removed(tmp_path):
    (tmp_path / ".tmp-abc-summary.json").write_text("half")
    (tmp_path / "tfds" / "grain_micrographs" / "incomplete.XYZ_1.0.0").mkdir(parents=True)
    removed = workdir_lib.clean_stale_files(str(tmp_path))
    assert sorted(removed) == [".tmp-abc-summary.json", "tfds/grain_micrographs/incomplete.XYZ_1.0.0"]
    assert not (tmp_path / ".tmp-abc-summary.json").exists()
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "scan_0001.tmp").write_text("a user's acquisition")  # not a name any writer of ours uses
    assert workdir_lib.clean_stale_files(str(tmp_path)) == [] and (tmp_path / "raw" / "scan_0001.tmp").exists()


def test_a_folder_of_other_files_is_not_taken_as_a_workdir(tmp_path):
    """launch writes log.txt, a lock and config.json into --workdir and cleans up there: a folder of a user's
    own files (a labelled data folder, a project folder) is refused before anything is written."""
    data = tmp_path / "my_lab"
    (data / "images").mkdir(parents=True)
    (data / "notes.txt").write_text("etched 10 s")
    with pytest.raises(workdir_lib.WorkdirError, match="not a workdir"):
        workdir_lib.ensure_workdir(str(data))
    assert sorted(os.listdir(data)) == ["images", "notes.txt"]
    for ok in ("new", "empty", "only_hidden", "failed_start"):
        (tmp_path / ok).mkdir() if ok != "new" else None
    (tmp_path / "only_hidden" / ".DS_Store").write_text("")
    (tmp_path / "failed_start" / "log.txt").write_text("error: ...")  # a first start refused after its log
    for ok in ("new", "empty", "only_hidden", "failed_start"):
        workdir_lib.ensure_workdir(str(tmp_path / ok))


def test_incompatible_keys_rules():
    old = {"seed": 0, "methods": ["fedavg"], "fl": {"rounds": 5, "client_lr": 0.1, "strategy": "auto"},
           "method_specs": {"fedavg": {"hparams": {"server_lr": 1.0}}, "fedprox": {"hparams": {"mu": 0.1}}}}
    new = json.loads(json.dumps(old))
    new["fl"].update(rounds=8, strategy="vmap")  # longer, other strategy: fine
    new["method_specs"]["fedprox"]["hparams"]["mu"] = 1.0  # fedprox never trained here: fine
    new["methods"] = ["fedavg", "fedprox"]
    assert workdir_lib.incompatible_keys(old, new) == []
    new["fl"]["rounds"] = 3
    new["method_specs"]["fedavg"]["hparams"]["server_lr"] = 0.5
    assert workdir_lib.incompatible_keys(old, new) == ["fl.rounds", "method_specs.fedavg.hparams.server_lr"]
    assert "fl.rounds: 5 -> 3" in workdir_lib.describe_diff(old, new, ["fl.rounds"])


def test_stateful_algorithms_resume_bit_identically(straight, tmp_path):
    """SCAFFOLD's and FedDyn's per-client state is checkpointed: 1 round + resume to 3 == 3 straight rounds
    (client 'lowcontrast' is sampled in rounds 1 and 2, so its restored control variate is used)."""
    for workdir, plan in (("straight", (3,)), ("resumed", (1, 3))):
        for rounds in plan:
            config = tiny(straight / "tfds", rounds=rounds)
            config.methods = ("scaffold", "feddyn")
            train.train_and_evaluate(config, str(tmp_path / workdir))
    for m in ("scaffold", "feddyn"):
        a = inference.load_model(str(tmp_path / "straight"), m).params
        b = inference.load_model(str(tmp_path / "resumed"), m).params
        chex.assert_trees_all_equal(a, b)


def test_keys_that_never_reached_the_training_may_be_dropped_on_resume():
    """A workdir started with data.dir on a synthetic source, or init_from_method without init_from (both now
    refused at start), resumes once the unused key is dropped: it never changed what was trained."""
    old = {"data": {"source": "synthetic", "dir": "/x"}, "init_from": "", "init_from_method": "fedavg", "methods": []}
    new = {"data": {"source": "synthetic", "dir": ""}, "init_from": "", "init_from_method": "", "methods": []}
    assert workdir_lib.incompatible_keys(old, new) == []
    new["data"]["source"] = "folder"  # now it would read the folder: a different training
    assert workdir_lib.incompatible_keys(old, new) == ["data.dir", "data.source"]


def test_figures_are_written_atomically_and_leave_nothing_behind(tmp_path):
    """A figure goes through the atomic writer (a hidden .tmp- file, which a restart cleans up), never a
    half-written PNG or a visible leftover; a figure that fails to render leaves no file and is closed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fedtransfer_jax.runtime import io_utils

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    io_utils.save_figure_atomic(fig, str(tmp_path / "convergence.png"), dpi=50)
    assert os.listdir(tmp_path) == ["convergence.png"]
    assert (tmp_path / "convergence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)
    fig, ax = plt.subplots()
    with pytest.raises(ValueError):
        io_utils.save_figure_atomic(fig, str(tmp_path / "bad.png"), dpi=-1)
    assert os.listdir(tmp_path) == ["convergence.png"] and not plt.fignum_exists(fig.number)


def test_a_fresh_start_archives_the_runs_own_files_and_leaves_a_users(tmp_path):
    ours = ["ari_per_lab.png", "convergence.png", "predictions.png", "style_grid_tint.png", "summary.json"]
    for name in (*ours, "my_notes.png"):
        (tmp_path / name).write_bytes(b"x")
    dest = workdir_lib.archive_outputs(str(tmp_path))
    assert sorted(os.listdir(dest)) == ours
    assert sorted(os.listdir(tmp_path)) == ["archive", "my_notes.png"]
