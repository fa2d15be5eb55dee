"""The HDF5 file layer, ``sparsecode.io``, as a specification.

* Activation files: what ``write_activations`` / ``ActivationWriter`` store (dtype,
  rounding, chunking, attributes) and what ``ActivationReader`` gives back.
* The reader's epochs: every row of the range exactly once, reproducible from the seed,
  restartable at any batch, never more than its buffer in memory.
* Errors a user can act on, for files that are missing, damaged or of the wrong shape.
* The writers' partial-file protocol: ``PATH.partial``, committed rows, ``resume``.
* Codes files and model files (a saved model continues training exactly).
"""

import json
import os
import pickle
import warnings
from contextlib import contextmanager
from unittest import mock

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sparsecode
from sparsecode.codes import SparseCodes
from sparsecode.io import (
    ActivationReader,
    ActivationWriter,
    CodesWriter,
    FileFormatError,
    codes_settings,
    load_model,
    model_position,
    open_activations,
    read_codes,
    save_model,
    write_activations,
)
from sparsecode.io import activations as activations_module
from sparsecode.io import model as model_module
from sparsecode.sae import MPSAE, NotFittedError
from tests import naive

MiB = 1 << 20
#: Hypothesis tests write a file per example into pytest's ``tmp_path`` (overwriting it).
FILE_PER_EXAMPLE = settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


# ---------------------------------------------------------------------------- helpers


def _bits(a):
    """The bit patterns of a float array (so that -0.0 != 0.0 and NaNs compare)."""
    a = np.ascontiguousarray(a)
    return a.view(f"u{a.dtype.itemsize}")


def _indexed(n, d, seed=0):
    """float64 rows whose column 0 is the row number (the other columns random)."""
    X = np.random.default_rng(seed).standard_normal((n, d))
    X[:, 0] = np.arange(n)
    return X


def _ids(batches):
    """The row numbers (column 0) of a list of batches, in order."""
    if not batches:
        return np.zeros(0, dtype=np.int64)
    col = np.concatenate([b[:, 0] for b in batches])
    ids = col.astype(np.int64)
    assert np.array_equal(ids, col), "column 0 should hold whole row numbers"
    return ids


def _h5_dataset(path, X, *, name="activations", chunks=None, attrs=None):
    """An activation file as another tool may write it: any chunking (None: contiguous)."""
    with h5py.File(path, "w") as f:
        ds = f.create_dataset(name, data=X, chunks=chunks)
        for key, value in (attrs or {}).items():
            ds.attrs[key] = value
    return path


@contextmanager
def _small_blocks(block_bytes):
    """Blocks (the reader's unit of reading) of about ``block_bytes`` instead of 1 MiB, so
    that a file of a few hundred rows spans many blocks and many buffer loads."""
    with mock.patch.object(activations_module, "BLOCK_BYTES", block_bytes):
        yield


def _record_loads(reader):
    """Record every buffer load of ``reader``: ``(buffer rows, [(start, stop), ...])``."""
    loads = []
    fill = reader._fill

    def spy(buf, blocks):
        loads.append((buf.shape[0], [(int(a), int(b)) for a, b in blocks]))
        return fill(buf, blocks)

    reader._fill = spy
    return loads


def _assert_batches_equal(got, expected):
    assert len(got) == len(expected)
    for i, (a, b) in enumerate(zip(got, expected, strict=True)):
        assert a.dtype == b.dtype, f"batch {i}"
        np.testing.assert_array_equal(a, b, err_msg=f"batch {i}")


# ====================================================================================
# 1. Activation round trips
# ====================================================================================


@pytest.mark.parametrize("compression", [None, "gzip", "lzf"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_float32_and_float64_files_read_back_exactly(tmp_path, dtype, compression):
    rng = np.random.default_rng(1)
    X = (rng.standard_normal((301, 7)) * np.logspace(-30, 30, 7)).astype(dtype)
    X[0, :2] = [-0.0, 0.0]
    path = write_activations(tmp_path / "acts.h5", X, dtype=dtype, compression=compression,
                             rows_per_write=50)
    assert path == tmp_path / "acts.h5"
    with h5py.File(path) as f:
        ds = f["activations"]
        assert ds.dtype == dtype and ds.shape == X.shape
        assert ds.compression == compression
    with ActivationReader(path, "activations", dtype=dtype) as reader:
        assert (reader.n_rows, reader.n_features, reader.source_dtype) == (301, 7, dtype)
        got = reader.read()
        part = reader.read(100, 250)
    assert got.dtype == dtype
    np.testing.assert_array_equal(_bits(got), _bits(X))
    np.testing.assert_array_equal(_bits(part), _bits(X[100:250]))


def test_float32_file_read_as_float64_is_exact(tmp_path):
    X = np.random.default_rng(2).standard_normal((40, 5)).astype(np.float32)
    write_activations(tmp_path / "a.h5", X)
    got = ActivationReader(tmp_path / "a.h5", "activations", dtype="float64").read()
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, X.astype(np.float64))


@pytest.mark.parametrize("compression", [None, "gzip"])
@pytest.mark.parametrize("source", ["float32", "float64"])
def test_float16_file_holds_the_float16_rounding(tmp_path, source, compression):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((200, 6)) * np.array([1e-6, 1e-3, 1, 10, 1e3, 1e4])
    X = np.clip(X, -65000, 65000).astype(source)  # within float16's range
    write_activations(tmp_path / "a.h5", X, dtype="float16", compression=compression)
    with h5py.File(tmp_path / "a.h5") as f:
        assert f["activations"].dtype == np.float16
    got = ActivationReader(tmp_path / "a.h5", "activations").read()
    assert got.dtype == np.float32
    np.testing.assert_array_equal(_bits(got), _bits(X.astype(np.float16).astype(np.float32)))


def _bfloat16_test_values():
    """float32 values covering what bfloat16 rounding must get right."""
    special = np.array([
        0x00000000, 0x80000000,  # +-0
        0x3F808000, 0x3F818000,  # ties: to the even 0x3F80, and up to the even 0x3F82
        0x3F808001, 0x3F807FFF,  # just above / below the tie
        0xBF808000, 0xBF818000,  # negative ties
        0x7F7FFFFF, 0xFF7FFFFF,  # largest finite: round to +-inf
        0x7F7F7FFF,  # largest that stays finite
        0x00000001, 0x00008000, 0x00018000, 0x007FFFFF,  # subnormals, a subnormal tie
        0x7F800000, 0xFF800000,  # +-inf
        0x7FC00000, 0xFFC00000, 0x7F800001, 0x7FFFFFFF,  # NaNs (quiet, negative, signalling)
    ], dtype=np.uint32)
    random = np.random.default_rng(4).integers(0, 2**32, size=2016, dtype=np.uint32)
    return np.concatenate([special, random]).view(np.float32)


def test_bfloat16_reference_rounds_to_nearest_even():
    # the reference itself, on values worked out by hand
    x = np.array([0x3F808000, 0x3F818000, 0x3F808001, 0x7F7FFFFF, 0xFFC00001, 0x00008000],
                 dtype=np.uint32).view(np.float32)
    assert naive.bfloat16_round(x).tolist() == [0x3F80, 0x3F82, 0x3F81, 0x7F80, 0x7FC0, 0x0000]


@pytest.mark.parametrize("compression", [None, "gzip", "lzf"])
def test_bfloat16_file_holds_round_to_nearest_even(tmp_path, compression):
    X = _bfloat16_test_values().reshape(-1, 7)
    from sparsecode.io._dtypes import float32_to_bfloat16

    np.testing.assert_array_equal(float32_to_bfloat16(X), naive.bfloat16_round(X))
    # finite values that would round to infinity are refused by the writer
    overflow = (np.isfinite(X) & (naive.bfloat16_round(X) & 0x7FFF == 0x7F80)).any(axis=1)
    if overflow.any():
        with pytest.raises(ValueError, match="beyond the bfloat16 range"):
            write_activations(tmp_path / "bad.h5", X, dtype="bfloat16")
        assert not (tmp_path / "bad.h5").exists()
    X = X[~overflow]
    write_activations(tmp_path / "a.h5", X, dtype="bfloat16", compression=compression)
    expected = naive.bfloat16_round(X)
    with h5py.File(tmp_path / "a.h5") as f:
        ds = f["activations"]
        assert ds.dtype == np.uint16
        assert ds.attrs["dtype"] == "bfloat16"
        np.testing.assert_array_equal(ds[()], expected)
    # read back: the bfloat16 values widened exactly (bfloat16 is float32's upper half)
    widened = (expected.astype(np.uint32) << 16).view(np.float32)
    with ActivationReader(tmp_path / "a.h5", "activations", check_finite=False) as reader:
        assert reader.source_dtype == "bfloat16"
        np.testing.assert_array_equal(_bits(reader.read()), _bits(widened))
    as64 = ActivationReader(tmp_path / "a.h5", "activations", check_finite=False,
                            dtype="float64").read()
    np.testing.assert_array_equal(as64, widened.astype(np.float64))  # NaNs compare equal


def test_bfloat16_of_float64_input_rounds_through_float32(tmp_path):
    X = np.random.default_rng(5).standard_normal((64, 3)) * 100
    write_activations(tmp_path / "a.h5", X, dtype="bfloat16")
    with h5py.File(tmp_path / "a.h5") as f:
        np.testing.assert_array_equal(f["activations"][()],
                                      naive.bfloat16_round(X.astype(np.float32)))


@FILE_PER_EXAMPLE
@given(bits=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=60),
       order=st.sampled_from(["C", "F"]))
