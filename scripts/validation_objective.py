"""A trained model's validation objective, re-scored by today's code: the number the project's shipping rule
compares (summary.json `methods.<m>.postprocessed.validation_objective.chosen`), computed as the training run
computes it (runs/evaluation.choose_postprocessing on every client's validation tiles), for a model whose
run is gone or was scored by older code.

  cd scripts && PYTHONPATH=.. python validation_objective.py --config ../experiments/pretrained.py:cpu_cycle2 \
      --tfds_dir /tmp/tfds_pre [--workdir W] [--method gen_random_style]

Without --workdir, the model shipped with the package. The data come from the config (its tfds cache is
built if missing: minutes for the pretrained configs). Prints the objective and the chosen settings.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile

from fedtransfer_jax.data.clients import load_federated_data
from fedtransfer_jax.runs import engine, evaluation, inference


def load_config(spec: str):
    path, _, variant = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(variant or None)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--tfds_dir", required=True)
    parser.add_argument("--workdir", default="", help="default: the shipped model")
    parser.add_argument("--method", default="gen_random_style")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    config.data.tfds_dir = args.tfds_dir
    with tempfile.TemporaryDirectory() as scratch:
        data = load_federated_data(config.data, scratch)
    workdir = args.workdir or inference.shipped_workdir()
    params = inference.load_model(workdir, args.method).params
    prob_fn = inference.make_prob_fn(engine.build_model(config))
    choice = evaluation.choose_postprocessing(
        prob_fn, lambda c: params, data.val, tolerance=float(config.eval.tolerance)
    )
    print(json.dumps({"workdir": workdir, "method": args.method, "objective": choice["objective"],
                      "settings": choice["settings"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
