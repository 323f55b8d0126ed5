"""Host loop that maps a jitted function over any number of rows in batches of one fixed size.

A jitted function compiles once per input shape, so feeding it "the rest" of a data set as a smaller last
batch costs a second compilation (seconds on a U-Net) for every distinct remainder. ``map_in_batches``
pads the last batch up to ``batch_size`` and strips the padded rows from the output, so any N runs on one
compiled program. Inference, the style checks' judges and descriptors, and host-side style rendering all
go through it.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np

# "zeros": all-zero rows. "first": copies of the batch's first row, a real example rather than a blank tile
# (style rendering, descriptors). The padded rows are dropped either way, so the choice can only matter to
# a function whose rows interact; each caller keeps the padding it was written and checked with.
PAD_MODES = ("zeros", "first")


def pad_rows(a: np.ndarray, size: int, pad: str = "zeros") -> np.ndarray:
    """``a [m, ...]`` padded along the leading axis to ``[size, ...]`` with ``pad`` rows (``PAD_MODES``)."""
    if pad == "zeros":
        fill = np.zeros((size - len(a),) + a.shape[1:], a.dtype)
    elif pad == "first":
        fill = np.repeat(a[:1], size - len(a), axis=0)
    else:
        raise ValueError(f"pad_rows: unknown pad {pad!r}; choose from {PAD_MODES}")
    return np.concatenate([a, fill])


def map_in_batches(
    fn: Callable[..., Any], arrays: Sequence[Any], batch_size: int, *, pad: str = "zeros"
) -> Any:
    """``fn(*chunks)`` over the leading axis of ``arrays`` (same length N >= 1) in batches of exactly
    ``batch_size`` rows, the last one padded (``pad_rows``) so ``fn`` sees one shape and compiles once.

    ``fn`` gets numpy chunks and returns an array, or a pytree of arrays, with a leading batch axis; the
    result is the same structure of numpy arrays with the N real rows, in order.
    """
    if pad not in PAD_MODES:
        raise ValueError(f"map_in_batches: unknown pad {pad!r}; choose from {PAD_MODES}")
    n = len(arrays[0])
    if n == 0:
        # The output's shape is only known by calling fn; callers with an empty-input answer handle it.
        raise ValueError("map_in_batches: no rows to map")
    outs = []
    for s in range(0, n, batch_size):
        chunk = [np.asarray(a[s : s + batch_size]) for a in arrays]
        m = len(chunk[0])
        if m < batch_size:
            chunk = [pad_rows(a, batch_size, pad) for a in chunk]
        outs.append(jax.tree_util.tree_map(lambda y: np.asarray(y)[:m], fn(*chunk)))
    return jax.tree_util.tree_map(lambda *ys: np.concatenate(ys), *outs)


__all__ = ["PAD_MODES", "pad_rows", "map_in_batches"]
