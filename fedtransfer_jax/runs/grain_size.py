"""The grain size a workdir's models were trained on, in px: what `predict --scale auto` aims for.

A segmenter learns boundaries between grains of the sizes it saw; a micrograph whose grains are several
times larger is over-segmented (texture inside a grain reads as boundaries). `analysis/scale.py` resamples
each image so that its predicted grains come out near this size.

Where the number comes from, first found wins:
  1. ``<workdir>/trained_grain_size.json`` (``{"diameter_px": 16.0, "source": "..."}``), written by
     ``record`` when training starts (runs/train.py) or the first time predict/evaluate compute it;
  2. the training config (``<workdir>/config.json``):
     * synthetic labs (``data.source`` 'synthetic', or the synthetic clients of 'mixed'): each lab's
       ``LabSpec.diameter_px`` range of ``data.clients``, capped as the generator caps it at
       ``data.image_size / synthetic.MIN_GRAINS_ACROSS``; the geometric mean of all ranges' ends;
     * real folders (``data.source`` 'folder', or the real clients of 'mixed'): the mean equivalent-circle
       diameter of the grains of the training labels (``measure_labels``: up to ``MAX_LABELS`` label files
       per client of its training split, never a validation or test image; grains cut by the image edge
       left out);
     the two are combined by their geometric mean when a run mixes them;
  3. ``DEFAULT_PX`` = 16 px (the middle of the built-in labs' 9-30 px) when neither is available.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

FILE = "trained_grain_size.json"
DEFAULT_PX = 16.0
MAX_LABELS = 16  # per real client: enough grains for a mean, cheap to read


def mean_grain_diameter(boundary: np.ndarray, *, interior_only: bool = True) -> tuple[float | None, int]:
    """``(mean equivalent-circle diameter in px, grains averaged)`` of a boolean boundary map's grains.

    Boundary pixels go to their nearest grain (``metrics.grains_from_boundary``), so the grains tile the
    map as the synthetic generator's grain maps do (its ``diameter_px`` is the same mean). See
    ``mean_diameter_of_labels``.
    """
    from fedtransfer_jax.metrics import grains as grains_lib  # noqa: PLC0415

    return mean_diameter_of_labels(grains_lib.grains_from_boundary(np.asarray(boundary, bool)), interior_only=interior_only)


def mean_diameter_of_labels(lab: np.ndarray, *, interior_only: bool = True) -> tuple[float | None, int]:
    """Mean equivalent-circle diameter of a grain label map's grains (label 0 = none). Grains cut by the
    map's edge are truncated: with ``interior_only`` they are left out while at least
    ``grains.MIN_COMPLETE_GRAINS`` others remain. ``(None, 0)`` for a map without grains."""
    from fedtransfer_jax.metrics import grains as grains_lib  # noqa: PLC0415

    lab = np.asarray(lab)
    areas = np.bincount(lab.ravel())
    areas[0] = 0
    ids = np.flatnonzero(areas)
    if ids.size == 0:
        return None, 0
    if interior_only:
        edge = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
        inside = np.setdiff1d(ids, edge)
        if inside.size >= grains_lib.MIN_COMPLETE_GRAINS:
            ids = inside
    d = np.sqrt(4.0 * areas[ids] / np.pi)
    return float(d.mean()), int(ids.size)


def _geomean(values: Sequence[float]) -> float:
    return float(math.exp(np.mean(np.log(np.asarray(values, np.float64)))))


def from_labs(labs: Sequence[str], image_size: int | None) -> tuple[float, str]:
    """Geometric mean of the labs' ``diameter_px`` ranges (capped at ``image_size / MIN_GRAINS_ACROSS``)."""
    from fedtransfer_jax.data import synthetic  # noqa: PLC0415  (registers data/labs/ too)

    cap = image_size / synthetic.MIN_GRAINS_ACROSS if image_size else math.inf
    ends = []
    for name in labs:
        lo, hi = synthetic.LABS[name].diameter_px
        ends += [min(lo, cap), min(hi, cap)]
    px = _geomean(ends)
    capped = f", capped at image_size/{synthetic.MIN_GRAINS_ACROSS:g} = {cap:.1f} px" if any(
        min(synthetic.LABS[n].diameter_px) > cap or max(synthetic.LABS[n].diameter_px) > cap for n in labs
    ) else ""
    return px, f"synthetic labs {', '.join(labs)}: geometric mean of their diameter_px ranges{capped}"


