r"""Evaluates a trained segmenter on a folder of labelled micrographs: prints a summary (mean metrics, then
one line per image: boundary F1, ARI, grains predicted vs true) and writes every number to a JSON file.

  python -m fedtransfer_jax.evaluate --workdir /tmp/tiny --method fedavg --data_dir D [--out FILE]

The JSON goes to `--out` (default `<workdir>/evaluate_<method>.json`); `--json` prints that object on
stdout instead of the summary (for scripts).

`D/images/*` and `D/labels/*` (same stems; labels 255 = boundary, or `--invert_labels`). Images of any
size are predicted with the tiled sliding window of `predict`. The labels are checked first
(`data/folder.py`: e.g. inverted or grey labels stop the evaluation with a message naming the files and
`--invert_labels`; odd single labels are listed under `label_warnings`).

Two sets of metrics, per image and as means over images:
  `per_image_raw` / `mean_raw`  the thresholded probabilities (what the trainer's summaries report);
  `per_image` / `mean`          after post-processing, the boundary maps and grains `predict` writes
                                for the same image, model and settings.
Images are predicted at `--scale` as in `predict` (default 'auto': per image, analysis/scale.py), the
probabilities mapped back to the label's pixels; `scale` records per image the scale used and why.
The post-processing settings are resolved as in `predict` (the method's choice on validation tiles,
else built-in defaults; flags override) and reported under `postprocess` with their source.

Grain size as a lab reports it: Heyn's mean lineal intercept (metrics/intercept.py) of the predicted and
the true map, per image and per micrograph (`per_micrograph`, `mean_per_micrograph`): with `--group_regex`
the crops of one micrograph are pooled (group 1 of the regex on the file stem names it, e.g. '_(\d+)-').

`--baseline adaptive_threshold|colour_edges` scores a no-learning reference instead of a model
(metrics/classical.py: adaptive threshold on grey lines, or on colour edges, then thinned lines; no
--workdir, --out needed): the numbers a model has to beat on the
same folder, beside the all-boundary map's F1 (`trivial_boundary_f1`, always reported).

Exit status: 0 done; 2 nothing evaluated (a bad flag, bad labels, a model that cannot be loaded, an
`--out` that cannot be written; the message names the flag/file).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sys
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
from absl import app, flags, logging

from fedtransfer_jax.runs import inference
from fedtransfer_jax.runtime import io_utils
from fedtransfer_jax import metrics as metrics_lib, predict
from fedtransfer_jax.metrics import classical
from fedtransfer_jax.metrics.intercept import Intercepts, astm_grain_size_from_intercept, count_intercepts, pooled
from fedtransfer_jax.analysis import scale as scale_lib
from fedtransfer_jax.data import folder
from fedtransfer_jax.data import image_files
from fedtransfer_jax.data import intensity
from fedtransfer_jax.metrics import postprocess_select as pps
from fedtransfer_jax.runs import postprocess_choice

EXIT_OK, EXIT_USAGE = 0, 2
USER_ERRORS = predict.USER_ERRORS
INVERT_FLAG = "--invert_labels"


def define_flags() -> None:
    """Command-line flags, defined only when run as a program (so evaluate and predict can be
    imported together, e.g. by scripts and tests)."""
    global _WORKDIR, _METHOD, _CLIENT, _ALLOW_INCOMPLETE, _DATA_DIR
    global _INVERT, _TOLERANCE, _OVERLAP, _FLIPS, _SETTINGS, _OUT, _JSON, _SCALE, _BASELINE, _GROUP_REGEX
    _WORKDIR = flags.DEFINE_string(
        "workdir", None, "Workdir written by launch.py (default: the model shipped with the package; then --out is needed)."
    )
    _METHOD = flags.DEFINE_string("method", None, "Method whose model to use (default: best available).")
    _CLIENT = flags.DEFINE_string(
        "client",
        None,
        "Whose model (local methods) and whose post-processing: the settings chosen on that client's own "
        "validation tiles (default: the federation's choice).",
    )
    _ALLOW_INCOMPLETE = flags.DEFINE_bool(
        "allow_incomplete", False, "Use a method whose training was interrupted (its latest checkpoint)."
    )
    _DATA_DIR = flags.DEFINE_string("data_dir", None, "Folder with images/ and labels/.", required=True)
    _INVERT = flags.DEFINE_bool("invert_labels", False, "Labels mark boundaries with 0 instead of 255.")
    _TOLERANCE = flags.DEFINE_float("tolerance", 2.0, "Boundary F1 pixel tolerance.")
    _OVERLAP = flags.DEFINE_integer("overlap", None, "Tile overlap in px (default: tile/4).")
    _FLIPS = flags.DEFINE_bool("flips", False, "Test-time augmentation: average over flips.")
    _SETTINGS = predict.define_postprocess_flags()
    _OUT = flags.DEFINE_string(
        "out", None, "JSON file for the full results (default: <workdir>/evaluate_<method>.json)."
    )
    _JSON = flags.DEFINE_bool("json", False, "Print the full results as one JSON object instead of the summary.")
    _SCALE = predict.define_scale_flag()
    for name in (*_SETTINGS, "scale"):  # defined in predict, listed by this tool's --help too
        flags.declare_key_flag(name)
    _BASELINE = flags.DEFINE_enum(
        "baseline", None, list(classical.NAMES), "Score a no-learning reference instead of a model (needs --out)."
    )
    _GROUP_REGEX = flags.DEFINE_string(
        "group_regex",
        "",
        "Images that are crops of one micrograph: group 1 of this regex on the file stem (the whole match if it "
        "has no group) names the micrograph (e.g. '_(\\d+)-' for TestDataset_12-256-768.png), and the grain size "
        "is also measured per micrograph, its crops pooled (default: every image its own micrograph).",
    )


def evaluate_folder(
    model: inference.LoadedModel | None,
    data_dir: str,
    *,
    baseline: str = classical.NAME,
    invert_labels: bool = False,
    tolerance: float = 2.0,
    settings: pps.PostprocessSettings | None = None,
    provenance: Mapping[str, Any] | None = None,
    overlap: int | None = None,
    flips: bool = False,
    scale: str | float = 1.0,
    group_regex: str = "",
    **postprocess_kw: Any,
) -> dict:
    """Raw and post-processed metrics of ``model`` on ``data_dir`` (``D/images`` + ``D/labels``); ``model``
    None scores the classical ``baseline`` (metrics/classical.py) with its own clean-up settings.

    ``scale``: predict each image resampled by this factor, or 'auto' (analysis/scale.py); the result's
    ``scale`` maps each image to its scale record.

    ``group_regex``: group 1 on an image's stem names the micrograph it was cut from ('' = each image its
    own); ``per_micrograph`` gives each micrograph's mean lineal intercept (predicted and true, its images'
    test lines and crossings pooled: metrics/intercept.py), its relative error and the ASTM E112 G
    difference, and the grain counts summed; ``mean_per_micrograph`` their means and worst cases. Per image,
    ``intercept_px_pred``/``_gt`` and ``intercept_rel_error`` sit beside the other metrics.

    ``settings``/``provenance`` come from ``runs.postprocess_choice.resolve_settings``; without them
    ``postprocess_kw`` (``threshold=``, ``close_radius=``...) apply over the built-in defaults.

    Raises:
      folder.LabelError: labels that are clearly wrong (before any prediction).
      FileNotFoundError / ValueError: missing labels, size mismatches, unreadable files (named).
    """
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"--tolerance must be >= 0 px, got {tolerance}")
    scale = scale_lib.parse_scale(scale)
    if model is None:
        settings = classical.SETTINGS
        provenance = {"settings": settings.to_dict(), "source": f"--baseline {baseline}: fixed, not chosen"}
    elif settings is None:
        settings, provenance = postprocess_choice.resolve_settings(None, None, postprocess_kw, model.config.eval.threshold)
    target = scale_lib.target_for(model) if model is not None and scale == scale_lib.AUTO else None
    pairs = folder.list_pairs(data_dir)
    groups = _groups(pairs, group_regex)
    label_warnings = folder.check_client_labels(
        pairs, invert=invert_labels, invert_flag=INVERT_FLAG, where=f"--data_dir {data_dir}"
    )
    per_image, per_image_raw, scales, trivial, intercepts, not_scored = {}, {}, {}, [], {}, {}
    for image_path, label_path in pairs:
        image, label = folder.load_pair(image_path, label_path, invert=invert_labels)
        name = os.path.basename(str(image_path))
        unusable = unusable_label(label, label_path)
        if unusable:  # a score against it would be a number about the label, not the model
            not_scored[name] = unusable
            continue
        if model is None:  # the classical reference: no probabilities, no scale search
            raw, cleaned = classical.boundary_candidates(image, baseline), classical.segment(image, baseline)
            scales[name] = {"scale": 1.0, "why": f"--baseline {baseline} runs at the image's own pixels"}
        else:
            prob, scales[name] = scale_lib.probabilities(
                model, image, scale=scale, settings=settings, target=target, overlap=overlap, flips=flips
            )
            raw = settings.binarize(prob)
            cleaned = pps.clean_up(raw, settings)
        per_image_raw[name] = metrics_lib.segmentation_metrics(raw, label > 0, tolerance=tolerance)
        gt_int = count_intercepts(metrics_lib.grains_from_boundary(label > 0))
        per_image_raw[name].update(_intercept_metrics(raw, gt_int)[0])
        per_image[name] = metrics_lib.segmentation_metrics(cleaned, label > 0, tolerance=tolerance)
        row, pred_int = _intercept_metrics(cleaned, gt_int)
        per_image[name].update(row)
        intercepts[name] = (groups[str(image_path)], pred_int, gt_int, per_image[name])
        # The F1 that predicting every pixel as boundary gets: what a reader calibrates F1 against.
        trivial.append(metrics_lib.boundary_prf(np.ones(label.shape, bool), label > 0, tolerance)["f1"])
    if not per_image:
        raise ValueError(f"--data_dir {data_dir}: no label can be scored against: " + "; ".join(not_scored.values()))
    per_group = _per_group(intercepts, group_regex)
    return {
        "workdir": None,
        "method": model.tag if model is not None else f"baseline:{baseline}",
        "trivial_boundary_f1": float(np.mean(trivial)) if trivial else float("nan"),
        "data_dir": os.path.abspath(data_dir),
        "n_images": len(per_image),
        "postprocess": dict(provenance or {"settings": settings.to_dict()}),
        "label_warnings": label_warnings,
        "not_scored": not_scored,  # images whose label has no boundary, or is boundary everywhere
        "per_image": per_image,
        "per_image_raw": per_image_raw,
        "mean": metrics_lib.summarize(list(per_image.values())),
        "mean_raw": metrics_lib.summarize(list(per_image_raw.values())),
        # Heyn's mean lineal intercept per micrograph, its images pooled (the grain size a lab reports).
        "group_regex": group_regex,
        "per_micrograph": per_group,
        "mean_per_micrograph": _mean_per_group(per_group),
        "scale": scales,
        # How every image was fed to the model: as it trained (data/intensity.py); the baselines read raw images.
        "intensity": intensity.mode_of(model) if model is not None else intensity.RAW,
    }


def unusable_label(label: np.ndarray, label_path) -> str | None:
    """Why a label cannot be scored against (none: it can): no boundary pixel at all (one grain, or grain ids
    under half the range read as background) or boundary everywhere. Scores against it say nothing about the
    model (an all-boundary label gives F1 > 0 and ARI 0 to any map), so evaluate and calibrate leave it out."""
    fraction = float(np.mean(label > 0)) if label.size else 0.0
    if fraction == 0.0:
        return f"{label_path} has no boundary pixel (not scored)"
    if fraction == 1.0:
        return f"{label_path} is boundary everywhere (not scored)"
    return None


def _groups(pairs: list, group_regex: str) -> dict[str, str]:
    """Image path -> micrograph id (``--group_regex``, folder.group_of); '' -> every image its own."""
    if group_regex:
        try:
            pattern = re.compile(group_regex)
        except re.error as e:
            raise ValueError(f"--group_regex {group_regex!r} is not a valid regular expression ({e})") from None
        if pattern.groups < 1:
            raise ValueError(
                f"--group_regex {group_regex!r} has no group: group 1, in parentheses, names the micrograph "
                "(e.g. '_(\\d+)-')"
            )
    out = {}
    for image_path, _ in pairs:
        try:
            group = folder.group_of(image_path, group_regex or None)
        except ValueError as e:
            raise ValueError(f"--{e}") from None  # names the regex and the file
        if not group:  # e.g. an optional group 1 that took no part in the match
            raise ValueError(
                f"--group_regex {group_regex!r}: group 1 is empty on the file name {os.path.basename(str(image_path))!r}; "
                "it must name the micrograph"
            )
        out[str(image_path)] = group
    return out


def _relative_error(pred: float | None, true: float | None) -> float | None:
    return None if pred is None or not true else abs(pred - true) / true


def _intercept_metrics(pred: np.ndarray, g: Intercepts) -> tuple[dict, Intercepts]:
    """Per image: Heyn's mean lineal intercept of the predicted map (grains as for ARI) beside the true
    map's ``g``, and the relative error. A predicted map without a crossing (one grain) has no intercept
    (None) but is not let off: its error uses the lower bound ``at_least_px``. Without a true crossing the
    error is None."""
    p = count_intercepts(metrics_lib.grains_from_boundary(pred))
    row = {
        "intercept_px_pred": p.mean_px,
        "intercept_px_gt": g.mean_px,
        "intercept_rel_error": _relative_error(p.at_least_px, g.mean_px),
    }
    return row, p


def _per_group(intercepts: Mapping[str, tuple], group_regex: str) -> dict[str, dict]:
    """Micrograph -> its pooled intercepts (pred / true), their relative error, the ASTM E112 G difference
    (pred - true: the pixel size cancels, so both are taken in px) and summed grain counts. A
    prediction without a crossing is scored with its lower bound (``Intercepts.at_least_px``)."""
    by_group: dict[str, list] = {}
    for name, (group, p, g, row) in intercepts.items():
        by_group.setdefault(group, []).append((name, p, g, row))
    out = {}
    for group, items in sorted(by_group.items()):
        p = pooled(i[1] for i in items)
        g = pooled(i[2] for i in items)
        both = p.at_least_px is not None and g.mean_px is not None
        out[group] = {
            "images": [i[0] for i in items],
            "intercept_px_pred": p.mean_px,
            "intercept_px_gt": g.mean_px,
            "intercept_rel_error": _relative_error(p.at_least_px, g.mean_px),
            "astm_G_diff": astm_grain_size_from_intercept(p.at_least_px) - astm_grain_size_from_intercept(g.mean_px)
            if both
            else None,
            "n_grains_pred": float(sum(i[3]["n_grains_pred"] for i in items)),
            "n_grains_gt": float(sum(i[3]["n_grains_gt"] for i in items)),
        }
    return out


def _mean_per_group(per_group: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Mean and worst relative intercept error and mean |Delta G| over micrographs; micrographs whose true
    map has no crossing (no size to compare with) are skipped and counted in ``n_undefined``."""
    errors = [r["intercept_rel_error"] for r in per_group.values() if r["intercept_rel_error"] is not None]
    dg = [abs(r["astm_G_diff"]) for r in per_group.values() if r["astm_G_diff"] is not None]
    return {
        "n_micrographs": len(per_group),
        "n_undefined": len(per_group) - len(errors),
        "intercept_rel_error": float(np.mean(errors)) if errors else None,
        "intercept_rel_error_max": float(np.max(errors)) if errors else None,
        "astm_G_abs_diff": float(np.mean(dg)) if dg else None,
    }


