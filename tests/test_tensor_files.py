"""Model tensor files read without PyTorch: safetensors (read memory-mapped, written
byte for byte as the safetensors package writes) and torch.save archives (unpickled with
an allow-list, malicious pickles refused before anything runs)."""

import collections
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from sparsecode.io._dtypes import bfloat16_to_float32, float32_to_bfloat16
from sparsecode.io._h5 import FileFormatError
from sparsecode.io.safetensors import read_header, read_tensors, write_tensors
from sparsecode.io.torch_archive import read_torch_archive
from tests.torch_files import (
    Strided,
    call_pickle,
    getattr_pickle,
    hidden_call_archive,
    write_archive,
    write_torch_archive,
)

DATA = Path(__file__).resolve().parent / "data"
NATIVE = ("bool", "uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
          "float16", "float32", "float64", "complex64")
SHAPES = ((), (0, 3), (5,), (3, 4), (2, 3, 2))
#: bfloat16 bit patterns: 0, -0, 1, -2.5, the smallest subnormal, the largest finite,
#: inf, -inf, a NaN.
BF16_BITS = np.array([0x0000, 0x8000, 0x3F80, 0xC020, 0x0001, 0x7F7F, 0x7F80, 0xFF80, 0x7FC0],
                     np.uint16)


def sample(dtype, shape, rng):
    """ndarray of ``dtype`` and ``shape`` (0-d included) of random values."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        values = rng.random(shape) < 0.5
    elif dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    elif dtype.kind == "c":
        values = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    else:
        values = rng.standard_normal(shape) * 100
    return np.asarray(values, dtype)


def bf16_reference(bits):
    """float32 values of bfloat16 bit patterns, widened by hand."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def assert_same(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def one_line_error(excinfo, path):
    text = str(excinfo.value)
    assert "\n" not in text and text.startswith(f"{path}: ")
    return text


# --- safetensors ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype", NATIVE)
def test_safetensors_round_trip(tmp_path, rng, dtype):
    tensors = {f"t{i}": sample(dtype, shape, rng) for i, shape in enumerate(SHAPES)}
    tensors["strided"] = sample(dtype, (4, 6), rng)[::2, ::-3]
    path = tmp_path / "x.safetensors"
    write_tensors(path, tensors)
    got = read_tensors(path)
    assert got.keys() == tensors.keys()
    for name, want in tensors.items():
        assert_same(got[name], want)
    header, metadata = read_header(path)
    assert metadata == {} and header["t3"][1] == (3, 4)


def test_safetensors_bytes_equal_reference(tmp_path, rng):
    st = pytest.importorskip("safetensors.numpy")
    tensors = {f"{dtype}.{i}": sample(dtype, shape, rng)
               for dtype in NATIVE for i, shape in enumerate(((3, 2), (), (0,)))}
    tensors["big-endian"] = np.arange(5, dtype=">f4")
    tensors["fortran"] = np.asfortranarray(sample("float64", (3, 4), rng))
    tensors["naïve \"name\"\n"] = np.ones(3, np.float32)
    for metadata in (None, {"format": "np"}, {"é\u0001": "\"quoted\"\t"}):
        ours, theirs = tmp_path / "ours.safetensors", tmp_path / "theirs.safetensors"
        write_tensors(ours, tensors, metadata=metadata)
        # C-ordered copies for the reference: safetensors 0.8.0 writes a non-C-contiguous
        # array's memory as it lies (safetensors issue #825); ours writes C order
        st.save_file({k: np.asarray(v, order="C") for k, v in tensors.items()}, theirs,
                     metadata=metadata)
        assert ours.read_bytes() == theirs.read_bytes()
        loaded = st.load_file(ours)
        assert loaded.keys() == tensors.keys()
        for name, want in tensors.items():
            np.testing.assert_array_equal(loaded[name], want)
        assert read_header(theirs)[1] == (metadata or {})
        for name, got in read_tensors(theirs).items():
            np.testing.assert_array_equal(got, tensors[name])


