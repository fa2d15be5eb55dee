"""The CUDA kernels: one table, one module, compiled on first use.

``KERNELS`` lists every kernel template with its parameters and ``DTYPES`` the float
types each is built for; the module's source is the constants of
:mod:`sparsecode._rules` (:func:`constants`), the shared ``kernels/common.cuh`` and the
``kernels/*.cu`` files of ``SOURCES``, and its ``name_expressions`` are generated from the
table, so adding a kernel is one entry here plus its CUDA.  The same table generates the
explicit instantiations of :func:`instantiation_source`, which the test suite compiles
with ``nvcc`` on machines without a GPU, and orders and checks the arguments of every
launch (:func:`arguments`); the test suite checks it against the ``.cu`` signatures.

Nothing here imports CuPy before a kernel is requested.
"""

import functools
from pathlib import Path

import numpy as np

from sparsecode import _rules

#: The header every kernel file includes (it includes the generated ``RULES_HEADER``), and
#: the kernel files of the module.
HEADER = "common.cuh"
RULES_HEADER = "rules.cuh"
SOURCES = ("mp.cu", "gp.cu", "omp.cu", "mpsae.cu")

#: Every kernel template of the module and its parameters, in order, as ``"type name"``
#: (``const`` and ``__restrict__`` left out; ``T`` is the float type of the
#: instantiation, ``GT`` that of the Gram rows of a kernel taking them: ``T`` or 16 bits,
#: see ``GRAM_TYPES``).  Each pursuit kernel ends with the queue counter, which
#: :func:`sparsecode.gpu._driver.launch` supplies.
KERNELS = {
    "row_norms2": "T* A, long long n, int m, double* out",
    "mp_gram": "T* C, GT* G, int n, int K, int rule, int k, int width, int use_shared, "
               "double* xnorm2, double* tol2, double* thr, int* I, double* Z, int* queue",
    "mp_nogram_step": "T* C, int* rows, int n_active, T* R, T* D, int K, int d, int rule, "
                      "double* tol2, double* thr, int* I, double* Z, int width, int* ns, "
                      "signed char* status, int* queue",
    "gp_gram": "T* C, GT* G, T* D, int d, int n, int K, int rule, int acgp, int positive, "
               "int k, int max_steps, int use_shared, double* xnorm2, double* tol2, "
               "double* thr, int* I, double* Z, double* work, int* queue",
    "gp_nogram_step": "T* C, int* rows, int n_active, T* R, T* D, int K, int d, int rule, "
                      "int acgp, int positive, int k, double* tol2, double* thr, int* I, "
                      "double* Z, int* ns, double* curv, double* work, signed char* status, "
                      "int* queue",
    "omp_gram": "T* C, GT* G, T* D, int d, int n, int K, int rule, int positive, int k, "
                "int exact, int use_shared, double rtol, double* xnorm2, double* tol2, "
                "double* thr, int* I, double* Z, signed char* status, double* work, "
                "int* queue",
    "omp_nogram_step": "T* C, int* rows, int n_active, T* R, T* D, int K, int d, int rule, "
                       "int positive, int k, double rtol, double* tol2, double* thr, int* I, "
                       "double* Z, int* ns, double* work, signed char* status, int* queue",
    "mpsae_forward": "T* C, T* G, int n, int K, int rule, int k, int width, int topk, "
                     "int use_shared, double* xnorm2, double* tol2, double* thr, int* I, "
                     "double* Z, int* J, double* Cs, int* nsteps, int* queue",
    "mpsae_backward": "T* X, T* D, int n, int d, int k, int* J, double* Cs, int* nsteps, "
                      "int topk, int backward, double gscale, double* loss2, T* gD, "
                      "double* dX, int* queue",
}

#: The NumPy type of each C type of the table's parameters (``T``: the instantiation's).
CTYPES = {"int": np.dtype(np.int32), "long long": np.dtype(np.int64),
          "double": np.dtype(np.float64), "signed char": np.dtype(np.int8)}

#: The constants of :mod:`sparsecode._rules` the kernels use, by their CUDA names.
CONSTANTS = {"SC_ABS": "ABS", "SC_POSITIVE": "POSITIVE", "SC_SIGNED": "SIGNED",
             "SC_RUNNING": "RUNNING", "SC_DONE": "DONE", "SC_DEPENDENT": "DEPENDENT"}

