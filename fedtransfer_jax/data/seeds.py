"""Seeds that several parts of the project must derive identically, defined once.

The privacy audit regenerates a finished run's client data and style model instead of reading them (the
workdir stores neither), so it must derive the very seeds the data builder and the trainer used. Keeping
them here, away from ``tfds_builders`` (which imports tensorflow-datasets), lets the audit do so without
tfds installed.
"""

from __future__ import annotations

import zlib

import numpy as np

# fold_in tag of the shared style model's init key: ``fold_in(PRNGKey(config.seed), STYLE_MODEL_INIT_TAG)``
# in the trainer (style_protocol.py), the standalone style protocol (style/federated.py) and the audit.
STYLE_MODEL_INIT_TAG = 0x57


def lab_seed(seed: int, lab: str, split: str) -> int:
    """Per-(lab, split) integer seed of a synthetic lab's examples; keyed by names (not positions) so that
    adding a lab or a split never changes another one's data."""
    rng = np.random.default_rng([seed, zlib.crc32(lab.encode()), zlib.crc32(split.encode())])
    return int(rng.integers(0, 2**31 - 1))
