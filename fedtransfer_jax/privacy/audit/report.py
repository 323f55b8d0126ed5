"""The audit's report: which attacks beat the lab baseline and their control, as JSON and markdown.

`run_workdir_audit` returns a plain dict of score tables; this module decides what counts as a measured
leak (`leaked_scores`: beyond two standard errors of both the lab baseline and the control run, so that
noise over a handful of victims is not reported as leakage) and renders `audit.md` next to `audit.json`.
"""

from __future__ import annotations

import os

import numpy as np

# What the report says a client sends besides its style messages (each style technique describes its own
# message: `StyleAudit.what_is_sent`, listed before this).
MODEL_DELTA_SENT = {
    "model_delta": (
        "per round, the client's model delta, a deterministic function of its images and labels; the server sees "
        "it unless secure aggregation hides it, and DP-FedAvg's release clips and noises the aggregate (central DP "
        "protects the released models; against the server itself it needs secure aggregation too)"
    ),
}
_MAIN_SCORES = ("ssim", "psnr", "boundary_f1", "lowpass_corr", "amplitude_corr")


def leaked_scores(summary: dict, control: dict | None = None) -> list[str]:
    """Scores in which the attack beats the lab baseline (and, given a `control` run that had no information
    from the client, the control too) by more than two standard errors and 0.02 (one victim: by 0.05)."""

    def beats(adv, sd, n):
        return adv > 0.02 and adv > (2 * sd / np.sqrt(n - 1) if n > 1 else 0.05)

    out = []
    for k in _MAIN_SCORES:
        if "advantage_" + k not in summary:
            continue
        n = summary["n"]
        ok = beats(summary["advantage_" + k], summary["advantage_" + k + "_std"], n)
        if ok and control is not None and k in control:
            sd = np.hypot(summary[k + "_std"], control[k + "_std"])  # independent runs
            ok = beats(summary[k] - control[k], sd, n)
        if ok:
            out.append(k)
    return out


def _style_sections(report: dict) -> list[str]:
    """The report's message-inversion sections, in report order: 'style_inversion' (every method whose
    message is a function of the image alone) and one '<method>_inversion' per method attacked with a
    guessed label (e.g. 'gen_inversion'); 'gradient_inversion' attacks the model delta instead."""
    return [k for k in report if k.endswith("_inversion") and k != "gradient_inversion"]


def _style_attacks(report: dict) -> dict[str, dict]:
    """{client: {method: summary}}: every message-inversion attack (`_style_sections`), side by side."""
    out: dict[str, dict] = {}
    for key in _style_sections(report):
        for client, methods in report.get(key, {}).items():
            out.setdefault(client, {}).update(methods)
    return out


def measured_leaks(report: dict) -> dict[str, list[str]]:
    """{attack / setting: ['client: scores', ...]} from the audit's score tables."""
    out: dict[str, list[str]] = {}
    for client, methods in _style_attacks(report).items():
        for method, s in methods.items():
            if not method.endswith("/control"):
                leaked = leaked_scores(s, methods.get(method + "/control"))
                out.setdefault(f"style statistics ({method})", []).extend(
                    [f"{client}: {'/'.join(leaked)}"] if leaked else []
                )
    for client, batches in report.get("gradient_inversion", {}).items():
        for batch, settings in batches.items():
            for setting, s in settings.items():
                if isinstance(s, dict) and setting != "control":
                    leaked = leaked_scores(s, settings.get("control"))
                    out.setdefault(f"model delta, {batch}, {setting}", []).extend(
                        [f"{client}: {'/'.join(leaked)}"] if leaked else []
                    )
    for lab, r in report.get("property_inference", {}).items():
        for method, targets in r["methods"].items():
            leaked = [t for t, v in targets.items() if v["leaks"]]
            out.setdefault(f"property inference ({method} message)", []).extend(
                [f"{lab}: {'/'.join(leaked)}"] if leaked else []
            )
    return out


def _row(name: str, s: dict, control: dict | None = None) -> str:
    cells = []
    for k in _MAIN_SCORES:
        if k in s:
            cells.append(f"{s[k]:.3f} vs {s['baseline_' + k]:.3f}")
        else:
            cells.append("")
    return (
        f"| {name} | {s['n']} | " + " | ".join(cells) + f" | {', '.join(leaked_scores(s, control)) or '-'} |"
    )


