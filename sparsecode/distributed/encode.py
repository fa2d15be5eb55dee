"""Encode signals block by block on the workers: dask arrays of codes, or a codes file
written as one part per block and merged into place at the end."""

import json
import os
import shutil
import threading
import uuid
from pathlib import Path

import numpy as np

from sparsecode._progress import progress_bar
from sparsecode._validation import check_count
from sparsecode.codes import SparseCodes
from sparsecode.distributed._cluster import require_dask, scatter_everywhere, task_threads
from sparsecode.distributed._source import as_dask_array

SOLVERS = ("mp", "omp", "gp")


class BlockEncoder:
    """What every task runs on its block: a pursuit on atoms ``D`` (keyword ``options`` of
    :func:`sparsecode.mp` / ``omp`` / ``gp``) or the ``transform`` of a fitted
    :class:`~sparsecode.MPSAE`.  Rows are ``width`` wide (padded with -1 / 0).

    The choice between the Gram and the no-Gram path is made once, for the whole set of
    signals, so every block takes the path an in-process call on all of them takes and
    the codes are identical.  The Gram it chose (the whole matrix or a
    :class:`~sparsecode.GramRows` store) is built by the first block a process encodes
    and kept for the next ones; it is not sent with the encoder.
    """

    def __init__(self, D, *, solver, k, tol, options, n_samples, dtype):
        from sparsecode import MPSAE
        from sparsecode._validation import check_array, check_choice, float_dtype
        from sparsecode.pursuit import decide_gram

        self.k, self.tol = k, tol
        if isinstance(D, MPSAE):
            k_run = D.k if k is None and tol is None else k  # as transform takes it
            self.model = _inference_copy(D, n_samples * (k_run or 1) >= D.n_atoms)
            self.solver = solver or D.solver
            self.atoms, self.bias = D.components_, D.bias_
            self.options = {}
            self.values_dtype = self.atoms.dtype
            k_eff = k_run or D.n_features_in_
        else:
            self.model = None
            self.solver = check_choice(solver or "mp", "solver", SOLVERS)
            self.atoms = check_array(D, "D")
            self.bias = None
            self.values_dtype = float_dtype(np.empty(0, dtype), self.atoms)
            self.options = dict(options)
            gram = self.options.pop("gram", "auto")
            K, d = self.atoms.shape
            k_eff = k if k is not None else (d if self.solver == "mp" else min(K, d))
            want = decide_gram(gram, n_samples, k_eff,
                              self.atoms.astype(self.values_dtype, copy=False))
            self.options["gram"] = gram if want is None else want
        self.n_atoms, self.n_features = self.atoms.shape
        self.width = min(k_eff, self.n_atoms)
        self._gram = None
        self._lock = threading.Lock()

    def __getstate__(self):
        state = dict(self.__dict__, _gram=None)
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _solver_gram(self):
        """The ``gram`` argument of this process's calls: the whole Gram matrix or a
        store, built once (under the lock, whose holder also runs the call: a store is
        not shared by concurrent calls), or the option as given."""
        from sparsecode._gram_rows import GramRows

        gram = self.options["gram"]
        if self._gram is None and (gram is True or gram == "cached"):
            atoms = self.atoms.astype(self.values_dtype, copy=False)
            # gram=True: a store holding every row is the whole matrix the call would
            # build (of the atoms normalised as the pursuits normalise them)
            whole = self.n_atoms * self.n_atoms * atoms.dtype.itemsize
            self._gram = GramRows(atoms, max_bytes=whole if gram is True else None)
        return gram if self._gram is None else self._gram

    def settings(self):
        """JSON-serialisable description (stored with the codes)."""
        opts = {k: v for k, v in self.options.items() if not isinstance(v, np.ndarray)}
        return {"solver": self.solver, "k": self.k, "tol": self.tol, "options": opts,
                "model": self.model is not None}

    def __call__(self, X):
        """Codes of the block ``X``, ``width`` wide."""
        import sparsecode

        with task_threads():
            if self.model is not None:
                codes = self.model.transform(X, k=self.k, tol=self.tol, solver=self.solver)
            else:
                solve = getattr(sparsecode, self.solver)
                with self._lock:
                    options = dict(self.options, gram=self._solver_gram())
                    codes = solve(X, self.atoms, k=self.k, tol=self.tol, **options)
        return pad_codes(codes, self.width)

    def error(self, X, codes):
        """``(||x - b - z D||^2, ||x - b||^2)`` summed over the block, float64."""
        from sparsecode.dictionary import residual_energy

        C = X if self.bias is None else X - self.bias
        C = np.ascontiguousarray(C, dtype=self.atoms.dtype)
        with task_threads():
            err = residual_energy(C, codes, self.atoms)
        return float(err), float(np.einsum("ij,ij->", C, C, dtype=np.float64))


def _inference_copy(model, use_gram):
    """A light copy of a fitted model for the workers: atoms and bias, no optimiser, and
    the Gram decision of its MP encoder fixed to ``use_gram``."""
    params = dict(model.get_params(), callback=None, progress=False)
    m = type(model)(**params)
    m.engine_ = model.engine_.inference_copy(use_gram=use_gram)
    return m


