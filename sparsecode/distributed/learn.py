"""Learning on a cluster: data-parallel MP-SAE steps and classic MOD passes, with every
shard's exact gradients or code statistics summed on the client."""

import math
from dataclasses import replace

import numpy as np

from sparsecode.distributed._cluster import require_dask, scatter_everywhere, task_threads
from sparsecode.distributed._source import as_dask_array, read_rows


def batch_plan(n_rows, batch_size, *, pieces_per_batch=8, seed=0, epoch=0, drop_last=False):
    """The batches of one epoch of distributed training, as file row ranges.

    The rows are cut into pieces of ``ceil(batch_size / pieces_per_batch)`` consecutive
    rows; each epoch visits the pieces in a random order (seeded by ``(seed, epoch)``)
    and groups them ``pieces_per_batch`` at a time into batches.  A batch thus mixes rows
    from ``pieces_per_batch`` places of the data, and each piece is one contiguous read.

    Parameters
    ----------
    n_rows, batch_size : int
    pieces_per_batch : int
    seed, epoch : int
    drop_last : bool
        Drop a final batch smaller than ``batch_size``.

    Returns
    -------
    list of list of (int, int)
        Every row appears in exactly one batch (all of them unless ``drop_last``).
    """
    piece = math.ceil(batch_size / pieces_per_batch)
    pieces = [(a, min(a + piece, n_rows)) for a in range(0, n_rows, piece)]
    order = np.random.default_rng([seed, epoch]).permutation(len(pieces))
    batches = [[pieces[j] for j in order[s:s + pieces_per_batch]]
               for s in range(0, len(pieces), pieces_per_batch)]
    if drop_last and batches and sum(b - a for a, b in batches[-1]) < batch_size:
        batches.pop()
    return batches


def split_shards(ranges, n_shards):
    """Cut a batch's row ranges into ``n_shards`` consecutive groups of about equal rows
    (ranges are split where needed); empty groups are dropped."""
    total = sum(b - a for a, b in ranges)
    bounds = [round(total * s / n_shards) for s in range(n_shards + 1)]
    shards = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        group, off = [], 0
        for a, b in ranges:  # the part of [a, b) at batch offsets [lo, hi)
            s, e = max(lo, off), min(hi, off + b - a)
            if s < e:
                group.append((a + s - off, a + e - off))
            off += b - a
        if group:
            shards.append(group)
    return shards


class _Data:
    """Where shards of a batch come from: futures held by the workers (a file is read by
    them; the client only looks up its shape)."""

    def __init__(self, X, dtype):
        import dask.array as da

        from sparsecode.distributed._source import describe_hdf5

        self.file = self.array = self.numpy = None
        if isinstance(X, tuple):
            self.file = (str(X[0]), X[1])
            self.dtype = np.dtype(dtype or "float32")
            self.n_rows, self.n_features, _ = describe_hdf5(*self.file, self.dtype)
            return
        if isinstance(X, da.Array):
            self.array = arr = as_dask_array(X, dtype=dtype)
        else:
            from sparsecode._validation import check_array

            X = check_array(X, "X")
            self.numpy = arr = X.astype(
                dtype or (X.dtype if X.dtype.kind == "f" else np.float64), copy=False)
        self.n_rows, self.n_features = arr.shape
        self.dtype = arr.dtype

    def future(self, client, ranges):
        """A future of the rows of ``ranges`` concatenated, held by a worker."""
        if self.file is not None:
            return client.submit(read_rows, *self.file, ranges, self.dtype.name, pure=False)
        if self.array is not None:
            import dask.array as da

            return client.compute(da.concatenate([self.array[a:b] for a, b in ranges]))
        # unique keys: a run that stopped early leaves read-ahead futures whose release
        # would otherwise drop the same rows, scattered under the same hash, from a
        # later run on this client
        return client.scatter(self._slice(ranges), hash=False)

    def read(self, client, ranges):
        """The rows of ``ranges``, here."""
        if self.numpy is not None:
            return self._slice(ranges)
        return self.future(client, ranges).result()

    def _slice(self, ranges):
        return np.concatenate([self.numpy[a:b] for a, b in ranges])


