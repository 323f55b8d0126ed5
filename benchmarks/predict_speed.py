"""How long the default `predict` takes on a large micrograph, as a user runs it (issue goal: a 1500 x 1000
image in <= 60 s on the 2-core CPU).

  python -m benchmarks.predict_speed                       # shipped model, --scale auto, 1500 x 1000: ~1-2 min
  python -m benchmarks.predict_speed --scale 1 --width 3000 --height 2000
  python -m benchmarks.predict_speed --workdir runs/x      # a trained workdir's model instead of the shipped one

It writes synthetic bright-field micrographs of the asked size (grains ~40-60 px across) to a temporary
folder and runs `python -m fedtransfer_jax.predict --images DIR --out OUT` in a fresh process, twice: on one
image (`cold_seconds`: everything a user waits for, interpreter start, imports, model load, compilation,
the scale search, the sliding window, post-processing, grain tables and the report) and on two images of
the same size (`per_extra_image_seconds` = the difference: the steady cost of one more image). The LAST
printed line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_images(folder: str, n: int, width: int, height: int, seed: int = 0) -> None:
    from PIL import Image  # noqa: PLC0415

    from fedtransfer_jax.data import synthetic  # noqa: PLC0415

    os.makedirs(folder, exist_ok=True)
    side = max(width, height)
    images, _, _ = synthetic.make_lab_examples("brightfield", n, side, seed, diameter_px=(40.0, 60.0))
    for i, im in enumerate(images):
        rgb = (np.clip(im[:height, :width], 0.0, 1.0) * 255).astype(np.uint8)
        Image.fromarray(rgb).save(os.path.join(folder, f"micrograph_{i}.png"))


def time_predict(folder: str, out: str, scale: str, workdir: str) -> float:
    cmd = [sys.executable, "-m", "fedtransfer_jax.predict", "--images", folder, "--out", out, "--scale", scale]
    if workdir:
        cmd += ["--workdir", workdir]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"predict failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=int, default=1500)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--scale", default="auto")
    parser.add_argument("--workdir", default="", help="a trained workdir (default: the shipped model)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        one, two = os.path.join(tmp, "one"), os.path.join(tmp, "two")
        write_images(two, 2, args.width, args.height)
        os.makedirs(one)
        os.link(os.path.join(two, "micrograph_0.png"), os.path.join(one, "micrograph_0.png"))
        cold = time_predict(one, os.path.join(tmp, "out1"), args.scale, args.workdir)
        both = time_predict(two, os.path.join(tmp, "out2"), args.scale, args.workdir)
        with open(os.path.join(tmp, "out1", "grain_sizes.json")) as f:
            recorded = json.load(f)
    first = next(iter(recorded.get("images", {}).values()), {}) if isinstance(recorded.get("images"), dict) else {}
    result = {
        "image": f"{args.width}x{args.height}",
        "scale_flag": args.scale,
        "model": args.workdir or "shipped",
        "cold_seconds": round(cold, 2),
        "two_images_seconds": round(both, 2),
        "per_extra_image_seconds": round(both - cold, 2),
        "scale_used": first.get("scale"),
        "cpu_count": os.cpu_count(),
    }
    print(f"predict, {result['image']} px, --scale {args.scale}: {cold:.1f} s for one image from a cold start, "
          f"+{both - cold:.1f} s for each further image")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
