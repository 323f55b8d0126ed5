"""How often `detect_databar` (fedtransfer_jax/data/databar.py) cuts rows that are micrograph, and how
often it finds an instrument data bar to the row.

  python scripts/databar_probe.py [--tbm ../shared/data/tbm_tint_etched/images] [--real DIR]   # ~3.5 min, 2-core CPU

Without a bar (every row found is a false find):
  * synthetic micrographs of the nine labs, 256 and 512 px, three grain-size ranges, as made, flipped
    upside down and turned;
  * the hard cases a reviewer built: dark field, black mount edges (straight and wavy), zero padding from
    stitching, smooth large grains, a flat band of the microstructure crossed by grain boundaries (with and
    without noise), a ferrite band, EBSD maps with unindexed areas or a flat grain across the bottom, low
    contrast, over-exposure, vignetting, and horizontal twin lamellae (noise sd 2-8, tilted 0-4 px);
  * scikit-image's sample photographs; the TBM crops with `--tbm`; any folder of real images with `--real`.
With a bar (the height must come out exact): a text bar below the 512 px synthetic micrographs (black, white
and grey backgrounds), and an FEI-style framed bar with cell lines, each as PNG and as JPEG q75.
"""

from __future__ import annotations

import argparse
import glob
import io
import os

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from fedtransfer_jax.data import databar, image_files, synthetic


def text_bar(width: int, height: int, background: int, ink: int) -> np.ndarray:
    im = Image.new("L", (width, height), background)
    draw = ImageDraw.Draw(im)
    for i, word in enumerate(("HV 20.0 kV", "WD 10.1 mm", "mag 5 000 x", "det ETD", "HFW 41.4 um")):
        draw.text((6 + 110 * i, 6), word, fill=ink)
    draw.rectangle([width - 90, height - 10, width - 12, height - 7], fill=ink)
    return np.asarray(im, np.float32) / 255.0


def framed_bar(width: int, height: int) -> np.ndarray:
    im = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(im)
    draw.rectangle([0, 0, width - 1, height - 1], outline=255)
    for x in range(150, width, 150):
        draw.line([x, 0, x, height], fill=255)
    for i in range(width // 150):
        draw.text((10 + 150 * i, 8), "HV 20.00 kV", fill=255)
        draw.text((10 + 150 * i, 30), "mag 5 000 x", fill=255)
    return np.asarray(im, np.float32) / 255.0


def as_jpeg(image: np.ndarray, quality: int = 75) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())), np.float32) / 255.0


def voronoi(h: int, w: int, n: int, rng) -> np.ndarray:
    pts = rng.random((n, 2)) * [h, w]
    yy, xx = np.mgrid[:h, :w]
    return ((yy[..., None] - pts[:, 0]) ** 2 + (xx[..., None] - pts[:, 1]) ** 2).argmin(-1)


