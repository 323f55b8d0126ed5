"""The style grid: every target lab's tile rendered in every target style, for a person to judge.

Numbers can be gamed or can miss what an eye sees at once (seams, a wrong polarity, washed-out grains), so
every run also writes this picture. matplotlib is imported only when a grid is drawn.
"""

from __future__ import annotations

import jax
import numpy as np

from fedtransfer_jax.runtime import io_utils
from fedtransfer_jax.style.checks.context import _TAG_GRID, CheckContext, Restyler


def style_grid_figure(
    path: str, ctx: CheckContext, restyle: Restyler, seed: int, title: str = "", n_real: int = 2
) -> None:
    """Rows: each target lab's query tile (column 0 = original) rendered in every target style; the last
    ``n_real`` rows show real tiles of each target lab for comparison. Written atomically (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labs = ctx.targets
    key = jax.random.fold_in(jax.random.PRNGKey(seed), _TAG_GRID)
    rows = len(labs) + n_real
    fig, axes = plt.subplots(rows, len(labs) + 1, figsize=(1.5 * (len(labs) + 1), 1.5 * rows), squeeze=False)
    for i, src in enumerate(labs):
        x, y = ctx.query[src][0][:1], ctx.query[src][1][:1]
        axes[i, 0].imshow(np.clip(x[0], 0, 1))
        axes[i, 0].set_ylabel(src, fontsize=7)
        for j, tgt in enumerate(labs):
            img = x[0] if i == j else np.asarray(restyle(x, y, tgt, jax.random.fold_in(key, i * 100 + j)))[0]
            axes[i, j + 1].imshow(np.clip(img, 0, 1))
    for r in range(n_real):
        axes[len(labs) + r, 0].set_ylabel(f"real #{r + 1}", fontsize=7)
        axes[len(labs) + r, 0].axis("off")
        for j, tgt in enumerate(labs):
            axes[len(labs) + r, j + 1].imshow(np.clip(ctx.reference[tgt][0][r], 0, 1))
    axes[0, 0].set_title("original", fontsize=7)
    for j, tgt in enumerate(labs):
        axes[0, j + 1].set_title(f"as {tgt}", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        title or "rows: source tile; columns: target style; bottom rows: real target tiles", fontsize=8
    )
    io_utils.save_figure_atomic(fig, path, dpi=100, bbox_inches="tight")


__all__ = ["style_grid_figure"]