def pad_codes(codes, width):
    """``codes`` with exactly ``width`` columns (unused slots -1 / 0)."""
    w = codes.indices.shape[1]
    if w == width:
        return codes
    idx = np.full((len(codes), width), -1, dtype=np.int32)
    val = np.zeros((len(codes), width), dtype=codes.values.dtype)
    m = min(w, width)
    idx[:, :m], val[:, :m] = codes.indices[:, :m], codes.values[:, :m]
    return SparseCodes(idx, val, codes.n_atoms)


def _encode_block(encoder, X):
    codes = encoder(X)
    return codes.indices, codes.values


def encode(X, D, *, solver=None, k=None, tol=None, out=None, client=None, block_rows=None,
           dtype=None, overwrite=False, resume=False, measure_every=1, progress=None,
           settings=None, stop=None, **options):
    """Encode every row of ``X`` on the workers, block by block.

    Parameters
    ----------
    X : dask.array.Array, ndarray, or (path, dataset)
        Signals of shape (n_samples, n_features); ``(path, dataset)`` is an HDF5
        activation dataset the workers open themselves.
    D : ndarray of shape (n_atoms, n_features), or a fitted MPSAE
        Atoms to encode on (``solver`` one of ``"mp"``, ``"omp"``, ``"gp"``, default
        ``"mp"``; ``options`` such as ``selection``, ``positive``, ``variant``, ``gram``
        are passed on), or a model whose :meth:`~sparsecode.MPSAE.transform` is run
        (``solver`` default: the model's).
    k, tol : optional
        As for the solvers (or :meth:`~sparsecode.MPSAE.transform`).  Rows are ``k`` wide
        (``n_features`` wide, at most ``n_atoms``, when only ``tol`` is given).
    out : str or os.PathLike, optional
        Write a codes file (as :class:`~sparsecode.io.CodesWriter`) instead of returning
        arrays.  Every block is written by its task to ``OUT.parts/``; when all are
        there they are merged into ``OUT.partial``, which is renamed to ``OUT``.
    client : distributed.Client, optional
        Needed with ``out`` (default: the current client).  Without ``out`` the returned
        arrays are computed by whatever scheduler computes them.
    block_rows : int, optional
        Rows per task for arrays and files, rounded up to a whole number of row groups
        (``_config.ROW_GROUP`` rows).  A dask array keeps its blocks when they start at
        multiples of the group and is rechunked otherwise: each block is then encoded
        with the same arithmetic as an in-process call on all the rows, so the codes are
        bit-identical to it whatever the BLAS.
    dtype : {"float32", "float64"}, optional
        Float type of the signals (files: float32).
    overwrite : bool
        Replace an existing ``out`` and any parts of another job.
    resume : bool
        Keep the parts an interrupted job with the same settings left in ``OUT.parts/``
        and compute only the missing blocks.
    measure_every : int
        With ``out``: measure the error on every this many blocks (0: never).
    progress : bool, optional
        Progress bar while writing (default: when writing to a terminal).
    settings : dict, optional
        More JSON-serialisable settings to store in the file.
    stop : callable, optional
        With ``out``: polled as blocks finish; when it returns True the job is cancelled
        and :class:`KeyboardInterrupt` raised (the parts written so far are kept for
        ``resume=True``).

    Returns
    -------
    (indices, values) : tuple of dask.array.Array
        Without ``out``: int32 ``(n_samples, width)`` and float ``(n_samples, width)``.
    summary : dict
        With ``out``: ``path``, ``n_rows``, ``nnz``, ``error`` and ``total`` (squared
        norms summed over the measured blocks), ``blocks`` and ``blocks_resumed``.
    """
    require_dask()
    import dask
    import dask.array as da

    from sparsecode._parallel import aligned_rows

    X = _aligned(as_dask_array(X, block_rows=None if block_rows is None
                               else aligned_rows(check_count(block_rows, "block_rows")),
                               dtype=dtype))
    encoder = BlockEncoder(D, solver=solver, k=k, tol=tol, options=options,
                           n_samples=X.shape[0], dtype=X.dtype)
    if X.shape[1] != encoder.n_features:
        raise ValueError(f"X has {X.shape[1]} features per row; the atoms have "
                         f"{encoder.n_features}")
    if out is None:
        enc = dask.delayed(encoder, pure=True)
        idx, val = [], []
        for i, rows in enumerate(X.chunks[0]):
            d = dask.delayed(_encode_block, pure=True, nout=2)(enc, X.blocks[i])
            idx.append(da.from_delayed(d[0], (rows, encoder.width), np.int32))
            val.append(da.from_delayed(d[1], (rows, encoder.width),
                                       encoder.values_dtype))
        return da.concatenate(idx), da.concatenate(val)
    return _encode_to_file(X, encoder, Path(out), client=client, overwrite=overwrite,
                           resume=resume, measure_every=measure_every, progress=progress,
                           settings=settings, stop=stop)


