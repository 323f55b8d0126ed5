"""Results a materials scientist can look at: overlays, histograms, CSV tables, OUT/report.html, and the
short table predict prints.

report.html opens in any browser without a network: inline CSS, no script, images by relative paths
inside OUT; every name from the file system is escaped. It is built from the manifest alone
(``write_report(out, manifest)``), so it always shows what OUT holds, earlier runs' images included.
"""

from __future__ import annotations

import csv
import html
import io
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import numpy as np
from PIL import Image

from fedtransfer_jax import metrics as metrics_lib
from fedtransfer_jax.analysis import outputs
from fedtransfer_jax.analysis import scale as scale_lib
from fedtransfer_jax.data import microstructure
from fedtransfer_jax.runtime import io_utils

# Boundary colours to choose from for the overlay: the one farthest from the micrograph's mean colour.
OVERLAY_COLOURS = ((255, 0, 255), (0, 255, 255), (255, 255, 0), (255, 40, 40), (40, 255, 40))
IMAGE_COLUMNS = (
    "image",
    "file",
    "height",
    "width",
    "n_grains",
    "mean_area_px",
    "mean_equivalent_diameter_px",
    "mean_area_um2",
    "mean_equivalent_diameter_um",
    "n_grains_astm",
    "astm_G",
    "mean_intercept_px",
    "mean_intercept_um",
    "astm_G_intercept",
    "size_withheld",
    "warnings",
    "model",
    "scale",
    "pixel_size_um",
    "pixel_size_source",
    "databar_rows",
    "map_stability",
)


# ----------------------------------------------------------------------------------------------
# Per-image figures.
# ----------------------------------------------------------------------------------------------


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def display_image(image: np.ndarray) -> np.ndarray:
    """uint8 RGB [H, W, 3] of a [0, 1] micrograph, contrast stretched (0.5-99.5 percentiles) for display."""
    img = np.asarray(image, np.float32)
    lo, hi = np.percentile(img, [0.5, 99.5]) if img.size else (0.0, 1.0)
    if hi - lo < 1e-6:
        lo, hi = 0.0, 1.0
    return (np.clip((img - lo) / (hi - lo), 0, 1) * 255 + 0.5).astype(np.uint8)


def grain_borders(boundary: np.ndarray, databar_rows: int = 0, left_out: np.ndarray | None = None) -> np.ndarray:
    """Where the overlay draws: the borders between the grains that were measured (the map's grains with
    every boundary pixel given to its nearest grain, metrics.grains_from_boundary), 1 px wide, 2 px on
    images over 1000 px a side. A model's boundary band can be many pixels wide; painting all of it hid up
    to half of the micrograph, while the borders show exactly the grains in the table and leave the
    micrograph visible (the band itself is in <name>.png). No grain at all: the boundary map as it is.
    The bottom ``databar_rows`` (an instrument's data bar, not measured) and the ``left_out`` pixels (burned-in
    annotations, data/overlays.py) are left undrawn."""
    b = np.asarray(boundary, bool)
    h = max(0, b.shape[0] - int(databar_rows))
    lab = metrics_lib.grains_from_boundary(b[:h])
    if not lab.any():
        edges = b[:h].copy()
    else:
        edges = microstructure.boundary_map(lab, 2 if max(b.shape) > 1000 else 1) > 0
    if left_out is not None:
        edges &= ~np.asarray(left_out, bool)[:h]
    return np.concatenate([edges, np.zeros((b.shape[0] - h, b.shape[1]), bool)], axis=0)


