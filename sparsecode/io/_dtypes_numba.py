"""The bfloat16 widening kernel (one parallel pass)."""

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def widen_bfloat16(u16, bits):
    """``bits[i] = u16[i] << 16``: bfloat16 bit patterns to float32 bit patterns.

    Parameters
    ----------
    u16 : ndarray of shape (n,), uint16
    bits : ndarray of shape (n,), uint32
        Output (the uint32 view of a float32 array).
    """
    for i in prange(u16.shape[0]):
        bits[i] = np.uint32(u16[i]) << np.uint32(16)