def _shard_step(config, D, b, X):
    """On a worker: one shard's :class:`~sparsecode.sae.engine.StepPart`."""
    from sparsecode.sae import Engine

    engine = Engine.for_inference(config, D, b)
    with task_threads():
        return engine.shard_step(X.astype(D.dtype, copy=False) - b)


class DataParallel:
    """Data-parallel training of an :class:`~sparsecode.MPSAE` on a Dask cluster.

    Each step: the atoms and bias are sent to the workers once; each of ``n_shards``
    tasks reads its share of the batch (files are read by the workers) and returns its
    exact gradient (``update="adam"``) or code statistics (``"mod"``, ``"online"``),
    codes and residual norms; the client merges the parts and takes the step exactly as
    :meth:`~sparsecode.MPSAE.partial_fit` would on the whole batch.  The next batch's
    reads are started before the current step is gathered.

    Parameters
    ----------
    model : MPSAE
        ``update="ksvd"`` cannot be split and is refused.
    X : dask.array.Array, ndarray or (path, dataset)
    client : distributed.Client
    pieces_per_batch : int
        See :func:`batch_plan`.
    n_shards : int, optional
        Tasks per step (default: the number of workers).
    seed : int, optional
        Data order (default: the model's ``random_state``, else 0).
    rows : (int, int), optional
        Train on rows ``[start, stop)`` only (default: all).
    dtype : {"float32", "float64"}, optional
        Float type of the signals (default: the model's).
    """

    def __init__(self, model, X, client, *, pieces_per_batch=8, n_shards=None, seed=None,
                 rows=None, dtype=None):
        require_dask()
        if model.update == "ksvd":
            raise ValueError("update='ksvd' revisits every signal of an atom at once and "
                             "cannot be trained data-parallel; use 'mod', 'online' or 'adam'")
        if model.batch_size is None:
            raise ValueError("distributed training needs a batch_size (or 'auto')")
        self.model, self.client = model, client
        self.data = _Data(X, dtype or model.dtype)
        n = self.data.n_rows
        self.rows = (0, n) if rows is None else (int(rows[0]), int(rows[1]))
        if not 0 <= self.rows[0] < self.rows[1] <= n:
            raise ValueError(f"rows must be a non-empty range within [0, {n}); got {rows}")
        self.pieces_per_batch = int(pieces_per_batch)
        self.n_shards = int(n_shards or max(1, len(client.scheduler_info()["workers"])))
        rs = model.random_state
        self.seed = int(seed if seed is not None else (rs if isinstance(rs, int) else 0))
        # the configuration the workers' shard steps need (init is used only on the client
        # and may be a whole array of atoms: not sent every step)
        from sparsecode.sae import TrainConfig

        config = TrainConfig.from_params(model.get_params())
        self.config = replace(config.resolve(self.rows[1] - self.rows[0]), init="random")

    def plan(self, epoch):
        """The batches of ``epoch`` (see :func:`batch_plan`)."""
        a, b = self.rows
        plan = batch_plan(b - a, self.config.batch_size, pieces_per_batch=self.pieces_per_batch,
                          seed=self.seed, epoch=epoch)
        return [[(s + a, e + a) for s, e in batch] for batch in plan]

    def init_rows(self, n_min):
        """The first rows of epoch 0's batches, at least ``n_min`` of them (fewer if the
        data has fewer): what the model is initialised from."""
        ranges, n = [], 0
        for batch in self.plan(0):
            ranges += batch
            n += sum(b - a for a, b in batch)
            if n >= n_min:
                break
        return self.data.read(self.client, ranges)

    def start(self, total_steps):
        """Initialise the model (as :meth:`~sparsecode.MPSAE.start`) from the first
        ``max(batch_size, n_atoms)`` rows of the plan."""
        m = self.model
        m.start(self.init_rows(max(self.config.batch_size, m.n_atoms)), total_steps=total_steps,
                n_samples=self.rows[1] - self.rows[0])
        # the settings the plan was made with ("auto" resolved for the training rows)
        m.engine_.config = replace(self.config, init=m.engine_.config.init)
        return m

    def watch(self, rows, every):
        """Check the held-out FVU of rows ``[start, stop)`` (read once, onto the client)
        every ``every`` steps, for the stopping rule (see
        :meth:`sparsecode.sae.Engine.watch`)."""
        X = self.data.read(self.client, [(int(rows[0]), int(rows[1]))])
        self.model.engine_.watch(np.ascontiguousarray(X, dtype=self.config.dtype), every)

    def epoch(self, epoch, start_batch=0):
        """Take the steps of ``epoch`` from batch ``start_batch`` on; yields after each."""
        batches = self.plan(epoch)[start_batch:]
        pending = self._shards(batches[0]) if batches else None
        for i, batch in enumerate(batches):
            data, pending = pending, None
            futures = self._submit(data)
            if i + 1 < len(batches):
                pending = self._shards(batches[i + 1])  # read ahead while this step runs
            self._apply(batch, self.client.gather(futures))
            yield

    def _shards(self, batch):
        return [self.data.future(self.client, g) for g in split_shards(batch, self.n_shards)]

    def _submit(self, data):
        m = self.model
        D, b = scatter_everywhere(self.client, [m.components_.copy(), m.bias_.copy()])
        return [self.client.submit(_shard_step, self.config, D, b, x, pure=False)
                for x in data]

    def _apply(self, batch, parts):
        from sparsecode.sae import merge

        engine = self.model.engine_
        bias = engine.bias.copy()  # the rows for resampling are centred by the bias before
        request = engine.apply(merge(parts))
        if request is not None:  # read the few rows resampling asks for
            rows = np.concatenate([np.arange(a, b) for a, b in batch])[request.rows]
            signals = self.data.read(self.client, [(int(r), int(r) + 1) for r in rows])
            engine.resample(request, signals - bias)