#: The C type each kernel is instantiated for, per NumPy dtype.
DTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
#: The Gram storage a kernel with a ``GT`` parameter is also instantiated for, beside
#: ``T`` itself: float16 rows reach the kernels as their bits (``sc_half`` in
#: ``kernels/common.cuh``).
GRAM_TYPES = {np.dtype(np.float16): "sc_half"}

#: NVRTC options.  None needed: CuPy adds the device's architecture (and its own flags),
#: and the kernels are plain C++11 (NVRTC's default dialect is newer).
OPTIONS = ()

_KERNEL_DIR = Path(__file__).parent / "kernels"


def takes_gram(kernel):
    """Whether ``kernel`` reads Gram rows of their own type ``GT``."""
    return any(ctype == "GT" for _, ctype, _ in parameters(kernel))


def name_expression(kernel, dtype, gram_dtype=None):
    """``"mp_gram<float, float>"``, ``"mp_nogram_step<float>"``: how CuPy names one
    instantiation (the Gram rows of ``gram_dtype``, default ``dtype``, for a kernel
    taking them)."""
    t = DTYPES[np.dtype(dtype)]
    if not takes_gram(kernel):
        return f"{kernel}<{t}>"
    gt = t if gram_dtype is None or np.dtype(gram_dtype) == np.dtype(dtype) \
        else GRAM_TYPES[np.dtype(gram_dtype)]
    return f"{kernel}<{t}, {gt}>"


def name_expressions():
    """Every instantiation of the table: each float type, and for the kernels taking Gram
    rows each storage of ``GRAM_TYPES`` too."""
    out = []
    for k in KERNELS:
        for dt in DTYPES:
            out.append(name_expression(k, dt))
            if takes_gram(k):
                out.extend(name_expression(k, dt, g) for g in GRAM_TYPES)
    return out


@functools.cache
def parameters(kernel):
    """``((name, ctype, is_pointer), ...)``: the parameters of ``kernel`` in the table."""
    out = []
    for p in KERNELS[kernel].split(","):
        ctype, name = p.strip().rsplit(" ", 1)
        pointer = ctype.endswith("*")
        out.append((name, ctype.rstrip("*").strip(), pointer))
    return tuple(out)


def arguments(kernel, dtype, args, gram_dtype=None):
    """The launch arguments of ``kernel`` for float ``dtype`` (and Gram rows of
    ``gram_dtype``, default ``dtype``), in the table's order, from
    the mapping ``args`` of parameter name to value: scalars converted to the NumPy
    scalar type of their C type, arrays checked to have the dtype of theirs.

    Raises
    ------
    TypeError
        A parameter missing from ``args``, a name that is no parameter, an array of the
        wrong dtype, or an array given for a scalar or the reverse.
    """
    params = parameters(kernel)
    if len(args) != len(params) or any(name not in args for name, _, _ in params):
        names = [name for name, _, _ in params]
        missing = [n for n in names if n not in args]
        extra = [n for n in args if n not in names]
        raise TypeError(f"{kernel}: missing arguments {missing}, unknown arguments {extra} "
                        f"(its parameters: {', '.join(names)})")
    dtype = np.dtype(dtype)
    types = {"T": dtype, "GT": dtype if gram_dtype is None else np.dtype(gram_dtype)}
    out = []
    for name, ctype, pointer in params:
        value = args[name]
        want = types[ctype] if ctype in types else CTYPES[ctype]
        is_array = getattr(value, "ndim", 0) > 0
        if pointer:
            if not is_array or value.dtype != want:
                got = value.dtype if is_array else type(value).__name__
                raise TypeError(f"{kernel}: {name} must be an array of {want} "
                                f"({ctype}*); got {got}")
            out.append(value)
        else:
            if is_array:
                raise TypeError(f"{kernel}: {name} is a {ctype}, not an array")
            out.append(want.type(value))
    return tuple(out)


def constants():
    """The ``#define`` lines of ``CONSTANTS``, with their values from
    :mod:`sparsecode._rules`."""
    return "".join(f"#define {c} {int(getattr(_rules, name))}\n"
                   for c, name in CONSTANTS.items())