def test_bfloat16_rounding_of_any_float32(tmp_path, bits, order):
    X = np.array(bits, dtype=np.uint32).view(np.float32)
    X = np.asarray(np.stack([X, -X], axis=1), order=order)  # Fortran order: not contiguous
    write_activations(tmp_path / "a.h5", X, dtype="bfloat16", overwrite=True)
    with h5py.File(tmp_path / "a.h5") as f:
        np.testing.assert_array_equal(f["activations"][()], naive.bfloat16_round(X))


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "bfloat16"])
@pytest.mark.parametrize("n_features", [1, 7, 300])
def test_file_layout_chunks_of_about_1_mib_appendable_and_committed(tmp_path, dtype,
                                                                   n_features):
    X = np.random.default_rng(6).standard_normal((30, n_features))
    write_activations(tmp_path / "a.h5", X, dtype=dtype, dataset="layer/acts")
    itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
    row_bytes = n_features * itemsize
    with h5py.File(tmp_path / "a.h5") as f:
        assert f.attrs["sparsecode_format"] == "activations"
        assert f.attrs["committed_rows"] == 30
        assert bool(f.attrs["complete"]) is True
        ds = f["layer/acts"]
        assert ds.shape == (30, n_features)
        assert ds.maxshape == (None, n_features)
        chunk_rows, chunk_cols = ds.chunks
        assert chunk_cols == n_features
        assert MiB - row_bytes < chunk_rows * row_bytes <= MiB
        if dtype == "bfloat16":
            assert ds.attrs["dtype"] == "bfloat16"
        else:
            assert "dtype" not in ds.attrs
    assert not (tmp_path / "a.h5.partial").exists()


def test_writer_attrs_and_dataset_name(tmp_path):
    X = np.random.default_rng(11).standard_normal((10, 3))
    with ActivationWriter(tmp_path / "a.h5", 3, dataset="blocks.5.hook_resid_post",
                          attrs={"layer": 5, "model": "gpt2"}) as w:
        w.append(X[::2])  # a strided view
        w.append(np.asfortranarray(X[1::2]))
    with h5py.File(tmp_path / "a.h5") as f:
        ds = f["blocks.5.hook_resid_post"]
        assert ds.attrs["layer"] == 5 and ds.attrs["model"] == "gpt2"
    got = ActivationReader(tmp_path / "a.h5", "blocks.5.hook_resid_post").read()
    np.testing.assert_array_equal(got, np.concatenate([X[::2], X[1::2]]).astype(np.float32))


def test_open_activations_is_the_reader(tmp_path):
    X = _indexed(50, 3)
    write_activations(tmp_path / "a.h5", X, dtype="float64")
    with open_activations(tmp_path / "a.h5", "activations", batch_size=7, shuffle=False,
                          dtype="float64") as reader:
        assert isinstance(reader, ActivationReader)
        np.testing.assert_array_equal(np.concatenate(list(reader.epoch(0))), X)


# ====================================================================================
# 2. The reader's epochs
# ====================================================================================


@st.composite
def reader_setups(draw, max_rows=300):
    """A file layout and reader arguments: small blocks, a small buffer, a row range."""
    # files of many blocks and buffer loads, and tiny ones (one block, one batch)
    n = draw(st.one_of(st.integers(13, 60), st.integers(61, max_rows), st.integers(1, 12)))
    d = draw(st.integers(1, 3))
    chunks = draw(st.one_of(st.none(), st.integers(1, min(n, 40))))  # None: contiguous
    block_bytes = draw(st.integers(1, 100))
    out_dtype = draw(st.sampled_from(["float32", "float64"]))
    out_row = d * np.dtype(out_dtype).itemsize
    buffer_bytes = draw(st.integers(1, 24)) * out_row + draw(st.integers(0, out_row - 1))
    start = draw(st.integers(0, n - 1))
    stop = draw(st.integers(start + 1, n))
    form = draw(st.sampled_from(["none", "slice", "tuple"]))
    if form == "none":
        start, stop, rows = 0, n, None
    else:
        rows = slice(start, stop) if form == "slice" else (start, stop)
    kwargs = dict(
        batch_size=draw(st.integers(1, 24)), shuffle=draw(st.booleans()),
        seed=draw(st.integers(0, 2**63 - 1)), rows=rows, buffer_bytes=buffer_bytes,
        drop_last=draw(st.booleans()), dtype=out_dtype,
    )
    return dict(n=n, d=d, chunks=chunks, block_bytes=block_bytes, start=start, stop=stop,
                kwargs=kwargs)


def _open_setup(tmp_path, setup):
    X = _indexed(setup["n"], setup["d"], seed=setup["n"])
    chunks = None if setup["chunks"] is None else (setup["chunks"], setup["d"])
    path = _h5_dataset(tmp_path / "shuffle.h5", X, chunks=chunks)
    return X, ActivationReader(path, "activations", **setup["kwargs"])