def check_out(out: str, data_dir: str | None = None) -> None:
    """`--out` names a JSON file in an existing folder this process can write, outside `--data_dir`, and not
    a file of someone else's (checked before the model load, so a bad path costs nothing): an existing file
    is replaced only when it is an earlier evaluate's result."""
    if os.path.isdir(out):
        example = os.path.join(out, "evaluate.json")
        if inside_data_dir(out, data_dir):
            example = os.path.abspath(data_dir).rstrip(os.sep) + "_evaluate.json"  # not inside the labelled data
        raise ValueError(f"--out {out} is a folder: name a file, e.g. {example}")
    folder_ = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder_):
        raise FileNotFoundError(f"--out {out}: folder {folder_} does not exist")
    if not os.access(folder_, os.W_OK):
        raise PermissionError(f"--out {out}: folder {folder_} is not writable; pass --out elsewhere")
    if inside_data_dir(folder_, data_dir):
        raise ValueError(f"--out {out} is inside --data_dir {data_dir} (the labelled micrographs): write it elsewhere")
    if os.path.lexists(out) and not _is_earlier_result(out):
        raise ValueError(f"--out {out} exists and is not an earlier evaluate's result: not replaced; name a new file")


def inside_data_dir(path: str, data_dir: str | None) -> bool:
    """Whether ``path`` is ``data_dir`` or inside it, real paths compared (so through symlinks too): where
    evaluate's --out and calibrate's --dest must not go, among the labelled micrographs."""
    if not data_dir:
        return False
    data_real = os.path.realpath(data_dir)
    return os.path.commonpath([os.path.realpath(path), data_real]) == data_real