def test_safetensors_metadata_sorted_and_read(tmp_path):
    path = tmp_path / "m.safetensors"
    write_tensors(path, {"a": np.zeros(2, np.float32)}, metadata={"z": "1", "a": "2"})
    assert read_header(path) == ({"a": ("F32", (2,), (0, 8))}, {"a": "2", "z": "1"})
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert raw[8:8 + n].startswith(b'{"__metadata__":{"a":"2","z":"1"},') and n % 8 == 0


def write_bf16_by_hand(path, bits, shape):
    """A BF16 safetensors file built from bit patterns, without our writer."""
    header = json.dumps({"x": {"dtype": "BF16", "shape": list(shape),
                               "data_offsets": [0, bits.nbytes]}}).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header + bits.astype("<u2").tobytes())


def test_safetensors_bf16_read_from_bit_patterns(tmp_path):
    path = tmp_path / "bf16.safetensors"
    bits = np.concatenate([BF16_BITS, np.arange(0, 65536, 257, dtype=np.uint16)])
    write_bf16_by_hand(path, bits, (bits.size,))
    got = read_tensors(path)["x"]
    assert got.dtype == np.float32 and got.flags.writeable
    np.testing.assert_array_equal(got.view(np.uint32), bf16_reference(bits).view(np.uint32))
    assert read_header(path)[0]["x"][0] == "BF16"
    write_bf16_by_hand(path, BF16_BITS[:6], (2, 3))
    assert_same(read_tensors(path, dtype="float64")["x"],
                bf16_reference(BF16_BITS[:6]).reshape(2, 3).astype(np.float64))


def test_safetensors_bf16_written_as_rounded(tmp_path, rng):
    x = np.concatenate([rng.standard_normal(200).astype(np.float32),
                        np.float32([1 + 2**-8, 1 + 3 * 2**-8, np.inf, -np.inf, 0, -0.0, 3e38])])
    path = tmp_path / "w.safetensors"
    write_tensors(path, {"x": x.reshape(-1, 1), "s": np.float32(1.5), "y": x[:3]},
                  bfloat16={"x", "s"})
    header, _ = read_header(path)
    assert header["x"][:2] == ("BF16", (x.size, 1)) and header["s"][:2] == ("BF16", ())
    assert header["y"][0] == "F32"
    got = read_tensors(path)
    want = bfloat16_to_float32(float32_to_bfloat16(x)).reshape(-1, 1)
    assert_same(got["x"], want)
    assert_same(got["s"], np.array(1.5, np.float32))
    nan = tmp_path / "nan.safetensors"
    write_tensors(nan, {"x": np.float32([np.nan, 1])}, bfloat16=["x"])
    assert np.isnan(read_tensors(nan)["x"][0])


def test_safetensors_native_tensors_are_memory_mapped(tmp_path, rng):
    path = tmp_path / "m.safetensors"
    write_tensors(path, {"a": sample("float32", (40, 3), rng), "s": np.int64(4),
                         "e": np.zeros((0, 2), np.float16)})
    got = read_tensors(path)
    for name in ("a", "s"):
        assert isinstance(got[name].base, np.memmap) and type(got[name]) is np.ndarray
        assert not got[name].flags.writeable
        with pytest.raises(ValueError):
            got[name][...] = 0
    assert got["s"].shape == () and got["e"].shape == (0, 2) and not got["e"].flags.writeable


def test_safetensors_dtype_conversion_and_names(tmp_path, rng):
    path = tmp_path / "c.safetensors"
    tensors = {"f16": sample("float16", (3,), rng), "f32": sample("float32", (3,), rng),
               "f64": sample("float64", (3,), rng), "i": np.arange(3), "bf": np.ones(2)}
    write_tensors(path, tensors, bfloat16={"bf"})
    got = read_tensors(path, dtype="float32")
    for name in ("f16", "f32", "f64", "bf"):
        assert got[name].dtype == np.float32
    assert isinstance(got["f32"].base, np.memmap)  # already float32: not copied
    assert_same(got["f16"], tensors["f16"].astype(np.float32))
    assert_same(got["i"], tensors["i"])
    assert list(read_tensors(path, ["i", "f16"])) == ["i", "f16"]
    assert list(read_tensors(path, "i")) == ["i"]
    with pytest.raises(FileFormatError, match=r"no tensor 'gone'; the file holds: bf, f16"):
        read_tensors(path, ["f32", "gone"])
    with pytest.raises(ValueError, match="floating type"):
        read_tensors(path, dtype="int32")


