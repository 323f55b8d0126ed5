r"""Sim-to-real: how do models trained only on synthetic labs segment real tint-etched micrographs?

  python scripts/sim_to_real.py --workdir runs/grains --data_dir ../shared/data/tbm_tint_etched

Evaluates every method's model in a workdir of the default run (`python launch.py --config
experiments/grains.py`, which never sees real data) on every labelled crop of the real folder
(`DIR/images` + `DIR/labels`; all 80 TBM crops) with `fedtransfer_jax.evaluate.evaluate_folder` (tiled
sliding window, the config's threshold). Method 'local' has one model per client: its row is the mean
over the client models (each one's own numbers are kept under `per_client`). Prints a table and writes
`<workdir>/sim_to_real.json` atomically:

  {"data_dir": ..., "n_images": 80, "methods": {"<method>": {"mean": {metrics}, "mean_raw": {...},
   "per_client": {...}?}}}

`mean_raw` is the thresholded probability map (as in the workdir summaries, what the table shows);
`mean` is after evaluate's post-processing (built-in defaults: a model trained on synthetic labs has no
choice made on this lab's tiles).

Cost: one pass over the crops per model (seconds per model on a 2-core CPU at 64 px tiles).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence

from fedtransfer_jax.runs import inference
from fedtransfer_jax.runtime import io_utils
from fedtransfer_jax.runs import engine

TABLE_KEYS = ("boundary_f1", "ari", "vi", "grain_count_rel_error", "miou")


def workdir_methods(workdir: str) -> list[str]:
    """The run's segmentation methods (config.json's `methods`, in order) that have checkpoints (auxiliary
    checkpoints such as ``<method>_style_net`` are not segmenters and are skipped)."""
    base = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(base):
        raise FileNotFoundError(f"{base} not found: is {workdir!r} a workdir written by launch.py?")
    have = {d for d in os.listdir(base) if os.path.isdir(os.path.join(base, d))}
    if not have:
        raise FileNotFoundError(f"no method checkpoints under {base}")
    return [m for m in inference.config_from_workdir(workdir).methods if m in have]


def is_local(workdir: str, method: str) -> bool:
    return engine.method_spec(inference.config_from_workdir(workdir), method).kind == "local"


def local_clients(workdir: str) -> list[str]:
    """Client names that have a local model (``checkpoints/local/<client>``)."""
    base = os.path.join(workdir, "checkpoints", "local")
    return sorted(d for d in os.listdir(base) if os.path.isdir(os.path.join(base, d)))


def mean_metrics(rows: Sequence[dict]) -> dict:
    """Key-wise mean of metric dicts over models (keys every row has, numbers only)."""
    keys = [k for k in rows[0] if all(k in r for r in rows) and isinstance(rows[0][k], (int, float))]
    return {k: float(sum(float(r[k]) for r in rows) / len(rows)) for k in keys}


def evaluate_workdir(
    workdir: str,
    data_dir: str,
    *,
    invert_labels: bool = False,
    load: Callable = inference.load_model,
    evaluate: Callable | None = None,
) -> dict:
    """Every method's mean metrics on ``data_dir`` ('local': mean over its client models).

    ``load``/``evaluate`` default to ``inference.load_model`` and ``evaluate.evaluate_folder``; they are
    parameters so tests can run the aggregation logic without a trained workdir. The evaluate module is
    imported lazily: it defines absl flags (``--workdir``...) at import, which would clash with
    ``fedtransfer_jax.predict``'s in one process (a pytest session).
    """
    if evaluate is None:
        from fedtransfer_jax.evaluate import evaluate_folder as evaluate
    methods: dict[str, dict] = {}
    n_images = 0
    for method in workdir_methods(workdir):
        if is_local(workdir, method):
            per_client, per_client_raw = {}, {}
            for client in local_clients(workdir):
                res = evaluate(load(workdir, method, client), data_dir, invert_labels=invert_labels)
                per_client[client] = res["mean"]
                per_client_raw[client] = res.get("mean_raw", res["mean"])
                n_images = res["n_images"]
            if not per_client:
                raise FileNotFoundError(f"checkpoints/local in {workdir} holds no client models")
            methods[method] = {
                "mean": mean_metrics(list(per_client.values())),
                "mean_raw": mean_metrics(list(per_client_raw.values())),
                "per_client": per_client,
                "per_client_raw": per_client_raw,
            }
        else:
            res = evaluate(load(workdir, method), data_dir, invert_labels=invert_labels)
            methods[method] = {"mean": res["mean"], "mean_raw": res.get("mean_raw", res["mean"])}
            n_images = res["n_images"]
    return {
        "workdir": os.path.abspath(workdir),
        "data_dir": os.path.abspath(data_dir),
        "n_images": n_images,
        "methods": methods,
    }


def format_table(result: dict, keys: Sequence[str] = TABLE_KEYS) -> str:
    """Markdown table: one row per method, the mean metrics as columns (missing -> 'n/a')."""
    lines = ["| method | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for method, m in result["methods"].items():
        row = m.get("mean_raw", m["mean"])
        cells = [f"{row[k]:.3f}" if isinstance(row.get(k), (int, float)) else "n/a" for k in keys]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command line (argparse, not absl flags: see ``evaluate_workdir``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--workdir", required=True, help="Workdir of `launch.py --config experiments/grains.py`."
    )
    parser.add_argument("--data_dir", required=True, help="Real labelled folder (images/ + labels/).")
    parser.add_argument(
        "--invert_labels", action="store_true", help="Labels mark boundaries with 0, not 255."
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    result = evaluate_workdir(args.workdir, args.data_dir, invert_labels=args.invert_labels)
    out = os.path.join(args.workdir, "sim_to_real.json")
    io_utils.write_json_atomic(out, result)
    print(
        f"Sim-to-real on {result['data_dir']} ({result['n_images']} images; local = mean over client models)\n"
    )
    print(format_table(result))
    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    main()
