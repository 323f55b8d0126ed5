"""Each micrograph's own pixel size from its file's metadata (data/calibration.py), and, through measure and
predict with a fake model (boundary probability = darkness), with the SEM data bar left out of its grains
(data/databar.py; its detector: tests/test_databar.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageDraw

from fedtransfer_jax.analysis import batch, measure
from fedtransfer_jax.data import calibration
from test_predict_safety import FakeModel, grain_image

FEI = "[User]\r\nDate=12/01/2026\r\n[Scan]\r\nPixelWidth=2.5e-008\r\nPixelHeight=2.5e-008\r\n[PrivateFei]\r\nDatabarHeight={bar}\r\n"


def fei_tiff(path, arr, bar=10, width_m="2.5e-008", height_m="2.5e-008"):
    text = FEI.format(bar=bar).replace("PixelWidth=2.5e-008", f"PixelWidth={width_m}").replace(
        "PixelHeight=2.5e-008", f"PixelHeight={height_m}"
    )
    tifffile.imwrite(path, arr, extratags=[(34682, "s", 0, text, True)])
    return path


def zeiss_tag(text: str):
    """Zeiss's CZ_SEM tag as SmartSEM writes it: latin-1 bytes (its µ is not ASCII)."""
    data = text.encode("latin-1")
    return (34118, "B", len(data), data, True)


def data_bar(width: int, height: int, background: int = 0, ink: int = 255) -> np.ndarray:
    """A data bar as SEMs draw it: a flat background, a margin row, a few short texts and a scale bar."""
    im = Image.new("L", (width, height), background)
    draw = ImageDraw.Draw(im)
    words = ("HV 20.0 kV", "WD 10 mm", "mag 5 000 x", "det ETD", "HFW 41 um", "spot 3.0")
    for i, x in enumerate(range(4, width - 90, 90)):
        draw.text((x, 4), words[i % len(words)], fill=ink)
    draw.rectangle([width - 50, height - 8, width - 10, height - 5], fill=ink)
    return np.asarray(im)


# ----------------------------------------------------------------------------------------------
# What the metadata says.
# ----------------------------------------------------------------------------------------------


def test_fei_pixel_width_in_metres_and_its_data_bar(tmp_path):
    cal = calibration.read_calibration(fei_tiff(tmp_path / "a.tif", np.zeros((50, 60), np.uint8), bar=12))
    assert cal.pixel_size_um == pytest.approx(0.025) and "PixelWidth" in cal.pixel_source
    assert cal.databar_rows == 12 and "DatabarHeight" in cal.databar_source


