"""How well data/overlays.py finds burned-in annotations, where it finds them without any, and what it is worth
to the shipped model's grain sizes.

  cd scripts && PYTHONPATH=.. python overlay_probe.py     # ~5 min on the 2-core CPU

1. Images without annotations: synthetic micrographs of the nine labs (256 and 512 px, three grain-size
   ranges, turned), as PNG and as JPEG q30; databar_probe's hard cases (dark field, mount edges, padding,
   over-exposure, unindexed EBSD, twin lamellae...); scikit-image's sample photographs; the 80 TBM crops.
   Every find is listed: some of them are flat strips that are not micrograph either (padding, over-exposure).
2. Annotations drawn onto synthetic micrographs of 512 px: a white scale bar (4-10 px high) and a black box with
   white text, placed at random, as PNG and JPEG q75: how many are found whole, where the micrograph itself does
   not have the annotation's colour (data/overlays.py leaves a colour alone that the micrograph has).
3. The shipped model at scale 1 on the 9 TBM *validation* crops (development data) with a scale bar box drawn
   in a corner: mean grain diameter against the clean crop's, with `--overlays auto` and `none`.
"""
import glob
import io
import os

import numpy as np
from PIL import Image, ImageDraw

import databar_probe
import dev_data
from fedtransfer_jax.data import image_files, overlays, synthetic

TBM_IMAGES = os.path.join(dev_data.TBM, "images")


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), np.float32) / 255.0


def rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image[..., :3]


def without_annotations():
    for lab in synthetic.LAB_NAMES:
        for size in (256, 512):
            for diameter in (None, (8, 200), (100, 300)):
                images, _, _ = synthetic.make_lab_examples(lab, 2, size, 13, diameter_px=diameter)
                for im in images:
                    for turned in (im, np.rot90(im)):
                        yield f"synthetic {lab} {size} px {diameter}", turned
                    yield f"synthetic {lab} {size} px {diameter} JPEG q30", jpeg(im, 30)
    for name, image in databar_probe.hard_cases().items():
        yield f"hard case: {name}", rgb(np.asarray(image, np.float32))
    for name, im in databar_probe.photographs():
        yield f"skimage {name}", rgb(im)
    for path in sorted(glob.glob(os.path.join(TBM_IMAGES, "*.png"))):
        yield f"TBM {os.path.basename(path)}", image_files.read_image(path)