def fit(model, X, *, client=None, n_epochs=None, pieces_per_batch=8, n_shards=None,
        seed=None, dtype=None):
    """Train ``model`` data-parallel on a Dask cluster, from scratch.

    Parameters
    ----------
    model : MPSAE
        Its ``batch_size``, ``max_steps`` and training options are used.
    X : dask.array.Array, ndarray or (path, dataset)
        Signals; ``(path, dataset)`` is an HDF5 activation dataset read by the workers.
    client : distributed.Client, optional
        Default: the current client.
    n_epochs : int, optional
        Default: ``model.n_epochs``.  None: as ``MPSAE.fit`` on an array, train until the
        FVU of held-out rows stops improving (the last ``validation_fraction`` of the
        rows, at most 32,768, read onto the client; see
        :mod:`sparsecode.sae.stopping`), at most ``max_epochs`` passes; the model's
        ``stop_reason_`` says why it stopped.
    pieces_per_batch, n_shards, seed, dtype
        See :class:`DataParallel`.

    Returns
    -------
    model : MPSAE
    """
    require_dask()
    from distributed import default_client

    from sparsecode._progress import progress_bar
    from sparsecode.sae.fitting import finish, stop_now
    from sparsecode.sae.stopping import MAX_VALIDATION_ROWS, check_every

    client = client or default_client()
    n_epochs = model.n_epochs if n_epochs is None else int(n_epochs)
    rows = held = None
    if n_epochs is None:  # until converged: the last rows are held out
        n = _Data(X, dtype or model.dtype).n_rows
        n_val = min(int(round(model.validation_fraction * n)), MAX_VALIDATION_ROWS)
        if not 0 < n_val < n:
            raise ValueError(f"validation_fraction={model.validation_fraction} of {n} rows "
                             "leaves one side of the split empty; pass n_epochs")
        rows, held = (0, n - n_val), (n - n_val, n)
    dp = DataParallel(model, X, client, pieces_per_batch=pieces_per_batch,
                      n_shards=n_shards, seed=seed, dtype=dtype, rows=rows)
    cfg = dp.config
    epochs = n_epochs or cfg.max_epochs
    per_epoch = len(dp.plan(0))
    total = cfg.total_steps(per_epoch, epochs)
    dp.start(total)
    if held is not None:
        dp.watch(held, check_every(per_epoch, cfg.batch_size))
    bar = progress_bar(model.progress, total, unit="step")
    reason = None
    try:
        for e in range(epochs):
            for _ in dp.epoch(e):
                if bar is not None:
                    bar.update(1)
                reason = stop_now(model.engine_, cfg)
                if reason is not None or model.n_steps_ >= total:
                    break
            if reason is not None or model.n_steps_ >= total:
                break
    finally:
        if bar is not None:
            bar.close()
    finish(model.engine_, reason or ("n_epochs" if n_epochs else "max_epochs"))
    return model