def overlay(image: np.ndarray, boundary: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
    """(uint8 RGB overlay, colour): the boundaries drawn in the colour that contrasts most with the image."""
    rgb = display_image(image)
    mean = rgb.reshape(-1, 3).mean(axis=0) if rgb.size else np.zeros(3)
    colour = max(OVERLAY_COLOURS, key=lambda c: float(np.abs(np.asarray(c) - mean).sum()))
    out = rgb.copy()
    out[np.asarray(boundary, bool)] = colour
    return out, colour


# --exclude_border_grains: the grain tables and histograms leave out the grains cut by the image edge, while
# the summary's count, means and G are over every grain, as E112's planimetric count is.
EXCLUDED_BORDER_NOTE = (
    "With --exclude_border_grains the grain tables and histograms list only the grains not touching the image "
    "edge; the grain counts, mean diameters and ASTM G of the summary are over all grains (E112's G counting "
    "those cut by the edge as halves)."
)


def histogram_png(rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any], title: str) -> bytes:
    """Histogram of equivalent grain diameters (µm with a pixel size, else px) as PNG bytes (Agg, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    um = bool(rows) and rows[0].get("equivalent_diameter_um") is not None
    key, unit = ("equivalent_diameter_um", "µm") if um else ("equivalent_diameter_px", "px")
    values = np.array([r[key] for r in rows], np.float64)
    fig = Figure(figsize=(5.0, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if values.size:
        bins = min(40, max(5, int(math.sqrt(values.size)) + 1))
        ax.hist(values, bins=bins, color="#4a78b5", edgecolor="white", linewidth=0.5)
        mean = summary.get("mean_equivalent_diameter_" + ("um" if um else "px"))
        if summary.get("table_excludes_border_grains") and mean is not None:
            mean = float(values.mean())  # the summary's mean is over all grains, these leave out the edge's
        if mean is not None:
            ax.axvline(mean, color="#d1495b", linewidth=1.5, label=f"mean {mean:.3g} {unit}")
            ax.legend(fontsize=8, frameon=False)
    else:
        ax.text(0.5, 0.5, "no grains", ha="center", va="center", transform=ax.transAxes)
    if summary.get("size_withheld"):
        ax.text(
            0.5, 0.97, "grain size withheld (see warnings)", ha="center", va="top",
            transform=ax.transAxes, color="#b00020", fontsize=8,
        )
    ax.set_xlabel(f"equivalent circle diameter ({unit})")
    ax.set_ylabel("grains")
    ax.set_title(f"{io_utils.printable(title)}  ({values.size} grains)", fontsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    buf = io.BytesIO()
    with warnings.catch_warnings():  # a file name in a script the font lacks: a box in the title, not a warning
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font")
        warnings.filterwarnings("ignore", message=r".*tight_layout")
        fig.tight_layout()
        fig.savefig(buf, format="png")
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------
# Tables.
# ----------------------------------------------------------------------------------------------


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, (list, tuple)):
        return "; ".join(str(x) for x in v)
    return v


def combined_csv(out: str, manifest: Mapping[str, Any]) -> str:
    """Every image's grain table in one CSV (``image`` and ``file`` first), read back from OUT's tables.
    The last column, ``image_size_withheld``, is 1 for the grains of an image whose grain size was withheld
    (its map could not give a plausible one: the summary says why), so a pivot over this file can leave
    them out as the summary does."""
    buf = io.StringIO(newline="")
    cols = ("image", "file") + tuple(metrics_lib.GRAIN_TABLE_COLUMNS) + ("image_size_withheld",)
    w = csv.writer(buf)
    w.writerow(cols)
    for name, entry in sorted(manifest["images"].items()):
        withheld = int(bool(entry.get("size_withheld")))
        with open(os.path.join(out, entry["grain_table"]), newline="") as f:
            for row in csv.DictReader(f):
                w.writerow([name, entry.get("file", "")] + [row.get(c, "") for c in metrics_lib.GRAIN_TABLE_COLUMNS]
                           + [withheld])
    return buf.getvalue()


def summary_csv(manifest: Mapping[str, Any]) -> str:
    """One row per image: size, grain count, mean sizes, ASTM G, warnings."""
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(IMAGE_COLUMNS)
    for name, entry in sorted(manifest["images"].items()):
        w.writerow(
            [name]
            + [_summary_cell(entry, c) for c in IMAGE_COLUMNS[1:]]
        )
    return buf.getvalue()


def _summary_cell(entry: Mapping[str, Any], column: str) -> Any:
    if column == "scale":
        return scale_lib.describe(entry.get(column))
    if column == "databar_rows":
        return (entry.get("databar") or {}).get("rows", 0)
    if column == "map_stability":  # analysis/stability.py; empty where no scale search ran
        return _cell((entry.get("scale") or {}).get("stability"))
    return _cell(entry.get(column))


def pixel_text(entry: Mapping[str, Any]) -> str:
    """'0.0125 µm per pixel (FEI/Thermo metadata [Scan] PixelWidth)', or why sizes are in px."""
    pixel = entry.get("pixel_size_um")
    if not pixel:
        return "pixel size unknown (no --pixel_size_um, none usable in the file's metadata): sizes in px, no ASTM G"
    return f"{pixel:.4g} µm per pixel ({entry.get('pixel_size_source') or '--pixel_size_um'})"


def _length(entry: Mapping[str, Any], stem: str) -> str:
    """'12.3 µm' (``<stem>_um``), else '45.6 px' (``<stem>_px``), else '-' (withheld or no grains)."""
    for unit, suffix in (("µm", "_um"), ("px", "_px")):
        if entry.get(stem + suffix) is not None:
            return f"{entry[stem + suffix]:.3g} {unit}"
    return "-"


def mean_diameter(entry: Mapping[str, Any]) -> str:
    """The mean equivalent-circle diameter: '12.3 µm', '45.6 px' or '-'."""
    return _length(entry, "mean_equivalent_diameter")


def astm(entry: Mapping[str, Any], key: str = "astm_G") -> str:
    return "-" if entry.get(key) is None else f"{entry[key]:.1f}"


def mean_intercept(entry: Mapping[str, Any]) -> str:
    """Heyn's mean lineal intercept (metrics/intercept.py): '12.3 µm', '45.6 px' or '-'."""
    return _length(entry, "mean_intercept")