def rules_header():
    """The text of ``kernels/rules.cuh`` (``RULES_HEADER``): :func:`constants` under an
    include guard.  The file is generated from :mod:`sparsecode._rules` and committed,
    so that each ``.cu`` file compiles on its own with a plain ``nvcc``; the test suite
    checks that it matches (rewrite it with
    ``python -c "from sparsecode.gpu import _module; _module.write_rules_header()"``)."""
    return ("// Generated from sparsecode/_rules.py by sparsecode.gpu._module.rules_header():\n"
            "// do not edit.  Selection rules and per-signal status codes of the kernels.\n"
            "#ifndef SPARSECODE_GPU_RULES_CUH\n#define SPARSECODE_GPU_RULES_CUH\n"
            f"{constants()}#endif\n")


def write_rules_header():
    """Rewrite ``kernels/rules.cuh`` from :mod:`sparsecode._rules`."""
    (_KERNEL_DIR / RULES_HEADER).write_text(rules_header())


@functools.cache
def source():
    """The module's CUDA source: :func:`constants`, ``HEADER``, then the files of
    ``SOURCES`` with their ``#include`` of it blanked (the header's text itself, not an
    include, so CuPy's cache of compiled modules sees every change), each after a
    ``#line`` marker so compiler messages name the file and line they come from."""
    parts = [f'#line 1 "{RULES_HEADER}"\n{rules_header()}']
    for name, includes in ((HEADER, RULES_HEADER), *((n, HEADER) for n in SOURCES)):
        include = f'#include "{includes}"'
        text = (_KERNEL_DIR / name).read_text()
        if include not in text:
            raise RuntimeError(f"{name} must include {includes}")
        parts.append(f'#line 1 "{name}"\n{text.replace(include, "")}')
    return "\n".join(parts)


def instantiation_source():
    """``source()`` plus a host function taking the address of every instantiation of
    the table, which makes ``nvcc`` compile each of them (the compile test)."""
    refs = "\n".join(f"      (const void*)&{e}," for e in name_expressions())
    return (
        f"{source()}\n"
        '#line 1 "instantiations"\n'
        "const void* const* sparsecode_all_kernels() {\n"
        "  static const void* const kernels[] = {\n"
        f"{refs}\n"
        "  };\n"
        "  return kernels;\n"
        "}\n"
    )


@functools.cache
def _module(device_id):
    import cupy

    return cupy.RawModule(code=source(), options=OPTIONS, name_expressions=name_expressions())


@functools.cache
def _kernel(kernel, dtype, gram_dtype, device_id):
    return _module(device_id).get_function(name_expression(kernel, dtype, gram_dtype))


def get(kernel, dtype, gram_dtype=None):
    """The compiled ``kernel`` for ``dtype`` (and Gram rows of ``gram_dtype``) on the
    current device (compiled on first use; CuPy also caches the binary on disk)."""
    import cupy

    gram_dtype = None if gram_dtype is None else np.dtype(gram_dtype)
    return _kernel(kernel, np.dtype(dtype), gram_dtype, cupy.cuda.Device().id)


@functools.cache
def _device_attributes(device_id):
    import cupy

    return cupy.cuda.Device(device_id).attributes


@functools.cache
def _total_memory(device_id):
    import cupy

    return int(cupy.cuda.Device(device_id).mem_info[1])


def total_memory():
    """Bytes of memory of the current device, cached."""
    import cupy

    return _total_memory(cupy.cuda.Device().id)


def device_attribute(name):
    """An attribute of the current device (``"MultiProcessorCount"``, ...), cached."""
    import cupy

    return _device_attributes(cupy.cuda.Device().id)[name]


def row_norms2(a):
    """Squared norms of the rows of a 2-D CuPy array, in float64 (no float64 copy of
    ``a``)."""
    import cupy

    a = cupy.ascontiguousarray(a)
    if a.dtype not in DTYPES:
        a = a.astype(np.float64)
    n, m = a.shape
    out = cupy.empty(n, dtype=np.float64)
    if n:
        threads = min(256, max(32, -(-m // 32) * 32))
        grid = min(n, 8 * device_attribute("MultiProcessorCount"))  # rows by grid stride
        args = arguments("row_norms2", a.dtype, {"A": a, "n": n, "m": m, "out": out})
        get("row_norms2", a.dtype)((grid,), (threads,), args)
    return out