def _block_stats(encoder, X):
    """On a worker: ``(A, B, n, error)`` of one block's codes."""
    from sparsecode.dictionary import code_stats

    codes = encoder(X)
    Xc = np.ascontiguousarray(X, dtype=encoder.atoms.dtype)
    with task_threads():
        A, B = code_stats(Xc, codes)
    err, _ = encoder.error(Xc, codes)
    return A, B, Xc.shape[0], err


def _add(*stats):
    A, B, n, err = stats[0]
    A, B = A.copy(), B.copy()
    for a, b, m, e in stats[1:]:
        A += a
        B += b
        n += m
        err += e
    return A, B, n, err


def mod_pass(X, D, *, solver="omp", k=None, tol=None, reg=1e-6, client=None, block_rows=None,
             dtype=None, **options):
    """One iteration of classic MOD over all of ``X``: code every block on the workers,
    sum ``A = Z^T Z`` and ``B = Z^T X`` over the blocks (a tree reduction), solve for the
    new atoms on the client.

    Parameters
    ----------
    X : dask.array.Array, ndarray or (path, dataset)
    D : ndarray of shape (n_atoms, n_features)
    solver, k, tol, options
        The pursuit (as :func:`sparsecode.distributed.encode`).
    reg : float
        As :func:`sparsecode.dictionary.mod_update`.
    client : distributed.Client, optional
        Default: the current client, else dask's default scheduler.

    Returns
    -------
    D_new : ndarray of shape (n_atoms, n_features)
        Unit-norm atoms (unused atoms keep theirs).
    error : float
        ``0.5 ||X - Z D||_F^2`` of the codes at the old atoms.
    """
    require_dask()
    import dask

    from sparsecode.dictionary import mod_from_stats, normalize_atoms
    from sparsecode.distributed.encode import BlockEncoder

    X = as_dask_array(X, block_rows=block_rows, dtype=dtype)
    enc = BlockEncoder(D, solver=solver, k=k, tol=tol, options=options, n_samples=X.shape[0],
                       dtype=X.dtype)
    denc = dask.delayed(enc, pure=True)
    level = [dask.delayed(_block_stats, pure=True)(denc, blk) for blk in X.to_delayed().ravel()]
    while len(level) > 1:  # tree reduction: pairs of partial sums, log2(blocks) deep
        level = [dask.delayed(_add, pure=True)(*level[i:i + 2]) for i in range(0, len(level), 2)]
    kw = {} if client is None else {"scheduler": client}
    A, B, n, err = dask.compute(level[0], **kw)[0]
    new = mod_from_stats(A, B, reg=reg, D=enc.atoms)
    return normalize_atoms(new.astype(enc.atoms.dtype, copy=False)), 0.5 * err
