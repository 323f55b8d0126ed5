"""Shared toy data of the privacy-audit tests: a brightfield lab of six 16 px images."""

import jax
import pytest

from fedtransfer_jax.data.synthetic import make_lab_examples

SEED = 0


def _key(*path):
    k = jax.random.PRNGKey(SEED)
    for p in path:
        k = jax.random.fold_in(k, p)
    return k


@pytest.fixture(scope="module")
def lab16():
    images, labels, _ = make_lab_examples("brightfield", 6, 16, SEED)
    return images, labels