def text_table(entries: Mapping[str, Mapping[str, Any]], width: int = 100) -> str:
    """The table predict prints: image, grains, mean diameter, ASTM G, the model's scale ('0.5 auto'),
    warnings (lines shortened to ``width``)."""
    head = ("image", "grains", "mean diameter", "ASTM G", "scale", "warnings")
    rows = [
        (
            name,
            str(e.get("n_grains", "")),
            mean_diameter(e),
            astm(e),
            scale_lib.describe(e.get("scale")),
            "; ".join(e.get("warnings") or []) or "-",
        )
        for name, e in entries.items()
    ]
    n = len(head) - 1
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(n)]
    lines = []
    for r in [head, *rows]:
        line = "  ".join(r[i].ljust(widths[i]) if i == 0 else r[i].rjust(widths[i]) for i in range(n)) + "  " + r[n]
        lines.append(line if len(line) <= width else line[: width - 3] + "...")
    return "\n".join(lines)


def scale_text(record: Mapping[str, Any] | None) -> str:
    """One line on how an image was scaled for the model: the scale, the rule and the candidates."""
    if not record:
        return "model scale: - (predicted before --scale existed)"
    text = f"model scale {scale_lib.describe(record)}"
    if record.get("mode") == scale_lib.AUTO:
        cands = ", ".join(
            f"{k}: {'-' if v is None else f'{v:.1f} px'}" for k, v in (record.get("candidates") or {}).items()
        )
        text += f" ({record.get('reason', '')}; mean grain per scale, in resampled pixels: {cands})"
        rejected = record.get("rejected") or {}
        if rejected:
            short = {k: str(v).split(" (")[0].split(":")[0] for k, v in rejected.items()}  # grain_sizes.json has all
            text += "; implausible maps at scale " + ", ".join(f"{k} ({v})" for k, v in short.items())
        if record.get("stability") is not None:
            text += (f"; map stability {record['stability']:.2f} (how far the grains agree with the maps at scale "
                     f"{', '.join(record.get('stability_compared_with') or [])}, 0-1, 1 = the same grains: on "
                     "synthetic images low values went with poor maps, on real ones only weakly, so a low value "
                     "is a reason to check the overlay and a high one no promise)")
    else:
        text += f" ({record.get('reason', '')})"
    return text + "; boundaries and grains are measured in the original pixels"