def test_zeiss_imagej_and_ome_pixel_sizes(tmp_path):
    a = np.zeros((40, 50), np.uint8)
    zeiss = "0\r\n0\r\nAP_WIDTH\r\nWidth = 0.625 µm\r\nAP_IMAGE_PIXEL_SIZE\r\nImage Pixel Size = 0.6 nm\r\n"
    tifffile.imwrite(tmp_path / "z.tif", a, extratags=[zeiss_tag(zeiss)])
    tifffile.imwrite(tmp_path / "ij.tif", a, imagej=True, resolution=(2.0, 2.0), metadata={"unit": "um"})
    tifffile.imwrite(tmp_path / "ij_nm.tif", a, imagej=True, resolution=(0.01, 0.01), metadata={"unit": "nm"})
    tifffile.imwrite(tmp_path / "ome.tif", a, ome=True, metadata={"PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25})
    got = {n: calibration.read_calibration(tmp_path / n) for n in ("z.tif", "ij.tif", "ij_nm.tif", "ome.tif")}
    assert got["z.tif"].pixel_size_um == pytest.approx(0.0125) and "Zeiss" in got["z.tif"].pixel_source  # 0.625 / 50
    assert got["ij.tif"].pixel_size_um == pytest.approx(0.5) and "ImageJ" in got["ij.tif"].pixel_source
    assert got["ij_nm.tif"].pixel_size_um == pytest.approx(0.1)  # 0.01 px per nm = 100 nm per px
    assert got["ome.tif"].pixel_size_um == pytest.approx(0.25) and "OME" in got["ome.tif"].pixel_source
    assert all(c.databar_rows == 0 for c in got.values())


def test_zeiss_pixel_size_is_the_field_width_over_the_saved_width(tmp_path):
    """Zeiss's Pixel Size fields describe a 1024-px scan: an image saved 512 px wide has pixels twice as large
    (a public Zeiss file, rosettasciio's test_tiff_Zeiss_SEM_512pix.tif: Width 5.965 µm, Pixel Size 5.825 nm,
    512 px; its 200 nm scale bar is 17-18 px long, so ~11.6 nm per pixel)."""
    a = np.zeros((384, 512), np.uint8)
    field = "0\r\n0\r\nAP_WIDTH\r\nWidth = 5.965 µm\r\nAP_PIXEL_SIZE\r\nPixel Size = 5.825 nm\r\n"
    tifffile.imwrite(tmp_path / "w.tif", a, extratags=[zeiss_tag(field)])
    assert calibration.read_calibration(tmp_path / "w.tif").pixel_size_um == pytest.approx(5.965 / 512)
    only_pixel = "0\r\n0\r\nAP_PIXEL_SIZE\r\nPixel Size = 5.825 nm\r\n"
    tifffile.imwrite(tmp_path / "p512.tif", a, extratags=[zeiss_tag(only_pixel)])
    tifffile.imwrite(tmp_path / "p1k.tif", np.zeros((8, 1024), np.uint8), extratags=[zeiss_tag(only_pixel)])
    assert calibration.read_calibration(tmp_path / "p512.tif").pixel_size_um is None  # which scan? not known
    assert calibration.read_calibration(tmp_path / "p1k.tif").pixel_size_um == pytest.approx(0.005825)


def test_phenom_xml(tmp_path):
    xml = (
        '<?xml version="1.0"?><FeiImage><pixelWidth unit="um">0.05</pixelWidth>'
        '<pixelHeight unit="um">0.05</pixelHeight><databarHeight>16</databarHeight></FeiImage>'
    )
    tifffile.imwrite(tmp_path / "p.tif", np.zeros((60, 60), np.uint8), extratags=[(34683, "s", 0, xml, True)])
    cal = calibration.read_calibration(tmp_path / "p.tif")
    assert cal.pixel_size_um == pytest.approx(0.05) and cal.databar_rows == 16


def test_tescan_pixel_size_in_metres(tmp_path):
    text = "[MAIN]\r\nDevice=MIRA3\r\nMagnification=5000\r\nPixelSizeX=4.2e-008\r\nPixelSizeY=4.2e-008\r\n"
    data = text.encode("ascii")
    path = tmp_path / "t.tif"
    tifffile.imwrite(path, np.zeros((30, 40), np.uint8), extratags=[(50431, "B", len(data), data, True)])
    cal = calibration.read_calibration(path)
    assert cal.pixel_size_um == pytest.approx(0.042) and "TESCAN" in cal.pixel_source


class _Tag:
    def __init__(self, value):
        self.value = value


class _Page:
    def __init__(self, width, tags):
        self.imagewidth, self.tags = width, tags


class _Tif:
    def __init__(self, pages):
        self.pages = pages


def test_olympus_sis_structure_on_the_calibrated_page():
    # tifffile decodes Olympus's binary SIS structure (tag 33560) into this dict; the structure sits on the
    # full-bit-depth page behind an RGB preview of the same size (a real Olympus file reads 2.3928e-11 m,
    # the value rosettasciio's tests assert for it).
    sis = {"pixelsizex": 6.45e-7, "pixelsizey": 6.45e-7, "magnification": 10.0}
    tif = _Tif([_Page(112, {}), _Page(112, {33560: _Tag(sis)})])
    notes = []
    size, source = calibration._olympus_sis(tif, 112, notes)
    assert size == pytest.approx(0.645) and "Olympus SIS" in source and not notes
    size, _ = calibration._olympus_sis(_Tif([_Page(224, {33560: _Tag(sis)})]), 112, notes)
    assert size is None and "224 px wide page" in notes[0]


HITACHI = "[SemImageFile]\r\nInstructName=S-4800\r\nDataSize={w}x960\r\nPixelSize=24.8\r\nMagnification=5000\r\n"
JEOL = "$CM_FORMAT JEOL/SEM\n$CM_FULL_SIZE {w} 960\n$$SM_MICRON_BAR 160\n$$SM_MICRON_MARKER 5um\n"


@pytest.mark.parametrize("suffix", [".tif", ".png", ".jpg"])
def test_hitachi_and_jeol_side_files_beside_any_image(tmp_path, suffix):
    img = Image.fromarray(np.zeros((60, 80), np.uint8))
    for vendor, text, want in (("hitachi", HITACHI, 0.0248), ("jeol", JEOL, 5 / 160)):
        path = tmp_path / f"{vendor}{suffix}"
        img.save(path)
        path.with_suffix(".txt").write_text(text.format(w=80))
        cal = calibration.read_calibration(path)
        assert cal.pixel_size_um == pytest.approx(want), vendor
        assert vendor.capitalize().replace("Jeol", "JEOL") in cal.pixel_source and path.stem in cal.pixel_source
    # JEOL writes its marker's unit in the PC's code page: 'µm' as one latin-1 byte.
    (tmp_path / "jeol.txt").write_bytes(JEOL.format(w=80).replace("5um", "10µm").encode("latin-1"))
    assert calibration.read_calibration(tmp_path / f"jeol{suffix}").pixel_size_um == pytest.approx(10 / 160)


def test_a_side_file_for_another_width_is_noted_not_used(tmp_path):
    path = tmp_path / "resized.png"
    Image.fromarray(np.zeros((60, 80), np.uint8)).save(path)
    for text in (HITACHI, JEOL):
        path.with_suffix(".txt").write_text(text.format(w=1280))
        cal = calibration.read_calibration(path)
        assert cal.pixel_size_um is None and "1280 px wide" in cal.notes[0]
    # Other text beside an image (a lab's own notes) is not a calibration, and says nothing.
    path.with_suffix(".txt").write_text("sample 12, etched 10 s in Nital\nPixelSize=3\n")
    assert calibration.read_calibration(path) == calibration.Calibration()
    path.with_suffix(".txt").write_text(JEOL.format(w=80).replace("5um", "five microns"))
    cal = calibration.read_calibration(path)
    assert cal.pixel_size_um is None and "not understood" in cal.notes[0]



def test_side_files_as_instruments_write_them(tmp_path):
    """Review findings: keys outside Hitachi's section, BOMs, UTF-16, NULs, a width not stated, a number cut by
    the read limit, a name too long for its side file; and the file's own metadata against a side file."""
    png = tmp_path / "a.png"
    Image.fromarray(np.zeros((60, 80), np.uint8)).save(png)
    side = png.with_suffix(".txt")

    def read(data: bytes):
        side.write_bytes(data)
        return calibration.read_calibration(png)

    hitachi = HITACHI.format(w=80)
    assert read(("[Other]\r\nPixelSize=99\r\n" + hitachi).encode()).pixel_size_um == pytest.approx(0.0248)
    for data in (b"\xef\xbb\xbf" + hitachi.encode(), hitachi.encode("utf-16"), hitachi.encode("utf-16-le"),
                 hitachi.replace("\r\n", "\x00").encode()):
        assert read(data).pixel_size_um == pytest.approx(0.0248), data[:12]
    assert read(JEOL.format(w=80).replace(" ", "\t").replace("$$", "$").encode()).pixel_size_um == pytest.approx(5 / 160)
    # No width stated: used, and said.
    cal = read(b"$$SM_MICRON_BAR 100\n$$SM_MICRON_MARKER 5um\n")
    assert cal.pixel_size_um == pytest.approx(0.05) and "does not state the image width" in cal.notes[0]
    # Found but unusable: said, not used.
    for data in (hitachi.replace("24.8", "0").encode(), hitachi.replace("24.8", "nan").encode(),
                 b"$$SM_MICRON_BAR 0\n$$SM_MICRON_MARKER 5um\n"):
        cal = read(data)
        assert cal.pixel_size_um is None and "not used" in cal.notes[0]
    # A line cut by the read limit is dropped, never read as a shorter number.
    head = b"$$SM_MICRON_MARKER 10um\n$$CM_COMMENT "
    cut = b"$$SM_MICRON_BAR 1"  # the limit falls after these bytes of '$$SM_MICRON_BAR 128'
    pad = b"x" * (calibration.SIDE_FILE_MAX_BYTES - len(head) - 1 - len(cut)) + b"\n"
    assert len(head + pad + cut) == calibration.SIDE_FILE_MAX_BYTES
    assert read(head + pad + cut + b"28\n").pixel_size_um is None
    # An image whose side-file name would be too long: no calibration, no error.
    long_png = tmp_path / ("n" * 252)
    Image.fromarray(np.zeros((60, 80), np.uint8)).save(long_png, format="PNG")
    assert calibration.read_calibration(long_png).pixel_size_um is None
    # The file's own metadata wins over a side file that disagrees, with a note.
    tif = fei_tiff(tmp_path / "b.tif", np.zeros((60, 80), np.uint8), bar=0)
    tif.with_suffix(".txt").write_text(JEOL.format(w=80))
    cal = calibration.read_calibration(tif)
    assert cal.pixel_size_um == pytest.approx(0.025) and "JEOL side file" in cal.notes[0]


def test_a_printing_resolution_is_not_a_calibration(tmp_path):
    a = np.zeros((40, 50), np.uint8)
    tifffile.imwrite(tmp_path / "dpi.tif", a, resolution=(300, 300), resolutionunit="INCH")
    Image.fromarray(a).save(tmp_path / "dpi.png", dpi=(96, 96))
    Image.fromarray(a).save(tmp_path / "x.jpg")
    for name in ("dpi.tif", "dpi.png", "x.jpg"):
        assert calibration.read_calibration(tmp_path / name) == calibration.Calibration()


def test_odd_metadata_is_noted_not_trusted(tmp_path):
    square = calibration.read_calibration(fei_tiff(tmp_path / "ns.tif", np.zeros((40, 40), np.uint8), bar=0,
                                                   width_m="2e-008", height_m="4e-008"))
    assert square.pixel_size_um == pytest.approx(math.sqrt(0.02 * 0.04)) and "not square" in square.notes[0]
    absurd = calibration.read_calibration(
        fei_tiff(tmp_path / "abs.tif", np.zeros((40, 40), np.uint8), width_m="3e+005", height_m="3e+005")
    )
    assert absurd.pixel_size_um is None and "not a plausible" in absurd.notes[0]
    too_tall = calibration.read_calibration(fei_tiff(tmp_path / "tall.tif", np.zeros((40, 40), np.uint8), bar=40))
    assert too_tall.databar_rows == 0 and too_tall.notes
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    assert calibration.read_calibration(tmp_path / "broken.tif") == calibration.Calibration()


def test_the_flag_wins_and_says_so_where_the_file_disagrees():
    cal = calibration.Calibration(0.025, "FEI/Thermo metadata [Scan] PixelWidth")
    assert calibration.choose_pixel_size(None, cal) == (0.025, cal.pixel_source, [])
    size, source, warnings = calibration.choose_pixel_size(0.5, cal)
    assert (size, source) == (0.5, "--pixel_size_um") and "0.025" in warnings[0]
    assert calibration.choose_pixel_size(0.0251, cal)[2] == []  # within 2 %: no warning
    assert calibration.choose_pixel_size(None, calibration.Calibration()) == (None, "", [])


# ----------------------------------------------------------------------------------------------
# Through measure and predict.
# ----------------------------------------------------------------------------------------------


def sem_with_bar(h=48, w=480, bar=16) -> np.ndarray:
    """Grains (white, dark 1-px lines every 8 px) above a black data bar with white text."""
    return np.concatenate([grain_image(h, w), data_bar(w, bar)])


def settings():
    return measure.postprocess_choice.resolve_settings(None, None, {"min_fragment_px": 0}, 0.5)[0]


def test_measure_leaves_the_bar_out_and_uses_the_files_pixel_size(tmp_path):
    path = fei_tiff(tmp_path / "sem.tif", sem_with_bar(), bar=16)
    m = measure.measure_image(FakeModel(), str(path), pixel_size_um=None, exclude_border=False, settings=settings())
    plain = measure.measure_image(
        FakeModel(), str(path), pixel_size_um=None, exclude_border=False, settings=settings(), databar="none",
        overlays="none",  # (a flat bar is also a flat rectangle data/overlays.py would leave out)
    )
    assert m.boundary.shape == (64, 480) and m.boundary[48:].all()  # the bar is boundary in the map
    assert m.summary["databar"] == {"rows": 16, "source": "FEI/Thermo metadata [PrivateFei] DatabarHeight"}
    assert any("bottom 16 rows" in n for n in m.summary["notes"])
    assert m.summary["n_grains"] == 6 * 60  # the grid's cells: lines every 8 px in 48 x 480
    assert plain.summary["n_grains"] > m.summary["n_grains"]  # the text's glyphs became grains
    assert m.summary["pixel_size_um"] == pytest.approx(0.025) and "PixelWidth" in m.summary["pixel_size_source"]
    assert m.rows[0]["area_um2"] == pytest.approx(m.rows[0]["area_px"] * 0.025**2)


def test_predict_measures_each_image_at_its_own_magnification(tmp_path):
    images = tmp_path / "in"
    images.mkdir()
    fei_tiff(images / "a.tif", grain_image(48, 480), bar=0, width_m="1e-007", height_m="1e-007")
    fei_tiff(images / "b.tif", grain_image(48, 480), bar=0, width_m="5e-008", height_m="5e-008")
    Image.fromarray(sem_with_bar()).save(images / "c.png")  # no metadata: the bar is found in the pixels
    Image.fromarray(grain_image(48, 480)).save(images / "d.png")
    (images / "d.txt").write_text(JEOL.format(w=480))  # a JEOL side file: read, and not listed as a failure
    logged: list[str] = []
    manifest = batch.predict_folder(FakeModel(), str(images), str(tmp_path / "out"), log=logged.append, min_fragment_px=0)
    a, b, c = (manifest["images"][n] for n in "abc")
    assert (a["pixel_size_um"], b["pixel_size_um"], c["pixel_size_um"]) == (pytest.approx(0.1), pytest.approx(0.05), None)
    # Same pixels, half the pixel size: half the mean diameter in µm, and G larger by 2 (E112: area x 4).
    assert b["mean_equivalent_diameter_um"] == pytest.approx(a["mean_equivalent_diameter_um"] / 2)
    assert b["astm_G"] == pytest.approx(a["astm_G"] + 2.0, abs=1e-6)
    assert c["databar"]["rows"] == 16 and c["height"] == 64 and c["n_grains"] == a["n_grains"] == 6 * 60
    assert manifest["images"]["d"]["pixel_size_um"] == pytest.approx(5 / 160)
    assert manifest["pixel_size_um"] is None and not manifest["failed"]
    assert {e["kind"] for e in manifest["skipped"]} == {"side_file"} and "beside d.png" in manifest["skipped"][0]["reason"]
    assert any("c.png" in line and "bottom 16 rows" in line for line in logged)
    summary = (tmp_path / "out" / "grain_sizes_summary.csv").read_text()
    assert "pixel_size_source" in summary.splitlines()[0] and "PixelWidth" in summary
    page = (tmp_path / "out" / "report.html").read_text()
    assert "0.1 µm per pixel (FEI/Thermo metadata" in page and "bottom 16 rows" in page
    on_disk = json.loads((tmp_path / "out" / "grain_sizes.json").read_text())
    assert on_disk["images"]["a"]["pixel_size_source"].startswith("FEI/Thermo")


def test_the_flag_overrides_the_file_with_a_warning(tmp_path):
    images = tmp_path / "in"
    images.mkdir()
    fei_tiff(images / "a.tif", grain_image(48, 64), bar=0)
    logged: list[str] = []
    manifest = batch.predict_folder(FakeModel(), str(images), str(tmp_path / "out"), pixel_size_um=0.5, log=logged.append)
    entry = manifest["images"]["a"]
    assert entry["pixel_size_um"] == 0.5 and entry["pixel_size_source"] == "--pixel_size_um"
    assert any("file states 0.025" in line for line in logged)


def test_the_saved_map_relabels_to_the_grain_table_and_the_overlay_leaves_the_bar_alone(tmp_path):
    from fedtransfer_jax.metrics import grains as grains_lib

    images = tmp_path / "in"
    images.mkdir()
    fei_tiff(images / "sem.tif", sem_with_bar(), bar=16)
    manifest = batch.predict_folder(FakeModel(), str(images), str(tmp_path / "out"), min_fragment_px=0)
    saved = np.asarray(Image.open(tmp_path / "out" / "sem.png")) > 0
    relabelled = grains_lib.grains_from_boundary(saved)
    assert len(np.unique(relabelled[relabelled > 0])) == manifest["images"]["sem"]["n_grains"]
    overlay = np.asarray(Image.open(tmp_path / "out" / "sem_overlay.png"))
    colour = manifest["images"]["sem"]["overlay_colour"]
    assert not (overlay[48:] == colour).all(axis=-1).any()  # no boundary colour painted over the bar


def test_a_cropped_fei_file_does_not_trust_its_stated_bar(tmp_path):
    text = FEI.format(bar=10) + "[Image]\r\nResolutionY=30\r\n"
    tifffile.imwrite(tmp_path / "ok.tif", np.zeros((40, 60), np.uint8), extratags=[(34682, "s", 0, text, True)])
    tifffile.imwrite(tmp_path / "cut.tif", np.zeros((35, 60), np.uint8), extratags=[(34682, "s", 0, text, True)])
    assert calibration.read_calibration(tmp_path / "ok.tif").databar_rows == 10
    cut = calibration.read_calibration(tmp_path / "cut.tif")
    assert cut.databar_rows == 0 and "cropped or resized" in cut.notes[0]
