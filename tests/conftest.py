"""Quiet test output: orbax/tfds log every checkpoint and shard at INFO level through absl."""

import logging as std_logging

from absl import logging

logging.set_verbosity(logging.WARNING)
std_logging.getLogger("absl").setLevel(std_logging.WARNING)


def pytest_configure(config):
    del config
    try:
        import tensorflow_datasets as tfds

        tfds.disable_progress_bar()
    except ImportError:  # the FL engine and its tests do not need tfds
        pass