def _property_inference_markdown(results: dict, permutations: int | None = None) -> list[str]:
    methods = sorted({m for r in results.values() for m in r["methods"]})
    first = next(iter(results.values()))
    shuffles = ""
    if permutations:
        shuffles = f", {permutations} times: the smallest possible p is {1 / (permutations + 1):.3g}"
    floats = ", ".join(f"{m} {first['floats'][m]}" for m in methods)
    lines = [
        "",
        "## (c) Property inference: a tile's grain statistics from its message",
        "",
        f"Per lab, {first['tiles']} tiles: leave-one-out ridge regression from one tile's standardised "
        "message to its grain statistics vs the leave-one-out lab mean (what knowing the lab gives). R^2 = "
        "1 - SSE(message) / SSE(lab mean), > 0: the message tells the server more about that tile's "
        "microstructure than the lab does; p: permutation test (targets shuffled over the lab's "
        f"tiles{shuffles}); "
        f"**leaks** = R^2 > 0 and p < 0.05. Message floats: {floats}.",
        "",
        "| lab | target (mean ± std) | " + " | ".join(f"{m} R^2 (p)" for m in methods) + " | leaks in |",
        "|" + "---|" * (len(methods) + 3),
    ]
    for lab, r in results.items():
        for t, stats in r["targets"].items():
            cells = []
            for m in methods:
                v = r["methods"][m][t]
                cell = f"{v['r2']:.3f} ({v['p_value']:.3g})"  # 3 significant digits: 0.0498 is not 0.050
                cells.append(f"**{cell}**" if v["leaks"] else cell)
            leaks = [m for m in methods if r["methods"][m][t]["leaks"]]
            lines.append(
                f"| {lab} | {t} ({stats['mean']:.3g} ± {stats['std']:.2g}) | "
                + " | ".join(cells)
                + f" | {', '.join(leaks) or '-'} |"
            )
    return lines


def report_markdown(report: dict) -> str:
    head = (
        "| attack | n | "
        + " | ".join(f"{k} (recovered vs lab baseline)" for k in _MAIN_SCORES)
        + " | beats baseline in |"
    )
    sep = "|" + "---|" * (len(_MAIN_SCORES) + 3)
    lines = [
        "# Privacy audit",
        "",
        f"Workdir `{report.get('workdir', '')}`, {report.get('seconds', 0):.0f} s. An honest-but-curious server "
        "attacks what clients send; every score is compared with the same score of a random other real image "
        "of the same lab (the baseline). Means over victims; `beats baseline` = the attack's advantage exceeds "
        "two standard errors and that of the `control` run (style: the same attack on the statistics of another "
        "image of the lab, i.e. what the lab's style alone gives; gradients: inverting pure noise with the same "
        "known labels).",
        "",
        "## What is sent",
        "",
    ]
    lines += [f"- **{k}**: {v}" for k, v in report.get("what_is_sent", {}).items()]
    lines += ["", "## What leaks (measured: beats the lab baseline and the control)", ""]
    lines += [f"- {k}: {', '.join(v) or 'nothing'}" for k, v in measured_leaks(report).items()]
    if any(report[k] for k in _style_sections(report)):
        lines += ["", "## (a) Inverting shared style statistics", "", head, sep]
        for client, methods in _style_attacks(report).items():
            for method, s in methods.items():
                lines.append(_row(f"{client} / {method}", s, methods.get(method + "/control")))
    if report.get("gradient_inversion"):
        lines += ["", "## (b) Gradient inversion of a model delta (labels known)", "", head, sep]
        for client, batches in report["gradient_inversion"].items():
            for batch, settings in batches.items():
                control = settings.get("control")
                for setting, s in settings.items():
                    if isinstance(s, dict):
                        lines.append(
                            _row(
                                f"{client} / {batch} / {setting}",
                                s,
                                None if setting == "control" else control,
                            )
                        )
    if report.get("property_inference"):
        lines += _property_inference_markdown(
            report["property_inference"], report.get("settings", {}).get("pi_permutations")
        )
    lines += ["", "## Notes", ""] + [f"- {n}" for n in report.get("notes", [])]
    return "\n".join(lines) + "\n"


def write_report(workdir: str, report: dict) -> None:
    """`workdir/audit.json` and `workdir/audit.md`, each written atomically."""
    from fedtransfer_jax.runtime import io_utils

    io_utils.write_json_atomic(os.path.join(workdir, "audit.json"), report)
    io_utils.write_text_atomic(os.path.join(workdir, "audit.md"), report_markdown(report))
