"""How a model's maps change when its micrographs are saved darker, washed out or brighter, with and without
a per-image intensity stretch (data/intensity.py); docs/MODEL.md "Intensity" has its table.

  python scripts/intensity_probe.py --data_dir D [--workdir W] [--scale 1]

D holds images/ and labels/ (use validation crops, never test ones). Without --workdir: the shipped model.
Prints mean post-processed ARI and boundary F1 (2 px) per transform, raw and stretched.
"""

from __future__ import annotations

import argparse

import numpy as np

from fedtransfer_jax import evaluate
from fedtransfer_jax.analysis import measure
from fedtransfer_jax.data import folder, intensity

TRANSFORMS = {
    "as they are": lambda x: x,
    "x / 16 (12-bit in 16-bit)": lambda x: x / 16.0,
    "0.4 + 0.2 x (washed out)": lambda x: 0.4 + 0.2 * x,
    "0.5 + 0.5 x (bright)": lambda x: 0.5 + 0.5 * x,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--scale", default="1")
    args = parser.parse_args()
    f = {"workdir": args.workdir, "method": None, "client": None, "overlap": None}
    model, settings, provenance = measure.model_and_settings(f, {})
    trained_mode = intensity.mode_of(model)
    load_pair = folder.load_pair
    print(f"model {model.tag} (trained with data.intensity={trained_mode!r}), --scale {args.scale}")
    for name, transform in TRANSFORMS.items():
        row = []
        for mode in (intensity.RAW, intensity.STRETCH):
            def load(image_path, label_path, invert=False, transform=transform, mode=mode):
                image, label = load_pair(image_path, label_path, invert=invert)
                return intensity.normalise(transform(image.astype(np.float32)), mode), label

            model.config.data.intensity = intensity.RAW  # the probe feeds the model itself
            evaluate.folder.load_pair = load
            try:
                r = evaluate.evaluate_folder(model, args.data_dir, settings=settings, provenance=provenance, scale=args.scale)
            finally:
                evaluate.folder.load_pair = load_pair
                model.config.data.intensity = trained_mode
            row.append(f"{r['mean']['ari']:.3f} / {r['mean']['boundary_f1']:.3f}")
        print(f"{name:28s} raw: ARI / F1 {row[0]}   stretched: {row[1]}")


if __name__ == "__main__":
    main()