def _is_earlier_result(path: str) -> bool:
    """Whether ``path`` holds a result this tool wrote (a JSON object with its keys)."""
    try:
        with open(path, encoding="utf-8") as fh:
            old = json.load(fh)
    except (OSError, ValueError):
        return False
    return isinstance(old, dict) and {"per_image", "n_images", "mean"} <= set(old)


MAX_TOLERANCE_PX = 20.0  # boundary F1's tolerance; wider, an all-boundary map scores like a perfect one


def check_tolerance(tolerance: float) -> None:
    if not (math.isfinite(tolerance) and 0 <= tolerance <= MAX_TOLERANCE_PX):
        raise ValueError(
            f"--tolerance must be between 0 and {MAX_TOLERANCE_PX:g} px, got {tolerance} (boundary F1 counts a "
            "predicted boundary pixel within this distance of a true one as right)"
        )


def _num(x: Any, fmt: str) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)


def summary_text(result: Mapping[str, Any], out: str | None = None) -> str:
    """What a person reads: mean metrics, then one line per image (boundary F1, ARI, grains predicted /
    true), and where the full results went."""
    m, raw = result["mean"], result["mean_raw"]
    lines = [
        f"{result['method']} on {result['data_dir']}: {result['n_images']} images, post-processing: "
        f"{result['postprocess'].get('source', 'given settings')}",
        f"mean: boundary F1 {_num(m.get('boundary_f1'), '.3f')}  ARI {_num(m.get('ari'), '.3f')}  "
        f"VI {_num(m.get('vi'), '.2f')}  grains {_num(m.get('n_grains_pred'), '.1f')} predicted / "
        f"{_num(m.get('n_grains_gt'), '.1f')} true   (before post-processing: boundary F1 "
        f"{_num(raw.get('boundary_f1'), '.3f')}, ARI {_num(raw.get('ari'), '.3f')})",
    ]
    width = max([len("image")] + [len(name) for name in result["per_image"]])
    lines.append(f"{'image':<{width}}  boundary F1    ARI  grains predicted / true")
    for name, r in result["per_image"].items():
        lines.append(
            f"{name:<{width}}  {_num(r.get('boundary_f1'), '11.3f')}  {_num(r.get('ari'), '5.3f')}  "
            f"{_num(r.get('n_grains_pred'), '16.0f')} / {_num(r.get('n_grains_gt'), '.0f')}"
        )
    if "trivial_boundary_f1" in result:  # after the table: the lines above are read by scripts
        lines.append(f"(marking every pixel as boundary scores boundary F1 {_num(result['trivial_boundary_f1'], '.3f')})")
    per_group, mg = result.get("per_micrograph"), result.get("mean_per_micrograph")
    if per_group and mg:
        grouped = bool(result.get("group_regex"))
        how = f"images grouped by --group_regex '{result['group_regex']}'" if grouped else "each image"
        lines.append(
            f"grain size (mean lineal intercept, {how}): |Delta G| {_num(mg['astm_G_abs_diff'], '.2f')}, error "
            f"{_num(mg['intercept_rel_error'], '.1%')} on average, {_num(mg['intercept_rel_error_max'], '.1%')} at "
            f"worst, over {mg['n_micrographs']} {'micrograph' if grouped else 'image'}(s)"
            + (f", {mg['n_undefined']} without a size" if mg["n_undefined"] else "")
        )
        if result.get("group_regex"):
            for group, r in per_group.items():
                lines.append(
                    f"  micrograph {group}: intercept {_num(r['intercept_px_pred'], '.1f')} / "
                    f"{_num(r['intercept_px_gt'], '.1f')} px predicted / true, error "
                    f"{_num(r['intercept_rel_error'], '.1%')}, grains {r['n_grains_pred']:.0f} / {r['n_grains_gt']:.0f}"
                )
    if result.get("label_warnings"):
        lines.append(f"{len(result['label_warnings'])} label warning(s): see label_warnings in the JSON")
    for reason in (result.get("not_scored") or {}).values():
        lines.append(f"not scored: {reason}")
    if out:
        lines.append(f"full results: {out}")
    return "\n".join(lines)


