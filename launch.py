r"""Runs an experiment config: trains every method, evaluates, writes the workdir contract.

  python launch.py --config experiments/grains.py:smoke --workdir /tmp/smoke
  python launch.py --config experiments/grains.py --config.fl.rounds=40 --workdir runs/grains

Overrides (`--config.x=y`) of keys that the config does not define are rejected by ml_collections.
Re-running with the same --workdir resumes every method from its latest checkpoint.
On a multi-host TPU pod / GPU cluster set `--config.distributed=True` (calls jax.distributed.initialize()).
"""

import os

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (path[:variant]).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (default: runs/<config.name>).")
flags.mark_flags_as_required(["config"])


def main(argv):
    del argv
    config = _CONFIG.value
    if config.get("distributed", False):
        import jax

        jax.distributed.initialize()  # Multi-controller JAX: coordinator/process ids from the cluster env.
    from fedtransfer_jax import train  # after distributed init: no JAX backend touched before it

    workdir = _WORKDIR.value or os.path.join("runs", config.get("name", "experiment"))
    logging.info("workdir: %s", workdir)
    train.train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "summary.md")) as f:
        print(f.read())


if __name__ == "__main__":
    app.run(main)
