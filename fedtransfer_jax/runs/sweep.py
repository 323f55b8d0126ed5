"""Multi-seed studies: the same experiment over several seeds, reported as mean ± std per method.

A config with a non-empty `seeds` tuple runs one complete run per seed in `<workdir>/seed_<s>/` (each
resumable on its own; the seed sets both `config.seed` and `config.data.seed`, so data and training
randomness change together), then writes the study's `summary.json` / `summary.md` and `ari_per_lab.png`
to `<workdir>`:

  summary.json  {"seeds": [...], "methods": {m: {"seen": {metric: {"mean", "std", "per_seed"}},
                 "unseen": {...}, "per_lab": {lab: {"ari": {"mean", "std"}}},
                 "vs_fedavg": {"seen_ari": {"diff_mean", "diff_se", ...}}}}, "protocol": {...}}

The comparison to FedAvg is paired over seeds (same data, same seed): the difference's mean and its
standard error (std / sqrt(n)); "gap closed" is (method - fedavg) / (centralized - fedavg) on seen-lab ARI,
reported only when centralized beats FedAvg by more than that standard error (`seen_gap.defined`).
"""

from __future__ import annotations

import copy
import math
import os
from typing import Any

import ml_collections
import numpy as np

from fedtransfer_jax.runtime import distributed, io_utils

REPORT_KEYS = ("ari", "boundary_f1", "vi", "grain_count_rel_error")


def seed_config(config: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
    c = copy.deepcopy(config)
    with c.unlocked():
        c.seeds = ()
        c.seed = int(seed)
        c.data.seed = int(seed)
    return c


def _stats(values: list[float]) -> dict:
    v = np.asarray(values, np.float64)
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
        "per_seed": [float(x) for x in v],
    }


def aggregate(per_seed: dict[int, dict]) -> dict:
    """Study summary from each seed's summary.json dict."""
    seeds = sorted(per_seed)
    methods = list(per_seed[seeds[0]]["methods"])
    out: dict[str, Any] = {"seeds": seeds, "methods": {}}
    for m in methods:
        runs = [per_seed[s]["methods"][m] for s in seeds]
        entry = {"seen": {k: _stats([r["mean"][k] for r in runs]) for k in REPORT_KEYS}}
        if all("unseen" in r for r in runs):
            entry["unseen"] = {k: _stats([r["unseen"]["mean"][k] for r in runs]) for k in REPORT_KEYS}
        labs = list(runs[0]["per_client"])
        entry["per_lab"] = {lab: {"ari": _stats([r["per_client"][lab]["ari"] for r in runs])} for lab in labs}
        if all("unseen" in r for r in runs):
            for lab in runs[0]["unseen"]["per_client"]:
                entry["per_lab"][f"{lab} (unseen)"] = {
                    "ari": _stats([r["unseen"]["per_client"][lab]["ari"] for r in runs])
                }
        out["methods"][m] = entry
    if "fedavg" in out["methods"]:
        for m, entry in out["methods"].items():
            entry["vs_fedavg"] = {}
            for split in ("seen", "unseen"):
                if split not in entry:
                    continue
                diff = np.subtract(entry[split]["ari"]["per_seed"], out["methods"]["fedavg"][split]["ari"]["per_seed"])
                se = float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else float("nan")
                entry["vs_fedavg"][f"{split}_ari"] = {
                    "diff_mean": float(diff.mean()),
                    "diff_se": se,
                    "beats_fedavg_by_more_than_se": bool(diff.mean() > se) if math.isfinite(se) else None,
                }
    if "centralized" in out["methods"] and "fedavg" in out["methods"]:
        for m, entry in out["methods"].items():
            entry["vs_fedavg"]["seen_gap_closed"] = _gap_closed(out["methods"], m)
        central = out["methods"]["centralized"]["vs_fedavg"]["seen_ari"]
        out["seen_gap"] = {
            "centralized_minus_fedavg": central["diff_mean"],
            "se": central["diff_se"],
            "defined": bool(_gap_is_defined(central)),
        }
    return out


def _gap_is_defined(central_vs_fedavg: dict) -> bool:
    """The FedAvg -> centralized gap is a yardstick only when centralized beats FedAvg by more than the
    standard error of their paired difference; otherwise "share of the gap closed" divides by noise (or by
    a negative number) and is not reported."""
    d, se = central_vs_fedavg["diff_mean"], central_vs_fedavg["diff_se"]
    return math.isfinite(se) and d > max(se, 1e-12)


