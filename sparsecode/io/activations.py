"""Reading activation files: a streaming, shuffling reader (the writer is in
:mod:`sparsecode.io.writer`).

An activation file holds one 2-D dataset ``(n_samples, n_features)`` of float16, float32,
float64, or bfloat16 stored as uint16 with ``attrs["dtype"] = "bfloat16"``, chunked along
the rows.  The reader never holds more than its buffer: it reads contiguous,
chunk-aligned blocks of rows (a few of them, from random places in the file, per buffer
load), shuffles the rows of the buffer, and cuts them into minibatches.  A dataset of
tall, narrow chunks (a few columns of more rows than fit the buffer) is read in blocks
of rows sized to the buffer instead, more slowly (with a warning).
"""

import math
import warnings

import numpy as np

from sparsecode._validation import check_count
from sparsecode.io._append import chunk_rows
from sparsecode.io._dtypes import (
    bfloat16_to_float32,
    source_dtype,
)
from sparsecode.io._h5 import FileFormatError, file_format, get_dataset, open_file

#: Default memory budget of a reader's buffer.
BUFFER_BYTES = 256 << 20
#: Rows of a block when the dataset is not chunked: about this many bytes.
BLOCK_BYTES = 1 << 20


def _row_range(rows, n):
    if rows is None:
        return 0, n
    if isinstance(rows, slice):
        if rows.step not in (None, 1):
            raise ValueError(f"rows must be a slice with step 1; got {rows}")
        start, stop, _ = rows.indices(n)
    else:
        try:
            start, stop = rows
        except (TypeError, ValueError):
            raise TypeError(f"rows must be None, a slice or (start, stop); got {rows!r}") from None
        start, stop, _ = slice(start, stop).indices(n)
    if stop <= start:
        raise ValueError(f"rows {rows!r} select no rows of the {n} in the dataset")
    return start, stop