def header_file(path, header, buffer=b"", raw=None):
    raw = json.dumps(header).encode() if raw is None else raw
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + buffer)
    return path


def entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


DAMAGE = {
    "short": (lambda p: p.write_bytes(b"\x05\x00\x00"), "3 bytes; a safetensors file starts"),
    "header beyond file": (lambda p: p.write_bytes((1000).to_bytes(8, "little") + b"{}"),
                           "the header length says 1000 bytes, but the file holds 2"),
    "header too long": (lambda p: p.write_bytes((10**9).to_bytes(8, "little") + b"{}"),
                        "header length says 1000000000"),
    "bad json": (lambda p: header_file(p, None, raw=b'{"x": {"dtype": '), "not valid UTF-8 JSON"),
    "not utf-8": (lambda p: header_file(p, None, raw=b'{"\xff": 1}'), "not valid UTF-8 JSON"),
    "not an object": (lambda p: header_file(p, [1, 2]), "not a JSON object"),
    "unknown dtype": (lambda p: header_file(p, {"x": entry("F8_E4M3")}, bytes(8)),
                      "tensor 'x' has dtype 'F8_E4M3'"),
    "negative dim": (lambda p: header_file(p, {"x": entry(shape=(-2,))}, bytes(8)),
                     "not a list of non-negative ints"),
    "offsets vs shape": (lambda p: header_file(p, {"x": entry(shape=(3,))}, bytes(12)),
                         r"tensor 'x' spans 8 bytes; its shape \(3,\) of F32 needs 12"),
    "reversed offsets": (lambda p: header_file(p, {"x": entry(offsets=(8, 0))}, bytes(8)),
                         r"not \[begin, end\]"),
    "missing field": (lambda p: header_file(p, {"x": {"dtype": "F32"}}), "lacks data_offsets"),
    "bad metadata": (lambda p: header_file(p, {"__metadata__": {"a": 1}}), "__metadata__"),
    "duplicate": (lambda p: header_file(p, None, raw=b'{"x": 1, "x": 2}'), "names 'x' twice"),
    "truncated": (lambda p: header_file(p, {"a": entry(), "b": entry(offsets=(8, 16))},
                                        bytes(12)),
                  "truncated: tensor 'b' ends at byte 16 of the data, which holds 12"),
}


@pytest.mark.parametrize("kind", DAMAGE)
def test_safetensors_damage_is_one_clear_error(tmp_path, kind):
    make, message = DAMAGE[kind]
    path = tmp_path / "bad.safetensors"
    make(path)
    for read in (read_header, read_tensors):
        with pytest.raises(FileFormatError, match=message) as excinfo:
            read(path)
        one_line_error(excinfo, path)


def test_safetensors_truncated_real_file(tmp_path, rng):
    path = tmp_path / "cut.safetensors"
    write_tensors(path, {"a": sample("float64", (10,), rng), "b": sample("int8", (3,), rng)})
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(FileFormatError, match="truncated: tensor 'a' ends at byte 80"):
        read_tensors(path)
    with pytest.raises(FileNotFoundError):
        read_tensors(tmp_path / "missing.safetensors")