def run(f: Mapping[str, Any]) -> int:
    """The CLI's work, given the flag values; returns the exit status (raises on usage errors).

    The full results go to ``f['out']`` (default ``<workdir>/evaluate_<method>.json``); stdout gets the
    summary, or the JSON object itself with ``f['json']``."""
    overrides = {k: v for k, v in f["settings"].items() if v is not None}
    out = f.get("out") or None
    if f.get("baseline"):
        return _run_baseline(f, out, overrides)
    f = predict.with_workdir(f)  # no --workdir and no shipped model: say that first
    if f["shipped"] and not out:
        raise ValueError("--out: name the results file (without --workdir the model is the shipped one, and its folder is part of the package)")
    if out:
        check_out(out, f["data_dir"])
    pps.PostprocessSettings.from_dict({**pps.BUILTIN_DEFAULTS.to_dict(), **overrides})  # Flags valid?
    check_tolerance(f["tolerance"])
    check_labels(f)
    model, settings, provenance = predict.model_and_settings(f, overrides)
    if not out:
        out = os.path.join(f["workdir"], f"evaluate_{model.tag.replace('/', '_')}.json")
        check_out(out, f["data_dir"])
    result = evaluate_folder(
        model,
        f["data_dir"],
        invert_labels=f["invert_labels"],
        tolerance=f["tolerance"],
        settings=settings,
        provenance=provenance,
        overlap=f["overlap"],
        flips=f["flips"],
        scale=f.get("scale", scale_lib.AUTO),
        group_regex=f.get("group_regex") or "",
    )
    result["workdir"] = os.path.abspath(f["workdir"])
    io_utils.write_json_atomic(out, result)
    print(json.dumps(io_utils._jsonable(result)) if f.get("json") else summary_text(result, out))
    return EXIT_OK