@FILE_PER_EXAMPLE
@given(setup=reader_setups())
def test_an_epoch_visits_every_row_of_the_range_once_within_the_buffer(tmp_path, setup):
    kw = setup["kwargs"]
    bs, start, stop = kw["batch_size"], setup["start"], setup["stop"]
    n_range = stop - start
    with _small_blocks(setup["block_bytes"]):
        X, reader = _open_setup(tmp_path, setup)
    with reader:
        loads = _record_loads(reader)
        batches = list(reader.epoch(0))
    out = np.dtype(kw["dtype"])

    # sizes: full batches, the last may be smaller (dropped with drop_last)
    assert reader.n_rows == n_range
    n_full, rest = divmod(n_range, bs)
    assert len(reader) == (n_full if kw["drop_last"] or rest == 0 else n_full + 1)
    assert len(batches) == len(reader)
    assert all(b.shape == (bs, setup["d"]) and b.dtype == out for b in batches[:n_full])
    if len(batches) > n_full:
        assert batches[-1].shape == (rest, setup["d"])

    # coverage: every row once (drop_last: all but the n_range % bs rows left over)
    ids = _ids(batches)
    assert len(np.unique(ids)) == len(ids)
    assert np.all((ids >= start) & (ids < stop))
    assert len(ids) == (n_full * bs if kw["drop_last"] else n_range)
    for b in batches:  # whole rows, exactly as in the file
        np.testing.assert_array_equal(b, X[b[:, 0].astype(np.int64)].astype(out))
    if not kw["shuffle"]:
        np.testing.assert_array_equal(ids, np.arange(start, start + len(ids)))

    # memory: the buffer never holds more than max(one block, buffer_bytes) of rows
    out_row = setup["d"] * out.itemsize
    assert reader._load_rows == max(reader.block_rows, kw["buffer_bytes"] // out_row)
    if setup["chunks"] is not None:
        assert reader.block_rows % setup["chunks"] == 0
    read = []
    for buf_rows, blocks in loads:
        assert buf_rows <= reader._load_rows
        assert sum(b - a for a, b in blocks) <= buf_rows
        for a, b in blocks:  # blocks: runs of at most block_rows, aligned to them
            assert 0 < b - a <= reader.block_rows
            assert a == start or a % reader.block_rows == 0
            assert b == stop or b % reader.block_rows == 0
        read.append(sorted(r for a, b in blocks for r in range(a, b)))
    # the batches come out load after load: each row was in the buffer when it was cut
    pos = 0
    for rows_of_load in read:
        segment = ids[pos:pos + len(rows_of_load)]
        assert set(segment) <= set(rows_of_load)
        pos += len(rows_of_load)
    if not kw["drop_last"]:
        assert sorted(r for rows_of_load in read for r in rows_of_load) == list(
            range(start, stop))


@FILE_PER_EXAMPLE
@given(setup=reader_setups(), epoch=st.integers(0, 3), data=st.data())
def test_epochs_are_reproducible_restartable_and_picklable(tmp_path, setup, epoch, data):
    kw = setup["kwargs"]
    with _small_blocks(setup["block_bytes"]):
        X, reader = _open_setup(tmp_path, setup)
        twin = ActivationReader(tmp_path / "shuffle.h5", "activations", **kw)
        copy = pickle.loads(pickle.dumps(reader))
    with reader, twin, copy:
        batches = list(reader.epoch(epoch))
        # the same seed gives the same batches, in another reader or in a copy
        _assert_batches_equal(list(twin.epoch(epoch)), batches)
        _assert_batches_equal(list(copy.epoch(epoch)), batches)
        # an epoch restarted at batch s is the tail of the epoch, without the loads before
        s = data.draw(st.integers(0, len(batches) + 1), label="start_batch")
        loads = _record_loads(reader)
        _assert_batches_equal(list(reader.epoch(epoch, start_batch=s)), batches[s:])
        rows_read = sum(b - a for _, blocks in loads for a, b in blocks)
        assert rows_read <= max(0, reader.n_rows - s * kw["batch_size"]) + reader._load_rows
        if s >= len(batches):
            assert rows_read == 0
        # another epoch: another order (shuffle), the same (no shuffle)
        other = _ids(list(reader.epoch(epoch + 1)))
        if not kw["shuffle"]:
            np.testing.assert_array_equal(other, _ids(batches))
        elif len(other) >= 20:
            assert not np.array_equal(other, _ids(batches))


@FILE_PER_EXAMPLE
@given(setup=reader_setups(max_rows=120))
def test_iterating_the_reader_runs_epoch_after_epoch(tmp_path, setup):
    with _small_blocks(setup["block_bytes"]):
        X, reader = _open_setup(tmp_path, setup)
        first, second = list(reader), list(reader)
        copy = pickle.loads(pickle.dumps(reader))  # remembers the epoch it is at
    with reader, copy:
        third = list(copy)
        _assert_batches_equal(first, list(reader.epoch(0)))
        _assert_batches_equal(second, list(reader.epoch(1)))
        _assert_batches_equal(third, list(reader.epoch(2)))
        _assert_batches_equal(list(reader), third)


@pytest.mark.parametrize("chunk", [1, 7, 200])
def test_each_epoch_and_each_seed_has_its_own_order(tmp_path, chunk):
    _h5_dataset(tmp_path / "a.h5", _indexed(200, 2), chunks=(chunk, 2))
    orders = []
    with _small_blocks(1):
        for seed in (0, 1):
            with ActivationReader(tmp_path / "a.h5", "activations", batch_size=16, seed=seed,
                                  buffer_bytes=50 * 16, dtype="float64") as reader:
                orders += [tuple(_ids(list(reader.epoch(e)))) for e in range(4)]
    assert all(sorted(order) == list(range(200)) for order in orders)
    assert len(set(orders)) == len(orders)


def test_default_blocks_load_about_1_mib_and_the_buffer_stays_within_budget(tmp_path):
    # 1 KiB rows: the writer's 1 MiB chunks hold 1024 rows; 5000 rows are 5 blocks
    X = _indexed(5000, 128)
    write_activations(tmp_path / "a.h5", X, dtype="float64")
    reader = ActivationReader(tmp_path / "a.h5", "activations", batch_size=300, seed=3,
                              buffer_bytes=2 * MiB + 5, dtype="float64")
    with reader:
        assert reader.block_rows == 1024
        assert reader._load_rows == 2048
        loads = _record_loads(reader)
        batches = list(reader)
    ids = _ids(batches)
    np.testing.assert_array_equal(np.sort(ids), np.arange(5000))
    assert not np.array_equal(ids, np.arange(5000))
    assert len(loads) == 3  # 2 + 2 + 1 blocks
    for buf_rows, blocks in loads:
        assert buf_rows <= 2048 and sum(b - a for a, b in blocks) <= 2048
        assert all(b - a <= 1024 and a % 1024 == 0 for a, b in blocks)
        assert blocks == sorted(blocks)  # a load is read front to back
    assert sorted(blk for _, blocks in loads for blk in blocks) == [
        (a, min(a + 1024, 5000)) for a in range(0, 5000, 1024)]


#: A file of tall, narrow chunks: one column of every row per chunk.
TALL_ROWS, TALL_COLS = 20_000, 64


def _tall_file(path, dtype="float32"):
    X = _indexed(TALL_ROWS, TALL_COLS).astype(dtype)
    return X, _h5_dataset(path, X, chunks=(TALL_ROWS, 1))


@contextmanager
def _record_reads(requests):
    """Record the bytes in the file of every row range read from a dataset, as
    ``(how, bytes)``: "direct" (into the buffer) or "copy" (a temporary to convert)."""
    read_direct, getitem = h5py.Dataset.read_direct, h5py.Dataset.__getitem__

    def nbytes(ds, sel):
        rows = sel[0] if isinstance(sel, tuple) else sel
        start, stop, _ = rows.indices(ds.shape[0])
        return (stop - start) * ds.shape[1] * ds.dtype.itemsize

    def spy_direct(self, dest, source_sel=None, dest_sel=None):
        requests.append(("direct", nbytes(self, source_sel)))
        return read_direct(self, dest, source_sel, dest_sel)

    def spy_getitem(self, sel, *args, **kwargs):
        requests.append(("copy", nbytes(self, sel)))
        return getitem(self, sel, *args, **kwargs)

    with mock.patch.object(h5py.Dataset, "read_direct", spy_direct), \
            mock.patch.object(h5py.Dataset, "__getitem__", spy_getitem):
        yield


def _chunk_warnings(caught):
    return [w for w in caught if issubclass(w.category, UserWarning)
            and "chunked" in str(w.message)]


@pytest.mark.parametrize(("source", "dtype"), [("float32", "float32"),
                                               ("float64", "float32"),
                                               ("float32", "float64")])
def test_tall_narrow_chunks_are_read_in_row_blocks_within_the_buffer(tmp_path, source,
                                                                     dtype):
    # chunks (n, 1): a chunk's rows are the whole file, 5 or 10 MiB; the buffer is 1 MiB
    X, path = _tall_file(tmp_path / "tall.h5", source)
    budget = MiB
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reader = ActivationReader(path, "activations", batch_size=1000, seed=4,
                                  buffer_bytes=budget, dtype=dtype)
        with reader:
            loads, requests = _record_loads(reader), []
            with _record_reads(requests):
                batches = list(reader.epoch(0))
                second = list(reader.epoch(1))
    # memory: the buffer and the stored-type copy a conversion reads fit the budget
    out_row = TALL_COLS * np.dtype(dtype).itemsize
    copy_row = 0 if source == dtype else TALL_COLS * np.dtype(source).itemsize
    assert 1 < reader.block_rows <= budget // (out_row + copy_row)
    assert reader._load_rows == reader.block_rows
    assert len(loads) >= 2 * (TALL_ROWS * out_row // budget)  # two epochs, many loads
    largest = max(nbytes for _, nbytes in requests)
    for buf_rows, blocks in loads:
        held = buf_rows * out_row
        assert held <= budget
        assert sum(b - a for a, b in blocks) <= buf_rows
        if copy_row:
            assert held + largest <= budget
    assert all(how == ("copy" if copy_row else "direct") for how, _ in requests)
    assert largest <= reader.block_rows * TALL_COLS * np.dtype(source).itemsize

    # every row once, exactly as in the file; shuffled, and each epoch in its own order
    for epoch in (batches, second):
        ids = _ids(epoch)
        np.testing.assert_array_equal(np.sort(ids), np.arange(TALL_ROWS))
        for b in epoch:
            assert b.dtype == dtype
            np.testing.assert_array_equal(b, X[b[:, 0].astype(np.int64)].astype(dtype))
    assert not np.array_equal(_ids(batches), np.arange(TALL_ROWS))
    assert not np.array_equal(_ids(batches), _ids(second))

    # one warning per reader, naming the chunk shape and the way out
    (warning,) = _chunk_warnings(caught)
    message = str(warning.message)
    assert "(20000, 1)" in message and "slower" in message
    assert "row-major chunks" in message and "write_activations" in message


def test_tall_narrow_chunks_keep_the_order_resume_and_views(tmp_path):
    X, path = _tall_file(tmp_path / "tall.h5")
    budget, bs = 256 << 10, 700  # loads of 1024 rows
    kw = dict(batch_size=bs, seed=9, buffer_bytes=budget)
    with pytest.warns(UserWarning, match=r"chunked \(20000, 1\)"):
        reader = ActivationReader(path, "activations", **kw)
    with pytest.warns(UserWarning, match=r"chunked \(20000, 1\)"):
        twin = ActivationReader(path, "activations", **kw)
    with pytest.warns(UserWarning, match=r"chunked \(20000, 1\)"):
        copy = pickle.loads(pickle.dumps(reader))
    with reader, twin, copy:
        assert reader.block_rows == reader._load_rows == 1024
        batches = list(reader.epoch(2))
        _assert_batches_equal(list(twin.epoch(2)), batches)
        _assert_batches_equal(list(copy.epoch(2)), batches)
        # a restart at batch s reads from the load that holds it on, not the whole file
        s = 20
        loads = _record_loads(reader)
        _assert_batches_equal(list(reader.epoch(2, start_batch=s)), batches[s:])
        rows_read = sum(b - a for _, blocks in loads for a, b in blocks)
        assert rows_read <= TALL_ROWS - s * bs + 1024
        assert all(buf_rows <= 1024 for buf_rows, _ in loads)

    # file order with copy=False: views of the buffer where a batch lies in one load
    with pytest.warns(UserWarning, match="slower"):
        views_reader = ActivationReader(path, "activations", shuffle=False, copy=False,
                                        **kw)
    with views_reader:
        loads = _record_loads(views_reader)
        views = 0
        for i, b in enumerate(views_reader.epoch(0)):
            np.testing.assert_array_equal(b, X[i * bs:(i + 1) * bs].astype(np.float32))
            views += b.base is not None
        assert views > 0
        assert [blk for _, blocks in loads for blk in blocks] == [
            (a, min(a + 1024, TALL_ROWS)) for a in range(0, TALL_ROWS, 1024)]
        np.testing.assert_array_equal(views_reader.read(), X.astype(np.float32))


def test_only_tall_narrow_chunks_that_overflow_the_buffer_change_the_blocks(tmp_path):
    X = _indexed(TALL_ROWS, TALL_COLS).astype(np.float32)
    row_bytes = TALL_COLS * 4

    def open_quietly(chunks, **kwargs):
        path = _h5_dataset(tmp_path / f"{chunks}.h5", X, chunks=chunks)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            reader = ActivationReader(path, "activations", **kwargs)
        with reader:
            return reader.block_rows, reader._load_rows

    # chunks of whole rows, however large or small against the buffer: as before
    for rows in (1, 100, 4096, 8192, TALL_ROWS):
        block = rows * max(1, MiB // (rows * row_bytes))
        assert open_quietly((rows, TALL_COLS), buffer_bytes=1) == (block, block)
        assert open_quietly((rows, TALL_COLS), buffer_bytes=MiB) == (block, max(block, 4096))
    # narrow chunks whose rows are at most 1 MiB of whole rows: blocks of whole chunks
    assert open_quietly((4096, 1), buffer_bytes=1) == (4096, 4096)
    assert open_quietly((1000, 8), buffer_bytes=1) == (4000, 4000)
    # tall, narrow chunks whose rows fit the buffer, or a range that does: as before
    assert open_quietly((TALL_ROWS, 1)) == (TALL_ROWS, (256 << 20) // row_bytes)
    assert open_quietly((TALL_ROWS, 1), buffer_bytes=6 * MiB) == (TALL_ROWS, 24576)
    assert open_quietly((TALL_ROWS, 1), buffer_bytes=MiB, rows=(500, 4596)) == (
        TALL_ROWS, TALL_ROWS)
    # the rows of one tall, narrow chunk do not fit the buffer: blocks sized to it
    path = _h5_dataset(tmp_path / "tall.h5", X, chunks=(TALL_ROWS, 1))
    with pytest.warns(UserWarning, match=r"chunked \(20000, 1\)"):
        reader = ActivationReader(path, "activations", buffer_bytes=MiB, rows=(500, 4597))
    with reader:
        assert reader.block_rows == reader._load_rows == 4096
    with pytest.warns(UserWarning, match="row-major chunks"):
        reader = ActivationReader(path, "activations", buffer_bytes=1)
    with reader:
        assert reader.block_rows == reader._load_rows == 1


@FILE_PER_EXAMPLE
@given(n=st.integers(1, 80), chunk=st.integers(1, 9), shuffle=st.booleans(),
       bad_value=st.sampled_from([np.nan, np.inf, -np.inf]), data=st.data())
def test_a_non_finite_row_is_named_by_its_row_number_in_the_file(tmp_path, n, chunk, shuffle,
                                                                 bad_value, data):
    bad = data.draw(st.integers(0, n - 1), label="bad row")
    X = _indexed(n, 3)
    X[bad, data.draw(st.integers(0, 2), label="column")] = bad_value
    _h5_dataset(tmp_path / "nan.h5", X, chunks=(min(chunk, n), 3))
    start = data.draw(st.integers(0, bad), label="range start")
    stop = data.draw(st.integers(bad + 1, n), label="range stop")
    with _small_blocks(1):
        reader = ActivationReader(tmp_path / "nan.h5", "activations", shuffle=shuffle,
                                  batch_size=4, buffer_bytes=1, rows=(start, stop))
    with reader:
        with pytest.raises(ValueError, match=rf"\brow {bad} contains NaN or infinity"):
            list(reader.epoch(0))
        with pytest.raises(ValueError, match=rf"\brow {bad} "):
            reader.read()
    # rows outside the range are never read; without the check the row comes through
    if bad > 0:
        clean = ActivationReader(tmp_path / "nan.h5", "activations", rows=(0, bad))
        with clean:
            assert sum(len(b) for b in clean.epoch(0)) == bad
    unchecked = ActivationReader(tmp_path / "nan.h5", "activations", check_finite=False,
                                 dtype="float64", shuffle=False, batch_size=n)
    with unchecked:
        (got,) = list(unchecked.epoch(0))
    np.testing.assert_array_equal(got, X)


# ====================================================================================
# 3. Bad input to the reader
# ====================================================================================


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        ActivationReader(tmp_path / "missing.h5", "activations")


def test_a_directory_is_not_an_hdf5_file(tmp_path):
    with pytest.raises(FileFormatError, match="directory"):
        ActivationReader(tmp_path, "activations")


def test_not_an_hdf5_file(tmp_path):
    (tmp_path / "a.h5").write_text("x,y\n1,2\n" * 100)
    with pytest.raises(FileFormatError, match="not an HDF5 file"):
        ActivationReader(tmp_path / "a.h5", "activations")


def test_truncated_file(tmp_path):
    write_activations(tmp_path / "a.h5", np.ones((2000, 16)))
    data = (tmp_path / "a.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError, match="truncated"):
        ActivationReader(tmp_path / "cut.h5", "activations")


def test_wrong_dataset_name_lists_the_datasets(tmp_path):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.create_dataset("blocks/0/resid", data=np.ones((4, 2)))
        f.create_dataset("tokens", data=np.arange(4))
    with pytest.raises(FileFormatError, match="'acts'") as err:
        ActivationReader(tmp_path / "a.h5", "acts")
    assert "'blocks/0/resid'" in str(err.value) and "'tokens'" in str(err.value)
    with pytest.raises(FileFormatError, match="group"):
        ActivationReader(tmp_path / "a.h5", "blocks")


@pytest.mark.parametrize("shape", [(10,), (2, 3, 4)])
def test_dataset_must_be_2d(tmp_path, shape):
    _h5_dataset(tmp_path / "a.h5", np.ones(shape))
    with pytest.raises(FileFormatError, match="2-D"):
        ActivationReader(tmp_path / "a.h5", "activations")


@pytest.mark.parametrize("dtype", [np.int32, np.uint16, np.int64, np.complex64])
def test_dataset_must_hold_floats(tmp_path, dtype):
    _h5_dataset(tmp_path / "a.h5", np.ones((4, 3), dtype=dtype))
    with pytest.raises(FileFormatError, match="dtype"):
        ActivationReader(tmp_path / "a.h5", "activations")


@pytest.mark.parametrize("shape", [(0, 5), (5, 0)])
def test_empty_dataset(tmp_path, shape):
    _h5_dataset(tmp_path / "a.h5", np.ones(shape, dtype=np.float32))
    with pytest.raises(FileFormatError, match="empty"):
        ActivationReader(tmp_path / "a.h5", "activations")


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint32])
def test_bfloat16_tag_needs_uint16_storage(tmp_path, dtype):
    _h5_dataset(tmp_path / "a.h5", np.ones((4, 3), dtype=dtype), attrs={"dtype": "bfloat16"})
    with pytest.raises(FileFormatError, match="bfloat16.*uint16"):
        ActivationReader(tmp_path / "a.h5", "activations")


def test_bfloat16_tag_on_uint16_from_another_tool_is_read(tmp_path):
    X = np.random.default_rng(7).standard_normal((9, 4)).astype(np.float32)
    _h5_dataset(tmp_path / "a.h5", naive.bfloat16_round(X), attrs={"dtype": b"bfloat16"})
    got = ActivationReader(tmp_path / "a.h5", "activations").read()
    np.testing.assert_array_equal(_bits(got), _bits(
        (naive.bfloat16_round(X).astype(np.uint32) << 16).view(np.float32)))


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"batch_size": -3}, ValueError, "batch_size"),
    ({"batch_size": 2.0}, TypeError, "batch_size"),
    ({"batch_size": True}, TypeError, "batch_size"),
    ({"buffer_bytes": 0}, ValueError, "buffer_bytes"),
    ({"seed": -1}, ValueError, "seed"),
    ({"rows": (5, 5)}, ValueError, "select no rows"),
    ({"rows": (8, 2)}, ValueError, "select no rows"),
    ({"rows": (20, 30)}, ValueError, "select no rows"),
    ({"rows": slice(0, 10, 2)}, ValueError, "step 1"),
    ({"rows": 5}, TypeError, "rows"),
    ({"rows": (1, 2, 3)}, TypeError, "rows"),
    ({"dtype": "float16"}, ValueError, "float32 or float64"),
    ({"dtype": "int32"}, ValueError, "float32 or float64"),
])
def test_bad_reader_arguments(tmp_path, kwargs, error, match):
    write_activations(tmp_path / "a.h5", np.ones((10, 2)))
    with pytest.raises(error, match=match):
        ActivationReader(tmp_path / "a.h5", "activations", **kwargs)


