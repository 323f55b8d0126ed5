"""Quiet test output: orbax/tfds log every checkpoint and shard at INFO level through absl.

One persistent XLA compilation cache for the whole pytest session (this process, its pytest-xdist workers
and every `launch.py` or `python -c` they start, which all inherit the environment set here): the tests train the same `:tiny` programs many times
over (every resume test launches the same config again and again), and on the 2-core CPU most of a tiny run
is compilation. A cache hit loads the executable XLA compiled earlier in the session, so results stay bit
for bit the same (checked: summaries and params of cached and uncached runs are equal). The cache lives in a
temporary folder removed when the session ends (nothing in the user's home). Opt out with
FEDTRANSFER_TEST_COMPILATION_CACHE=0; a JAX_COMPILATION_CACHE_DIR already set is used as it is.
"""

import logging as std_logging
import os
import shutil
import sys
import tempfile

from absl import logging

logging.set_verbosity(logging.WARNING)
std_logging.getLogger("absl").setLevel(std_logging.WARNING)

CACHE_OPT_OUT = "FEDTRANSFER_TEST_COMPILATION_CACHE"
_session_cache_dir = None


def _enable_session_compilation_cache() -> None:
    global _session_cache_dir
    if os.environ.get(CACHE_OPT_OUT, "1") == "0" or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    _session_cache_dir = tempfile.mkdtemp(prefix="fedtransfer-pytest-jax-cache-")
    settings = {
        "JAX_COMPILATION_CACHE_DIR": _session_cache_dir,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",  # the tiny programs compile in well under 1 s
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
    os.environ.update(settings)  # read by jax when it is imported, here and in every subprocess
    if "jax" in sys.modules:  # imported already (by a plugin): set it on the live config too
        import jax  # noqa: PLC0415

        jax.config.update("jax_compilation_cache_dir", _session_cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_configure(config):
    del config
    _enable_session_compilation_cache()
    try:
        import tensorflow_datasets as tfds

        tfds.disable_progress_bar()
    except ImportError:  # the FL engine and its tests do not need tfds
        pass


def pytest_unconfigure(config):
    del config
    if _session_cache_dir:
        shutil.rmtree(_session_cache_dir, ignore_errors=True)