def measure_labels(label_paths: Sequence[str], invert: bool = False) -> tuple[float | None, int]:
    """Mean equivalent diameter over the grains of label files (255 = boundary); ``(None, 0)`` if none."""
    from fedtransfer_jax.data import folder  # noqa: PLC0415

    diams, weights = [], []
    for p in label_paths:
        try:
            d, n = mean_grain_diameter(folder.read_label(p, invert=invert) > 0)
        except (OSError, ValueError):
            continue
        if d is not None:
            diams.append(d)
            weights.append(n)
    if not diams:
        return None, 0
    return float(np.average(diams, weights=weights)), int(sum(weights))


def from_config(config: Any) -> tuple[float, str] | None:
    """``(px, source)`` computed from a training config, or None when it says nothing usable."""
    from fedtransfer_jax.data import folder, synthetic  # noqa: PLC0415
    from fedtransfer_jax.data.clients import folder_split  # noqa: PLC0415

    data = config.get("data") if hasattr(config, "get") else None
    if not data:
        return None
    source = data.get("source", "synthetic")
    clients = [str(c) for c in (data.get("clients") or [])]
    labs = [c for c in clients if c in synthetic.LABS] if source in ("synthetic", "mixed") else []
    parts: list[tuple[float, str]] = []
    override = [float(x) for x in (data.get("grain_diameter_px") or [])]
    if labs and len(override) == 2:  # every lab drew its grain sizes log-uniformly in this range
        px = _geomean(override)
        size = data.get("image_size")
        capped = ""
        if size and px > float(size) / synthetic.MIN_GRAINS_ACROSS:
            px = float(size) / synthetic.MIN_GRAINS_ACROSS
            capped = f", capped at image_size/{synthetic.MIN_GRAINS_ACROSS:g} = {px:.1f} px"
        parts.append((px, f"synthetic labs {', '.join(labs)}: geometric mean of data.grain_diameter_px {override}{capped}"))
    elif labs:
        parts.append(from_labs(labs, data.get("image_size")))
    if source in ("folder", "mixed") and data.get("dir"):
        try:
            found = folder.discover_clients(data["dir"])
        except (OSError, ValueError):
            found = {}
        unseen = {str(c) for c in (data.get("unseen_clients") or [])}
        # The trained clients only: those listed, else (a 'folder' run lists none) every folder not held out.
        found = {k: v for k, v in found.items() if (k in clients if clients else k not in unseen)}
        paths = []
        for client_dir in found.values():
            try:
                pairs = folder_split(folder.list_pairs(client_dir), data)["train"]
            except (OSError, ValueError, re.error):
                continue
            paths += [lab for _, lab in pairs[:MAX_LABELS]]
        px, n = measure_labels(paths, invert=bool(data.get("invert_labels", False)))
        if px is not None:
            parts.append((px, f"mean grain diameter of {n} grains in {len(paths)} training label(s) under {data['dir']}"))
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return _geomean([p for p, _ in parts]), "geometric mean of " + "; ".join(f"{s} ({p:.1f} px)" for p, s in parts)


def read(workdir: str | None) -> tuple[float, str] | None:
    """The recorded ``(px, source)`` of a workdir, or None."""
    if not workdir:
        return None
    try:
        with open(os.path.join(workdir, FILE)) as f:
            d = json.load(f)
        px = float(d["diameter_px"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (math.isfinite(px) and px > 0):
        return None
    return px, f"recorded in {os.path.join(workdir, FILE)}: {d.get('source', '')}"


def record(workdir: str, px: float, source: str) -> bool:
    """Writes ``<workdir>/trained_grain_size.json`` (atomic); False where the workdir is not writable."""
    from fedtransfer_jax.runtime import io_utils  # noqa: PLC0415

    try:
        io_utils.write_json_atomic(os.path.join(workdir, FILE), {"diameter_px": float(px), "source": source})
    except OSError:
        return False
    return True


def record_from_config(workdir: str, config: Any) -> None:
    """At training start: the config's trained grain size into the workdir (nothing when it has none)."""
    found = from_config(config)
    if found is not None:
        record(workdir, *found)


def trained_grain_size(workdir: str | None, config: Any) -> tuple[float, str]:
    """``(px, source)``: recorded in the workdir, else computed from ``config`` (and recorded, when the
    workdir exists and is writable), else ``DEFAULT_PX``. ``source`` says which, in words."""
    found = read(workdir)
    if found is not None:
        return found
    found = from_config(config) if config is not None else None
    if found is not None:
        if workdir and os.path.isfile(os.path.join(workdir, "config.json")):
            record(workdir, *found)
        return found
    return DEFAULT_PX, f"default {DEFAULT_PX:g} px (no trained grain size recorded and none in the config)"