def test_row_ranges_follow_slice_rules(tmp_path):
    X = _indexed(10, 2)
    write_activations(tmp_path / "a.h5", X, dtype="float64")
    for rows, expected in [((2, 5), [2, 3, 4]), (slice(-3, None), [7, 8, 9]),
                           ((None, 2), [0, 1]), ((8, 100), [8, 9])]:
        r = ActivationReader(tmp_path / "a.h5", "activations", rows=rows, dtype="float64")
        with r:
            assert r.n_rows == len(expected)
            assert _ids([r.read()]).tolist() == expected


def test_bad_epoch_arguments(tmp_path):
    write_activations(tmp_path / "a.h5", np.ones((10, 2)))
    with ActivationReader(tmp_path / "a.h5", "activations") as reader:
        with pytest.raises(ValueError, match="epoch"):
            next(reader.epoch(-1))
        with pytest.raises(ValueError, match="start_batch"):
            next(reader.epoch(0, start_batch=-1))


# ====================================================================================
# 4. Writers and the partial-file protocol
# ====================================================================================


def _read_all(path, dataset="activations", dtype="float64"):
    return ActivationReader(path, dataset, dtype=dtype, check_finite=False).read()


def test_writer_refuses_to_overwrite_and_leaves_the_file_untouched(tmp_path):
    path = write_activations(tmp_path / "a.h5", np.ones((5, 3)))
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="already exists"):
        ActivationWriter(path, 3)
    with pytest.raises(FileExistsError):
        write_activations(path, np.zeros((5, 3)))
    assert path.read_bytes() == before
    assert not (tmp_path / "a.h5.partial").exists()
    # overwrite=True replaces it
    write_activations(path, np.zeros((4, 3)), overwrite=True)
    np.testing.assert_array_equal(_read_all(path), np.zeros((4, 3)))
    assert not (tmp_path / "a.h5.partial").exists()


