"""batching.map_in_batches: padding stripped, row order kept, one compilation for ragged sizes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedtransfer_jax.data.batching import map_in_batches, pad_rows


def test_pad_rows_modes():
    a = np.arange(6, dtype=np.float32).reshape(2, 3) + 1
    np.testing.assert_array_equal(pad_rows(a, 4), np.concatenate([a, np.zeros((2, 3), np.float32)]))
    np.testing.assert_array_equal(pad_rows(a, 4, "first"), a[[0, 1, 0, 0]])
    with pytest.raises(ValueError):
        pad_rows(a, 4, "edge")


@pytest.mark.parametrize("pad", ["zeros", "first"])
def test_rows_in_order_padding_stripped_one_compilation(pad):
    traces = []

    @jax.jit
    def fn(x, w):
        traces.append(x.shape)  # runs once per compilation
        return x.sum(-1) * w

    for n in (1, 5, 8, 13, 16):
        x = np.arange(3 * n, dtype=np.float32).reshape(n, 3)  # small integers: exact in any order
        w = np.arange(n, dtype=np.float32) - 2
        out = map_in_batches(fn, [x, w], 8, pad=pad)
        assert out.shape == (n,) and out.dtype == np.float32
        np.testing.assert_array_equal(out, x.sum(-1) * w)  # every real row, in order, no padding
    assert traces == [(8, 3)]  # ragged sizes 1, 5, 13: one compiled shape


def test_pytree_output_and_empty_input():
    x = np.arange(10, dtype=np.float32)
    out = map_in_batches(lambda a: {"id": a, "sq": jnp.square(a)}, [x], 4)
    np.testing.assert_array_equal(out["id"], x)
    np.testing.assert_array_equal(out["sq"], x**2)
    with pytest.raises(ValueError):
        map_in_batches(lambda a: a, [x[:0]], 4)
