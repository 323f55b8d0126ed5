"""The run's report for people: `summary.md` from the `summary.json` dict (tables of mean metrics, unseen
labs, per-client results, privacy ledger), written next to it atomically."""

from __future__ import annotations

import os

from fedtransfer_jax import io_utils

_MD_KEYS = ("boundary_f1", "ari", "vi", "grain_count_rel_error", "miou")


def summary_markdown(summary: dict, *, per_client: bool = True) -> str:
    """summary.md: the mean table, the unseen-lab table, then (per_client) one table per method."""
    lines = ["# fedtransfer_jax summary", ""]
    lines.append(
        f"Clients: {', '.join(summary.get('clients', []))}. Device: {summary.get('device', '?')}. "
        "Mean over clients of the per-client mean over test tiles (± spread over clients)."
    )
    lines.append("")
    header = "| method | " + " | ".join(_MD_KEYS) + " | compilations | wall s |"
    lines += [header, "|" + "---|" * (len(_MD_KEYS) + 3)]
    for name, m in summary["methods"].items():
        cells = [f"{m['mean'][k]:.3f} ± {m['mean'].get(k + '_std', 0.0):.3f}" for k in _MD_KEYS]
        lines.append(
            f"| {name} | " + " | ".join(cells) + f" | {m['round_compilations']} | {m['wall_seconds']:.1f} |"
        )
    if any("unseen" in m for m in summary["methods"].values()):
        lines += [
            "",
            f"Unseen labs ({', '.join(summary.get('unseen_clients', []))}), never trained on:",
            "",
            header.replace("compilations | wall s |", ""),
            "|" + "---|" * (len(_MD_KEYS) + 1),
        ]
        for name, m in summary["methods"].items():
            if "unseen" in m:
                u = m["unseen"]["mean"]
                lines.append(
                    f"| {name} | "
                    + " | ".join(f"{u[k]:.3f} ± {u.get(k + '_std', 0.0):.3f}" for k in _MD_KEYS)
                    + " |"
                )
    status = summary.get("status")
    if status == "running":
        pending = [m for m, p in summary.get("progress", {}).items() if p.get("status") != "complete"]
        lines += ["", f"Run in progress or interrupted: not finished: {', '.join(pending)}."]
    if not per_client:
        return "\n".join(lines) + "\n"
    for name, m in summary["methods"].items():
        lines += [
            "",
            f"## {name}: per client",
            "",
            "| client | " + " | ".join(_MD_KEYS) + " |",
            "|" + "---|" * (len(_MD_KEYS) + 1),
        ]
        for c, cm in m["per_client"].items():
            lines.append(f"| {c} | " + " | ".join(f"{cm[k]:.3f}" for k in _MD_KEYS) + " |")
        if "privacy_ledger" in m:
            pl = m["privacy_ledger"]
            lines += [
                "",
                f"Privacy ledger: {pl['bytes_sent_total']} bytes sent in total; "
                f"image-shaped arrays sent: {pl['image_shaped_arrays_sent']}.",
            ]
    return "\n".join(lines) + "\n"


def write_summary(workdir: str, summary: dict) -> None:
    io_utils.write_json_atomic(os.path.join(workdir, "summary.json"), summary)
    io_utils.write_text_atomic(os.path.join(workdir, "summary.md"), summary_markdown(summary))