def _aligned(X):
    """``X`` with row blocks that start at multiples of the row group (rechunked to
    whole groups when some do not)."""
    from sparsecode._parallel import aligned_rows, row_group

    starts = np.cumsum((0,) + X.chunks[0][:-1])
    if np.all(starts % row_group() == 0):
        return X
    return X.rechunk({0: aligned_rows(max(X.chunks[0]))})


def _job_token(X, encoder):
    from dask.base import tokenize

    return tokenize(X.name, X.chunks, encoder.atoms, encoder.bias, encoder.solver,
                    encoder.k, encoder.tol, sorted(encoder.options.items(), key=str),
                    None if encoder.model is None else encoder.model.get_params())


def parts_dir(out):
    """The folder of a job's per-block parts: ``OUT.parts``."""
    return Path(str(out) + ".parts")


def _encode_to_file(X, encoder, out, **kwargs):
    """Hold ``out``'s lock for the whole job: another live job or writer on that path
    is refused before it touches the parts or the file."""
    from sparsecode.io import OutputLock

    with OutputLock(out):
        return _encode_parts(X, encoder, out, **kwargs)


def _encode_parts(X, encoder, out, *, client, overwrite, resume, measure_every, progress,
                  settings, stop):
    import dask
    from distributed import as_completed, default_client

    from sparsecode.io import CodesWriter, read_codes

    client = client or default_client()
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True to replace it")
    parts = parts_dir(out)
    token = _job_token(X, encoder)
    job = parts / "job.json"
    if parts.exists():
        old = json.loads(job.read_text()).get("token") if job.exists() else None
        if resume and old != token:
            raise ValueError(f"{parts} holds the parts of another job (other data, atoms "
                             "or settings); pass overwrite=True to start again")
        if not resume:
            if not overwrite:
                raise FileExistsError(f"{parts} holds the parts of an interrupted job; pass "
                                      "resume=True to continue it or overwrite=True")
            shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    job.write_text(json.dumps({"token": token}))
    n_blocks = len(X.chunks[0])
    starts = np.concatenate([[0], np.cumsum(X.chunks[0])])
    file_settings = dict(settings or {}, encoder=encoder.settings())
    done = {i for i in range(n_blocks) if _part_path(parts, i).exists()}
    todo = [i for i in range(n_blocks) if i not in done]
    enc = scatter_everywhere(client, [encoder])[0]
    blocks = X.to_delayed().ravel()
    tasks = [dask.delayed(_write_part, pure=False)(
        enc, blocks[i], str(_part_path(parts, i)), int(starts[i]),
        measure_every > 0 and i % measure_every == 0) for i in todo]
    futures = client.compute(tasks)
    bar = progress_bar(progress, int(starts[-1]), unit="row", desc="encode",
                       initial=int(sum(X.chunks[0][i] for i in done)))
    summary = {"n_rows": 0, "nnz": 0, "error": 0.0, "total": 0.0, "measured_rows": 0}
    try:
        for fut in as_completed(futures):
            n = fut.result()["n_rows"]
            if bar is not None:
                bar.update(n)
            if stop is not None and stop():
                client.cancel(futures)
                raise KeyboardInterrupt(f"stopped; the parts written so far are in {parts}")
    finally:
        if bar is not None:
            bar.close()
    del futures
    # merge in row order (streaming: one part in memory at a time)
    with CodesWriter(out, encoder.n_atoms, encoder.width, dtype=encoder.values_dtype,
                     settings=file_settings, overwrite=True) as writer:
        for i in range(n_blocks):
            p = _part_path(parts, i)
            writer.append(read_codes(p))
            meta = json.loads(_meta_path(p).read_text())
            for key in ("n_rows", "nnz", "error", "total", "measured_rows"):
                summary[key] += meta[key]
    shutil.rmtree(parts)
    summary.update(path=str(out), blocks=n_blocks, blocks_resumed=len(done))
    return summary


def _part_path(parts, i):
    return parts / f"part-{i:06d}.h5"


def _meta_path(part):
    return part.with_suffix(".json")


def _write_part(encoder, X, path, start, measure):
    """Encode one block and write it as a finished codes file at ``path`` (atomically:
    a task run twice, or killed half way, leaves one whole part)."""
    from sparsecode.io import CodesWriter

    path = Path(path)
    codes = encoder(X)
    meta = {"start": start, "n_rows": len(codes),
            "nnz": int(np.count_nonzero(codes.indices >= 0)), "error": 0.0, "total": 0.0,
            "measured_rows": 0}
    if measure:
        meta["error"], meta["total"] = encoder.error(X, codes)
        meta["measured_rows"] = len(codes)
    tmp = path.with_name(f"{path.stem}.{uuid.uuid4().hex}.h5")
    with CodesWriter(tmp, encoder.n_atoms, encoder.width, dtype=codes.values.dtype,
                     commit_seconds=float("inf")) as w:
        w.append(codes)
    tmp_meta = _meta_path(tmp)
    tmp_meta.write_text(json.dumps(meta))
    os.replace(tmp_meta, _meta_path(path))
    os.replace(tmp, path)  # the part counts as written once this is there
    return meta