# ----------------------------------------------------------------------------------------------
# report.html
# ----------------------------------------------------------------------------------------------

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 16px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;border-bottom:1px solid #ddd;padding-bottom:3px;margin-top:28px}
h3{font-size:15px;margin:0 0 6px}
table{border-collapse:collapse;font-size:13px;margin:8px 0} th,td{border:1px solid #d8d8d8;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f2f4f7} td.num{text-align:right;font-variant-numeric:tabular-nums}
.status{display:inline-block;padding:2px 8px;border-radius:3px;font-size:13px;font-weight:600}
.complete{background:#e3f4e6;color:#1d6b2c} .failed,.interrupted,.running{background:#fde8e8;color:#a4161a}
.warn{color:#a4161a} .muted{color:#666;font-size:12px}
dl{display:grid;grid-template-columns:max-content auto;gap:3px 14px;font-size:13px} dt{font-weight:600} dd{margin:0}
.image{border:1px solid #e2e2e2;border-radius:4px;padding:10px;margin:14px 0}
.figs{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
.figs figure{margin:0} .figs figcaption{font-size:12px;color:#666}
.figs img{max-width:100%;height:auto;border:1px solid #eee} .figs .ov{width:520px} .figs .hist{width:440px}
.figs .small{image-rendering:pixelated}
code{background:#f5f5f5;padding:0 3px;border-radius:2px}
"""


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _src(rel: str) -> str:
    """A relative path inside OUT as an <img src> / href: URL-quoted, then HTML-escaped."""
    return _e(quote(rel.replace(os.sep, "/"), errors="surrogateescape"))


def _settings_rows(manifest: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    info = manifest.get("model_info") or {}
    rows.append(("model", str(manifest.get("model", "?"))))
    if info.get("workdir"):
        rows.append(("workdir", str(info["workdir"])))
    if info.get("method"):
        rows.append(("method", f"{info['method']} ({info.get('method_reason', '')})"))
    rows.append(("client", str(info.get("client") or "- (the federation's model)")))
    if info.get("round") is not None:
        rows.append(("checkpoint", f"round {info['round']} of {info.get('rounds')}"))
    post = manifest.get("postprocess") or {}
    settings = post.get("settings") or {}
    rows.append(("post-processing", ", ".join(f"{k}={v}" for k, v in settings.items()) or "-"))
    if post.get("source"):
        rows.append(("settings from", str(post["source"])))
    pixel = manifest.get("pixel_size_um")
    rows.append((
        "pixel size",
        f"{pixel} µm per pixel for the last run's images (--pixel_size_um; each image's own under it)" if pixel
        else "each image's own, from its file's metadata where it has one (under each image); "
        "else sizes in px, no ASTM G",
    ))
    inf = dict(manifest.get("inference") or {})
    mode = inf.pop("scale", None)
    target, target_source = inf.pop("trained_grain_px", None), inf.pop("trained_grain_source", None)
    if mode == scale_lib.AUTO:
        rows.append((
            "model scale",
            f"auto: each image resampled by the scale (1 to 1/4) at which its predicted grains come closest to "
            f"the {target} px the model was trained on ({target_source})",
        ))
    elif mode is not None:
        rows.append(("model scale", f"{mode}: every image resampled by {mode} for the model (--scale)"))
    if inf:
        rows.append(("inference", ", ".join(f"{k}={v}" for k, v in inf.items())))
    return rows


def report_html(manifest: Mapping[str, Any], title: str = "Grain-size report") -> str:
    """The page for OUT (paths in the manifest are relative to OUT)."""
    images = manifest.get("images") or {}
    status = str(manifest.get("status", "?"))
    p = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p><span class="status {_e(status)}">{_e(status)}</span> '
        f'<span class="muted">{_e(len(images))} image(s); updated {_e(manifest.get("updated", ""))}</span></p>',
    ]
    if manifest.get("error"):
        p.append(f'<p class="warn">{_e(manifest["error"])}</p>')
    p.append("<h2>Model and settings</h2><dl>")
    for k, v in _settings_rows(manifest):
        p.append(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>")
    p.append("</dl>")
    p.append(
        '<p class="muted">Grain size: mean equivalent-circle diameter over all grains; ASTM E112 G by the '
        "planimetric (Jeffries) count over the whole image, grains cut by the edge counted one half; mean "
        "lineal intercept (Heyn) on every row, column and diagonal of the map, and E112's G from it (for equiaxed "
        "grains the two G agree within a few tenths). Sizes are withheld where the map cannot give a plausible grain size (see warnings).</p>"
    )
    if any(e.get("table_excludes_border_grains") for e in images.values() if isinstance(e, dict)):
        p.append(f'<p class="muted">{_e(EXCLUDED_BORDER_NOTE)}</p>')
    p.append("<h2>Summary</h2>")
    if images:
        p.append(
            "<table><tr><th>image</th><th>input file</th><th>grains</th><th>mean diameter</th>"
            "<th>ASTM G</th><th>mean intercept</th><th>ASTM G (intercept)</th><th>model scale</th>"
            "<th>warnings</th></tr>"
        )
        for name, e in sorted(images.items()):
            warn = "; ".join(e.get("warnings") or [])
            p.append(
                f'<tr><td><a href="#img-{_e(name)}">{_e(name)}</a></td><td>{_e(e.get("file", ""))}</td>'
                f'<td class="num">{_e(e.get("n_grains", ""))}</td><td class="num">{_e(mean_diameter(e))}</td>'
                f'<td class="num">{_e(astm(e))}</td><td class="num">{_e(mean_intercept(e))}</td>'
                f'<td class="num">{_e(astm(e, "astm_G_intercept"))}</td>'
                f'<td class="num">{_e(scale_lib.describe(e.get("scale")))}</td>'
                f'<td class="{"warn" if warn else ""}">{_e(warn or "-")}</td></tr>'
            )
        p.append("</table>")
    else:
        p.append("<p>No image measured yet.</p>")
    p.append(
        f'<p class="muted">Tables: <a href="{_src("grain_sizes.csv")}">grain_sizes.csv</a> (every grain), '
        f'<a href="{_src("grain_sizes_summary.csv")}">grain_sizes_summary.csv</a> (one row per image), '
        f'<a href="{_src("grain_sizes.json")}">grain_sizes.json</a> (everything).</p>'
    )
    for key, heading in (("failed", "Images that could not be read"), ("skipped", "Files skipped (not images)")):
        entries = manifest.get(key) or []
        if entries:
            p.append(f"<h2>{_e(heading)}</h2><table><tr><th>file</th><th>reason</th></tr>")
            for f in entries:
                p.append(f"<tr><td>{_e(f.get('file', ''))}</td><td>{_e(f.get('reason', ''))}</td></tr>")
            p.append("</table>")
    p.append("<h2>Images</h2>")
    for name, e in sorted(images.items()):
        p.append(f'<div class="image" id="img-{_e(name)}"><h3>{_e(name)}</h3>')
        p.append(
            f'<p class="muted">{_e(e.get("file", ""))} &middot; {_e(e.get("width"))}&times;{_e(e.get("height"))} px '
            f'&middot; {_e(e.get("n_grains"))} grains &middot; mean diameter {_e(mean_diameter(e))} '
            f'&middot; ASTM G {_e(astm(e))} &middot; mean intercept {_e(mean_intercept(e))}'
            + (f' &middot; model {_e(e["model"])}' if e.get("model") else "")
            + "</p>"
        )
        p.append(f'<p class="muted">{_e(scale_text(e.get("scale")))}</p>')
        p.append(f'<p class="muted">{_e(pixel_text(e))}</p>')
        for note in e.get("notes") or []:
            p.append(f'<p class="muted">note: {_e(note)}</p>')
        if e.get("size_withheld"):
            p.append(f'<p class="warn">{_e(e["size_withheld"])}</p>')
        for w in e.get("warnings") or []:
            if not e.get("size_withheld") or w not in e["size_withheld"]:
                p.append(f'<p class="warn">warning: {_e(w)}</p>')
        p.append('<div class="figs">')
        if e.get("overlay"):
            colour = e.get("overlay_colour")
            alt = f"{name}: the measured grains' borders drawn on the micrograph"
            small = " small" if isinstance(e.get("width"), int) and e["width"] < 520 else ""
            caption = ("borders of the measured grains" + (f" in rgb{tuple(colour)}" if colour else "")
                       + " on the micrograph (contrast stretched; the boundary band itself is in the map)")
            p.append(
                f'<figure><a href="{_src(e["overlay"])}"><img class="ov{small}" src="{_src(e["overlay"])}" '
                f'alt="{_e(alt)}"></a><figcaption>{_e(caption)}</figcaption></figure>'
            )
        if e.get("histogram"):
            p.append(
                f'<figure><img class="hist" src="{_src(e["histogram"])}" alt="{_e(name)}: grain-size histogram">'
                "<figcaption>equivalent-circle diameters; red line: mean</figcaption></figure>"
            )
        p.append("</div>")
        links = [(k, e.get(k)) for k in ("boundary_map", "grain_table") if e.get(k)]
        p.append(
            '<p class="muted">'
            + " &middot; ".join(f'{_e(k.replace("_", " "))}: <a href="{_src(v)}">{_e(v)}</a>' for k, v in links)
            + "</p></div>"
        )
    p.append("</body></html>")
    return "\n".join(p) + "\n"


def write_tables_and_report(out: str, manifest: Mapping[str, Any]) -> list[str]:
    """grain_sizes.csv, grain_sizes_summary.csv and report.html for ``manifest`` (each atomic; the page
    last, after the images it shows). Returns the files written, relative to OUT."""
    written = []
    for name, make in (
        (outputs.COMBINED_CSV, lambda: combined_csv(out, manifest)),
        (outputs.SUMMARY_CSV, lambda: summary_csv(manifest)),
        (outputs.REPORT, lambda: report_html(manifest)),
    ):
        path = os.path.join(out, name)
        try:
            io_utils.write_text_atomic(path, make())
        except OSError as e:
            e.filename = e.filename or path  # Which file, for the message.
            raise
        written.append(name)
    return written