def test_an_interrupted_writer_leaves_only_a_partial_file_that_resumes(tmp_path):
    X = np.random.default_rng(8).standard_normal((100, 4)).astype(np.float32)
    path = tmp_path / "a.h5"
    partial = tmp_path / "a.h5.partial"
    with pytest.raises(RuntimeError, match="interrupted"):
        with ActivationWriter(path, 4) as w:
            assert w.partial == partial and w.n_rows == 0 and not w.resumed
            w.append(X[:30])
            w.append(X[30:45])
            raise RuntimeError("interrupted")
    assert not path.exists() and partial.exists()
    with h5py.File(partial) as f:
        assert f.attrs["committed_rows"] == 45
        assert bool(f.attrs["complete"]) is False
    # the partial file is an activation file like any other: its rows are there
    np.testing.assert_array_equal(_read_all(partial, dtype="float32"), X[:45])

    with pytest.raises(FileExistsError, match="interrupted run"):
        ActivationWriter(path, 4)
    with ActivationWriter(path, 4, resume=True) as w:
        assert w.resumed and w.n_rows == 45
        w.append(X[45:])
        assert w.n_rows == 100
    assert path.exists() and not partial.exists()
    np.testing.assert_array_equal(_bits(_read_all(path, dtype="float32")), _bits(X))
    with h5py.File(path) as f:
        assert f.attrs["committed_rows"] == 100 and bool(f.attrs["complete"]) is True


def test_resume_without_a_partial_file_starts_afresh(tmp_path):
    with ActivationWriter(tmp_path / "a.h5", 2, resume=True) as w:
        assert not w.resumed and w.n_rows == 0
        w.append(np.ones((3, 2)))
    assert _read_all(tmp_path / "a.h5").shape == (3, 2)


