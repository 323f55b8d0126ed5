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

Measured (docs/MODEL.md "Calibrating on a lab's own labels"): the shipped model calibrated on the 9 TBM
validation crops (3 micrographs) and scored on the 21 held-out TBM test crops: grain-size (intercept) error
per micrograph 34.8 % -> 26.8 % at `--scale 1` (the post-processing alone), 34.2 % -> 22.6 % with `--scale
auto` (where the new settings also make the scale search keep scale 1 more often).

`D/images/*` and `D/labels/*` as for `evaluate` (labels 255 = boundary, or `--invert_labels`; checked first).
Exit status: 0 written; 2 nothing written (a bad flag, bad labels, an existing --dest, a model that cannot be
loaded; the message names the flag or file).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
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
MAX_ROUNDS = 3  # auto scale: choose settings, re-pick the scales with them, score there; until a choice repeats


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "Workdir of a launch.py run (default: the model shipped with the package).")
    flags.DEFINE_string("method", None, "Method whose model to calibrate (default: the workdir's best by validation).")
    flags.DEFINE_string("data_dir", None, "Your labelled micrographs: images/ and labels/.", required=True)
    flags.DEFINE_string("dest", None, "New folder for the calibrated copy of the model (never overwritten).", required=True)
    flags.DEFINE_bool("invert_labels", False, "Labels mark boundaries with 0 instead of 255.")
    flags.DEFINE_float("tolerance", 2.0, "Boundary F1 pixel tolerance.")
    flags.DEFINE_integer("overlap", None, "Tile overlap in px (default: tile/4).")
    flags.DEFINE_bool("flips", False, "Test-time augmentation (average over flips), as you will run predict.")
    predict.define_scale_flag()
    flags.declare_key_flag("scale")  # defined in predict, listed by this tool's --help too


def source_of(data_dir: str, n: int) -> str:
    """The stored choice's `source`, shown by predict and evaluate wherever the settings are reported."""
    return f"chosen on {n} labelled image(s) in {os.path.abspath(data_dir)} (calibrate)"


def _probabilities(model, images, settings, scale, target, overlap, flips):
    """Each image's probabilities at the scale predict would use with `settings`, and those scales."""
    probs, scales = [], {}
    for name, image in images.items():
        prob, record = scale_lib.probabilities(
            model, image, scale=scale, settings=settings, target=target, overlap=overlap, flips=flips
        )
        probs.append(prob)
        scales[name] = float(record["used"])
    return probs, scales


