"""OUT/report.html is a page people can open: every image it shows is a file inside OUT, every name from
the file system is escaped, nothing needs a network, and it renders (headless Chromium, when installed).

Predictions come from the fake model of test_predict_safety (boundary probability = darkness): no training.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from fedtransfer_jax import predict
from fedtransfer_jax.analysis import report
from fedtransfer_jax.runs import inference
from test_predict_safety import FakeModel, grain_image, predict_values, save

# File names a browser would misread if pasted into HTML or a URL unescaped.
NASTY = ['a<i>b&c "q"', "50% #2 'x'", "plain"]


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.srcs: list[str] = []
        self.hrefs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        a = dict(attrs)
        if tag == "img":
            self.srcs.append(a.get("src") or "")
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"])

    def handle_data(self, data):
        self.text.append(data)


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture
def predicted(tmp_path: Path) -> Path:
    src = tmp_path / "in"
    for i, name in enumerate(NASTY):
        save(src / f"{name}.png", grain_image(40 + 8 * i, 48, 8))
    save(src / "small.png", grain_image(12, 12, 4))  # size withheld: too small
    out = tmp_path / "out"
    predict.predict_folder(FakeModel(), str(src), str(out), pixel_size_um=0.5, close_radius=0, min_fragment_px=0)
    return out


def test_every_image_exists_under_out_and_names_are_escaped(predicted: Path) -> None:
    page = parse(predicted / "report.html")
    # Only the structure we wrote: a name like 'a<i>b' is text, never a tag; no script, no external resource.
    assert "i" not in page.tags and "script" not in page.tags and "link" not in page.tags
    text = "".join(page.text)
    for name in NASTY:
        assert name in text
    assert len(page.srcs) == 2 * (len(NASTY) + 1)  # an overlay and a histogram per image
    for src in page.srcs + [h for h in page.hrefs if not h.startswith("#")]:
        assert "://" not in src and not src.startswith("/")
        target = (predicted / unquote(src)).resolve()
        assert target.is_file(), src
        assert str(target).startswith(str(predicted.resolve()) + os.sep)
    html_text = (predicted / "report.html").read_text()
    assert "<style>" in html_text and "http://" not in html_text and "https://" not in html_text
    # Settings, scale, model and the withheld size are on the page.
    assert "0.5 µm per pixel" in text and "fedavg" in text and "close_radius=0" in text
    assert "grain size not reported" in text and "image too small" in text


def test_tables_hold_every_grain_of_every_image(predicted: Path) -> None:
    manifest = json.loads((predicted / "grain_sizes.json").read_text())
    with open(predicted / "grain_sizes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["image"] for r in rows} == set(manifest["images"])
    for name, entry in manifest["images"].items():
        mine = [r for r in rows if r["image"] == name]
        assert len(mine) == entry["n_grains"]  # (no --exclude_border_grains)
        assert all(float(r["equivalent_diameter_um"]) > 0 for r in mine)
        # A withheld image's grains are listed, and marked, so a pivot can leave them out as the summary does.
        assert {r["image_size_withheld"] for r in mine} == {"1" if entry.get("size_withheld") else "0"}
    with open(predicted / "grain_sizes_summary.csv", newline="") as f:
        summary = {r["image"]: r for r in csv.DictReader(f)}
    assert summary["small"]["astm_G"] == "" and "too small" in summary["small"]["size_withheld"]
    assert float(summary["plain"]["astm_G"]) > 0
    # Overlay: the micrograph's size, boundaries in the contrasting colour.
    entry = manifest["images"]["plain"]
    with Image.open(predicted / entry["overlay"]) as im:
        ov = np.asarray(im.convert("RGB"))
    assert ov.shape[:2] == (entry["height"], entry["width"])
    assert (ov == entry["overlay_colour"]).all(axis=-1).sum() > 0
    with Image.open(predicted / entry["histogram"]) as im:
        assert im.size[0] > 200


def test_report_writer_alone_escapes_a_hand_made_manifest(tmp_path: Path) -> None:
    """The writer needs only a manifest (no model): names, warnings and failures are all escaped."""
    manifest = {
        "status": "interrupted",
        "error": "interrupted <by> the user",
        "model": "fed<avg>",
        "model_info": {"workdir": "/w&d", "method": "fed<avg>", "method_reason": "best <validation>"},
        "postprocess": {"settings": {"threshold": 0.5}, "source": "built-in"},
        "pixel_size_um": None,
        "images": {
            "x<y>": {"file": "/in/x<y>.png", "n_grains": 3, "warnings": ["<b>bold</b>"], "size_withheld": "w<"}
        },
        "failed": [{"file": "/in/bad<1>.png", "reason": "cannot <read>"}],
        "skipped": [],
    }
    page = Page()
    page.feed(report.report_html(manifest))
    assert set(page.tags) <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "span",
                              "dl", "dt", "dd", "table", "tr", "th", "td", "a", "div", "figure", "figcaption", "img"}
    text = "".join(page.text)
    for s in ("x<y>", "<b>bold</b>", "bad<1>", "cannot <read>", "best <validation>", "interrupted <by> the user"):
        assert s in text
    assert "unknown" in text  # no pixel size: said so


def chromium_screenshot(page: Path, shot: Path) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        return subprocess.run(
            [
                shutil.which("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", f"--user-data-dir={profile}", f"--screenshot={shot}",
                "--window-size=1200,900", page.resolve().as_uri(),
            ],
            capture_output=True, text=True, timeout=120,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed")
def test_report_renders_in_headless_chromium(predicted: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    proc = chromium_screenshot(predicted / "report.html", shot)
    assert shot.is_file(), proc.stderr[-2000:]
    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.shape[:2] == (900, 1200)
    # Not blank: text, table lines and the figures give many colours and a real spread.
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50 and pixels.std() > 10


def test_cli_run_prints_a_table_and_writes_the_report(tmp_path: Path, monkeypatch, capsys) -> None:
    """End to end through predict.run (the model load faked): the default method comes from the workdir's
    validation and is named with its reason in the output and on the page."""
    wd = tmp_path / "wd"
    for m in ("fedavg", "fedprox"):
        (wd / "checkpoints" / m).mkdir(parents=True)
    summary = {"methods": {
        "fedavg": {"mean": {"ari": 0.9}, "postprocessed": {"validation_objective": {"chosen": 0.70}}},
        "fedprox": {"mean": {"ari": 0.5}, "postprocessed": {"validation_objective": {"chosen": 0.78}}},
    }}
    (wd / "summary.json").write_text(json.dumps(summary))
    monkeypatch.setattr(inference, "load_model", lambda w, m, c=None, **kw: FakeModel(tag=m))
    src = tmp_path / "in"
    save(src / "a.png", grain_image(48, 48, 8))
    out = tmp_path / "out"
    assert predict.cli(predict_values(src, out, wd, method=None), progress=True) == predict.EXIT_OK
    captured = capsys.readouterr()
    assert "predict: model fedprox (best post-processing validation objective: 0.780" in captured.err
    lines = captured.out.splitlines()
    assert lines[0].split() == ["image", "grains", "mean", "diameter", "ASTM", "G", "scale", "warnings"]
    assert lines[1].split()[0] == "a" and "px" in lines[1]
    assert not captured.out.lstrip().startswith("{")  # no JSON dump on stdout
    text = "".join(parse(out / "report.html").text)
    assert "fedprox (best post-processing validation objective" in text and str(wd) in text
    assert "note: 1 image(s) without a pixel size" in captured.out  # why the table's ASTM G is '-'
    assert "replacing" not in captured.out
    # The same command again: the console says the earlier results were replaced.
    assert predict.cli(predict_values(src, out, wd, method=None), progress=True) == predict.EXIT_OK
    assert "1 image(s) measured (1 replacing an earlier run's results in" in capsys.readouterr().out


def test_the_overlay_draws_the_measured_grains_borders_not_the_whole_band() -> None:
    from fedtransfer_jax.data import microstructure  # noqa: PLC0415
    from fedtransfer_jax.metrics import grains as grains_lib  # noqa: PLC0415

    g = microstructure.generate_microstructure(np.random.default_rng(0), 160, method="voronoi", mean_grain_diameter_px=30)
    band = microstructure.boundary_map(g, 7) > 0  # a model's wide band
    borders = report.grain_borders(band)
    assert borders.sum() < 0.5 * band.sum()  # thin lines, the micrograph stays visible
    measured = grains_lib.grains_from_boundary(band)
    redrawn = grains_lib.grains_from_boundary(borders)
    assert redrawn.max() == measured.max()  # the lines split the image into the very grains of the table
    off_lines = ~borders  # the 1-px lines' own pixels may fall to either side; every other pixel agrees
    assert grains_lib.adjusted_rand_index(redrawn[off_lines], measured[off_lines]) == pytest.approx(1.0)
    everything = np.ones((20, 30), bool)  # no grain: the map is drawn as it is
    assert report.grain_borders(everything).all()
    with_bar = report.grain_borders(band, databar_rows=16)
    assert not with_bar[-16:].any() and with_bar[:-16].any()
