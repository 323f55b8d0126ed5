"""runtime/provenance.py: every start of a run records its code, libraries and devices; a resume on other
ones is named (summary.json `provenance.differs`, summary.md)."""

import json
import os
import sys

import pytest

from fedtransfer_jax.runs import train
from fedtransfer_jax.runtime import provenance

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from experiments import grains  # noqa: E402


def test_code_hash_sees_an_edit_and_nothing_else(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    (tmp_path / "b.py").write_text("y = 2\n")
    first = provenance.code_hash(tmp_path)
    assert provenance.code_hash(tmp_path) == first
    (tmp_path / "notes.txt").write_text("not code")
    assert provenance.code_hash(tmp_path) == first
    (tmp_path / "pkg" / "a.py").write_text("x = 2\n")
    assert provenance.code_hash(tmp_path) != first
    assert len(provenance.code_hash()) == 16  # the installed package's own sources


def test_differences_name_the_numeric_fields_only():
    start = provenance.snapshot("cpu:2", "cpu")
    assert start["device"] == "cpu:2" and start["packages"]["jax"] and start["code"] and start["cpu"]
    later = json.loads(json.dumps(start))
    later["started"] = "2030-01-01T00:00:00+00:00"  # time is no difference
    later["git"] = "0123456789ab"  # nor a commit alone (the source hash is what ran)
    later["xla_flags"] = " ".join(reversed(start["xla_flags"].split())) + "  "  # nor the flags' order
    assert provenance.differences([start, later]) == []
    later["packages"]["jax"] = "0.0.1"
    later["device"] = "cpu:1"
    later["round_mapping"] = {"strategy": "chunked"}
    assert provenance.differences([start, later]) == ["packages.jax", "device", "round_mapping"]
    assert provenance.differences([start]) == [] and provenance.differences([]) == []
    older = {k: v for k, v in start.items() if k not in ("cpu", "jax_env")}  # an older module's record
    assert provenance.differences([older, start]) == []
    assert provenance.differences([{"unrecorded": True}, start]) == [provenance.UNRECORDED]
    assert provenance.describe([]) == ""
    assert provenance.describe(["device", provenance.UNRECORDED]).startswith(
        "Resumed on other device than an earlier start and after an earlier start that was not recorded"
    )


def test_a_torn_line_is_skipped_and_does_not_swallow_the_next_start(tmp_path):
    provenance.record_start(str(tmp_path), {"device": "cpu:2"})
    with open(tmp_path / provenance.FILE, "a") as f:
        f.write('{"device": "cp')  # a kill or a full disk while appending
    assert provenance.read(str(tmp_path)) == [{"device": "cpu:2"}]
    assert provenance.record_start(str(tmp_path), {"device": "cpu:1"}) == [{"device": "cpu:2"}, {"device": "cpu:1"}]


def test_a_resume_without_any_record_is_not_called_consistent(tmp_path):
    assert not provenance.has_earlier_results(str(tmp_path))
    (tmp_path / "checkpoints").mkdir()  # a workdir trained before provenance.jsonl existed
    assert provenance.has_earlier_results(str(tmp_path))
    starts = provenance.record_start(str(tmp_path), provenance.snapshot("cpu:2"), resumed=True)
    assert starts[0] == {"unrecorded": True} and len(starts) == 2
    assert provenance.differences(starts) == [provenance.UNRECORDED]
    again = provenance.record_start(str(tmp_path), provenance.snapshot("cpu:2"), resumed=True)
    assert len(again) == 3 and again[0] == {"unrecorded": True}  # recorded once


def test_a_resume_on_other_devices_is_named_in_the_summary(tmp_path):
    config = grains.get_config("tiny")
    config.methods = ("fedavg",)
    config.fl.rounds = 1
    config.data.tfds_dir = str(tmp_path / "tfds")
    workdir = str(tmp_path / "run")
    first = train.train_and_evaluate(config, workdir)
    assert len(first["provenance"]["starts"]) == 1 and first["provenance"]["differs"] == []
    again = train.train_and_evaluate(config, workdir)  # resumes: nothing to train, one more start
    assert len(again["provenance"]["starts"]) == 2 and again["provenance"]["differs"] == []
    assert again["methods"]["fedavg"]["mean"] == first["methods"]["fedavg"]["mean"]
    assert "Resumed on other" not in open(os.path.join(workdir, "summary.md")).read()

    path = os.path.join(workdir, provenance.FILE)
    starts = provenance.read(workdir)
    starts[0]["device"] = "cpu:7"  # as if the run had been started on another mesh
    with open(path, "w") as f:
        f.writelines(json.dumps(s) + "\n" for s in starts)
    third = train.train_and_evaluate(config, workdir)
    assert third["provenance"]["differs"] == ["device"]
    with open(os.path.join(workdir, "summary.json")) as f:
        assert json.load(f)["provenance"]["differs"] == ["device"]
    assert "**Resumed on other device than an earlier start" in open(os.path.join(workdir, "summary.md")).read()


def test_a_failed_first_start_leaves_no_record(tmp_path):
    """workdir.forget_config_if_untrained (what a first start that failed before training anything runs)
    removes its provenance line with its config.json, so the corrected rerun is not called a mixed run."""
    from fedtransfer_jax.runtime import workdir as workdir_lib

    path = tmp_path / "run"
    path.mkdir()
    (path / "config.json").write_text("{}")
    provenance.record_start(str(path), provenance.snapshot("cpu:2"))
    assert workdir_lib.forget_config_if_untrained(str(path))
    assert not (path / provenance.FILE).exists() and not (path / "config.json").exists()
    (path / "config.json").write_text("{}")
    provenance.record_start(str(path), provenance.snapshot("cpu:2"))
    (path / "checkpoints").mkdir()  # something was trained: both stay
    assert not workdir_lib.forget_config_if_untrained(str(path))
    assert (path / provenance.FILE).exists()


def test_git_commit_only_of_a_tracked_package(tmp_path):
    import shutil
    import subprocess

    if shutil.which("git") is None:
        pytest.skip("no git on this machine")
    git = lambda *a: subprocess.run(["git", "-C", str(tmp_path), *a], check=True, capture_output=True)
    git("init", "-q")
    git("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "--allow-empty", "-m", "x")
    pkg = tmp_path / "venv" / "fedtransfer_jax"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    assert provenance.git_commit(pkg) is None  # an installed copy inside someone else's repository
    git("add", "venv/fedtransfer_jax/__init__.py")
    git("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "-m", "y")
    clean = provenance.git_commit(pkg)
    assert len(clean) == 12 and "+dirty" not in clean
    (pkg / "__init__.py").write_text("x = 1\n")
    assert provenance.git_commit(pkg) == clean + "+dirty"
    assert provenance.git_commit(tmp_path / "venv" / "nowhere") is None