def calibrate(
    model: inference.LoadedModel,
    settings: pps.PostprocessSettings,
    data_dir: str,
    *,
    invert_labels: bool = False,
    tolerance: float = 2.0,
    scale: str | float = scale_lib.AUTO,
    overlap: int | None = None,
    flips: bool = False,
    grid=pps.DEFAULT_GRID,
) -> dict[str, Any]:
    """The post-processing choice on `data_dir`'s labelled images (``pps.choose``'s dict, `source` naming
    the folder) plus `calibration`: the images, and the mean scores of the model's current `settings` and of
    the new choice on them (in-sample), each at the scales predict picks with those settings.

    With `--scale auto` the scales depend on the settings (the scale search post-processes each candidate
    scale), so a choice made at one set of scales may run at another. Each round chooses the grid's best at
    the current scales, then re-picks the scales with it and scores it there, as the calibrated copy will run;
    rounds stop when a choice repeats (at most ``MAX_ROUNDS``). What is kept is the best of the current
    settings and every round's choice, each scored at its own scales (the current settings win ties)."""
    pairs = folder.list_pairs(data_dir)
    label_warnings = folder.check_client_labels(
        pairs, invert=invert_labels, invert_flag=evaluate.INVERT_FLAG, where=f"--data_dir {data_dir}"
    )
    images, labels, unusable = {}, [], []
    for image_path, label_path in pairs:
        image, label = folder.load_pair(image_path, label_path, invert=invert_labels)
        why = evaluate.unusable_label(label, label_path)
        if why:  # as evaluate: a label without boundaries (or all boundary) would steer the choice
            unusable.append(why)
            continue
        images[os.path.basename(str(image_path))] = image
        labels.append(label > 0)
    if unusable:
        warnings.warn("; ".join(unusable), folder.LabelWarning, stacklevel=2)
    if not images:
        raise ValueError(f"--data_dir {data_dir}: no label to calibrate on: " + "; ".join(unusable))
    scale = scale_lib.parse_scale(scale)
    target = scale_lib.target_for(model) if scale == scale_lib.AUTO else None
    grid = (settings,) + tuple(g for g in grid if g != settings)

    def as_run(s: pps.PostprocessSettings, probs=None, scales=None) -> dict[str, Any]:
        """`s` scored at the scales predict picks with it (reusing `probs` when they do not depend on `s`)."""
        if probs is None:
            probs, scales = _probabilities(model, images, s, scale, target, overlap, flips)
        table = pps.score_grid(probs, labels, (s,), tolerance)
        return {"settings": s, "probs": probs, "scales": scales, "table": table,
                "mean": dict(zip(pps.SCORE_COLUMNS, map(float, table[0])))}

    fixed = scale != scale_lib.AUTO  # then the probabilities do not depend on the settings
    current = as_run(settings)
    runs, rounds = [current], []
    for _ in range(MAX_ROUNDS):
        table = pps.score_grid(current["probs"], labels, grid, tolerance)
        chosen = grid[int(np.argmax(table[:, 0]))]  # the first best: the current settings on a tie
        rounds.append({"scored_at": current["scales"], "chose": chosen.to_dict(), "objective_there": float(table[:, 0].max())})
        if any(r["settings"] == chosen for r in runs):
            break
        current = as_run(chosen, *((current["probs"], current["scales"]) if fixed else ()))
        runs.append(current)
        rounds[-1]["objective_at_its_scales"] = current["mean"]["objective"]
    best = max(runs, key=lambda r: r["mean"]["objective"])  # max keeps the first of equals: `settings`
    choice = pps.choose({"your images": best["table"]}, (best["settings"],))
    choice["grid"] = [g.to_dict() for g in grid]
    choice["source"] = source_of(data_dir, len(pairs))
    choice["calibration"] = {
        "data_dir": os.path.abspath(data_dir),
        "images": sorted(images),
        "scale_flag": scale,
        "flips": bool(flips),
        "tolerance": float(tolerance),
        "label_warnings": label_warnings,
        "before": {"settings": settings.to_dict(), "mean": runs[0]["mean"], "scales": runs[0]["scales"]},
        "after": {"settings": best["settings"].to_dict(), "mean": best["mean"], "scales": best["scales"]},
        "rounds": rounds,
        "in_sample": "both scored on the images they were chosen on: check a gain on other labelled images",
    }
    return choice


def _check_dest(dest: str) -> None:
    inference.check_new_folder(dest, "calibrate")


def _mark_copied_metrics(model_dir: str, method: str, source: str, name: str) -> None:
    """The exported summary.json and shipped.json describe the model with its earlier post-processing: say so
    where they keep those numbers, so the copy does not misstate what it does."""
    note = f"measured with the post-processing before calibration; this copy's is {source}"
    summary_path = os.path.join(model_dir, "summary.json")
    with open(summary_path) as f:
        summary = json.load(f)
    entry = summary.get("methods", {}).get(method)
    if isinstance(entry, dict) and "postprocessed" in entry:
        entry["postprocessed"] = dict(entry["postprocessed"], note=note)
    io_utils.write_json_atomic(summary_path, summary)
    manifest_path = os.path.join(model_dir, inference.SHIPPED_MANIFEST)
    with open(manifest_path) as f:
        manifest = json.load(f)
    manifest["name"] = name  # export named it after the staging folder
    if manifest.get("test_metrics"):
        manifest["test_metrics_note"] = note
    manifest["calibrated"] = source
    io_utils.write_json_atomic(manifest_path, manifest)