def _gap_closed(methods: dict, m: str) -> float | None:
    central = methods["centralized"]["vs_fedavg"]["seen_ari"]
    if "seen_ari" not in methods[m]["vs_fedavg"] or not _gap_is_defined(central):
        return None
    return float(methods[m]["vs_fedavg"]["seen_ari"]["diff_mean"] / central["diff_mean"])


def markdown(study: dict) -> str:
    seeds = study["seeds"]
    lines = [
        "# fedtransfer_jax multi-seed study",
        "",
        f"Seeds {seeds} (each seed: its own data and training randomness). Mean ± std over seeds of each "
        "run's macro mean over labs; Δ vs FedAvg is paired over seeds (± standard error of the difference).",
        "",
        "| method | seen ARI | unseen ARI | seen F1 | seen VI | Δ seen ARI vs FedAvg | Δ unseen ARI vs FedAvg | seen gap closed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    fmt = lambda st: f"{st['mean']:.3f} ± {st['std']:.3f}"
    for m, e in study["methods"].items():
        vs = e.get("vs_fedavg", {})
        d = lambda k: f"{vs[k]['diff_mean']:+.3f} ± {vs[k]['diff_se']:.3f}" if k in vs else "n/a"
        gap = vs.get("seen_gap_closed")
        lines.append(
            f"| {m} | {fmt(e['seen']['ari'])} | {fmt(e['unseen']['ari']) if 'unseen' in e else 'n/a'} | "
            f"{fmt(e['seen']['boundary_f1'])} | {fmt(e['seen']['vi'])} | {d('seen_ari')} | {d('unseen_ari')} | "
            f"{'n/a' if gap is None else f'{100 * gap:.0f} %'} |"
        )
    gap = study.get("seen_gap")
    if gap is not None and not gap["defined"]:
        lines += [
            "",
            f"Seen gap closed: n/a: centralized - FedAvg = {gap['centralized_minus_fedavg']:+.3f} ± {gap['se']:.3f} "
            "(SE) on seen-lab ARI, so there is no FedAvg -> centralized gap to close.",
        ]
    labs = list(next(iter(study["methods"].values()))["per_lab"])
    lines += ["", "ARI per lab (mean ± std over seeds):", "", "| method | " + " | ".join(labs) + " |", "|---|" + "---|" * len(labs)]
    for m, e in study["methods"].items():
        lines.append(f"| {m} | " + " | ".join(fmt(e["per_lab"][lab]["ari"]) for lab in labs) + " |")
    return "\n".join(lines) + "\n"


def ari_figure(path: str, study: dict) -> None:
    """Grouped bars: ARI per method per lab (mean over seeds, std as error bars)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    methods = list(study["methods"])
    labs = list(study["methods"][methods[0]]["per_lab"])
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(labs) * max(1, len(methods)) / 4, 3.6))
    width = 0.8 / len(methods)
    x = np.arange(len(labs))
    for i, m in enumerate(methods):
        means = [study["methods"][m]["per_lab"][lab]["ari"]["mean"] for lab in labs]
        stds = [study["methods"][m]["per_lab"][lab]["ari"]["std"] for lab in labs]
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, means, width, yerr=stds, label=m, capsize=2)
    ax.set_xticks(x, labs, rotation=15)
    ax.set_ylabel("ARI (mean ± std over seeds)")
    ax.set_title(f"ARI per method and lab, seeds {study['seeds']}")
    ax.legend(fontsize=7, ncol=2)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


def run_study(config: ml_collections.ConfigDict, workdir: str, console=None, *, fresh_start: bool = False) -> dict:
    """One run per seed of `config.seeds`, then the study summary in `workdir`."""
    from fedtransfer_jax.runs import train  # noqa: PLC0415

    per_seed = {}
    for s in config.seeds:
        if console is not None:
            console.line(f"--- seed {s} ---")
        per_seed[int(s)] = train.train_and_evaluate(
            seed_config(config, int(s)), os.path.join(workdir, f"seed_{s}"), console, fresh_start=fresh_start
        )
    study = aggregate(per_seed)
    study["config"] = io_utils.config_to_json(config)
    study["protocol"] = "docs/PROTOCOL.md"
    if distributed.is_primary():  # several processes: process 0 writes the workdir
        io_utils.write_json_atomic(os.path.join(workdir, "summary.json"), study)
        io_utils.write_text_atomic(os.path.join(workdir, "summary.md"), markdown(study))
        if config.get("figures", True):
            ari_figure(os.path.join(workdir, "ari_per_lab.png"), study)
    return study