def test_overwrite_starts_a_partial_file_afresh(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with ActivationWriter(tmp_path / "a.h5", 2) as w:
            w.append(np.ones((3, 2)))
            raise KeyboardInterrupt
    with ActivationWriter(tmp_path / "a.h5", 2, overwrite=True) as w:
        assert w.n_rows == 0
        w.append(np.zeros((1, 2)))
    np.testing.assert_array_equal(_read_all(tmp_path / "a.h5"), np.zeros((1, 2)))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"n_features": 5}, "n_features"),
    ({"dtype": "float64"}, "dtype"),
    ({"dtype": "bfloat16"}, "dtype"),
    ({"dataset": "other"}, "'other'"),
])
def test_resume_refuses_other_settings(tmp_path, kwargs, match):
    with pytest.raises(RuntimeError):
        with ActivationWriter(tmp_path / "a.h5", 4, dtype="float32") as w:
            w.append(np.ones((3, 4)))
            raise RuntimeError
    before = (tmp_path / "a.h5.partial").read_bytes()
    args = {"n_features": 4, "dtype": "float32", **kwargs}
    with pytest.raises(FileFormatError, match=match):
        ActivationWriter(tmp_path / "a.h5", args.pop("n_features"), resume=True, **args)
    assert (tmp_path / "a.h5.partial").read_bytes() == before
    # the file is closed again: the right settings resume it
    with ActivationWriter(tmp_path / "a.h5", 4, resume=True) as w:
        assert w.n_rows == 3


def test_resume_refuses_a_partial_file_of_another_kind(tmp_path):
    with pytest.raises(RuntimeError):
        with CodesWriter(tmp_path / "a.h5", 10, 2):
            raise RuntimeError
    with pytest.raises(FileFormatError, match="expected a sparsecode activations file"):
        ActivationWriter(tmp_path / "a.h5", 4, resume=True)


def test_rows_after_the_last_commit_are_dropped_on_resume(tmp_path):
    X = np.random.default_rng(9).standard_normal((60, 3))
    path = tmp_path / "a.h5"
    w = ActivationWriter(path, 3, dtype="float64", commit_seconds=1e9)
    w.append(X[:20])
    w.commit()
    w.append(X[20:50])  # written, never committed: a crash before the next commit
    assert w.n_rows == 50
    w._file.flush()
    w._file.close()
    w._file = None
    with h5py.File(tmp_path / "a.h5.partial") as f:
        assert f["activations"].shape[0] == 50 and f.attrs["committed_rows"] == 20
    with ActivationWriter(path, 3, dtype="float64", resume=True) as w:
        assert w.n_rows == 20
        w.append(X[20:])
    np.testing.assert_array_equal(_read_all(path), X)


def test_commit_seconds_commits_while_appending(tmp_path):
    w = ActivationWriter(tmp_path / "a.h5", 2, commit_seconds=0)
    w.append(np.ones((3, 2)))
    w.append(np.ones((4, 2)))
    assert int(w._file.attrs["committed_rows"]) == 7
    w.discard()
    assert not (tmp_path / "a.h5.partial").exists() and not (tmp_path / "a.h5").exists()


@pytest.mark.parametrize("bad", [
    np.ones((3, 5)), np.ones((3, 3)), np.ones(4), np.ones((2, 2, 4)),
])
def test_append_refuses_other_shapes(tmp_path, bad):
    with ActivationWriter(tmp_path / "a.h5", 4) as w:
        with pytest.raises(ValueError, match=r"shape \(n_rows, 4\)"):
            w.append(bad)
        assert w.n_rows == 0
        w.append(np.ones((2, 4), dtype=np.int64))  # integers are numbers
    assert _read_all(tmp_path / "a.h5").shape == (2, 4)


@pytest.mark.parametrize("bad", [
    np.array([["a", "b"]]), np.ones((1, 2), dtype=complex), np.ones((1, 2), dtype=bool),
    np.array([[None, 1]], dtype=object),
])
def test_append_refuses_non_numbers(tmp_path, bad):
    with ActivationWriter(tmp_path / "a.h5", 2) as w:
        with pytest.raises(TypeError, match="real numbers"):
            w.append(bad)
        assert w.n_rows == 0


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"n_features": 0}, ValueError), ({"dtype": "int8"}, ValueError),
    ({"compression": "zstd"}, ValueError), ({"n_features": 2.5}, TypeError),
])
def test_bad_writer_arguments_create_nothing(tmp_path, kwargs, error):
    args = {"n_features": 3, **kwargs}
    with pytest.raises(error):
        ActivationWriter(tmp_path / "a.h5", args.pop("n_features"), **args)
    assert list(tmp_path.iterdir()) == []


def test_writer_is_closed_after_finish(tmp_path):
    w = ActivationWriter(tmp_path / "a.h5", 2)
    assert w.finish() == tmp_path / "a.h5"
    with pytest.raises(ValueError, match="closed"):
        w.append(np.ones((1, 2)))
    with h5py.File(tmp_path / "a.h5") as f:
        assert f["activations"].shape == (0, 2)


def test_write_activations_refuses_non_2d(tmp_path):
    with pytest.raises(ValueError, match="2-D"):
        write_activations(tmp_path / "a.h5", np.ones(5))
    assert not (tmp_path / "a.h5").exists()


# ====================================================================================
# 5. Codes files
# ====================================================================================


def _problem(seed=0, n=60, d=12, n_atoms=20, dtype=np.float64):
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((n_atoms, d))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    return rng.standard_normal((n, d)).astype(dtype), D.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_codes_written_in_batches_read_back_equal(tmp_path, dtype):
    X, D = _problem(dtype=dtype)
    batches = [sparsecode.mp(X[s:s + 25], D, k=4) for s in range(0, 60, 25)]
    codes = SparseCodes(np.concatenate([c.indices for c in batches]),
                        np.concatenate([c.values for c in batches]), 20)
    settings = {"solver": "mp", "k": 4, "tol": None, "model": "m.h5"}
    with CodesWriter(tmp_path / "c.h5", 20, 4, dtype=dtype, settings=settings) as w:
        for c in batches:
            w.append(c)
        assert w.n_rows == 60
    got = read_codes(tmp_path / "c.h5")
    assert isinstance(got, SparseCodes)
    assert got.n_atoms == 20 and got.values.dtype == dtype and got.indices.dtype == np.int32
    np.testing.assert_array_equal(got.indices, codes.indices)
    np.testing.assert_array_equal(_bits(got.values), _bits(codes.values))
    np.testing.assert_array_equal(got.decode(D), codes.decode(D))
    part = read_codes(tmp_path / "c.h5", 10, 35)
    np.testing.assert_array_equal(part.indices, codes.indices[10:35])
    np.testing.assert_array_equal(part.values, codes.values[10:35])
    assert len(read_codes(tmp_path / "c.h5", 50, 20)) == 0
    assert codes_settings(tmp_path / "c.h5") == {**settings, "n_atoms": 20, "n_rows": 60,
                                                 "k": 4}
    assert not (tmp_path / "c.h5.partial").exists()


def test_codes_rows_after_the_last_commit_are_not_read(tmp_path):
    X, D = _problem(n=20)
    first, second = sparsecode.mp(X[:8], D, k=3), sparsecode.mp(X[8:], D, k=3)
    w = CodesWriter(tmp_path / "c.h5", 20, 3, dtype="float64", commit_seconds=1e9)
    w.append(first)
    w.commit()
    w.append(second)  # never committed: a crash
    w._file.flush()
    w._file.close()
    w._file = None
    got = read_codes(tmp_path / "c.h5.partial")
    np.testing.assert_array_equal(got.indices, first.indices)
    np.testing.assert_array_equal(got.values, first.values)
    assert codes_settings(tmp_path / "c.h5.partial")["n_rows"] == 8
    with CodesWriter(tmp_path / "c.h5", 20, 3, dtype="float64", resume=True) as w:
        assert w.n_rows == 8
        w.append(second)
    got = read_codes(tmp_path / "c.h5")
    np.testing.assert_array_equal(got.indices[8:], second.indices)
    assert len(got) == 20