class ActivationReader:
    """Minibatches of an activation dataset, streamed in bounded memory.

    Each epoch visits every row of ``rows`` exactly once.  With ``shuffle``, the blocks
    (runs of rows, chunk-aligned unless the chunks are tall and narrow: see
    ``block_rows``) are visited in a random order, a buffer load holds ``buffer_bytes``
    worth of them, and the rows of each load are shuffled before being cut into batches
    (a batch may span two loads).  The order depends only on ``seed`` and the epoch
    number, so two readers with the same seed agree and a run can restart at any batch
    (:meth:`epoch` with ``start_batch``).

    Parameters
    ----------
    path : str or os.PathLike
        HDF5 file.
    dataset : str
        Name of the 2-D dataset ``(n_samples, n_features)`` in the file.
    batch_size : int
        Rows per batch (the last batch of an epoch may be smaller unless ``drop_last``).
    shuffle : bool
        Shuffle (True) or read the rows in file order (False, e.g. for encoding).
    seed : int
        Seed of the shuffle.
    rows : slice or (start, stop), optional
        Only these rows (e.g. a held-out split).
    buffer_bytes : int
        Memory budget of the buffer (in the output dtype).  At least one block is read
        per load, whatever the budget (see ``block_rows``).
    drop_last : bool
        Drop an epoch's last, smaller batch.
    dtype : {"float32", "float64"}
        dtype of the batches.
    check_finite : bool
        Raise ``ValueError`` naming the row when a row holds NaN or infinity.
    copy : bool
        With ``shuffle=False``, False hands out views of the buffer where a batch lies
        within one load (no copy): each is valid only until the next batch is asked for.

    Attributes
    ----------
    n_rows : int
        Rows in ``rows``.
    n_features : int
    source_dtype : str
        Element type in the file (one of :data:`SOURCE_DTYPES`).
    block_rows : int
        Rows per block: a multiple of the chunk's rows, about 1 MiB of whole rows (the
        chunk's rows where those are more; about 1 MiB of rows for an unchunked
        dataset).  Where the chunks are tall and narrow (a chunk holds only some of the
        columns, and its rows are more than 1 MiB of whole rows and more than fit
        ``buffer_bytes``), a block is instead as many rows as fit ``buffer_bytes``
        together with, when converting, their copy in the stored type (at least one
        row), and a buffer load is one block.

    Warns
    -----
    UserWarning
        Once, when the reader is made, if the chunks are tall and narrow (see
        ``block_rows``): its blocks then cut across chunks, and each chunk is read (and
        decompressed) once per block it touches, so reading is slower.  Rewriting the
        file with chunks of whole rows (:func:`write_activations`,
        :class:`ActivationWriter`) restores the speed.
    """

    def __init__(self, path, dataset, *, batch_size=4096, shuffle=True, seed=0, rows=None,
                 buffer_bytes=BUFFER_BYTES, drop_last=False, dtype="float32",
                 check_finite=True, copy=True):
        self._args = dict(batch_size=batch_size, shuffle=shuffle, seed=seed, rows=rows,
                          buffer_bytes=buffer_bytes, drop_last=drop_last, dtype=dtype,
                          check_finite=check_finite, copy=copy)
        self.copy = bool(copy)
        self.path, self.dataset = path, dataset
        self.batch_size = check_count(batch_size, "batch_size")
        self.seed = check_count(seed, "seed", 0)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.check_finite = bool(check_finite)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64; got {self.dtype}")
        buffer_bytes = check_count(buffer_bytes, "buffer_bytes")
        self._file = open_file(path)
        try:
            self._ds = ds = get_dataset(self._file, dataset)
            if ds.ndim != 2:
                raise FileFormatError(
                    f"{path}:{dataset} must be 2-D (n_samples, n_features); got shape "
                    f"{ds.shape}"
                )
            self.source_dtype = source_dtype(ds)
            n, d = ds.shape
            if file_format(self._file) == "activations" and not self._file.attrs.get(
                    "complete", True):
                # a partial file of an interrupted writer: only its committed rows
                n = min(n, int(self._file.attrs.get("committed_rows", 0)))
            if n == 0 or d == 0:
                raise FileFormatError(f"{path}:{dataset} is empty (shape {ds.shape})")
            self.n_features = d
            self._start, self._stop = _row_range(rows, n)
            self.n_rows = self._stop - self._start
            row_bytes = d * ds.dtype.itemsize
            chunk = ds.chunks[0] if ds.chunks else chunk_rows(row_bytes, BLOCK_BYTES)
            per_block = max(1, BLOCK_BYTES // (chunk * row_bytes))
            self.block_rows = chunk * per_block
            out_row = d * self.dtype.itemsize
            self._load_rows = max(self.block_rows, buffer_bytes // out_row)
            if ds.chunks and ds.chunks[1] < d and chunk * row_bytes > BLOCK_BYTES:
                # Tall, narrow chunks: the whole rows of one chunk are more than a block
                # should hold.  Unless they fit the buffer, read blocks of rows sized to
                # the buffer, counting the copy in the stored type that a conversion reads.
                convert_row = 0 if ds.dtype == self.dtype else row_bytes
                fit = max(1, buffer_bytes // (out_row + convert_row))
                if min(self.block_rows, self.n_rows) > fit:
                    self.block_rows = self._load_rows = fit
                    warnings.warn(
                        f"{path}:{dataset} is chunked {tuple(ds.chunks)}: each chunk holds "
                        f"{chunk} rows of only {ds.chunks[1]} of the {d} columns, more rows "
                        f"than fit buffer_bytes={buffer_bytes}, so it is read in blocks of "
                        f"{fit} rows and each chunk is read (and decompressed) once per "
                        "block it touches: reading is slower.  Rewrite the file with "
                        "row-major chunks (chunks of whole rows), e.g. with "
                        "sparsecode.io.write_activations or ActivationWriter, to read it at "
                        "full speed.",
                        UserWarning,
                        stacklevel=2,
                    )
        except BaseException:
            self._file.close()
            raise
        self._blocks = self._make_blocks()
        self._next_epoch = 0

    # ---------------------------------------------------------------- structure

    def _make_blocks(self):
        a, b, size = self._start, self._stop, self.block_rows
        edges = list(range((a // size + 1) * size, b, size))
        starts = [a, *edges]
        stops = [*edges, b]
        return np.array([starts, stops], dtype=np.int64).T

    def __len__(self):
        """Batches per epoch."""
        if self.drop_last:
            return self.n_rows // self.batch_size
        return math.ceil(self.n_rows / self.batch_size)

    def _loads(self, epoch):
        """The blocks of each buffer load of ``epoch``: list of (n_blocks_i, 2) arrays."""
        blocks = self._blocks
        if self.shuffle:
            blocks = blocks[np.random.default_rng([self.seed, epoch]).permutation(len(blocks))]
        loads, current, rows = [], [], 0
        for blk in blocks:
            m = int(blk[1] - blk[0])
            if current and rows + m > self._load_rows:
                loads.append(np.array(current))
                current, rows = [], 0
            current.append(blk)
            rows += m
        loads.append(np.array(current))
        # read each load in file order; its rows are shuffled afterwards
        return [ld[np.argsort(ld[:, 0])] for ld in loads]

    # ---------------------------------------------------------------- reading

    def epoch(self, epoch=0, start_batch=0):
        """Iterate over the batches of one epoch.

        Parameters
        ----------
        epoch : int
            Epoch number (seeds the order together with ``seed``).
        start_batch : int
            Skip this many batches without reading them (resuming a run).

        Yields
        ------
        ndarray of shape (batch_size, n_features)
            A fresh array (the reader keeps no reference to it).
        """
        epoch = check_count(epoch, "epoch", 0)
        start_batch = check_count(start_batch, "start_batch", 0)
        bs = self.batch_size
        end = (self.n_rows // bs) * bs if self.drop_last else self.n_rows
        pos = start_batch * bs
        pieces, have, load_start = [], 0, 0
        buf = None
        for li, blocks in enumerate(self._loads(epoch)):
            n = int((blocks[:, 1] - blocks[:, 0]).sum())
            load_end = load_start + n
            if load_end <= pos or pos >= end:
                load_start = load_end
                continue
            if buf is None:
                buf = np.empty((min(self._load_rows, self.n_rows), self.n_features),
                               self.dtype)
            self._fill(buf, blocks)
            order = (np.random.default_rng([self.seed, epoch, li]).permutation(n)
                     if self.shuffle else None)
            i = pos - load_start
            while i < n and pos < end:
                take = min(bs - have, n - i, end - pos)
                if self.shuffle:
                    pieces.append(buf[order[i:i + take]])
                elif self.copy or take < bs:  # a part of a batch: concatenated later
                    pieces.append(buf[i:i + take].copy())
                else:
                    pieces.append(buf[i:i + take])
                have += take
                i += take
                pos += take
                if have == bs or pos == end:
                    yield pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
                    pieces, have = [], 0
            load_start = load_end

    def __iter__(self):
        """The batches of the next epoch (epoch 0 first, then 1, ...); an iterator that
        is never started does not use up an epoch."""
        epoch = self._next_epoch
        self._next_epoch += 1
        yield from self.epoch(epoch)

    def read(self, start=0, stop=None):
        """Rows ``[start, stop)`` of the reader's range, in file order.

        Parameters
        ----------
        start, stop : int
            Offsets within ``rows``.

        Returns
        -------
        ndarray of shape (stop - start, n_features)
        """
        a, b = _row_range((start, stop), self.n_rows)
        out = np.empty((b - a, self.n_features), self.dtype)
        self._fill(out, np.array([[self._start + a, self._start + b]]))
        return out

    def _fill(self, buf, blocks):
        """Read ``blocks`` (rows ``[start, stop)`` of the file) one after another into
        ``buf``; check them; return the number of rows."""
        ds = self._ds
        off = 0
        direct = ds.dtype == self.dtype
        for a, b in blocks:
            a, b = int(a), int(b)
            m = b - a
            dest = buf[off:off + m]
            if direct:
                ds.read_direct(buf, np.s_[a:b], np.s_[off:off + m])
            else:
                raw = ds[a:b]
                if self.source_dtype == "bfloat16":
                    if self.dtype == np.float32:
                        bfloat16_to_float32(raw, dest)
                    else:
                        dest[...] = bfloat16_to_float32(raw)
                else:
                    dest[...] = raw
            if self.check_finite and not math.isfinite(np.add.reduce(dest, axis=None,
                                                                     dtype=np.float64)):
                bad = np.flatnonzero(~np.isfinite(dest).all(axis=1))
                if bad.size:
                    raise ValueError(
                        f"{self.path}:{self.dataset} row {a + int(bad[0])} contains NaN or "
                        "infinity"
                    )
            off += m
        return off

    # ---------------------------------------------------------------- life cycle

    def close(self):
        """Close the file."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __getstate__(self):
        # h5py objects do not pickle: a copy reopens the file by name
        return {"path": self.path, "dataset": self.dataset, "args": self._args,
                "next_epoch": self._next_epoch}

    def __setstate__(self, state):
        self.__init__(state["path"], state["dataset"], **state["args"])
        self._next_epoch = state["next_epoch"]

    def __repr__(self):
        return (
            f"ActivationReader({str(self.path)!r}, {self.dataset!r}, n_rows={self.n_rows}, "
            f"n_features={self.n_features}, source_dtype={self.source_dtype!r}, "
            f"batch_size={self.batch_size}, shuffle={self.shuffle}, seed={self.seed})"
        )


def open_activations(path, dataset, **kwargs):
    """Open an activation dataset for streaming: ``ActivationReader(path, dataset, ...)``.

    Parameters
    ----------
    path : str or os.PathLike
    dataset : str
    **kwargs
        See :class:`ActivationReader`.

    Returns
    -------
    ActivationReader
    """
    return ActivationReader(path, dataset, **kwargs)
