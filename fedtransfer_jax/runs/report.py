"""The run's report for people: `summary.md` from the `summary.json` dict (tables of mean metrics, unseen
labs, per-client results, privacy ledger), written next to it atomically. With several processes only
process 0 writes them (every process holds the same summary)."""

from __future__ import annotations

import os

from fedtransfer_jax.runtime import distributed, io_utils, provenance

_MD_KEYS = ("boundary_f1", "ari", "vi", "grain_count_rel_error", "miou")


def summary_markdown(summary: dict, *, per_client: bool = True) -> str:
    """summary.md: the mean table, the unseen-lab table, then (per_client) one table per method."""
    lines = ["# fedtransfer_jax summary", ""]
    lines.append(
        f"Clients: {', '.join(summary.get('clients', []))}. Device: {summary.get('device', '?')}. "
        "Mean over clients of the per-client mean over test tiles (± spread over clients)."
    )
    differs = (summary.get("provenance") or {}).get("differs")
    if differs:
        lines += ["", f"**{provenance.describe(differs)}**"]
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
    whole = [(n, m["whole_images"]) for n, m in summary["methods"].items() if m.get("whole_images")]
    if whole:
        w0 = whole[0][1]
        lines += [
            "",
            f"Whole test images (v2 primary endpoint: {w0['images_per_lab']} per lab, {w0['image_size']} px, predict's "
            "sliding window, post-processed; boundary F1 at 1 px beside the trivial all-boundary map's F1):",
            "",
        ]
        num = lambda x: "n/a" if x is None or x != x else f"{x:.3f}"
        for n, w in whole:
            seen, unseen, triv = w.get("mean") or {}, (w.get("unseen") or {}).get("mean") or {}, w["trivial_f1"]
            lines.append(
                f"- {n}: post-processed ARI seen {num(seen.get('ari'))}, unseen {num(unseen.get('ari'))}; "
                f"F1 seen {num(seen.get('boundary_f1'))} (trivial {num(triv.get('mean'))}), "
                f"unseen {num(unseen.get('boundary_f1'))} (trivial {num((triv.get('unseen') or {}).get('mean'))}); "
                f"diameter error seen {num(seen.get('diameter_rel_error'))}, |ΔG| seen {num(seen.get('astm_G_abs_diff'))}"
            )
    floor = summary.get("whole_images_untrained")
    if whole and floor:  # `num` from the whole-image block above
        lines.append(
            f"- untrained (the starting model through the same path: the endpoint's floor): post-processed ARI seen "
            f"{num((floor.get('mean') or {}).get('ari'))}, unseen {num(((floor.get('unseen') or {}).get('mean') or {}).get('ari'))}"
        )
    dp_rows = [(n, m["differential_privacy"]) for n, m in summary["methods"].items() if "differential_privacy" in m]
    if dp_rows:
        lines += [
            "",
            "Differential privacy (user level: one client = one lab; engine.privacy_accounting):",
            "",
            "| method | noise multiplier z | clip norm C | adaptive | rounds | sampling | ε at δ | ε without sampling amplification | seen ARI | % of FedAvg's |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        ref = summary["methods"].get("fedavg", {}).get("mean", {}).get("ari")
        for n, d in dp_rows:
            ari = summary["methods"][n]["mean"]["ari"]
            lines.append(
                f"| {n} | {d['noise_multiplier']:g} | {d['clip_norm']:g} | {d['adaptive_clipping']} | {d['rounds']} | "
                f"{d['sampling']} (q={d['q']:.2f}) | {d['epsilon']:.2f} at {d['delta']:g} | "
                f"{d['epsilon_without_sampling_amplification']:.2f} | {ari:.3f} | "
                + (f"{100 * ari / ref:.0f} % |" if ref else "n/a |")
            )
    ex_rows = [(n, m["example_level_dp"]) for n, m in summary["methods"].items() if m.get("example_level_dp")]
    if ex_rows:
        lines += [
            "",
            "Differential privacy (example level: one micrograph inside each lab; DP-SGD, privacy/dpsgd.py; "
            "ε of the lab with the fewest micrographs):",
            "",
            "| method | noise multiplier z | clip norm C | micrographs per step B | steps | q | ε at δ | seen ARI | % of FedAvg's |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        ref = summary["methods"].get("fedavg", {}).get("mean", {}).get("ari")
        for n, d in ex_rows:
            ari = summary["methods"][n]["mean"]["ari"]
            q = max((c["q"] for c in d["per_client"].values()), default=0.0)
            eps = d["epsilon"]
            eps_s = "inf" if eps is None or eps == float("inf") else f"{eps:.2f}"
            lines.append(
                f"| {n} | {d['noise_multiplier']:g} | {d['clip_norm']:g} | {d['units_per_batch']:g} | {d['steps']} | "
                f"{q:.3f} | {eps_s} at {d['delta']:.2g} | {ari:.3f} | "
                + (f"{100 * ari / ref:.0f} % |" if ref else "n/a |")
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
    if not distributed.is_primary():
        return
    io_utils.write_json_atomic(os.path.join(workdir, "summary.json"), summary)
    io_utils.write_text_atomic(os.path.join(workdir, "summary.md"), summary_markdown(summary))
