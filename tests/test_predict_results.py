"""predict never loses results: batches into one OUT are merged, one run at a time per OUT (a stale lock is
taken over), a full disk or Ctrl-C stops the run with a consistent manifest; and the default method is the
workdir's best by validation.

The model is the fake of test_predict_safety (boundary probability = darkness): no training.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fedtransfer_jax import predict
from fedtransfer_jax.analysis import outputs
from fedtransfer_jax.runs import inference
from fedtransfer_jax.runtime import io_utils
from test_predict_safety import FakeModel, grain_image, predict_values, save


def manifest_of(out: Path) -> dict:
    return json.loads((out / "grain_sizes.json").read_text())


def consistent(out: Path, manifest: dict) -> None:
    """Every file the manifest lists exists, every image entry's files are listed, no temp files."""
    for f in manifest["outputs"]:
        assert (out / f).is_file(), f
    for entry in manifest["images"].values():
        for k in outputs.FILE_KEYS:
            assert entry[k] in manifest["outputs"]
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]
    assert not (out / outputs.LOCK_NAME).exists()


@pytest.fixture
def fake_load(monkeypatch):
    monkeypatch.setattr(inference, "load_model", lambda w, m, c=None, **kw: FakeModel(tag=m))


def folder_of(root: Path, *names: str, every: int = 8) -> Path:
    for n in names:
        save(root / f"{n}.png", grain_image(40, 40, every))
    return root


# ----------------------------------------------------------------------------------------------
# Merge.
# ----------------------------------------------------------------------------------------------


def test_a_second_batch_into_the_same_out_keeps_the_first(tmp_path: Path, fake_load) -> None:
    out = tmp_path / "out"
    first = folder_of(tmp_path / "b1", "a", "b")
    second = folder_of(tmp_path / "b2", "c")
    assert predict.run(predict_values(first, out, tmp_path)) == predict.EXIT_OK
    assert predict.run(predict_values(second, out, tmp_path)) == predict.EXIT_OK
    m = manifest_of(out)
    assert set(m["images"]) == {"a", "b", "c"} and m["status"] == "complete"
    assert m["images"]["a"]["file"] == str(first / "a.png")
    consistent(out, m)
    with open(out / "grain_sizes.csv", newline="") as f:
        assert {r["image"] for r in csv.DictReader(f)} == {"a", "b", "c"}
    assert "c.png" in (out / "report.html").read_text() and "a.png" in (out / "report.html").read_text()
    # A re-predicted image replaces its own entry; the others stay.
    before_b = m["images"]["b"]
    save(first / "a.png", grain_image(40, 40, 5))  # finer grains now
    assert predict.run(predict_values(first / "a.png", out, tmp_path)) == predict.EXIT_OK
    m2 = manifest_of(out)
    assert set(m2["images"]) == {"a", "b", "c"} and m2["images"]["b"] == before_b
    assert m2["images"]["a"]["n_grains"] > m["images"]["a"]["n_grains"]
    assert [r["predicted"] for r in m2["runs"]] == [["a", "b"], ["c"], ["a"]]
    consistent(out, m2)


# ----------------------------------------------------------------------------------------------
# One run at a time per OUT.
# ----------------------------------------------------------------------------------------------


class SlowModel(FakeModel):
    def predict_prob(self, image, *, overlap=None, flips=False):
        time.sleep(0.05)
        return super().predict_prob(image)


def test_two_predicts_into_one_out_the_second_is_refused(tmp_path: Path) -> None:
    src = folder_of(tmp_path / "in", *[f"m{i:02d}" for i in range(12)])
    out = tmp_path / "out"
    results: dict[str, object] = {}

    def go(key: str) -> None:
        try:
            results[key] = predict.predict_folder(SlowModel(), str(src), str(out))
        except Exception as e:  # noqa: BLE001
            results[key] = e

    threads = [threading.Thread(target=go, args=(k,)) for k in ("one", "two")]
    threads[0].start()
    time.sleep(0.2)
    threads[1].start()
    for t in threads:
        t.join(60)
    errors = [r for r in results.values() if isinstance(r, Exception)]
    done = [r for r in results.values() if isinstance(r, dict)]
    assert len(errors) == 1 and len(done) == 1
    assert isinstance(errors[0], predict.OutputLockedError)
    assert str(out) in str(errors[0]) and "in use by another predict" in str(errors[0])
    assert len(manifest_of(out)["images"]) == 12
    consistent(out, manifest_of(out))
    predict.predict_folder(FakeModel(), str(src), str(out))  # and a rerun is not refused