def test_narrower_codes_are_padded(tmp_path):
    X, D = _problem(n=10)
    codes = sparsecode.mp(X, D, k=2)
    with CodesWriter(tmp_path / "c.h5", 20, 5) as w:
        w.append(codes)
    got = read_codes(tmp_path / "c.h5")
    assert got.k_max == 5
    np.testing.assert_array_equal(got.indices[:, :2], codes.indices)
    np.testing.assert_array_equal(got.values[:, :2], codes.values.astype(np.float32))
    assert np.all(got.indices[:, 2:] == -1) and np.all(got.values[:, 2:] == 0)
    np.testing.assert_allclose(got.decode(D), codes.decode(D), rtol=1e-6, atol=1e-6)


def test_wider_codes_are_cut_when_their_rows_fit(tmp_path):
    X, D = _problem(n=10)
    codes = sparsecode.mp(X, D, k=3)
    wide = SparseCodes(np.pad(codes.indices, ((0, 0), (0, 4)), constant_values=-1),
                       np.pad(codes.values, ((0, 0), (0, 4))), 20)
    with CodesWriter(tmp_path / "c.h5", 20, 3, dtype="float64") as w:
        w.append(wide)
        too_many = sparsecode.mp(X, D, k=4)
        assert too_many.l0.max() == 4
        with pytest.raises(ValueError, match="4 atoms"):
            w.append(too_many)
        assert w.n_rows == 10
    got = read_codes(tmp_path / "c.h5")
    np.testing.assert_array_equal(got.indices, codes.indices)
    np.testing.assert_array_equal(got.values, codes.values)


def test_codes_writer_refuses_other_codes(tmp_path):
    X, D = _problem(n=4)
    with CodesWriter(tmp_path / "c.h5", 21, 3) as w:
        with pytest.raises(ValueError, match="21"):
            w.append(sparsecode.mp(X, D, k=3))
        with pytest.raises(TypeError, match="SparseCodes"):
            w.append(np.zeros((4, 21)))
        assert w.n_rows == 0


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"settings": {"solver": "omp", "k": 3}}, "settings"),
    ({"settings": {}}, "settings"),
    ({"n_atoms": 21}, "n_atoms"),
    ({"k": 4}, "k"),
    ({"dtype": "float64"}, "dtype"),
])
def test_codes_resume_refuses_other_settings(tmp_path, kwargs, match):
    X, D = _problem(n=10)
    args = dict(n_atoms=20, k=3, dtype="float32", settings={"solver": "mp", "k": 3})
    with pytest.raises(RuntimeError):
        with CodesWriter(tmp_path / "c.h5", **args) as w:
            w.append(sparsecode.mp(X[:6], D, k=3))
            raise RuntimeError
    with pytest.raises(FileFormatError, match=match):
        CodesWriter(tmp_path / "c.h5", **{**args, **kwargs}, resume=True)
    # the committed rows of the partial file can be read; the same settings resume it
    assert len(read_codes(tmp_path / "c.h5.partial")) == 6
    assert codes_settings(tmp_path / "c.h5.partial")["n_rows"] == 6
    with CodesWriter(tmp_path / "c.h5", **args, resume=True) as w:
        assert w.n_rows == 6
        w.append(sparsecode.mp(X[6:], D, k=3))
    got = read_codes(tmp_path / "c.h5")
    first, second = sparsecode.mp(X[:6], D, k=3), sparsecode.mp(X[6:], D, k=3)
    expected = SparseCodes(np.concatenate([first.indices, second.indices]),
                           np.concatenate([first.values, second.values]), 20)
    np.testing.assert_array_equal(got.indices, expected.indices)
    np.testing.assert_array_equal(got.values, expected.values.astype(np.float32))


def test_codes_resume_accepts_the_same_settings_with_tuples(tmp_path):
    # settings are stored as JSON: a tuple comes back as a list, and is the same setting
    settings = {"solver": "mp", "betas": (0.9, 0.999), "shape": (3, 4)}
    with pytest.raises(RuntimeError):
        with CodesWriter(tmp_path / "c.h5", 20, 3, settings=settings) as w:
            raise RuntimeError
    with CodesWriter(tmp_path / "c.h5", 20, 3, settings=settings, resume=True) as w:
        assert w.resumed


def test_codes_files_are_not_activation_files(tmp_path):
    write_activations(tmp_path / "a.h5", np.ones((3, 2)))
    with pytest.raises(FileFormatError, match="expected a sparsecode codes file"):
        read_codes(tmp_path / "a.h5")
    with pytest.raises(FileFormatError, match="codes"):
        codes_settings(tmp_path / "a.h5")
    with pytest.raises(FileNotFoundError):
        read_codes(tmp_path / "missing.h5")


@pytest.mark.parametrize(("args", "kwargs"), [
    ((0, 3), {}), ((10, 0), {}), ((10, 3), {"dtype": "float16"}),
])
def test_bad_codes_writer_arguments(tmp_path, args, kwargs):
    with pytest.raises(ValueError):
        CodesWriter(tmp_path / "c.h5", *args, **kwargs)
    assert list(tmp_path.iterdir()) == []


# ====================================================================================
# 6. Models
# ====================================================================================

N_FEATURES = 8