def write_calibrated(workdir: str, method: str, dest: str, choice: Mapping[str, Any]) -> None:
    """`export_model`'s copy of `method` at `dest` (new; never overwritten) with `choice` as its stored
    post-processing and `calibration.json`; nothing is left at `dest` if any step fails."""
    _check_dest(dest)
    staging = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(dest)), prefix=os.path.basename(os.path.normpath(dest)) + ".partial-")
    try:
        inner = os.path.join(staging, "model")
        inference.export_model(workdir, method, inner, note=choice["source"])
        postprocess_choice.save_choice(inner, method, {k: v for k, v in choice.items() if k != "calibration"})
        io_utils.write_json_atomic(os.path.join(inner, CALIBRATION_FILE), dict(choice["calibration"], method=method))
        _mark_copied_metrics(inner, method, choice["source"], os.path.basename(os.path.normpath(dest)))
        _check_dest(dest)  # again: scoring took a while
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
    if c["before"]["settings"] == c["after"]["settings"]:
        lines.append("  no setting of the grid does better on these images: the copy keeps the model's settings")
    if n < FEW_IMAGES:
        lines.append(f"  only {n} image(s): the choice may not carry over to your other micrographs")
    if c["label_warnings"]:
        lines.append(f"  {len(c['label_warnings'])} label warning(s): see {os.path.join(dest, CALIBRATION_FILE)}")
    how = "" if c["scale_flag"] == scale_lib.AUTO else f" --scale {c['scale_flag']:g}"
    how += " --flips" if c["flips"] else ""
    lines.append(f"calibrated model: {dest}  (predict --workdir {dest}{how}; check it with evaluate on other labelled images)")
    return "\n".join(lines)


def run(f: Mapping[str, Any]) -> int:
    """The CLI's work, given the flag values; raises on user errors (named flag or file)."""
    evaluate.check_tolerance(f["tolerance"])
    _check_dest(f["dest"])  # before the slow model load; again before the copy is moved into place
    if evaluate.inside_data_dir(f["dest"], f.get("data_dir")):
        raise ValueError(  # as evaluate's --out: the model would sit among the labelled micrographs
            f"--dest {f['dest']} is inside --data_dir {f['data_dir']} (the labelled micrographs): write it elsewhere"
        )
    scale_lib.parse_scale(f["scale"])
    evaluate.check_labels(f)  # a wrong --data_dir or clearly wrong labels fail before the model load
    f = predict.with_workdir({**f, "client": None})
    method = f["method"] or inference.choose_default_method(f["workdir"])[0]
    if inference.is_local(f["workdir"], method):
        if inference.sole_client(f["workdir"], method):
            raise ValueError(
                f"--method {method!r} is one lab's fine-tuned model (its post-processing was chosen on that lab's "
                "validation images when it trained): calibrate a shared model, e.g. the shipped one"
            )
        raise ValueError(f"--method {method!r} has one model per client: calibrate a shared model")
    try:
        model, settings, _ = predict.model_and_settings({**f, "method": method}, {})
    except inference.IncompleteModelError as e:
        raise ValueError(f"--method {method}: {e.args[0].split(' (the run')[0]}; finish that run first") from None
    choice = calibrate(
        model, settings, f["data_dir"], invert_labels=f["invert_labels"], tolerance=f["tolerance"],
        scale=f["scale"], overlap=f["overlap"], flips=f["flips"],
    )
    write_calibrated(f["workdir"], method, f["dest"], choice)
    print(summary_text(choice, f["dest"]))
    return EXIT_OK


def main(argv) -> int:
    del argv
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    F = flags.FLAGS
    keys = ("workdir", "method", "data_dir", "dest", "invert_labels", "tolerance", "overlap", "flips", "scale")
    values = {k: F[k].value for k in keys}
    values["allow_incomplete"] = False
    try:
        with evaluate.label_warnings_as_lines("calibrate"):
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