def edges(lab: np.ndarray) -> np.ndarray:
    e = np.zeros(lab.shape, bool)
    e[:-1] |= lab[:-1] != lab[1:]
    e[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    return e


def hard_cases() -> dict[str, np.ndarray]:
    """Micrographs whose bottom rows are flat or straight-edged, but no data bar."""
    rng = np.random.default_rng(0)
    h, w = 768, 1024
    yy, xx = np.mgrid[:h, :w]
    lab = voronoi(h, w, 60, rng)
    lines = ndimage.binary_dilation(edges(lab))
    bf = np.clip(rng.uniform(0.35, 0.75, lab.max() + 1)[lab] - 0.3 * lines + rng.normal(0, 0.02, (h, w)), 0, 1)
    out = {"dark field": np.clip(0.02 + 0.8 * lines + rng.normal(0, 0.01, (h, w)), 0, 1)}
    x = bf.copy()
    x[int(0.88 * h) :] = np.clip(0.03 + rng.normal(0, 0.01, (h - int(0.88 * h), w)), 0, 1)
    out["straight black mount edge, 12 %"] = x
    x = bf.copy()
    x[yy > int(0.88 * h) + 6 * np.sin(xx / 40)] = 0.03
    out["wavy mount edge"] = x
    x = bf.copy()
    x[-40:] = 0.0
    out["stitching padding, 40 rows"] = x
    lab6 = voronoi(h, w, 6, rng)
    out["six smooth large grains"] = rng.uniform(0.3, 0.8, 7)[lab6] - 0.3 * edges(lab6)
    x = bf.copy()
    x[int(0.85 * h) :] = 0.6
    x[int(0.85 * h)] = 0.2
    for c in range(100, w, 150):
        x[int(0.85 * h) :, c : c + 2] = 0.2
    out["flat band crossed by boundaries"] = x
    x = x.copy()
    x[int(0.85 * h) :] += rng.normal(0, 0.02, (h - int(0.85 * h), w))
    out["flat band crossed by boundaries, noise sd 5"] = np.clip(x, 0, 1)
    ebsd = rng.random((lab.max() + 1, 3))[lab]
    x = ebsd.copy()
    x[-60:] = 0
    out["EBSD, unindexed bottom 60 rows"] = x
    x = ebsd.copy()
    x[(yy > 0.8 * h) & (rng.random((h, w)) < 0.7)] = 0
    out["EBSD, bottom 20 % mostly unindexed"] = x
    lab5 = lab.copy()
    lab5[-80:] = lab.max() + 1
    out["EBSD, one flat grain across the bottom 80 rows"] = rng.random((lab5.max() + 1, 3))[lab5]
    out["low contrast (0-15 grey levels)"] = bf * 0.06
    x = bf.copy()
    x[-50:] = 1.0
    out["over-exposed bottom 50 rows"] = x
    out["vignetting"] = bf * np.clip(1.3 - yy / h, 0, 1)
    for noise in (2, 4, 6, 8):
        for tilt in (0, 2, 4):
            x = bf.copy()
            band = yy >= (int(0.9 * h) + xx * tilt / w).astype(int)
            x[band] = 0.62 + rng.normal(0, noise / 255, band.sum())
            out[f"twin lamella 10 %, noise sd {noise}, tilt {tilt} px"] = np.clip(x, 0, 1)
    return out


def photographs():
    """``(name, image in [0, 1])`` of scikit-image's sample photographs (those that need no download)."""
    import skimage.data  # noqa: PLC0415

    for name in ("camera", "coins", "moon", "astronaut", "coffee", "chelsea", "rocket", "page", "text", "horse",
                 "brick", "grass", "gravel", "immunohistochemistry", "hubble_deep_field", "clock", "logo"):
        try:
            im = getattr(skimage.data, name)()
        except Exception:  # noqa: BLE001 - a sample that needs a download
            continue
        im = im.astype(np.float32) / (255.0 if im.dtype == np.uint8 else max(float(im.max()), 1.0))
        yield name, im[..., :3] if im.ndim == 3 else im


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tbm", default="../shared/data/tbm_tint_etched/images")
    parser.add_argument("--real", default=None, help="a folder of real micrographs without data bars")
    args = parser.parse_args()

    found: list[tuple[str, int]] = []

    def check(name: str, image: np.ndarray) -> None:
        rows = databar.detect_databar(np.ascontiguousarray(image, np.float32))
        found.append((name, rows))

    micrographs = []
    for lab in synthetic.LAB_NAMES:
        for size in (256, 512):
            for diameter in (None, (8, 200), (100, 300)):
                images, _, _ = synthetic.make_lab_examples(lab, 2, size, 11, diameter_px=diameter)
                for im in images:
                    micrographs.append((lab, im))
                    for turned in (im, im[::-1], np.rot90(im)):
                        check(f"synthetic {lab} {size} px {diameter}", turned)
    for name, image in hard_cases().items():
        check(name, image)
    for name, im in photographs():
        check(f"skimage {name}", im)
    for folder, tag in ((args.tbm, "TBM"), (args.real, "real")):
        if folder and os.path.isdir(folder):
            for path in sorted(glob.glob(os.path.join(folder, "*"))):
                if path.lower().endswith(image_files.IMAGE_SUFFIXES):
                    check(f"{tag} {os.path.basename(path)}", image_files.read_image(path))
    false = [(n, r) for n, r in found if r]
    print(f"without a bar: {len(false)} false finds in {len(found)} images")
    for name, rows in false:
        print(f"  FALSE: {name}: {rows} rows")

    exact, total, misses = 0, 0, []
    for lab, im in micrographs:
        grey_im = im if im.ndim == 3 else im[..., None]
        w = grey_im.shape[1]
        if w < 512:  # instruments write their bars on images 512 px wide and more
            continue
        for name, bar in (
            ("black bar, white text", text_bar(w, 40, 0, 255)),
            ("white bar, black text", text_bar(w, 30, 255, 0)),
            ("grey bar, light text", text_bar(w, 48, 40, 230)),
            ("FEI-style framed bar", framed_bar(w, 60)),
        ):
            full = np.concatenate([grey_im, np.repeat(bar[..., None], 3, axis=-1)])
            for kind, image in (("png", full), ("jpeg q75", as_jpeg(full))):
                rows = databar.detect_databar(image)
                total += 1
                exact += rows == len(bar)
                if rows != len(bar):
                    misses.append(f"{lab} {w} px, {name}, {kind}: {rows} rows of {len(bar)}")
    print(f"with a bar: {exact} of {total} found to the row")
    for line in misses:
        print(f"  MISS: {line}")


if __name__ == "__main__":
    main()
