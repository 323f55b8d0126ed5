r"""Fits a trained model's post-processing to a lab's own labelled micrographs, without training.

  python -m fedtransfer_jax.calibrate --data_dir MY_LABELLED --dest my_model      # the shipped model
  python -m fedtransfer_jax.calibrate --workdir W --method fedavg --data_dir D --dest my_model
  python -m fedtransfer_jax.predict --workdir my_model --images MY_MICROGRAPHS --out OUT

A model's post-processing (threshold, gap closing, fragment removal, small-grain merging, line width) is
chosen on its federation's validation tiles (metrics/postprocess_select.py). A lab with a few labelled
micrographs of its own can choose it on those instead: the same grid and the same objective (boundary F1,
ARI and grain-count agreement), scored on the lab's images at the scale `predict` would use (`--scale`,
default auto). Nothing is trained and no image leaves the machine.

`--dest` gets a copy of the model (a minimal workdir, as `export_model` writes) whose stored choice is the
new one, with `source` naming the images; `predict --workdir DEST` and `evaluate --workdir DEST` use it.
`calibration.json` there records the folder, the images, the chosen settings and the objective of the old
and new settings on those images. Those numbers are in-sample: measure on other labelled images
(`evaluate --workdir DEST --data_dir OTHER`) before trusting a gain.

Measured (docs/MODEL.md "Calibrating on a lab's own labels"): the shipped model chosen on the 9 TBM
validation crops (3 micrographs) and scored on the 21 held-out TBM test crops: grain-size (intercept) error
per micrograph 34 % -> 23 %, ARI 0.360 -> 0.366.

`D/images/*` and `D/labels/*` as for `evaluate` (labels 255 = boundary, or `--invert_labels`; checked first).
Exit status: 0 written; 2 nothing written (a bad flag, bad labels, an existing --dest, a model that cannot be
loaded; the message names the flag or file).
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Mapping
from typing import Any

from absl import app, flags, logging

from fedtransfer_jax import evaluate, predict
from fedtransfer_jax.analysis import scale as scale_lib
from fedtransfer_jax.data import folder
from fedtransfer_jax.metrics import postprocess_select as pps
from fedtransfer_jax.runs import inference, postprocess_choice
from fedtransfer_jax.runtime import io_utils

EXIT_OK, EXIT_USAGE = 0, predict.EXIT_USAGE
CALIBRATION_FILE = "calibration.json"
FEW_IMAGES = 3  # below this the choice rests on too little to trust: said, not refused


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "Workdir of a launch.py run (default: the model shipped with the package).")
    flags.DEFINE_string("method", None, "Method whose model to calibrate (default: the workdir's best by validation).")
    flags.DEFINE_string("data_dir", None, "Your labelled micrographs: images/ and labels/.", required=True)
    flags.DEFINE_string("dest", None, "New folder for the calibrated copy of the model (never overwritten).", required=True)
    flags.DEFINE_bool("invert_labels", False, "Labels mark boundaries with 0 instead of 255.")
    flags.DEFINE_float("tolerance", 2.0, "Boundary F1 pixel tolerance.")
    flags.DEFINE_integer("overlap", None, "Tile overlap in px (default: tile/4).")
    predict.define_scale_flag()


def source_of(data_dir: str, n: int) -> str:
    """The stored choice's `source`, shown by predict and evaluate wherever the settings are reported."""
    return f"chosen on {n} labelled image(s) in {os.path.abspath(data_dir)} (calibrate)"


def calibrate(
    model: inference.LoadedModel,
    settings: pps.PostprocessSettings,
    data_dir: str,
    *,
    invert_labels: bool = False,
    tolerance: float = 2.0,
    scale: str | float = scale_lib.AUTO,
    overlap: int | None = None,
    grid=pps.DEFAULT_GRID,
) -> dict[str, Any]:
    """The post-processing choice on `data_dir`'s labelled images (``pps.choose``'s dict, `source` naming
    the folder) plus `calibration`: the images, their scales, and the mean scores of the model's current
    `settings` and of the new choice on them (in-sample)."""
    pairs = folder.list_pairs(data_dir)
    label_warnings = folder.check_client_labels(
        pairs, invert=invert_labels, invert_flag=evaluate.INVERT_FLAG, where=f"--data_dir {data_dir}"
    )
    scale = scale_lib.parse_scale(scale)
    target = scale_lib.target_for(model) if scale == scale_lib.AUTO else None
    probs, labels, scales = [], [], {}
    for image_path, label_path in pairs:
        image, label = folder.load_pair(image_path, label_path, invert=invert_labels)
        # The scale predict would pick with the model's current settings: the new ones are chosen at it.
        prob, record = scale_lib.probabilities(model, image, scale=scale, settings=settings, target=target, overlap=overlap)
        probs.append(prob)
        labels.append(label > 0)
        scales[os.path.basename(str(image_path))] = record.get("used", record.get("scale"))
    if settings not in grid:
        grid = (*grid, settings)  # so the old settings are scored beside the new on the same images
    table = pps.score_grid(probs, labels, grid, tolerance)
    choice = pps.choose({"your images": table}, grid)
    before = dict(zip(pps.SCORE_COLUMNS, map(float, table[list(grid).index(settings)])))
    choice["source"] = source_of(data_dir, len(pairs))
    choice["calibration"] = {
        "data_dir": os.path.abspath(data_dir),
        "images": sorted(scales),
        "scale": scales,
        "tolerance": float(tolerance),
        "label_warnings": label_warnings,
        "before": {"settings": settings.to_dict(), "mean": before},
        "after": {"settings": choice["settings"], "mean": choice["mean"]},
        "in_sample": "both scored on the images they were chosen on: check a gain on other labelled images",
    }
    return choice


