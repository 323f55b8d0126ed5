"""One micrograph -> boundary map, grain table and grain-size summary; and the model predict uses."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedtransfer_jax import metrics as metrics_lib
from fedtransfer_jax.analysis import scale as scale_lib
from fedtransfer_jax.data import calibration
from fedtransfer_jax.data import databar as databar_lib
from fedtransfer_jax.data import folder
from fedtransfer_jax.data import intensity
from fedtransfer_jax.data import overlays as overlays_lib
from fedtransfer_jax.metrics import postprocess_select as pps
from fedtransfer_jax.runs import postprocess_choice
from fedtransfer_jax.runs import inference


def check_pixel_size(pixel_size_um: float) -> float | None:
    """``--pixel_size_um`` as the metrics want it: None when not given (0). A value no microscope or camera
    gives (outside 1 pm .. 10 mm per pixel) is refused rather than turned into grain sizes."""
    lo, hi = calibration.PLAUSIBLE_UM
    if not (math.isfinite(pixel_size_um) and (pixel_size_um == 0 or lo <= pixel_size_um <= hi)):
        raise ValueError(
            f"--pixel_size_um must be a pixel size in micrometres between {lo:g} and {hi:g} (0 = each file's "
            f"own or unknown), got {pixel_size_um}"
        )
    return pixel_size_um or None


def segment(
    model: inference.LoadedModel,
    image: np.ndarray,
    *,
    settings: pps.PostprocessSettings | None = None,
    overlap: int | None = None,
    flips: bool = False,
    scale: str | float = 1.0,
    **postprocess_kw: Any,
) -> np.ndarray:
    """Boolean boundary map [H, W] for an image [H, W, 3].

    ``settings`` (or, without it, ``threshold=``/``close_radius=``... over the built-in defaults with
    the config's threshold) says how the probabilities become a map; ``evaluate`` uses the same path.
    ``scale``: predict on the image resampled by this factor, or 'auto' (analysis/scale.py); the
    probabilities come back to [H, W] before the post-processing. ``segment_scaled`` also returns the
    scale record.
    """
    return segment_scaled(model, image, settings=settings, overlap=overlap, flips=flips, scale=scale, **postprocess_kw)[0]


def segment_scaled(
    model,
    image: np.ndarray,
    *,
    settings: pps.PostprocessSettings | None = None,
    overlap: int | None = None,
    flips: bool = False,
    scale: str | float = 1.0,
    target: tuple[float, str] | None = None,
    **postprocess_kw: Any,
) -> tuple[np.ndarray, dict[str, Any]]:
    """``(boundary map [H, W], scale record)``; see ``segment`` and ``scale.probabilities``."""
    if settings is None:
        settings, _ = postprocess_choice.resolve_settings(None, None, postprocess_kw, model.config.eval.threshold)
    prob, record = scale_lib.probabilities(
        model, image, scale=scale, settings=settings, target=target, overlap=overlap, flips=flips
    )
    return settings.apply(prob), record


@dataclass
class Measurement:
    """One image measured: the micrograph [H, W, 3] in [0, 1], its boolean boundary map [H, W], the grain
    table rows and the grain-size summary (``metrics.grain_size_summary`` plus height and width)."""

    image: np.ndarray
    boundary: np.ndarray
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    scale: dict[str, Any] = field(default_factory=dict)  # the scale record (analysis/scale.py)
    databar_rows: int = 0  # bottom rows left out (the data bar), boundary in ``boundary``
    left_out: np.ndarray | None = None  # [H - databar_rows, W]: burned-in annotations, boundary in ``boundary``


def measure_image(
    model,
    path: str,
    *,
    pixel_size_um: float | None,
    exclude_border: bool,
    settings: pps.PostprocessSettings,
    overlap: int | None = None,
    flips: bool = False,
    scale: str | float = 1.0,
    target: tuple[float, str] | None = None,
    databar: str | int = "auto",
    overlays: str = "auto",
) -> Measurement:
    """Reads, segments (at ``scale``, see analysis/scale.py) and measures one image in its own pixels;
    raises ValueError/OSError for a file that cannot be read.

    ``pixel_size_um`` (``--pixel_size_um``; None: not given) wins over the file's own calibration, which
    is used otherwise (data/calibration.py: the metadata in the file, or a Hitachi/JEOL side file beside it).
    ``databar`` ('auto', 'none' or a number of rows): the instrument data bar along the bottom is left out
    of the grains ('auto': as the metadata states it, else as found in the pixels: data/databar.py), so its
    text is not measured as grains; the map keeps the image's size, the bar written as boundary.
    ``overlays`` ('auto' or 'none'): burned-in annotations inside the image (a scale bar, a label box:
    data/overlays.py) are filled in before the model sees the image, written as boundary in the map, and
    left out of every grain; grains next to one count as cut, like those on the image's edge.
    """
    stated = calibration.read_calibration(path)
    pixel, pixel_source, notes = calibration.choose_pixel_size(pixel_size_um, stated)
    notes = [*notes, *stated.notes]
    image = folder.read_image(path)
    bar, bar_source = databar_lib.databar_rows(image, stated, databar)
    analysed = image[: image.shape[0] - bar] if bar else image
    marks = overlays_lib.find(analysed) if overlays_lib.parse_mode(overlays) == "auto" else None
    if marks is not None and not marks.any():
        marks = None
    seen = analysed if marks is None else overlays_lib.fill(analysed, marks)  # what the model is shown
    boundary, record = segment_scaled(
        model, seen, settings=settings, overlap=overlap, flips=flips, scale=scale, target=target
    )
    if marks is not None:
        boundary = boundary | marks
    grains = metrics_lib.grains_from_boundary(boundary)
    rows = metrics_lib.grain_table(grains, pixel_size_um=pixel, exclude_border=exclude_border, outside=marks)
    summary = {
        "height": int(image.shape[0]),
        "width": int(image.shape[1]),
        # Where the µm came from: --pixel_size_um, the file's metadata (which), or '' (sizes in px only).
        "pixel_size_um": pixel,
        "pixel_size_source": pixel_source,
        # `warnings`/`size_withheld`: a map that cannot give a plausible grain size (metrics/grains.py
        # grain_size_plausibility) gets null means and G, with the reason, instead of a number.
        **metrics_lib.grain_size_summary(grains, pixel_size_um=pixel, boundary=boundary, outside=marks),
    }
    if record.get("warning") and not summary.get("size_withheld"):  # the search saw no plausible map
        summary["warnings"] = [*summary.get("warnings", []), record["warning"]]
    if marks is not None:
        summary["overlays"] = overlays_lib.describe(marks)
        n = summary["overlays"]["regions"]
        notes.append(
            f"{n} flat rectangle(s) in a pure colour ({summary['overlays']['pixels']} px: a scale bar, a label box, "
            "padding or a clipped strip) filled in before the model and left out of the grain sizes; "
            "--overlays none keeps them"
        )
    if bar:
        summary["databar"] = {"rows": int(bar), "source": bar_source}
        notes.append(
            f"the bottom {bar} rows ({bar_source}) are not micrograph: left out of the grain sizes"
            + ("; --databar none keeps them" if "pixels" in bar_source else "")
        )
        # The bar is written as boundary: re-labelling the saved map gives the grain table's grains (a
        # "no boundary" bar would join every grain along its edge into one).
        boundary = np.concatenate([boundary, np.ones((bar, boundary.shape[1]), bool)], axis=0)
    if exclude_border:  # the table (and its histogram) and the summary count different grains (report.py says so)
        summary["table_excludes_border_grains"], summary["table_grains"] = True, len(rows)
    if notes:
        summary["notes"] = notes
    # How the model was fed the image (data/intensity.py), and a warning where a raw model gets an image far
    # darker or flatter than its training labs.
    summary["intensity"] = intensity.record(seen, intensity.mode_of(model))
    if "warning" in summary["intensity"]:
        summary["warnings"] = [*summary.get("warnings", []), summary["intensity"]["warning"]]
    return Measurement(image, boundary, rows, summary, record, int(bar), marks)


# ----------------------------------------------------------------------------------------------
# The model: which method, and the post-processing settings.
# ----------------------------------------------------------------------------------------------


def load_model(workdir: str, method: str, client: str | None, allow_incomplete: bool = False):
    """``inference.load_model``; ``--allow_incomplete`` is passed on only when set."""
    extra = {"allow_incomplete": True} if allow_incomplete else {}
    return inference.load_model(workdir, method, client, **extra)


def with_workdir(f: Mapping[str, Any]) -> dict[str, Any]:
    """The flag values with `workdir` filled in: `--workdir`, else the model shipped with the package
    (``inference.shipped_workdir``; a clear error when this copy ships none). `shipped` says which."""
    f = dict(f)
    f["shipped"] = not f.get("workdir")
    if f["shipped"]:
        f["workdir"] = inference.shipped_workdir()
    return f


def model_and_settings(f: Mapping[str, Any], overrides: Mapping[str, Any]):
    """What predict and evaluate share after their own input checks: the model (`--method`, default the
    workdir's best by validation, see ``inference.choose_default_method``; `--client`;
    `--allow_incomplete`), a valid `--overlap`, and the post-processing settings with their provenance
    (stored choice, `--client`'s own, flags, built-in defaults).

    The model gets ``source``: ``{"workdir", "method", "method_reason", "client"}`` (which model, and why
    this method), shown in the manifest and the report.
    """
    if not f.get("workdir"):
        f = with_workdir(f)
    if f["method"]:
        method, reason = f["method"], "given with --method"
    else:
        method, reason = inference.choose_default_method(f["workdir"])
        if f.get("shipped"):
            reason = f"the model shipped with fedtransfer_jax ({f['workdir']})"
    if f["client"] is None:  # a run of one lab: its local model needs no --client
        f = {**f, "client": inference.sole_client(f["workdir"], method)}
    if f["client"] is not None and not inference.is_local(f["workdir"], method):
        postprocess_choice.check_client_settings(f["workdir"], method, f["client"])
    model = load_model(f["workdir"], method, f["client"], f.get("allow_incomplete", False))
    model.source = {"workdir": f["workdir"], "method": method, "method_reason": reason, "client": f["client"]}
    if f["overlap"] is not None and not 0 <= f["overlap"] < model.tile:
        raise ValueError(f"--overlap must be in [0, {model.tile}) (the model's tile size), got {f['overlap']}")
    settings, provenance = postprocess_choice.resolve_settings(
        f["workdir"], postprocess_choice.settings_tag(model.tag, f["client"]), overrides, model.config.eval.threshold
    )
    return model, settings, provenance
