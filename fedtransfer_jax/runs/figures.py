"""Figures written to the workdir: style grids (every client's image in every other client's style) and
prediction overlays per method. Matplotlib with the Agg backend; files are written atomically."""

from __future__ import annotations

from typing import Callable, Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fedtransfer_jax.runtime import io_utils  # noqa: E402


def _save(fig, path: str) -> None:
    io_utils.save_figure_atomic(fig, path, dpi=110, bbox_inches="tight")


def style_grid(path: str, images: np.ndarray, labels: np.ndarray, names: list[str], restyle: Callable, title: str) -> None:
    """Row i: client i's tile; column j: rendered in client j's style (`restyle(images, labels, target name,
    key)`, e.g. style.checks.method_restyler); the diagonal shows the original. Used when the run has too few
    test tiles for the style checks' own grid (style_protocol.style_checks)."""
    import jax  # noqa: PLC0415

    c = len(names)
    fig, axes = plt.subplots(c, c + 1, figsize=(1.6 * (c + 1), 1.6 * c), squeeze=False)
    for j in range(c):
        styled = np.asarray(restyle(images, labels, names[j], jax.random.PRNGKey(j)))
        for i in range(c):
            axes[i, j + 1].imshow(np.clip(images[i] if i == j else styled[i], 0, 1))
    for i in range(c):
        axes[i, 0].imshow(np.clip(images[i], 0, 1))
        axes[i, 0].set_ylabel(names[i], fontsize=8)
    axes[0, 0].set_title("original", fontsize=8)
    for j in range(c):
        axes[0, j + 1].set_title(f"as {names[j]}", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    _save(fig, path)


def _overlay(image: np.ndarray, boundary: np.ndarray, color=(1.0, 0.1, 0.1)) -> np.ndarray:
    out = np.clip(image, 0, 1).copy()
    out[boundary] = color
    return out


def prediction_overlays(
    path: str, images: np.ndarray, labels: np.ndarray, names: list[str], predictions: Mapping[str, np.ndarray]
) -> None:
    """Rows: one test tile per client; columns: image, ground truth, then each method's prediction."""
    methods = list(predictions)
    c = len(names)
    fig, axes = plt.subplots(c, 2 + len(methods), figsize=(1.7 * (2 + len(methods)), 1.7 * c), squeeze=False)
    for i in range(c):
        axes[i, 0].imshow(np.clip(images[i], 0, 1))
        axes[i, 1].imshow(_overlay(images[i], labels[i] > 0, (0.1, 0.9, 0.1)))
        axes[i, 0].set_ylabel(names[i], fontsize=8)
        for j, m in enumerate(methods):
            axes[i, 2 + j].imshow(_overlay(images[i], predictions[m][i]))
    for j, title in enumerate(["image", "ground truth"] + methods):
        axes[0, j].set_title(title, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    _save(fig, path)


def ari_vs_epsilon(path: str, summary: dict) -> None:
    """Privacy/utility: seen- and unseen-lab ARI of every DP method against its epsilon (log scale), with
    the non-private methods as horizontal reference lines."""
    dp = [(m["differential_privacy"]["epsilon"], n, m) for n, m in summary["methods"].items() if "differential_privacy" in m]
    if not dp:
        return
    dp.sort(key=lambda t: t[0])
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    eps = [e for e, _, _ in dp]
    ax.plot(eps, [m["mean"]["ari"] for _, _, m in dp], "o-", label="DP-FedAvg, seen labs")
    if all("unseen" in m for _, _, m in dp):
        ax.plot(eps, [m["unseen"]["mean"]["ari"] for _, _, m in dp], "s--", label="DP-FedAvg, unseen lab")
    for n, m in summary["methods"].items():
        if "differential_privacy" not in m and n in ("fedavg", "local", "centralized"):
            ax.axhline(m["mean"]["ari"], ls=":", lw=1, color={"fedavg": "k", "local": "tab:red"}.get(n, "tab:gray"), label=f"{n} (no DP), seen")
    ax.set_xscale("log")
    ax.set_xlabel(f"user-level ε (δ = {dp[0][2]['differential_privacy']['delta']:g})")
    ax.set_ylabel("ARI")
    ax.legend(fontsize=7)
    _save(fig, path)


def validation_curves(rows: list[dict], methods: list[str]) -> dict[str, tuple[list[int], list[float]]]:
    """{method: (rounds, validation ARI)} from metrics.jsonl rows with eval='val'; a local method's rows
    (`local/<client>`, each client's model on its own tiles) are averaged over its clients per round."""
    per: dict[str, dict[int, list[float]]] = {}
    for row in rows:
        if row.get("eval") != "val" or "round" not in row:
            continue
        method = str(row["method"]).split("/")[0]
        if method in methods:
            per.setdefault(method, {}).setdefault(int(row["round"]), []).append(float(row["ari"]))
    return {m: (sorted(v), [float(np.mean(v[r])) for r in sorted(v)]) for m, v in per.items()}


def convergence(path: str, rows: list[dict], methods: list[str], chosen: Mapping[str, int] | None = None) -> bool:
    """Validation ARI per round of every method (the convergence figure); `chosen[method]` marks the round
    whose params were scored on test (eval.select). Returns False (and writes nothing) without any row."""
    curves = validation_curves(rows, methods)
    if not curves:
        return False
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    for m in methods:
        if m not in curves:
            continue
        rounds, ari = curves[m]
        (line,) = ax.plot(rounds, ari, "o-", ms=3, lw=1.2, label=m)
        r = (chosen or {}).get(m)
        if r in rounds:
            ax.plot([r], [ari[rounds.index(r)]], "*", ms=10, color=line.get_color())
    ax.set_xlabel("round")
    ax.set_ylabel("validation ARI")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)
    return True