def write_calibrated(workdir: str, method: str, dest: str, choice: Mapping[str, Any]) -> None:
    """`export_model`'s copy of `method` at `dest` (new; never overwritten) with `choice` as its stored
    post-processing and `calibration.json`; nothing is left at `dest` if any step fails."""
    if os.path.exists(dest):
        raise FileExistsError(f"--dest {dest} exists: calibrate writes a new folder (remove it or pick another)")
    parent = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"--dest {dest}: folder {parent} does not exist")
    staging = tempfile.mkdtemp(dir=parent, prefix=os.path.basename(os.path.normpath(dest)) + ".partial-")
    try:
        inner = os.path.join(staging, "model")
        inference.export_model(workdir, method, inner, note=choice["source"])
        postprocess_choice.save_choice(inner, method, {k: v for k, v in choice.items() if k != "calibration"})
        io_utils.write_json_atomic(os.path.join(inner, CALIBRATION_FILE), dict(choice["calibration"], method=method))
        os.rename(inner, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def summary_text(choice: Mapping[str, Any], dest: str) -> str:
    c = choice["calibration"]
    b, a = c["before"]["mean"], c["after"]["mean"]
    n = len(c["images"])
    lines = [
        f"post-processing chosen on {n} labelled image(s) in {c['data_dir']}:",
        f"  before {c['before']['settings']}",
        f"  after  {c['after']['settings']}",
        "  on those images (in-sample): objective {:.3f} -> {:.3f}, boundary F1 {:.3f} -> {:.3f}, ARI {:.3f} -> "
        "{:.3f}, grain-count ratio {:.3f} -> {:.3f}".format(
            b["objective"], a["objective"], b["boundary_f1"], a["boundary_f1"], b["ari"], a["ari"],
            b["grain_count_ratio"], a["grain_count_ratio"],
        ),
    ]
    if n < FEW_IMAGES:
        lines.append(f"  only {n} image(s): the choice may not carry over to your other micrographs")
    if c["label_warnings"]:
        lines.append(f"  {len(c['label_warnings'])} label warning(s): see {os.path.join(dest, CALIBRATION_FILE)}")
    lines.append(f"calibrated model: {dest}  (predict --workdir {dest}; check it with evaluate on other labelled images)")
    return "\n".join(lines)


def run(f: Mapping[str, Any]) -> int:
    """The CLI's work, given the flag values; raises on user errors (named flag or file)."""
    if not (math.isfinite(f["tolerance"]) and f["tolerance"] >= 0):
        raise ValueError(f"--tolerance must be >= 0 px, got {f['tolerance']}")
    if os.path.exists(f["dest"]):
        raise FileExistsError(f"--dest {f['dest']} exists: calibrate writes a new folder (remove it or pick another)")
    if not os.path.isdir(os.path.dirname(os.path.abspath(f["dest"]))):
        raise FileNotFoundError(f"--dest {f['dest']}: its parent folder does not exist")
    scale_lib.parse_scale(f["scale"])
    pairs = folder.list_pairs(f["data_dir"])  # a wrong --data_dir or clearly wrong labels fail before the model load
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", folder.LabelWarning)
        folder.check_client_labels(pairs, invert=f["invert_labels"], invert_flag=evaluate.INVERT_FLAG, where=f"--data_dir {f['data_dir']}")
    f = predict.with_workdir({**f, "client": None})
    model, settings, _ = predict.model_and_settings(f, {})
    if "/" in model.tag:
        raise ValueError(f"--method {model.tag}: a local method has one model per client; calibrate a shared model")
    choice = calibrate(
        model, settings, f["data_dir"], invert_labels=f["invert_labels"], tolerance=f["tolerance"],
        scale=f["scale"], overlap=f["overlap"],
    )
    write_calibrated(f["workdir"], model.source["method"], f["dest"], choice)
    print(summary_text(choice, f["dest"]))
    return EXIT_OK


def main(argv) -> int:
    del argv
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    F = flags.FLAGS
    values = {k: F[k].value for k in ("workdir", "method", "data_dir", "dest", "invert_labels", "tolerance", "overlap", "scale")}
    values["allow_incomplete"] = False
    try:
        return run(values)
    except KeyboardInterrupt:
        print("calibrate: interrupted; nothing was written", file=sys.stderr)
        return 130
    except predict.USER_ERRORS as e:
        print(f"calibrate: error: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=predict.flags_parser("calibrate"))
