"""The element types of activation datasets, and bfloat16 without a bfloat16 type:
bit patterns in uint16 (``attrs["dtype"] = "bfloat16"``), widened to float32 exactly."""

import numpy as np

from sparsecode.io._h5 import FileFormatError

#: Arrays of at least this many values are widened by a parallel kernel (one pass, every
#: thread) rather than by two NumPy passes.
PARALLEL_WIDEN = 1 << 20

#: dtypes an activation dataset may have (bfloat16: uint16 + ``attrs["dtype"]``).
SOURCE_DTYPES = ("float16", "float32", "float64", "bfloat16")


def source_dtype(ds):
    """str: the element type of an activation dataset, one of :data:`SOURCE_DTYPES`.

    Parameters
    ----------
    ds : h5py.Dataset

    Raises
    ------
    FileFormatError
        Any other type.
    """
    tag = ds.attrs.get("dtype")
    tag = tag.decode() if isinstance(tag, bytes) else tag
    if tag == "bfloat16":
        if ds.dtype != np.uint16:
            raise FileFormatError(
                f"{ds.file.filename}:{ds.name} is tagged bfloat16 but stored as {ds.dtype}, "
                "not uint16"
            )
        return "bfloat16"
    if ds.dtype.kind == "f" and ds.dtype.name in SOURCE_DTYPES:
        return ds.dtype.name
    raise FileFormatError(
        f"{ds.file.filename}:{ds.name} has dtype {ds.dtype}; activations must be float16, "
        "float32, float64, or bfloat16 (uint16 with attrs['dtype'] = 'bfloat16')"
    )


def bfloat16_to_float32(u16, out=None):
    """Widen bfloat16 bit patterns to float32 (exact).

    Parameters
    ----------
    u16 : ndarray of uint16
    out : ndarray of float32, optional
        Same shape as ``u16``.

    Returns
    -------
    ndarray of float32
    """
    if out is None:
        out = np.empty(u16.shape, np.float32)
    if u16.size >= PARALLEL_WIDEN and u16.flags.c_contiguous and out.flags.c_contiguous:
        from sparsecode.io._dtypes_numba import widen_bfloat16

        widen_bfloat16(u16.reshape(-1), out.reshape(-1).view(np.uint32))
        return out
    bits = out.view(np.uint32)
    bits[...] = u16
    bits <<= 16
    return out


def float32_to_bfloat16(x):
    """Round float32 values to bfloat16 (nearest, ties to even), as uint16 bit patterns.

    Parameters
    ----------
    x : ndarray of float32

    Returns
    -------
    ndarray of uint16
    """
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (u + (np.uint32(0x7FFF) + ((u >> 16) & 1))) >> 16
    nan = np.isnan(x)
    if nan.any():
        rounded[nan] = 0x7FC0
    return rounded.astype(np.uint16)
