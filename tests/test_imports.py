"""The FL engine and the benchmarks import without tensorflow-datasets and ml_collections (the GPU
machine's image has neither); only the data builders and launch configs need them."""

import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import builtins, importlib, importlib.util, sys
    real = builtins.__import__
    def guard(name, *args, **kwargs):
        if name.split(".")[0] in ("ml_collections", "tensorflow_datasets"):
            raise ImportError(f"blocked import of {name}")
        return real(name, *args, **kwargs)
    builtins.__import__ = guard
    sys.path[:0] = [REPO]
    for m in ("fedtransfer_jax.fl.federated_round", "fedtransfer_jax.fl.algorithms", "fedtransfer_jax.models",
              "fedtransfer_jax.style", "fedtransfer_jax.metrics", "fedtransfer_jax.fl.strategy",
              "benchmarks.common", "benchmarks.round_speed", "benchmarks.matmul_peak", "benchmarks.roofline",
              "benchmarks.gpu_summary", "experiments.scaling"):
        importlib.import_module(m)
    print("OK")
""").replace("REPO", repr(REPO))


def test_engine_and_benchmarks_import_without_tfds_and_ml_collections():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("OK")
