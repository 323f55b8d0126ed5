"""data.pixels: host and device decode every 8-bit value to the same float32 as u8 / float32(255)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from fedtransfer_jax.runtime.pixels import decode_uint8
from fedtransfer_jax.fl.algorithms.base import decode_images


def test_host_and_device_decode_bitwise_equal_to_division():
    k = np.arange(256, dtype=np.uint8).reshape(16, 16)
    want = k.astype(np.float32) / np.float32(255.0)
    host = decode_uint8(k)
    assert host.dtype == np.float32 and host.shape == k.shape
    assert host.tobytes() == want.tobytes()
    assert np.asarray(decode_images(jnp.asarray(k))).tobytes() == want.tobytes()


def test_decoded_images_pass_through():
    x = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    assert decode_uint8(x) is x
