"""Numeric knobs in one place, patched in tests.

Everything here is read at call time (``from sparsecode import _config`` then
``_config.NAME``), so tests and users can change a value for a whole session.
"""

import numpy as np

#: Largest Gram matrix ``G = D D^T`` that ``gram="auto"`` will build, in bytes.
GRAM_BUDGET_BYTES = 1 << 30

#: Largest Gram matrix ``gram="auto"`` builds on a GPU, in bytes; None: a quarter of
#: the device's memory (20 GB of an 80 GB device: the float32 Gram of 65,536 atoms, 17 GB,
#: fits).  The GPU has no cached path: over this budget, "auto" takes no Gram.
GPU_GRAM_BUDGET_BYTES = None

#: Memory for the Gram rows kept by the cached Gram path (``gram="cached"``, and
#: ``"auto"`` when the whole Gram matrix is over ``GRAM_BUDGET_BYTES``), in bytes: rows
#: of the selected atoms, computed on demand and evicted least used first (see
#: :class:`sparsecode.GramRows`).  Rows are ``n_atoms`` entries of 4 bytes (float32)
#: or 2 (16-bit storage).
GRAM_CACHE_BYTES = 1 << 30

#: ``gram="auto"`` takes the cached path only for atoms of at least this many features:
#: below, one GEMM per step (the no-Gram path) costs less than reading a Gram row.
CACHED_MIN_FEATURES = 128

#: Largest block of correlations ``X_block D^T`` held at once, in bytes.  Signals are
#: encoded block by block; a block is at least ``MIN_BLOCK_ROWS`` signals.
BLOCK_BYTES = 128 << 20
MIN_BLOCK_ROWS = 16
#: ... and of at least this many row groups (``ROW_GROUP``) per thread, past
#: ``BLOCK_BYTES`` if need be: a block of fewer groups than threads has threads repeating
#: each other's correlation GEMMs (at 65,536 atoms and two threads that was twice the
#: GEMM's time).
BLOCK_GROUPS_PER_THREAD = 1
#: The same on the cached Gram path (a GramRows store short of the whole matrix): signals
#: that defer missing rows settle them with products of the block's payers with ``D``,
#: each reading all of ``D``, so larger blocks make fewer and larger products.
ROWS_BLOCK_BYTES = 512 << 20
#: Atoms per group of the coherence bounds of a GramRows store (one float32 per atom and
#: group): a deferred row's effect on each group of atoms is bounded by the largest
#: ``|G|`` in that group, tighter than the largest over all atoms.
COHERENCE_GROUP = 256

#: Rows per group of every correlation product ``X D^T`` on the CPU, and atoms per block
#: of the no-Gram path's products (see :mod:`sparsecode._parallel`): each row's
#: correlations come from one GEMM of fixed shape and place, so codes do not depend on
#: the BLAS kernel's blocking, the thread count or how signals are split into calls
#: starting at multiples of ``ROW_GROUP``.  A power of two.
ROW_GROUP = 256
GEMM_COLS = 2048

#: Atoms per tile of the Gram matrices computed on the CPU (one single-threaded GEMM each,
#: mirrored: exactly symmetric, the same bits whatever the thread count).
GRAM_TILE = 256

#: MP on the CPU: Gram matrices larger than this (bytes) do not stay in cache, so their
#: rows are prefetched, with signals taken two at a time.  Smaller ones use the plain
#: loop, which costs less (measured: equal at 16 MiB, the plain loop 13-15% faster at
#: 1-4 MiB).
PREFETCH_GRAM_BYTES = 16 << 20

#: OMP on the Gram path defers the update of the older coefficients (see
#: ``omp_gram_lazy`` in :mod:`sparsecode.pursuit._omp_numba`) from this many atoms and
#: this support size on; the update is paid once more than ``LAZY_OMP_CANDIDATES`` atoms
#: per 4,096 atoms of the dictionary (at least one) are too close to call without it.
#: Paying reads Gram rows of ``n_atoms`` entries, checking a candidate ``s`` entries (the
#: best first, the rest only while they could still win), so wider dictionaries check
#: more (measured: 16 best at 4,096 atoms, 64 at 16,384).
LAZY_OMP_MIN_ATOMS = 1024
LAZY_OMP_MIN_K = 8
LAZY_OMP_CANDIDATES = 16

#: Relative tolerance below which a pivot of the incremental Cholesky factor counts as
#: zero (the new atom is linearly dependent on the selected ones) and a correlation counts
#: as vanished (the residual is orthogonal to every atom), per dtype.
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}

#: Signals whose squared norm is outside ``[2^-2E, 2^2E]`` are encoded scaled by a power
#: of two (exact; see ``sparsecode.pursuit``), so their squares neither overflow nor
#: underflow: ``E`` per dtype.
SCALE_EXPONENT = {np.dtype(np.float32): 20, np.dtype(np.float64): 200}

#: Relative tolerance for checking that a user-supplied Gram matrix matches ``D``
#: (its diagonal must equal the squared atom norms).
GRAM_CHECK_RTOL = {np.dtype(np.float32): 1e-3, np.dtype(np.float64): 1e-8}

#: A float16 Gram matrix (read as it is) needs atoms whose squared norms, and its
#: diagonal, are within this of 1 (two float16 steps below 1).
HALF_GRAM_ATOL = 2.0**-10

#: Atoms whose squared norm is within this of 1 take the unit-norm fast path.
UNIT_NORM_ATOL = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 1e-12}


def rtol(dtype):
    """Return the relative tolerance used by the kernels for ``dtype``."""
    return RTOL[np.dtype(dtype)]

# ---- GPU backend (sparsecode.gpu) ----

#: GPU: largest block of correlations ``X_block D^T`` (plus per-signal scratch) held on
#: the device at once, in bytes.  A block is one kernel launch; it is at least
#: ``GPU_MIN_BLOCK_ROWS`` signals.
GPU_BLOCK_BYTES = 1 << 30
GPU_MIN_BLOCK_ROWS = 16

#: GPU: threads per thread block (a multiple of 32, at most 1024).  One thread block
#: encodes one signal at a time; fewer threads are used when the rows are short.
GPU_THREADS = 512

#: GPU: most thread blocks per launch, or None for enough to fill the device.  The blocks
#: take signals from a shared queue, so any number covers every signal of a launch.
GPU_MAX_BLOCKS = None

#: GPU: keep each signal's correlation row in shared memory when it fits (the Gram path
#: then streams only Gram rows from device memory).
GPU_SHARED_CORRELATIONS = True