def check_labels(f: Mapping[str, Any]) -> None:
    """Wrong --data_dir, clearly wrong labels or an image that cannot be read fail before the (slow) model
    load and before any image is predicted; evaluate_folder (and calibrate) check again and then report the
    warnings. Reads `data_dir`, `invert_labels` and `group_regex` of the flag values `f`."""
    if not os.path.isdir(f["data_dir"]):
        what = "a file" if os.path.exists(f["data_dir"]) else "not found"
        raise FileNotFoundError(f"--data_dir {f['data_dir']} is {what}: name a folder holding images/ and labels/")
    pairs = folder.list_pairs(f["data_dir"])
    _groups(pairs, f.get("group_regex") or "")  # a bad --group_regex fails here, before the model load
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", folder.LabelWarning)
        folder.check_client_labels(
            pairs,
            invert=f["invert_labels"],
            invert_flag=INVERT_FLAG,
            where=f"--data_dir {f['data_dir']}",
        )
    for image_path, _ in pairs:  # a damaged image stops the run now, not after the images before it
        image_files.read_image(image_path)


def _run_baseline(f: Mapping[str, Any], out: str | None, overrides: Mapping[str, Any]) -> int:
    """--baseline: the classical reference on the folder; model flags make no sense with it."""
    given = [k for k in ("workdir", "method", "client") if f.get(k)]
    # --scale, --overlap, --flips: refused whatever their value (--overlap 0 or --scale auto included).
    given += [k for k in f.get("model_flags_given", ()) if k not in given]
    given += [k for k in ("overlap", "flips") if f.get(k) and k not in given]  # run() called without the CLI
    given += [f"{k} (post-processing)" for k in overrides]
    if given:
        raise ValueError(f"--baseline {f['baseline']} uses no model and fixed settings: drop --{', --'.join(given)}")
    if not out:
        raise ValueError(f"--out: name the results file (--baseline {f['baseline']} has no workdir to write into)")
    check_out(out, f["data_dir"])
    check_tolerance(f["tolerance"])
    check_labels(f)
    result = evaluate_folder(
        None,
        f["data_dir"],
        baseline=f["baseline"],
        invert_labels=f["invert_labels"],
        tolerance=f["tolerance"],
        group_regex=f.get("group_regex") or "",
    )
    io_utils.write_json_atomic(out, result)
    print(json.dumps(io_utils._jsonable(result)) if f.get("json") else summary_text(result, out))
    return EXIT_OK


