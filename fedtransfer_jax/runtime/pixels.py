"""8-bit pixels -> float32 in [0, 1]: one definition for the host and the device.

Tiles are stored 8-bit and trained on as float32 ``k / 255``. Training may decode them on the host (data
loading, style sharing) or inside the jitted step (images kept uint8 on device), and a client's round must
not depend on which: so both read the same table, computed once as ``float32(k) / float32(255)``.
(On device a plain division is not the same: XLA rewrites a division by the constant 255 into a
multiplication by its reciprocal, which is off by an ulp for some k.)
"""

from __future__ import annotations

import numpy as np

UINT8_TO_UNIT = np.arange(256, dtype=np.float32) / np.float32(255.0)
UINT8_TO_UNIT.setflags(write=False)


def decode_uint8(images: np.ndarray) -> np.ndarray:
    """Host decoding: uint8 ``k`` -> float32 ``k / 255`` (bitwise ``k.astype(float32) / float32(255)``);
    an array of any other dtype is returned unchanged (already decoded)."""
    if images.dtype != np.uint8:
        return images
    return UINT8_TO_UNIT[images]


def encode_uint8(x: np.ndarray) -> np.ndarray:
    """float [0, 1] -> uint8 ``k`` with rounding (clipped): how tiles are stored, the inverse of ``decode_uint8``."""
    return np.clip(np.rint(np.asarray(x, np.float32) * np.float32(255.0)), 0, 255).astype(np.uint8)


__all__ = ["UINT8_TO_UNIT", "decode_uint8", "encode_uint8"]
