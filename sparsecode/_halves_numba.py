"""16-bit storage of Gram rows, read in float32 by the kernels (Numba).

NumPy has float16 but no bfloat16, and Numba takes neither as an array type, so 16-bit
rows reach the kernels as their bit patterns: ``uint16`` holds float16 bits, ``int16``
holds bfloat16 bits.  :func:`wide` reads one entry of any row as a float: the value
itself for float32/float64 rows (no cost: the kernels compile one version per row type),
a float16 or bfloat16 widened to float32 (exact) for 16-bit rows.  :func:`narrow` writes
float32 values into either 16-bit form, rounding to nearest even; :func:`entry` writes
one value into float16 bits in jitted code.
"""

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

#: Storage types: the name a user gives, the array dtype that holds it.
STORAGE = {"float16": np.dtype(np.uint16), "bfloat16": np.dtype(np.int16)}


@intrinsic
def _half_to_float(typingctx, v):
    sig = types.float32(types.uint16)

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return sig, codegen


@intrinsic
def _bf16_to_float(typingctx, v):
    sig = types.float32(types.int16)

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        bits = builder.shl(builder.zext(args[0], i32), ir.Constant(i32, 16))
        return builder.bitcast(bits, ir.FloatType())

    return sig, codegen


def wide(v):
    """The float value of one stored Gram entry (jitted code only)."""
    raise NotImplementedError


@overload(wide, inline="always")
def _wide(v):
    if isinstance(v, types.Float):
        return lambda v: v
    if v == types.uint16:
        return lambda v: _half_to_float(v)
    if v == types.int16:
        return lambda v: _bf16_to_float(v)
    return None


@intrinsic
def _to_half(typingctx, v):
    sig = types.uint16(v)

    def codegen(context, builder, signature, args):
        # one rounding to nearest even from float32 or float64, as NumPy's astype
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))

    return sig, codegen


def entry(v, G):
    """``v`` (float32 or float64) as an entry of the array ``G``: itself for float
    arrays, its float16 bits, rounded to nearest even, for ``uint16`` arrays (jitted code
    only)."""
    raise NotImplementedError


@overload(entry, inline="always")
def _entry(v, G):
    if isinstance(G.dtype, types.Float):
        return lambda v, G: v
    if G.dtype == types.uint16:
        return lambda v, G: _to_half(v)
    return None


def narrow(values, storage):
    """``values`` (float32 or float64 array) as the bits of ``storage`` ("float16" or
    "bfloat16"), rounded to the nearest representable value (ties to even)."""
    if storage == "float16":
        return values.astype(np.float16).view(np.uint16)
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))
    return (rounded >> np.uint32(16)).astype(np.uint16).view(np.int16)


def widen(bits):
    """float32 values of 16-bit rows stored by :func:`narrow` (NumPy; for tests and
    checks)."""
    if bits.dtype == np.uint16:
        return bits.view(np.float16).astype(np.float32)
    return (bits.view(np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)