def _batches(n_batches=10, batch=8, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((6, N_FEATURES))
    out = []
    for _ in range(n_batches):
        Z = rng.standard_normal((batch, 6)) * (rng.random((batch, 6)) < 0.4)
        out.append(Z @ base + 0.05 * rng.standard_normal((batch, N_FEATURES)) + 2.0)
    return out


def _sae(**kwargs):
    params = dict(n_atoms=24, k=2, batch_size=8, lr=1e-2, warmup_steps=2, max_steps=10,
                  dead_window=8, log_every=3, progress=False, random_state=0)
    return MPSAE(**{**params, **kwargs})


def _assert_same_training_state(a, b):
    np.testing.assert_array_equal(_bits(a.components_), _bits(b.components_))
    np.testing.assert_array_equal(_bits(a.bias_), _bits(b.bias_))
    assert (a.n_steps_, a.n_samples_seen_, a.n_features_in_) == (
        b.n_steps_, b.n_samples_seen_, b.n_features_in_)
    ea, eb = a.engine_, b.engine_
    assert ea.optimizer.t == eb.optimizer.t
    assert len(ea.optimizer.m) == len(eb.optimizer.m)
    for ma, mb, va, vb in zip(ea.optimizer.m, eb.optimizer.m, ea.optimizer.v, eb.optimizer.v,
                              strict=True):
        np.testing.assert_array_equal(_bits(ma), _bits(mb))
        np.testing.assert_array_equal(_bits(va), _bits(vb))
    np.testing.assert_array_equal(ea.dead.counts, eb.dead.counts)
    np.testing.assert_array_equal(ea.dead.last_used, eb.dead.last_used)
    assert (ea.dead.n_samples, ea.dead.window, ea.last_check, ea.n_checks) == (
        eb.dead.n_samples, eb.dead.window, eb.last_check, eb.n_checks)
    assert type(ea.update) is type(eb.update)
    ua, ub = ea.update.state_dict(), eb.update.state_dict()
    assert ua[1] == ub[1] and ua[0].keys() == ub[0].keys()
    for name in ua[0]:
        np.testing.assert_array_equal(ua[0][name], ub[0][name])
    assert a.engine_.rng.bit_generator.state == b.engine_.rng.bit_generator.state
    np.testing.assert_array_equal(a.engine_.rng.random(5), b.engine_.rng.random(5))


def _comparable(history):
    """History records comparable with ``==``: NaN (a record without a held-out check) as
    None."""
    return [{k: None if v != v else v for k, v in h.items()} for h in history]


def _without_seconds(history):
    return _comparable([{k: v for k, v in h.items() if k != "seconds"} for h in history])


MODEL_GRID = [
    pytest.param(dtype, update, pre_bias, id=f"{dtype}-{update}-prebias{pre_bias}")
    for dtype in ("float32", "float64") for update in ("adam", "online")
    for pre_bias in (True, False)
]


@pytest.mark.parametrize(("dtype", "update", "pre_bias"), MODEL_GRID)
def test_a_saved_model_loads_identical(tmp_path, dtype, update, pre_bias):
    model = _sae(dtype=dtype, update=update, pre_bias=pre_bias, callback=print,
                 betas=(0.8, 0.99), weight_decay=0.01)
    model.fit(np.concatenate(_batches()))
    assert model.history_
    path = save_model(model, tmp_path / "m.h5")
    assert path == tmp_path / "m.h5" and not (tmp_path / "m.h5.partial").exists()
    loaded = load_model(path)
    assert isinstance(loaded, MPSAE)
    assert loaded.components_.dtype == dtype and loaded.bias_.dtype == dtype
    np.testing.assert_array_equal(_bits(loaded.components_), _bits(model.components_))
    np.testing.assert_array_equal(_bits(loaded.bias_), _bits(model.bias_))
    params = model.get_params()
    assert params.pop("callback") is print
    loaded_params = loaded.get_params()
    assert loaded_params.pop("callback") is None
    assert loaded_params == params
    assert _comparable(loaded.history_) == _comparable(model.history_)
    assert all(type(h["step"]) is int and type(h["samples"]) is int for h in loaded.history_)
    _assert_same_training_state(loaded, model)
    X = np.concatenate(_batches(seed=1))
    a, b = model.transform(X), loaded.transform(X)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(_bits(a.values), _bits(b.values))


@pytest.mark.parametrize(("dtype", "update", "pre_bias"), MODEL_GRID)
def test_a_loaded_model_continues_training_exactly(tmp_path, dtype, update, pre_bias):
    batches = _batches()
    params = dict(dtype=dtype, update=update, pre_bias=pre_bias)
    a = _sae(**params)
    for i, b in enumerate(batches):
        a.partial_fit(b)
        if i == 4:
            halfway = a.engine_.rng.bit_generator.state
    # dead atoms were resampled in the second half, drawing from the RNG
    assert a.engine_.n_checks >= 6 and a.engine_.rng.bit_generator.state != halfway

    b_model = _sae(**params)
    for b in batches[:5]:
        b_model.partial_fit(b)
    save_model(b_model, tmp_path / "m.h5", position={"epoch": 0, "batch": 5})
    c = load_model(tmp_path / "m.h5")
    for b in batches[5:]:
        c.partial_fit(b)
    _assert_same_training_state(c, a)
    assert _without_seconds(c.history_) == _without_seconds(a.history_)


def test_a_model_with_given_initial_atoms_round_trips(tmp_path):
    init = np.random.default_rng(10).standard_normal((24, N_FEATURES))
    model = _sae(init=init, dtype="float64").fit(np.concatenate(_batches()))
    loaded = load_model(save_model(model, tmp_path / "m.h5"))
    np.testing.assert_array_equal(loaded.init, init)
    np.testing.assert_array_equal(loaded.components_, model.components_)


def test_a_model_with_a_numpy_dtype_saves(tmp_path):
    # MPSAE accepts any dtype spelling NumPy does; saving must too
    model = _sae(dtype=np.float32).fit(np.concatenate(_batches()))
    path = save_model(model, tmp_path / "m.h5")
    assert np.dtype(load_model(path).dtype) == np.float32
    assert not (tmp_path / "m.h5.partial").exists()


def test_model_position_round_trips(tmp_path):
    model = _sae().fit(np.concatenate(_batches()))
    position = {"epoch": 2, "batch": 17, "data": "acts.h5", "dataset": "layer/acts",
                "rows": [0, 1000]}
    save_model(model, tmp_path / "m.h5", position=position)
    assert model_position(tmp_path / "m.h5") == position
    save_model(model, tmp_path / "m2.h5")
    assert model_position(tmp_path / "m2.h5") is None


def test_save_model_overwrite(tmp_path):
    model = _sae().fit(np.concatenate(_batches()))
    save_model(model, tmp_path / "m.h5", position={"v": 1})
    with pytest.raises(FileExistsError):
        save_model(model, tmp_path / "m.h5", position={"v": 2}, overwrite=False)
    assert model_position(tmp_path / "m.h5") == {"v": 1}
    save_model(model, tmp_path / "m.h5", position={"v": 3})
    assert model_position(tmp_path / "m.h5") == {"v": 3}


def test_saving_an_unfitted_model_or_another_object_raises(tmp_path):
    with pytest.raises(NotFittedError):
        save_model(_sae(), tmp_path / "m.h5")
    with pytest.raises(TypeError, match="MPSAE"):
        save_model(object(), tmp_path / "m.h5")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_save_leaves_no_partial_file(tmp_path):
    model = _sae().fit(np.concatenate(_batches()))
    with pytest.raises(TypeError):
        save_model(model, tmp_path / "m.h5", position={"bad": object()})
    assert list(tmp_path.iterdir()) == []


def test_a_newer_model_format_is_refused(tmp_path):
    model = _sae().fit(np.concatenate(_batches()))
    path = save_model(model, tmp_path / "m.h5")
    with h5py.File(path, "r+") as f:
        assert f.attrs["format_version"] == model_module.FORMAT_VERSION
        assert f.attrs["sparsecode_version"] == sparsecode.__version__
        json.loads(f.attrs["config"])
        f.attrs["format_version"] = model_module.FORMAT_VERSION + 1
    with pytest.raises(FileFormatError, match="newer"):
        load_model(path)


def test_load_model_refuses_other_files(tmp_path):
    write_activations(tmp_path / "a.h5", np.ones((3, 2)))
    with pytest.raises(FileFormatError, match="expected a sparsecode model file"):
        load_model(tmp_path / "a.h5")
    with pytest.raises(FileFormatError, match="model"):
        model_position(tmp_path / "a.h5")
    (tmp_path / "x.h5").write_bytes(b"\0" * 100)
    with pytest.raises(FileFormatError, match="not an HDF5 file"):
        load_model(tmp_path / "x.h5")
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.h5")
    assert sorted(os.listdir(tmp_path)) == ["a.h5", "x.h5"]


def test_an_mpsae_fits_from_a_reader_one_epoch_per_pass(tmp_path):
    from sparsecode import MPSAE
    from sparsecode.datasets import make_sparse_signals
    from sparsecode.io import ActivationReader, write_activations

    X, _, _ = make_sparse_signals(1000, 8, 16, 2, random_state=0)
    path = write_activations(tmp_path / "a.h5", X)
    reader = ActivationReader(path, "activations", batch_size=300, seed=1)
    seen = []
    sae = MPSAE(16, 2, n_epochs=3, log_every=1, progress=False, random_state=0,
                callback=lambda rec: seen.append(rec["samples"]))
    sae.fit(reader)
    assert sae.n_steps_ == 3 * len(reader) == 12
    assert sae.n_samples_seen_ == 3 * len(X)
    assert reader._next_epoch == 3  # epochs 0, 1, 2: none skipped


def test_file_order_views_equal_copies(tmp_path):
    from sparsecode.io import ActivationReader, write_activations

    X = np.random.default_rng(0).standard_normal((5000, 8)).astype(np.float32)
    path = write_activations(tmp_path / "a.h5", X)
    kw = dict(batch_size=700, shuffle=False, buffer_bytes=3000 * 8 * 4)
    with ActivationReader(path, "activations", copy=True, **kw) as a, \
            ActivationReader(path, "activations", copy=False, **kw) as b:
        views = 0
        for s, (xa, xb) in enumerate(zip(a.epoch(0), b.epoch(0), strict=True)):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(xb, X[s * 700:(s + 1) * 700])
            views += xb.base is not None
        assert views > 0  # some batches were handed out without a copy
