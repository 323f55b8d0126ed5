"""Multi-seed studies: the same experiment over several seeds, reported as mean ± std per method.

A config with a non-empty `seeds` tuple runs one complete run per seed in `<workdir>/seed_<s>/` (each
resumable on its own; the seed sets `config.seed`, the training randomness and initial model, and
`config.data.seed` to the same value, or to `config.data_seeds[i]` when that tuple is given, so data and
initialisation can be drawn separately), then writes the study's `summary.json` / `summary.md` and
`ari_per_lab.png` to `<workdir>`:

  summary.json  {"seeds": [...], "methods": {m: {"seen": {metric: {"mean", "std", "per_seed"}},
                 "unseen": {...}, "per_lab": {lab: {"ari": {"mean", "std"}}},
                 "vs_fedavg": {"seen_ari": {"diff_mean", "diff_se", ...}}}}, "protocol": {...}}

The comparison to FedAvg is paired over seeds (same data, same seed): the difference's mean and its
standard error (std / sqrt(n)); "gap closed" is (method - fedavg) / (centralized - fedavg) on seen-lab ARI,
reported only when centralized beats FedAvg by more than that standard error (`seen_gap.defined`).
`config.study_references` (default `("fedavg",)`) names the baselines and controls every method is
compared with: `comparisons[<method> vs <reference>][seen_ari|unseen_ari]` holds the paired difference, its
t-based 95 % confidence interval, the paired t-test p and the Holm-adjusted p over the whole family of
comparisons of the study (metrics/stats.py). `whole_untrained` holds, over seeds, the whole-image scores of
the starting model before any training (runners.untrained_whole_images): the floor the primary endpoint is
read against, since post-processing gives a map that knows nothing about boundaries a non-zero ARI.
"""

from __future__ import annotations

import copy
import math
import os
from typing import Any

import ml_collections
import numpy as np

from fedtransfer_jax.metrics import stats as stats_lib
from fedtransfer_jax.runtime import distributed, io_utils, provenance

REPORT_KEYS = ("ari", "boundary_f1", "vi", "grain_count_rel_error")
# The v2 primary endpoint (docs/PROTOCOL.md): whole test images, post-processed (methods.<m>.whole_images).
WHOLE_KEYS = ("ari", "boundary_f1", "diameter_rel_error", "astm_G_abs_diff")
SPLITS = ("seen", "unseen", "whole_seen", "whole_unseen")  # compared on ARI: comparisons[...][<split>_ari]


def seed_config(
    config: ml_collections.ConfigDict, seed: int, data_seed: int | None = None
) -> ml_collections.ConfigDict:
    c = copy.deepcopy(config)
    with c.unlocked():
        c.seeds = ()
        c.seed = int(seed)
        c.data.seed = int(seed if data_seed is None else data_seed)
        if "data_seeds" in c:
            c.data_seeds = ()
    return c


def data_seeds(config: ml_collections.ConfigDict) -> list[int | None]:
    """The data seed of each study seed: `config.data_seeds` when given (same length as `seeds`), else None
    (the data seed follows the seed)."""
    given = tuple(config.get("data_seeds", ()) or ())
    if not given:
        return [None] * len(config.seeds)
    if len(given) != len(config.seeds):
        raise ValueError(
            f"config key data_seeds: {len(given)} data seeds for {len(config.seeds)} seeds; give one per seed"
        )
    return [int(d) for d in given]


def _stats(values: list[float]) -> dict:
    v = np.asarray(values, np.float64)
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
        "per_seed": [float(x) for x in v],
    }


def comparisons(methods: dict, references: tuple[str, ...]) -> dict:
    """Every method against every reference on seen- and unseen-lab ARI of the test tiles and, where every
    seed has them, of the whole test images (`whole_seen_ari`, `whole_unseen_ari`: the primary endpoint),
    paired over seeds, with Holm's correction over the whole family (each (method, reference, split) is one
    test)."""
    out: dict[str, dict] = {}
    pvalues: dict[tuple[str, str], float] = {}
    for ref in references:
        if ref not in methods:
            continue
        for m, entry in methods.items():
            if m == ref or f"{ref} vs {m}" in out:  # each pair once: the family stays what it is
                continue
            row = {}
            for split in SPLITS:
                if split in entry and split in methods[ref]:
                    row[f"{split}_ari"] = stats_lib.paired_comparison(
                        entry[split]["ari"]["per_seed"], methods[ref][split]["ari"]["per_seed"]
                    )
                    pvalues[(f"{m} vs {ref}", f"{split}_ari")] = row[f"{split}_ari"]["p"]
            out[f"{m} vs {ref}"] = row
    adjusted = stats_lib.holm({f"{k[0]}|{k[1]}": p for k, p in pvalues.items()})
    for (name, split), _ in pvalues.items():
        out[name][split]["p_holm"] = adjusted[f"{name}|{split}"]
    return out


