"""predict used wrongly, as people do: its own output folder fed back in, a pixel size off by a factor of a
million, a flag far out of range, a client that does not exist, a damaged model, a file name too long
for its outputs, an --out that cannot be a folder, `timeout`'s SIGTERM. Each gets one clear message (or a
warning beside the numbers), never a traceback or confident nonsense."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from fedtransfer_jax import predict
from fedtransfer_jax.analysis import batch, measure, outputs
from fedtransfer_jax.metrics import grains as grains_lib
from fedtransfer_jax.metrics import postprocess_select as pps
from fedtransfer_jax.runs import inference, postprocess_choice
from test_predict_safety import FakeModel, grain_image, predict_values, save


@pytest.fixture
def fake_load(monkeypatch):
    monkeypatch.setattr(inference, "load_model", lambda w, m, c=None, **kw: FakeModel(tag=m))


def test_an_earlier_out_given_as_images_is_refused(tmp_path: Path, fake_load) -> None:
    save(tmp_path / "in" / "a.png", grain_image(40, 40))
    first = tmp_path / "first"
    assert predict.run(predict_values(tmp_path / "in", first, tmp_path / "wd")) == predict.EXIT_OK
    with pytest.raises(ValueError, match="output folder of an earlier predict"):
        predict.run(predict_values(first, tmp_path / "second", tmp_path / "wd"))
    assert not (tmp_path / "second").exists()


def test_a_micrograph_beside_earlier_outputs_is_measured_alone(tmp_path: Path) -> None:
    save(tmp_path / "in" / "a.png", grain_image(40, 40))
    batch.predict_folder(FakeModel(), str(tmp_path / "in"), str(tmp_path / "in2"))
    save(tmp_path / "in2" / "new.png", grain_image(40, 40))  # the user adds a micrograph there
    logged: list[str] = []
    manifest = batch.predict_folder(FakeModel(), str(tmp_path / "in2"), str(tmp_path / "out"), log=logged.append)
    assert set(manifest["images"]) == {"new"}
    assert any("3 file(s) an earlier predict wrote there" in line for line in logged)  # a.png, a_overlay, a_hist
    assert any(e["file"].endswith("a_overlay.png") for e in manifest["skipped"])


def test_a_pixel_size_no_instrument_gives_is_refused_by_name() -> None:
    for bad in (1e-7, 1e300, 2e4):
        with pytest.raises(ValueError, match="--pixel_size_um must be a pixel size"):
            measure.check_pixel_size(bad)
    assert measure.check_pixel_size(0.0) is None and measure.check_pixel_size(5000.0) == 5000.0


def test_an_absurd_astm_g_is_flagged_beside_the_number() -> None:
    boundary = grain_image(64, 64) < 128
    lab = grains_lib.grains_from_boundary(boundary)
    fine = grains_lib.grain_size_summary(lab, pixel_size_um=1.0, boundary=boundary)
    coarse = grains_lib.grain_size_summary(lab, pixel_size_um=5000.0, boundary=boundary)
    tiny = grains_lib.grain_size_summary(lab, pixel_size_um=1e-6, boundary=boundary)
    assert not any("ASTM G" in w for w in fine["warnings"])
    for summary in (coarse, tiny):
        assert summary["astm_G"] is not None and not -3 <= summary["astm_G"] <= 30
        assert any("outside the range of real grain sizes" in w for w in summary["warnings"])


@pytest.mark.parametrize("key", ["close_radius", "line_width"])
def test_a_morphology_radius_far_beyond_any_boundary_is_refused(key) -> None:
    with pytest.raises(ValueError, match=f"--{key}. must be at most 64"):
        pps.PostprocessSettings(**{key: 10_000})
    pps.PostprocessSettings(**{key: 64})


def test_a_client_without_its_own_settings_is_refused(tmp_path: Path) -> None:
    wd = tmp_path / "wd"
    (wd / "postprocess" / "fedavg").mkdir(parents=True)
    (wd / "postprocess" / "fedavg" / "sem.json").write_text("{}")
    postprocess_choice.check_client_settings(str(wd), "fedavg", "sem")
    with pytest.raises(ValueError, match=r"--client 'nobody'.*\['sem'\]"):
        postprocess_choice.check_client_settings(str(wd), "fedavg", "nobody")
    with pytest.raises(ValueError, match="it has none per client"):
        postprocess_choice.check_client_settings(str(wd), "gen_random_style", "nobody")


@pytest.fixture(scope="module")
def shipped_copy(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("shipped") / "grains"
    shutil.copytree(inference.shipped_workdir(), dest)
    return dest


def test_a_damaged_checkpoint_is_one_message_naming_it(shipped_copy: Path, tmp_path: Path) -> None:
    wd = tmp_path / "wd"
    shutil.copytree(shipped_copy, wd)
    method = inference.default_method(str(wd))
    shutil.rmtree(next(p for p in (wd / "checkpoints" / method).rglob("params") if p.is_dir()))
    with pytest.raises(ValueError, match=r"the checkpoint in .*checkpoints/.* cannot be read"):
        inference.load_model(str(wd), method)


def test_a_broken_config_names_the_file(shipped_copy: Path, tmp_path: Path) -> None:
    wd = tmp_path / "wd"
    shutil.copytree(shipped_copy, wd)
    (wd / "config.json").write_text('{"broken')
    with pytest.raises(ValueError, match=r"config.json is not a readable config"):
        inference.config_from_workdir(str(wd))


def test_a_name_too_long_for_its_outputs_is_shortened_not_fatal(tmp_path: Path) -> None:
    long_stem = "micrograph_" + "x" * 234  # 245 bytes: legal, but "<stem>_overlay.png" is not
    save(tmp_path / "in" / f"{long_stem}.png", grain_image(40, 40))
    save(tmp_path / "in" / "ok.png", grain_image(40, 40))
    manifest = batch.predict_folder(FakeModel(), str(tmp_path / "in"), str(tmp_path / "out"))
    assert len(manifest["images"]) == 2 and manifest["status"] == "complete"
    name = next(n for n in manifest["images"] if n != "ok")
    assert len(name.encode()) <= outputs.MAX_NAME_BYTES and name.startswith("micrograph_xxx")
    assert manifest["images"][name]["file"].endswith(long_stem + ".png")
    assert (tmp_path / "out" / f"{name}_overlay.png").exists()


def test_an_out_below_a_file_says_which_is_a_file(tmp_path: Path, fake_load) -> None:
    save(tmp_path / "in" / "a.png", grain_image(40, 40))
    (tmp_path / "f").write_text("mine")
    with pytest.raises(OSError, match=r"^--out .*f/sub: cannot create it, .*f is a file, not a folder"):
        predict.run(predict_values(tmp_path / "in", tmp_path / "f" / "sub", tmp_path / "wd"))
    assert (tmp_path / "f").read_text() == "mine"


def test_an_out_that_cannot_be_written_names_the_flag(tmp_path: Path, fake_load, monkeypatch) -> None:
    save(tmp_path / "in" / "a.png", grain_image(40, 40))
    (tmp_path / "ro").mkdir()
    real_open = os.open

    def read_only(path, *a, **k):
        if str(path).endswith(outputs.LOCK_NAME):
            raise OSError(30, "Read-only file system", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(outputs.os, "open", read_only)
    with pytest.raises(OSError, match=r"^--out .*ro: cannot write into it \(Read-only file system\)"):
        predict.run(predict_values(tmp_path / "in", tmp_path / "ro", tmp_path / "wd"))
    assert os.listdir(tmp_path / "ro") == []


def test_library_logs_stay_off_the_console() -> None:
    import logging as std_logging

    loggers = [std_logging.getLogger(name) for name in ("asyncio", "tifffile")]
    before = [lg.level for lg in loggers]
    try:
        predict.console.quiet_inference_logs()
        assert loggers[0].getEffectiveLevel() == std_logging.CRITICAL  # orbax's unretrieved task errors
        assert loggers[1].getEffectiveLevel() == std_logging.ERROR
    finally:
        for lg, level in zip(loggers, before):
            lg.setLevel(level)


def test_skipped_entries_are_named_on_the_terminal(tmp_path: Path) -> None:
    src = tmp_path / "in"
    save(src / "a.png", grain_image(40, 40))
    (src / "sub").mkdir()
    save(src / "sub" / "b.png", grain_image(40, 40))
    (src / "c.webp").write_bytes(b"RIFF")
    (src / ".DS_Store").write_bytes(b"\0")
    logged: list[str] = []
    batch.predict_folder(FakeModel(), str(src), str(tmp_path / "out"), log=logged.append)
    (note,) = [line for line in logged if "not read from" in line]
    assert "sub/ (sub-folders" in note and "c.webp (format not read" in note and ".DS_Store" not in note


class TerminatedModel(FakeModel):
    calls = 0

    def predict_prob(self, image, *, overlap=None, flips=False):
        type(self).calls += 1
        if type(self).calls == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().predict_prob(image)


def test_sigterm_stops_like_ctrl_c(tmp_path: Path, monkeypatch) -> None:
    for n in "abc":
        save(tmp_path / "in" / f"{n}.png", grain_image(40, 40))
    TerminatedModel.calls = 0
    monkeypatch.setattr(inference, "load_model", lambda w, m, c=None, **kw: TerminatedModel(tag=m))
    previous = signal.getsignal(signal.SIGTERM)
    try:
        predict.stop_on_sigterm()
        status = predict.cli(predict_values(tmp_path / "in", tmp_path / "out", tmp_path / "wd"), progress=False)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert status == predict.EXIT_INTERRUPTED
    manifest = json.loads((tmp_path / "out" / outputs.MANIFEST).read_text())
    assert manifest["status"] == "interrupted" and not (tmp_path / "out" / ".predict.lock").exists()


def test_a_very_large_image_gets_a_line_saying_what_to_expect(tmp_path: Path) -> None:
    from PIL import Image

    big, small = tmp_path / "big.png", tmp_path / "small.png"
    Image.new("L", (5000, 4000)).save(big)  # 20 Mpx, a few kB on disk
    Image.new("L", (100, 100)).save(small)
    said: list[str] = []
    batch._note_if_large(str(big), "auto", said.append)
    batch._note_if_large(str(small), "auto", said.append)
    (line,) = said
    assert "big.png is 5000 x 4000 px (20 Mpx)" in line and "min" in line
