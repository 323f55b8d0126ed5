r"""Export a trained model as the package's shipped model (what `predict` uses without --workdir).

  python -m fedtransfer_jax.export_model --workdir runs/pretrained --method gen_random_style
  python -m fedtransfer_jax.export_model --workdir W --method fedavg --dest /tmp/my_model   # elsewhere

Writes a minimal workdir (config.json, the method's params, its post-processing choice, its trained grain
size, shipped.json) to `--dest` (default fedtransfer_jax/pretrained/grains, the shipped model's folder),
which must not exist: nothing is overwritten. The params are those the run scored (the validation-chosen
ones where it chose). Exit status 2 with one line on a bad flag, a missing workdir or method, an existing
destination. docs/MODEL.md describes the shipped model.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from absl import app, flags, logging

from fedtransfer_jax import predict
from fedtransfer_jax.runs import inference

EXIT_OK, EXIT_USAGE = 0, predict.EXIT_USAGE


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "Workdir of the launch.py run to export from.", required=True)
    flags.DEFINE_string("method", None, "Method to export (default: the workdir's best by validation).")
    flags.DEFINE_string(
        "dest", os.path.join(inference.SHIPPED_ROOT, inference.SHIPPED_DEFAULT), "New folder to write."
    )
    flags.DEFINE_string("note", "", "Free text kept in shipped.json (e.g. the command that trained it).")


def run(workdir: str, method: str | None, dest: str, note: str = "") -> int:
    try:
        if not os.path.isdir(workdir):
            raise FileNotFoundError(f"--workdir {workdir} is not a folder")
        if not method:
            method, _ = inference.choose_default_method(workdir)
        manifest = inference.export_model(workdir, method, dest, note=note)
    except (ValueError, OSError) as e:
        print(f"export_model: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("export_model: interrupted; nothing was written", file=sys.stderr)
        return 130
    print(f"exported {manifest['method']} (round {manifest['round']} of {manifest['rounds']}, {manifest['selection']}) to {dest}")
    return EXIT_OK


def main(argv: Sequence[str]) -> int:
    del argv
    logging.set_verbosity(logging.WARNING)
    f = flags.FLAGS
    return run(f.workdir, f.method, f.dest, f.note)


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=predict.flags_parser("export_model"))