def draw_annotations(image: np.ndarray, rng) -> tuple[np.ndarray, list]:
    """``image`` with a white bar and a black text box at random places; their rectangles and colours."""
    h, w = image.shape[:2]
    pil = Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    bh, bw = int(rng.integers(4, 11)), int(rng.integers(40, 120))
    by, bx = int(rng.integers(0, h // 2 - bh)), int(rng.integers(0, w - bw))
    draw.rectangle((bx, by, bx + bw - 1, by + bh - 1), fill=(255, 255, 255))
    th, tw = 30, 90
    ty, tx = int(rng.integers(h // 2, h - th)), int(rng.integers(0, w - tw))
    draw.rectangle((tx, ty, tx + tw - 1, ty + th - 1), fill=(0, 0, 0))
    draw.text((tx + 8, ty + 9), "100 um", fill=(255, 255, 255))
    return np.asarray(pil, np.float32) / 255.0, [((by, bx, bh, bw), (1, 1, 1)), ((ty, tx, th, tw), (0, 0, 0))]


def has_colour(image: np.ndarray, colour) -> bool:
    return (np.abs(image - np.asarray(colour)) <= overlays.PURE_TOL).all(axis=-1).mean() > overlays.COMMON / 2


def detection() -> None:
    rng = np.random.default_rng(1)
    counts = {"PNG": [0, 0, 0], "JPEG q75": [0, 0, 0]}  # found whole, expected, stray pixels found elsewhere
    drawn = 0
    for lab in synthetic.LAB_NAMES:
        images, _, _ = synthetic.make_lab_examples(lab, 4, 512, 17, diameter_px=(8, 200))
        for im in images:
            drawn_im, rects = draw_annotations(im, rng)
            drawn += len(rects)
            for fmt, x in (("PNG", drawn_im), ("JPEG q75", jpeg(drawn_im, 75))):
                mask = overlays.find(x)
                truth = np.zeros(mask.shape, bool)
                for (y, x0, hh, ww), colour in rects:
                    truth[y : y + hh, x0 : x0 + ww] = True
                    if not has_colour(im, colour):
                        counts[fmt][1] += 1
                        counts[fmt][0] += bool(mask[y : y + hh, x0 : x0 + ww].all())
                from scipy import ndimage  # noqa: PLC0415

                near = ndimage.binary_dilation(truth, np.ones((3, 3), bool), iterations=overlays.MARGIN + 1)
                counts[fmt][2] += int(mask[~near].sum())
    print(f"  {drawn} drawn; {counts['PNG'][1]} of them in a colour the micrograph itself lacks (the others are left "
          "alone by design: data/overlays.py COMMON)")
    for fmt, (found, expected, stray) in counts.items():
        print(f"  {fmt}: {found} of those {expected} found whole; {stray} px marked outside the drawn ones")


def effect_on_the_model() -> None:
    from fedtransfer_jax.analysis import measure  # noqa: PLC0415

    model, settings, _ = measure.model_and_settings({"workdir": None, "method": None, "client": None, "overlap": None}, {})
    rows = []
    tmp = "/tmp/overlay_probe"
    os.makedirs(tmp, exist_ok=True)
    for i, (image, _) in enumerate(dev_data.tbm_validation()):
        pil = Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8))
        clean = os.path.join(tmp, f"clean_{i}.png")
        pil.save(clean)
        draw = ImageDraw.Draw(pil)
        h, w = image.shape[:2]
        draw.rectangle((w - 105, h - 32, w - 6, h - 6), fill=(0, 0, 0))
        draw.rectangle((w - 95, h - 14, w - 16, h - 10), fill=(255, 255, 255))
        draw.text((w - 85, h - 29), "50 um", fill=(255, 255, 255))
        boxed = os.path.join(tmp, f"boxed_{i}.png")
        pil.save(boxed)

        def size(path, mode):
            m = measure.measure_image(model, path, pixel_size_um=None, exclude_border=False, settings=settings,
                                      scale=1.0, overlays=mode)
            return m.summary["mean_equivalent_diameter_px"], m.summary["n_grains"]

        rows.append((size(clean, "none"), size(boxed, "auto"), size(boxed, "none")))
    print("  crop: clean / box, overlays auto / box, overlays none: mean diameter px (grains); None = withheld")
    for (c, a, n) in rows:
        fmt = lambda v: f"{v[0]:.1f} ({v[1]})" if v[0] else f"withheld ({v[1]})"  # noqa: E731
        print(f"    {fmt(c):>14} {fmt(a):>14} {fmt(n):>14}")
    measured = [r for r in rows if r[0][0]]  # the clean crop's own size not withheld
    for k, name in ((1, "auto"), (2, "none")):
        errs = [abs(r[k][0] / r[0][0] - 1) if r[k][0] else np.inf for r in measured]
        print(f"  overlays {name}: mean diameter within 5 % of the clean crop's on {sum(e <= 0.05 for e in errs)} of "
              f"{len(measured)}, within 15 % on {sum(e <= 0.15 for e in errs)}; withheld on {sum(np.isinf(errs))}")


def main() -> None:
    found, n = [], 0
    for name, image in without_annotations():
        n += 1
        mask = overlays.find(np.ascontiguousarray(image, np.float32))
        if mask.any():
            found.append((name, overlays.describe(mask)))
    print(f"1. without annotations: {len(found)} finds in {n} images")
    for name, d in found:
        print(f"  FOUND: {name}: {d['regions']} region(s), {d['pixels']} px, boxes {d['boxes'][:3]}")
    print("2. drawn annotations (synthetic, 512 px, 4 per lab):")
    detection()
    print("3. the shipped model on the TBM validation crops, a scale bar box in the corner (scale 1):")
    effect_on_the_model()


if __name__ == "__main__":
    main()
