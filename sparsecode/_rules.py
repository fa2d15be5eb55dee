"""Constants shared by the kernels and their callers (kept free of Numba so that
``import sparsecode`` does not load the compiler)."""

#: Selection rules (the ``selection`` argument of :func:`sparsecode.mp`).
ABS, POSITIVE, SIGNED = 0, 1, 2
RULES = {"abs": ABS, "positive": POSITIVE, "signed": SIGNED}

#: Per-signal status codes written by the kernels.
RUNNING, DONE, DEPENDENT = 0, 1, 2
