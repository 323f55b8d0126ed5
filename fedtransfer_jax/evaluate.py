r"""Evaluates a trained segmenter on a folder of labelled micrographs; prints one JSON object.

  python -m fedtransfer_jax.evaluate --workdir /tmp/smoke --method fedavg --data_dir D

`D/images/*` and `D/labels/*` (same stems; labels 255 = boundary, or `--invert_labels`). Images of any
size are predicted with the tiled sliding window of `predict`.
"""

from __future__ import annotations

import json
import os

from absl import app, flags

from fedtransfer_jax import inference, metrics as metrics_lib
from fedtransfer_jax.data import folder


def define_flags() -> None:
    """Command-line flags, defined only when run as a program (so evaluate and predict can be
    imported together, e.g. by scripts and tests)."""
    global _WORKDIR, _METHOD, _CLIENT, _DATA_DIR, _INVERT, _TOLERANCE, _THRESHOLD, _OVERLAP, _FLIPS
    _WORKDIR = flags.DEFINE_string("workdir", None, "Workdir written by launch.py.", required=True)
    _METHOD = flags.DEFINE_string("method", None, "Method whose model to use (default: best available).")
    _CLIENT = flags.DEFINE_string("client", None, "For --method=local: which client's model.")
    _DATA_DIR = flags.DEFINE_string("data_dir", None, "Folder with images/ and labels/.", required=True)
    _INVERT = flags.DEFINE_bool("invert_labels", False, "Labels mark boundaries with 0 instead of 255.")
    _TOLERANCE = flags.DEFINE_float("tolerance", 2.0, "Boundary F1 pixel tolerance.")
    _THRESHOLD = flags.DEFINE_float("threshold", None, "Boundary probability threshold (default: config's).")
    _OVERLAP = flags.DEFINE_integer("overlap", None, "Tile overlap in px (default: tile/4).")
    _FLIPS = flags.DEFINE_bool("flips", False, "Test-time augmentation: average over flips.")


def evaluate_folder(
    model: inference.LoadedModel,
    data_dir: str,
    *,
    invert_labels=False,
    tolerance=2.0,
    threshold=None,
    overlap=None,
    flips=False,
) -> dict:
    threshold = model.config.eval.threshold if threshold is None else threshold
    per_image = {}
    for image_path, label_path in folder.list_pairs(data_dir):
        image, label = folder.load_pair(image_path, label_path, invert=invert_labels)
        prob = model.predict_prob(image, overlap=overlap, flips=flips)
        per_image[os.path.basename(str(image_path))] = metrics_lib.segmentation_metrics(
            prob > threshold, label > 0, tolerance=tolerance
        )
    return {
        "workdir": None,
        "method": model.tag,
        "data_dir": os.path.abspath(data_dir),
        "n_images": len(per_image),
        "per_image": per_image,
        "mean": metrics_lib.summarize(list(per_image.values())),
    }


def main(argv):
    del argv
    method = _METHOD.value or inference.default_method(_WORKDIR.value)
    model = inference.load_model(_WORKDIR.value, method, _CLIENT.value)
    result = evaluate_folder(
        model,
        _DATA_DIR.value,
        invert_labels=_INVERT.value,
        tolerance=_TOLERANCE.value,
        threshold=_THRESHOLD.value,
        overlap=_OVERLAP.value,
        flips=_FLIPS.value,
    )
    result["workdir"] = os.path.abspath(_WORKDIR.value)
    print(json.dumps(result))


if __name__ == "__main__":
    define_flags()
    app.run(main)