LOCKER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, b"pid %d since now\\n" % os.getpid())
print("locked", flush=True)
time.sleep(120)
"""


def test_a_lock_held_by_a_live_process_refuses_and_a_killed_ones_is_taken_over(
    tmp_path: Path, fake_load, capsys
) -> None:
    src = folder_of(tmp_path / "in", "a")
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", LOCKER, str(out / outputs.LOCK_NAME)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert predict.cli(predict_values(src, out, tmp_path), progress=False) == predict.EXIT_USAGE
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(out) in err[0] and f"pid {holder.pid}" in err[0]
        assert not (out / "grain_sizes.json").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The killed process's lock file is still there, naming a dead pid: taken over.
    assert f"pid {holder.pid}" in (out / outputs.LOCK_NAME).read_text()
    assert predict.cli(predict_values(src, out, tmp_path), progress=False) == predict.EXIT_OK
    consistent(out, manifest_of(out))


# ----------------------------------------------------------------------------------------------
# Full disk, Ctrl-C.
# ----------------------------------------------------------------------------------------------


class CountingModel(FakeModel):
    calls = 0

    def predict_prob(self, image, *, overlap=None, flips=False):
        type(self).calls += 1
        return super().predict_prob(image)


def test_a_full_disk_stops_at_the_first_failed_write(tmp_path: Path, monkeypatch, capsys) -> None:
    src = folder_of(tmp_path / "in", "a", "b", "c", "d")
    out = tmp_path / "out"
    real_write = io_utils.write_bytes_atomic

    def full_after_a(path, data):
        if os.path.basename(path).startswith("b_overlay"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, data)

    monkeypatch.setattr(io_utils, "write_bytes_atomic", full_after_a)
    CountingModel.calls = 0
    monkeypatch.setattr(inference, "load_model", lambda w, m, c=None, **kw: CountingModel(tag=m))
    assert predict.cli(predict_values(src, out, tmp_path), progress=False) == predict.EXIT_USAGE
    err = capsys.readouterr().err
    [line] = [ln for ln in err.splitlines() if ln.startswith("predict: error")]
    assert "disk is full" in line and "b_overlay.png" in line and "Traceback" not in err
    assert CountingModel.calls == 2  # c and d were never computed
    m = manifest_of(out)
    assert m["status"] == "failed" and "disk is full" in m["error"]
    assert set(m["images"]) == {"a"} and m["runs"][-1]["predicted"] == ["a"]
    assert not (out / "b.png").exists() and not (out / "b_grains.csv").exists()  # b: all or nothing
    consistent(out, m)
    # Space freed: the same command finishes the job.
    monkeypatch.setattr(io_utils, "write_bytes_atomic", real_write)
    assert predict.cli(predict_values(src, out, tmp_path), progress=False) == predict.EXIT_OK
    m = manifest_of(out)
    assert m["status"] == "complete" and set(m["images"]) == {"a", "b", "c", "d"} and "error" not in m
    consistent(out, m)


def test_a_full_disk_on_the_first_manifest_write_names_it(tmp_path: Path, monkeypatch) -> None:
    src = folder_of(tmp_path / "in", "a")

    def full(path, data):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    monkeypatch.setattr(io_utils, "write_bytes_atomic", full)
    with pytest.raises(predict.OutputWriteError, match=r"quota is exceeded while writing .*grain_sizes\.json"):
        predict.predict_folder(FakeModel(), str(src), str(tmp_path / "out"))


class InterruptedModel(FakeModel):
    calls = 0

    def predict_prob(self, image, *, overlap=None, flips=False):
        type(self).calls += 1
        if type(self).calls == 2:
            raise KeyboardInterrupt
        return super().predict_prob(image)


def test_ctrl_c_leaves_an_interrupted_manifest_and_exit_130(tmp_path: Path, monkeypatch, capsys) -> None:
    src = folder_of(tmp_path / "in", "a", "b", "c")
    out = tmp_path / "out"
    InterruptedModel.calls = 0
    monkeypatch.setattr(inference, "load_model", lambda w, m, c=None, **kw: InterruptedModel(tag=m))
    assert predict.cli(predict_values(src, out, tmp_path), progress=True) == predict.EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert "predict: interrupted; rerun the same command to finish" in err and "Traceback" not in err
    m = manifest_of(out)
    assert m["status"] == "interrupted" and set(m["images"]) == {"a"}
    assert "a" in (out / "report.html").read_text() and "interrupted" in (out / "report.html").read_text()
    consistent(out, m)
    assert predict.cli(predict_values(src, out, tmp_path), progress=False) == predict.EXIT_OK
    assert manifest_of(out)["status"] == "complete" and set(manifest_of(out)["images"]) == {"a", "b", "c"}


# ----------------------------------------------------------------------------------------------
# The default method.
# ----------------------------------------------------------------------------------------------


def workdir(tmp_path: Path, methods: dict, checkpoints=None, clients=None) -> Path:
    wd = tmp_path / "wd"
    for m in checkpoints if checkpoints is not None else methods:
        (wd / "checkpoints" / m).mkdir(parents=True, exist_ok=True)
    summary = {"status": "complete", "methods": methods, **({"clients": clients} if clients else {})}
    (wd / "summary.json").write_text(json.dumps(summary))
    return wd


def scores(val=None, ari=None) -> dict:
    out: dict = {"mean": {"ari": ari}}
    if val is not None:
        out["postprocessed"] = {"validation_objective": {"chosen": val, "builtin_defaults": 0.1}}
    return out


def test_default_method_is_the_best_by_validation(tmp_path: Path) -> None:
    wd = workdir(tmp_path, {
        "fedtransfer": scores(0.70, 0.9),  # the old default (first found), and the best test ARI
        "fedavg": scores(0.75, 0.5),
        "fedprox": scores(0.81, 0.4),
        "local": scores(None, 0.99),  # one model per client: needs --client, never the default
        "centralized": scores(0.95, 0.9),  # no checkpoint in this workdir
    }, checkpoints=["fedtransfer", "fedavg", "fedprox", "local"])
    method, reason = inference.choose_default_method(str(wd))
    assert method == "fedprox" and inference.default_method(str(wd)) == "fedprox"
    assert "validation objective: 0.810" in reason and "fedavg 0.750" in reason


def test_a_local_method_of_one_lab_is_the_run_model(tmp_path: Path) -> None:
    """experiments/finetune.py trains `local` for a single lab: that model needs no --client; with two labs
    it still does, and is never the default."""
    wd = workdir(tmp_path, {"local": scores(0.9, 0.5), "fedavg": scores(0.8, 0.6)}, clients=["mylab"])
    (wd / "checkpoints" / "local" / "mylab").mkdir()
    assert inference.sole_client(str(wd), "local") == "mylab" and inference.sole_client(str(wd), "fedavg") is None
    assert inference.choose_default_method(str(wd))[0] == "local"
    assert inference.checkpoint_tag(str(wd), "local", None) == "local/mylab"
    # A run of two labs stopped after the first lab's model: one folder, but not one lab.
    two = workdir(tmp_path / "two", {"local": scores(0.9, 0.5), "fedavg": scores(0.8, 0.6)}, clients=["mylab", "other"])
    (two / "checkpoints" / "local" / "mylab").mkdir()
    assert inference.sole_client(str(two), "local") is None
    assert inference.choose_default_method(str(two))[0] == "fedavg"
    with pytest.raises(ValueError, match=r"pass --client \(one of \['mylab'\]\)"):
        inference.checkpoint_tag(str(two), "local", None)


def test_default_method_without_validation_never_uses_test_scores(tmp_path: Path) -> None:
    wd = workdir(tmp_path, {"fedtransfer": scores(None, 0.2), "fedavg": scores(None, 0.3)})
    method, reason = inference.choose_default_method(str(wd))
    assert method == "fedtransfer" and "no validation scores" in reason  # not fedavg's better test ARI
    (wd / "summary.json").unlink()
    method, reason = inference.choose_default_method(str(wd))
    assert method == "fedtransfer" and "no validation scores" in reason
    for d in ("fedtransfer", "fedavg"):
        (wd / "checkpoints" / d).rmdir()
    with pytest.raises(FileNotFoundError, match="no trained model"):
        inference.choose_default_method(str(wd))