def aggregate(per_seed: dict[int, dict], references: tuple[str, ...] = ("fedavg",)) -> dict:
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
        wholes = [r.get("whole_images") or {} for r in runs]
        if all("mean" in w for w in wholes):
            entry["whole_seen"] = {k: _stats([w["mean"].get(k, float("nan")) for w in wholes]) for k in WHOLE_KEYS}
        if all("unseen" in w for w in wholes):
            entry["whole_unseen"] = {
                k: _stats([w["unseen"]["mean"].get(k, float("nan")) for w in wholes]) for k in WHOLE_KEYS
            }
        out["methods"][m] = entry
    floors = [per_seed[s].get("whole_images_untrained") or {} for s in seeds]
    floor: dict[str, Any] = {}
    if all("mean" in f for f in floors):
        floor["whole_seen"] = {k: _stats([f["mean"].get(k, float("nan")) for f in floors]) for k in WHOLE_KEYS}
    if all("unseen" in f for f in floors):
        floor["whole_unseen"] = {k: _stats([f["unseen"]["mean"].get(k, float("nan")) for f in floors]) for k in WHOLE_KEYS}
    if floor:
        out["whole_untrained"] = floor  # the endpoint's floor: the starting model, untrained (runners.untrained_whole_images)
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
    out["references"] = [r for r in references if r in out["methods"]]
    out["comparisons"] = comparisons(out["methods"], tuple(out["references"]))
    # A seed resumed on other code, libraries or devices than it started with (runtime/provenance.py).
    mixed = {str(s): (per_seed[s].get("provenance") or {}).get("differs") for s in seeds}
    if any(mixed.values()):
        out["provenance_differs"] = {s: d for s, d in mixed.items() if d}
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
    whole = any("whole_seen" in e or "whole_unseen" in e for e in study["methods"].values())
    if whole:
        lines += [
            "",
            "Whole test images (primary endpoint: post-processed, predict's sliding window; mean ± std over seeds):",
            "",
            "| method | whole seen ARI | whole unseen ARI | whole seen F1 (1 px) | whole seen diameter error |",
            "|---|---|---|---|---|",
        ]
        for m, e in study["methods"].items():
            ws, wu = e.get("whole_seen"), e.get("whole_unseen")
            lines.append(
                f"| {m} | {fmt(ws['ari']) if ws else 'n/a'} | {fmt(wu['ari']) if wu else 'n/a'} | "
                f"{fmt(ws['boundary_f1']) if ws else 'n/a'} | {fmt(ws['diameter_rel_error']) if ws else 'n/a'} |"
            )
        floor = study.get("whole_untrained")
        if floor:
            ws, wu = floor.get("whole_seen"), floor.get("whole_unseen")
            lines.append(
                f"| *untrained (the endpoint's floor)* | {fmt(ws['ari']) if ws else 'n/a'} | {fmt(wu['ari']) if wu else 'n/a'} | "
                f"{fmt(ws['boundary_f1']) if ws else 'n/a'} | {fmt(ws['diameter_rel_error']) if ws else 'n/a'} |"
            )
    if study.get("comparisons"):
        lines += [
            "",
            "Paired comparisons (difference of ARI, t-based 95 % CI over seeds, paired t-test p, Holm-adjusted "
            "over every comparison below):",
            "",
            "| comparison | seen ARI diff [95 % CI] | p (Holm) | unseen ARI diff [95 % CI] | p (Holm) |"
            + (" whole-image seen ARI diff [95 % CI] | p (Holm) | whole-image unseen ARI diff [95 % CI] | p (Holm) |" if whole else ""),
            "|---|---|---|---|---|" + ("---|---|---|---|" if whole else ""),
        ]

        def cell(c):
            if c is None:
                return "n/a | n/a"
            ci = "n/a" if c["ci_low"] != c["ci_low"] else f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]"
            p = "n/a" if c["p"] != c["p"] else f"{c['p']:.3g} ({c['p_holm']:.3g})"
            return f"{c['diff_mean']:+.3f} {ci} | {p}"

        for name, row in study["comparisons"].items():
            extra = f" {cell(row.get('whole_seen_ari'))} | {cell(row.get('whole_unseen_ari'))} |" if whole else ""
            lines.append(f"| {name} | {cell(row.get('seen_ari'))} | {cell(row.get('unseen_ari'))} |" + extra)
    labs = list(next(iter(study["methods"].values()))["per_lab"])
    lines += ["", "ARI per lab (mean ± std over seeds):", "", "| method | " + " | ".join(labs) + " |", "|---|" + "---|" * len(labs)]
    for m, e in study["methods"].items():
        lines.append(f"| {m} | " + " | ".join(fmt(e["per_lab"][lab]["ari"]) for lab in labs) + " |")
    for seed, differs in (study.get("provenance_differs") or {}).items():
        lines += ["", f"**Seed {seed}: {provenance.describe(differs)}**"]
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
    io_utils.save_figure_atomic(fig, path, dpi=110, bbox_inches="tight")


def run_study(config: ml_collections.ConfigDict, workdir: str, console=None, *, fresh_start: bool = False) -> dict:
    """One run per seed of `config.seeds`, then the study summary in `workdir`."""
    from fedtransfer_jax.runs import train  # noqa: PLC0415

    per_seed = {}
    for s, d in zip(config.seeds, data_seeds(config)):
        if console is not None:
            console.line(f"--- seed {s} ---" if d is None else f"--- seed {s} (data seed {d}) ---")
        per_seed[int(s)] = train.train_and_evaluate(
            seed_config(config, int(s), d), os.path.join(workdir, f"seed_{s}"), console, fresh_start=fresh_start
        )
    study = aggregate(per_seed, tuple(config.get("study_references", ("fedavg",)) or ("fedavg",)))
    if any(d is not None for d in data_seeds(config)):
        study["data_seeds"] = dict(zip([int(s) for s in config.seeds], data_seeds(config)))
    study["config"] = io_utils.config_to_json(config)
    study["protocol"] = "docs/PROTOCOL.md"
    if distributed.is_primary():  # several processes: process 0 writes the workdir
        io_utils.write_json_atomic(os.path.join(workdir, "summary.json"), study)
        io_utils.write_text_atomic(os.path.join(workdir, "summary.md"), markdown(study))
        if config.get("figures", True):
            ari_figure(os.path.join(workdir, "ari_per_lab.png"), study)
    return study