@contextlib.contextmanager
def label_warnings_as_lines(tool: str):
    """Within it, a LabelWarning (odd-looking labels) is one line on stderr, ``<tool>: warning: ...``, not
    Python's warning format with a line of our source; other warnings as usual."""
    with warnings.catch_warnings():
        default = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, folder.LabelWarning):
                print(f"{tool}: warning: {message}", file=sys.stderr)
            else:
                default(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def main(argv):
    del argv
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO: keep the summary readable
    values = {
        "workdir": _WORKDIR.value,
        "method": _METHOD.value,
        "client": _CLIENT.value,
        "allow_incomplete": _ALLOW_INCOMPLETE.value,
        "data_dir": _DATA_DIR.value,
        "invert_labels": _INVERT.value,
        "tolerance": _TOLERANCE.value,
        "overlap": _OVERLAP.value,
        "flips": _FLIPS.value,
        "settings": {k: flag.value for k, flag in _SETTINGS.items()},
        "out": _OUT.value,
        "json": _JSON.value,
        "scale": _SCALE.value,
        "baseline": _BASELINE.value,
        "group_regex": _GROUP_REGEX.value,
        # A model's flags given on the command line, even at their defaults (--baseline refuses them).
        "model_flags_given": [k for k in ("scale", "overlap", "flips") if flags.FLAGS[k].present],
    }
    predict.stop_on_sigterm()
    try:
        with label_warnings_as_lines("evaluate"):
            return run(values)
    except KeyboardInterrupt:  # --out is written only at the end, atomically
        print("evaluate: interrupted; nothing was written", file=sys.stderr)
        return predict.EXIT_INTERRUPTED
    except USER_ERRORS as e:  # User-fixable: the message names the flag or file.
        print(f"evaluate: error: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=predict.flags_parser("evaluate"))
