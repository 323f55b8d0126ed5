"""One train loop that reads a config: trains every method in `config.methods` (runners.py), evaluates,
and writes the workdir contract (summary.json, summary.md, metrics.jsonl, checkpoints/, figures,
trained_grain_size.json: what `predict --scale auto` aims for, runs/grain_size.py).

The pieces: engine.py (assembly from the config), federation.py (the round loop with checkpoint/resume),
runners.py (one runner per method kind), evaluation.py, style_protocol.py (FedTransfer's style sharing).
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections
import numpy as np

from fedtransfer_jax.runtime import console as console_lib, io_utils
from fedtransfer_jax.runs import engine, federation, grain_size, inference, runners, report, style_protocol
from fedtransfer_jax.runtime import distributed, faults, interrupts, provenance, workdir as workdir_lib
from fedtransfer_jax.runs.run_context import Context, build_context


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, console=None, *, fresh_start: bool = False
) -> dict:
    """Trains and evaluates every method of `config.methods` in `workdir` (resuming what is there).

    The workdir is locked for the run, stale temporary files are removed, and a stored config that the
    trained models no longer match is refused (workdir.py; `fresh_start` archives the old outputs).
    `summary.json` is rewritten after every method and at every checkpoint: its `status` is 'running'
    until the last method is done, and `progress.<method>` says how far each method got.

    Several processes (jax.distributed initialized) all call this with the same arguments: they train and
    evaluate alike, and only process 0 writes the workdir's files (workdir, report, runlog, figures).
    """
    engine.validate_config(config)
    config_json = io_utils.config_to_json(config)
    with workdir_lib.open_workdir(workdir, config_json, fresh_start=fresh_start) as info:
        if console is not None and info["archived"]:
            console.line(f"previous outputs moved to {info['archived']}")
        with console_lib.prints_to_log():  # tfds prints 'Downloading and preparing ...' to stdout
            ctx = build_context(config, workdir, console=console)
        # What `predict --scale auto` aims for (runs/grain_size.py); after the data loaded, so a run stopped by
        # bad data leaves no grain size behind.
        if distributed.is_primary():
            grain_size.record_from_config(workdir, config)
        summary = {
            "status": "running",
            "methods": {},
            "progress": {name: {"status": "pending"} for name in config.methods},
            "config": config_json,
            "clients": list(ctx.data.client_names),
            "unseen_clients": list(ctx.data.unseen),
            "device": f"{jax.default_backend()}:{jax.device_count()}",
        }
        if distributed.is_multiprocess():
            summary["processes"] = distributed.process_count()
        record_provenance(workdir, summary, config, console)

        def on_checkpoint(tag: str, round_: int, rounds: int) -> None:
            method = tag.split("/")[0]
            if method.endswith("_style_net"):
                method = method[: -len("_style_net")]
            if method in summary["progress"]:
                summary["progress"][method] = {
                    "status": "running",
                    "federation": tag,
                    "checkpoint_round": round_,
                    "rounds": rounds,
                }
                report.write_summary(workdir, summary)

        ctx.on_checkpoint = on_checkpoint
        try:
            for name in config.methods:
                federation.POSITION.clear()
                federation.POSITION["method"] = name
                result = runners.run_method(ctx, name)
                interrupts.check()  # a Ctrl-C swallowed while it scored: not recorded as complete
                result["augmentation"] = engine.augmentation_summary(config)  # every method alike
                summary["methods"][name] = result
                summary["progress"][name] = {"status": "complete", "rounds": int(config.fl.rounds)}
                if console is not None:
                    console.method_done(name, result)
                # Written after every method, atomically: a crash leaves the last complete summary.
                report.write_summary(workdir, summary)
                faults.crash_point(f"method_done:{name}")
            floor = runners.untrained_whole_images(ctx)  # what the whole-image endpoint gives without training
            if floor is not None:
                summary["whole_images_untrained"] = floor
            if ctx.style_artifacts and distributed.is_primary():  # local work only: no collective
                style_protocol.style_checks(ctx, summary)
                report.write_summary(workdir, summary)
            if config.get("figures", True) and distributed.is_primary():  # local work only: no collective
                write_figures(ctx)
            interrupts.check()
            summary["status"] = "complete"
            report.write_summary(workdir, summary)
        finally:
            ctx.log.close()
    return summary


def record_provenance(workdir: str, summary: dict, config, console=None) -> None:
    """Appends this start to `<workdir>/provenance.jsonl` (process 0, before this start trains anything)
    and puts every start into the summary; says so when this start runs on other code, libraries, devices
    or round mapping than an earlier one (or an earlier one went unrecorded)."""
    device_kind = jax.devices()[0].device_kind
    # A failed write fails every process, not a hang.
    entry = distributed.on_primary(lambda: provenance.record(workdir, summary["device"], device_kind, config))
    if entry is None:
        return
    summary["provenance"] = entry
    if entry["differs"] and console is not None:
        console.line(f"note: {provenance.describe(entry['differs'])}")


def write_figures(ctx: Context) -> None:
    """Prediction overlays (one test tile per client, every method), the validation curves
    (convergence.png) and, with DP methods, the privacy/utility curve; the style grids come with the style checks (style_protocol.style_checks)."""
    from fedtransfer_jax.runs import figures  # matplotlib only when figures are wanted

    names = list(ctx.data.client_names)
    first = lambda split: (
        np.stack([split[n][0][0] for n in names]),
        np.stack([split[n][1][0] for n in names]),
    )
    images, labels = first(ctx.data.test)
    summary_path = os.path.join(ctx.workdir, "summary.json")
    if os.path.exists(summary_path):
        with open(summary_path) as f:
            summary = json.load(f)
        figures.ari_vs_epsilon(os.path.join(ctx.workdir, "ari_vs_epsilon.png"), summary)
        # Validation ARI per round of every method (metrics.jsonl rows eval='val'); a star marks the chosen round.
        chosen = {
            m: s["model_selection"]["chosen_round"]
            for m, s in summary.get("methods", {}).items()
            if isinstance(s.get("model_selection", {}).get("chosen_round"), int)
        }
        figures.convergence(os.path.join(ctx.workdir, "convergence.png"), ctx.log.rows(), list(ctx.config.methods), chosen)
    threshold = float(ctx.config.eval.threshold)
    preds = {}
    for method, params in ctx.final_params.items():
        if engine.method_spec(ctx.config, method).kind == "local":  # each client's own model on its own tile
            probs = [inference.batched_probs(ctx.prob_fn, params[n], images[i : i + 1])[0] for i, n in enumerate(names)]
            preds[method] = np.stack(probs) > threshold
        else:
            preds[method] = inference.batched_probs(ctx.prob_fn, params, images) > threshold
    figures.prediction_overlays(os.path.join(ctx.workdir, "predictions.png"), images, labels, names, preds)
