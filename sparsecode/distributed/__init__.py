"""Encode and learn on a Dask cluster (the optional extra ``sparsecode[dask]``).

Signals are a :class:`dask.array.Array` of shape ``(n_samples, n_features)``, a NumPy
array, or an HDF5 activation dataset given as ``(path, dataset)``.  h5py handles never
travel: each task receives the path and opens the file itself (which must therefore be
readable at the same path on every worker); the client opens it only to read its shape.

- :func:`encode`: codes of every row, block by block on the workers, as dask arrays of
  ``indices``/``values`` or written to a codes file (one part per block, then one atomic
  merge; an interrupted job resumes from the parts already written).
- :func:`fit`: data-parallel training of an :class:`~sparsecode.MPSAE` (Adam, MOD or
  online updates): each step the atoms go to the workers once, every shard of the batch
  returns its exact gradient or code statistics, and the client takes the step.
- :func:`mod_pass`: one pass of classic (full-data) MOD, the code statistics
  ``A = Z^T Z`` and ``B = Z^T X`` summed over all blocks.
- :func:`connect`: a client for a scheduler address, or ``"local:N"`` for a cluster of
  ``N`` worker processes on this machine.
"""

from sparsecode.distributed._cluster import connect
from sparsecode.distributed._source import as_dask_array, from_hdf5
from sparsecode.distributed.encode import encode
from sparsecode.distributed.learn import batch_plan, fit, mod_pass

__all__ = ["as_dask_array", "batch_plan", "connect", "encode", "fit", "from_hdf5", "mod_pass"]
