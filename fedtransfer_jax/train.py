"""One train loop that reads a config: trains every method in `config.methods` (methods.py), evaluates,
and writes the workdir contract (summary.json, summary.md, metrics.jsonl, checkpoints/, figures).

The pieces: engine.py (assembly from the config), federation.py (the round loop with checkpoint/resume),
methods.py (one runner per method kind), evaluation.py, style_protocol.py (FedTransfer's style sharing).
"""

from __future__ import annotations

import os

import jax
import ml_collections
import numpy as np

from fedtransfer_jax import engine, inference, io_utils, methods
from fedtransfer_jax.run_context import Context, build_context


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, console=None) -> dict:
    engine.validate_config(config)
    os.makedirs(workdir, exist_ok=True)
    io_utils.write_json_atomic(os.path.join(workdir, "config.json"), io_utils.config_to_json(config))
    ctx = build_context(config, workdir, console=console)
    summary = {
        "methods": {},
        "config": io_utils.config_to_json(config),
        "clients": list(ctx.data.client_names),
        "unseen_clients": list(ctx.data.unseen),
        "device": f"{jax.default_backend()}:{jax.device_count()}",
    }
    try:
        for name in config.methods:
            summary["methods"][name] = methods.run_method(ctx, name)
            if console is not None:
                console.method_done(name, summary["methods"][name])
            # Written after every method, atomically: a crash leaves the last complete summary.
            io_utils.write_summary(workdir, summary)
        if config.get("figures", True):
            write_figures(ctx)
    finally:
        ctx.log.close()
    return summary


def write_figures(ctx: Context) -> None:
    """Style grids for each style-sharing method and prediction overlays (one test tile per client)."""
    from fedtransfer_jax import figures  # matplotlib only when figures are wanted

    names = list(ctx.data.client_names)
    first = lambda split: (
        np.stack([split[n][0][0] for n in names]),
        np.stack([split[n][1][0] for n in names]),
    )
    images, labels = first(ctx.data.test)
    for method, art in ctx.style_artifacts.items():
        figures.style_grid(
            os.path.join(ctx.workdir, f"style_grid_{method}.png"),
            images,
            names,
            art["mode"],
            art["render"],
            art["bank"],
        )
    threshold = float(ctx.config.eval.threshold)
    preds = {}
    for method, params in ctx.final_params.items():
        if engine.method_spec(ctx.config, method).kind == "local":  # each client's own model on its own tile
            probs = [inference.batched_probs(ctx.prob_fn, params[n], images[i : i + 1])[0] for i, n in enumerate(names)]
            preds[method] = np.stack(probs) > threshold
        else:
            preds[method] = inference.batched_probs(ctx.prob_fn, params, images) > threshold
    figures.prediction_overlays(os.path.join(ctx.workdir, "predictions.png"), images, labels, names, preds)