def test_safetensors_write_is_atomic(tmp_path, monkeypatch):
    import sparsecode.io.safetensors as module

    path = tmp_path / "a.safetensors"
    write_tensors(path, {"old": np.zeros(2, np.float32)})

    def fail(tmp, final):
        raise OSError("disk full")

    monkeypatch.setattr(module, "replace_into_place", fail)
    with pytest.raises(OSError, match="disk full"):
        write_tensors(path, {"new": np.ones(4, np.float32)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors"]
    assert list(read_tensors(path)) == ["old"]


@pytest.mark.parametrize(("tensors", "kwargs", "error", "message"), [
    ({"x": np.array(["a"])}, {}, TypeError, "which safetensors cannot hold"),
    ({"x": np.zeros(2, np.float32)}, {"bfloat16": {"y"}}, ValueError, r"\['y'\]"),
    ({"x": np.arange(2)}, {"bfloat16": {"x"}}, TypeError, "only floating tensors"),
    ({"x": np.zeros(1)}, {"metadata": {"a": 1}}, TypeError, "dict of str to str"),
    ({"__metadata__": np.zeros(1)}, {}, ValueError, "names must be non-empty strings"),
    ([np.zeros(1)], {}, TypeError, "dict of name to array"),
])
def test_safetensors_write_validates(tmp_path, tensors, kwargs, error, message):
    with pytest.raises(error, match=message):
        write_tensors(tmp_path / "x.safetensors", tensors, **kwargs)
    assert not any(tmp_path.iterdir())


# --- torch.save archives -------------------------------------------------------------

TORCH_DTYPES = ("float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8",
                "bool", "complex64", "uint16", "uint32", "uint64")


@pytest.mark.parametrize("dtype", TORCH_DTYPES)
def test_torch_round_trip(tmp_path, rng, dtype):
    arrays = {f"t{i}": sample(dtype, shape, rng) for i, shape in enumerate(SHAPES)}
    arrays["transposed"] = sample(dtype, (3, 5), rng).T
    path = write_torch_archive(tmp_path / "m.pt", arrays)
    got = read_torch_archive(path)
    assert type(got) is dict and list(got) == list(arrays)
    for name, want in arrays.items():
        assert_same(got[name], want)
        assert not got[name].flags.writeable
    assert got["transposed"].strides == arrays["transposed"].strides


def test_torch_bfloat16(tmp_path, rng):
    x = rng.standard_normal((4, 3)).astype(np.float32)
    path = write_torch_archive(tmp_path / "bf.pt", {"x": x, "bits": BF16_BITS, "t": x.T},
                               bfloat16={"x", "bits", "t"})
    got = read_torch_archive(path)
    rounded = bfloat16_to_float32(float32_to_bfloat16(x.reshape(-1))).reshape(x.shape)
    assert_same(got["x"], rounded)
    assert_same(got["t"], rounded.T.copy())
    np.testing.assert_array_equal(got["bits"].view(np.uint32),
                                  bf16_reference(BF16_BITS).view(np.uint32))


def test_torch_parameters_views_and_state_dict_metadata(tmp_path):
    state = collections.OrderedDict(weight=np.arange(6, dtype=np.float32).reshape(2, 3),
                                    bias=np.float32([0.5, -1]))
    state._metadata = collections.OrderedDict({"": {"version": 1}})
    got = read_torch_archive(write_torch_archive(tmp_path / "p.pt", state, parameter=True))
    assert type(got) is collections.OrderedDict and list(got) == ["weight", "bias"]
    assert got._metadata == {"": {"version": 1}}
    assert_same(got["weight"], state["weight"])
    storage = np.arange(10, dtype=np.float64)
    views = {"offset": Strided(storage, 3, (2, 2), (1, 3)),
             "broadcast": Strided(storage, 1, (3, 2), (0, 1)),
             "empty": Strided(storage, 10, (0, 4), (4, 1))}
    got = read_torch_archive(write_torch_archive(tmp_path / "v.pt", views))
    assert_same(got["offset"], np.array([[3.0, 6.0], [4.0, 7.0]]))
    assert_same(got["broadcast"], np.array([[1.0, 2.0]] * 3))
    assert got["empty"].shape == (0, 4)


def test_torch_nested_checkpoint(tmp_path, rng):
    weights = {"enc.weight": rng.standard_normal((3, 2)).astype(np.float32),
               "enc.bias": np.zeros(3, np.float32), "step": np.array(12)}
    config = {"width": 3, "lr": 1e-3, "name": "mp-sae", "layers": [1, 2], "shape": (2, 3),
              "flags": {True, False}, "none": None, "raw": b"\x00\xff"}
    checkpoint = {"state_dict": weights, "config": config, "epoch": 4}
    got = read_torch_archive(write_torch_archive(tmp_path / "c.pt", checkpoint))
    assert got["config"] == config and got["epoch"] == 4
    for name, want in weights.items():
        assert_same(got["state_dict"][name], want)


def test_torch_real_fixture():
    """torch_saved_small.pt, written by torch.save (make_torch_fixture.py)."""
    got = read_torch_archive(DATA / "torch_saved_small.pt")
    expected = np.load(DATA / "torch_saved_small.npz")
    assert set(got) == {"weight", "bf16", "half", "transposed", "step", "slice", "linear",
                        "param"}
    assert type(got["linear"]) is collections.OrderedDict
    assert got["linear"]._metadata == {"": {"version": 1}}
    for key in expected.files:
        name, _, sub = key.partition(".")
        assert_same(got[name][sub] if sub else got[name], expected[key])
    assert got["transposed"].strides == (4, 12)  # a view of the 2x3 storage


def test_torch_writer_aligns_records(tmp_path, rng):
    path = write_torch_archive(tmp_path / "model.pt", {"a": sample("float32", (7,), rng),
                                                       "b": sample("int8", (5,), rng)})
    raw = path.read_bytes()
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        assert names == ["model/data.pkl", "model/.format_version", "model/.storage_alignment",
                         "model/byteorder", "model/data/0", "model/data/1", "model/version",
                         "model/.data/serialization_id"]
        for info in zf.infolist():
            h = info.header_offset
            start = (h + 30 + int.from_bytes(raw[h + 26:h + 28], "little")
                     + int.from_bytes(raw[h + 28:h + 30], "little"))
            assert start % 64 == 0 and info.compress_type == zipfile.ZIP_STORED


def test_torch_compressed_storages_read_too(tmp_path, rng):
    path = write_torch_archive(tmp_path / "m.pt", {"a": sample("float32", (30,), rng)})
    packed = tmp_path / "packed.pt"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    assert_same(read_torch_archive(packed)["a"], read_torch_archive(path)["a"])


@pytest.fixture
def sentinel(tmp_path):
    path = tmp_path / "SENTINEL"
    yield path
    assert not path.exists(), "code from the pickle ran"


MALICIOUS = {
    "os.system": lambda s: call_pickle("os", "system", f"touch {s}"),
    "posix.system": lambda s: call_pickle("posix", "system", f"touch {s}"),
    "builtins.eval": lambda s: call_pickle("builtins", "eval", f"open({str(s)!r}, 'w').close()"),
    "__builtin__.eval": lambda s: call_pickle("__builtin__", "eval",
                                              f"open({str(s)!r}, 'w').close()"),
    "__builtin__.getattr": lambda s: getattr_pickle(f"touch {s}"),
    "subprocess.Popen": lambda s: call_pickle("subprocess", "Popen", ["touch", str(s)]),
    "numpy.core.multiarray._reconstruct": lambda s: call_pickle(
        "numpy.core.multiarray", "_reconstruct", "x"),
    "torch.load": lambda s: call_pickle("torch", "load", str(s)),
}


@pytest.mark.parametrize("target", MALICIOUS)
def test_torch_malicious_pickle_refused(tmp_path, sentinel, target):
    path = write_archive(tmp_path / "evil.pt", MALICIOUS[target](sentinel))
    with pytest.raises(FileFormatError, match="refusing to load") as excinfo:
        read_torch_archive(path)
    text = one_line_error(excinfo, path)
    assert f"the pickle asks for {target}, which is not a tensor or a container" in text
    assert text.endswith("sparsecode never runs code from a model file")


def test_torch_malicious_payload_is_live(tmp_path, sentinel):
    """The eval payload does run when unpickled freely (so the refusal test means
    something); the sentinel is removed again for the fixture's check."""
    pickle.loads(MALICIOUS["builtins.eval"](sentinel))
    assert sentinel.exists()
    sentinel.unlink()


def test_torch_payload_hidden_after_a_tensor_refused(tmp_path, sentinel):
    import os

    path = hidden_call_archive(tmp_path / "evil.pt", os.system, f"touch {sentinel}")
    with pytest.raises(FileFormatError, match=rf"asks for {os.system.__module__}\.system"):
        read_torch_archive(path)


def test_torch_not_a_zip(tmp_path):
    cases = {"empty.pt": (b"", "empty file"),
             "text.pt": (b"hello world, not a model", "not a zip archive"),
             "legacy.pt": (b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.\x80\x02}q\x00.",
                           "before PyTorch 1.6")}
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(FileFormatError, match=message) as excinfo:
            read_torch_archive(path)
        one_line_error(excinfo, path)


def test_torch_truncated_archive(tmp_path, rng):
    path = write_torch_archive(tmp_path / "m.pt", {"a": sample("float32", (100,), rng)})
    raw = path.read_bytes()
    for cut in (len(raw) // 2, len(raw) - 10):
        path.write_bytes(raw[:cut])
        with pytest.raises(FileFormatError, match="damaged or truncated zip archive"):
            read_torch_archive(path)


def rewrite(path, drop=(), replace=None):
    """Copy an archive's records, leaving out ``drop`` and replacing some contents."""
    replace = replace or {}
    with zipfile.ZipFile(path) as zf:
        records = {i.filename: zf.read(i) for i in zf.infolist() if i.filename not in drop}
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in records.items():
            zf.writestr(name, replace.get(name, data))
    return path


def test_torch_missing_or_wrong_storage(tmp_path, rng):
    arrays = {"a": sample("float32", (4,), rng), "b": sample("int64", (3,), rng)}
    path = rewrite(write_torch_archive(tmp_path / "m.pt", arrays), drop={"m/data/1"})
    with pytest.raises(FileFormatError, match=r"storage '1', but the archive has no record "
                                              r"m/data/1"):
        read_torch_archive(path)
    path = rewrite(write_torch_archive(tmp_path / "m.pt", arrays),
                   replace={"m/data/0": bytes(12)})
    with pytest.raises(FileFormatError, match=r"storage '0' holds 12 bytes; the pickle "
                                              r"describes 4 elements of <f4"):
        read_torch_archive(path)
    path = rewrite(write_torch_archive(tmp_path / "m.pt", arrays), drop={"m/data.pkl"})
    with pytest.raises(FileFormatError, match="without a PREFIX/data.pkl record"):
        read_torch_archive(path)
    path = rewrite(write_torch_archive(tmp_path / "m.pt", arrays),
                   replace={"m/byteorder": b"big"})
    with pytest.raises(FileFormatError, match="only little-endian"):
        read_torch_archive(path)


def test_torch_view_beyond_storage(tmp_path):
    storage = np.arange(6, dtype=np.float32)
    path = write_torch_archive(tmp_path / "m.pt", {"v": Strided(storage, 2, (2, 3), (3, 1))})
    with pytest.raises(FileFormatError, match=r"reaches element 7 of storage '0', which "
                                              r"holds 6"):
        read_torch_archive(path)


def test_torch_damaged_pickle(tmp_path, rng):
    path = write_torch_archive(tmp_path / "m.pt", {"a": sample("float32", (4,), rng)})
    with zipfile.ZipFile(path) as zf:
        data = zf.read("m/data.pkl")
    rewrite(path, replace={"m/data.pkl": data[: len(data) // 2]})
    with pytest.raises(FileFormatError, match="m/data.pkl is not a pickle of tensors") as exc:
        read_torch_archive(path)
    one_line_error(exc, path)
    rewrite(path, replace={"m/data.pkl": call_pickle("torch", "FloatStorage", 3)})
    with pytest.raises(FileFormatError, match="calls torch.FloatStorage, which is not a "
                                              "function"):
        read_torch_archive(path)
    # BUILD on an allowed name would change it for later loads: refused
    rewrite(path, replace={"m/data.pkl": b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n}"
                                         b"X\x0c\x00\x00\x00__defaults__(K\x01tsb."})
    with pytest.raises(FileFormatError, match="tries to modify torch._utils._rebuild_tensor_v2"):
        read_torch_archive(path)
