"""load_sae on every published format: fixtures written from NumPy by the formats'
documented keys and shapes, read back to the same weights and the same encoder; damaged
and contradictory files refused in one line; pickles that try to run code refused."""

import json
import os

import numpy as np
import pytest

from sparsecode import PretrainedSAE
from sparsecode.io import FileFormatError, is_sae, load_sae
from sparsecode.io._dtypes import bfloat16_to_float32, float32_to_bfloat16
from tests import sae_files as F
from tests.torch_files import call_pickle, write_archive

D_IN, M = 8, 32


@pytest.fixture
def w():
    return F.random_weights(D_IN, M, seed=0)


@pytest.fixture
def X():
    return np.random.default_rng(1).standard_normal((40, D_IN)).astype(np.float32)


def expected_sae(w, arch, **kw):
    """The model the file describes, built from the arrays directly."""
    if arch != "matching_pursuit":
        kw.setdefault("W_enc", w["W_enc"])
    if arch in ("relu", "topk", "jumprelu", "groupmax"):
        kw.setdefault("b_enc", w["b_enc"])
    if arch == "jumprelu":
        kw.setdefault("threshold", w["threshold"])
    if arch == "gated":
        kw.update(b_gate=w["b_gate"], r_mag=w["r_mag"], b_mag=w["b_mag"])
    return PretrainedSAE(kw.pop("W_dec", w["W_dec"]), kw.pop("b_dec", w["b_dec"]),
                         architecture=arch, **kw)


def assert_same_model(got, want, X):
    for name in ("W_dec", "b_dec", "W_enc", "b_enc", "threshold", "b_gate", "r_mag", "b_mag",
                 "W_skip"):
        a, b = getattr(got, name), getattr(want, name)
        assert (a is None) == (b is None), name
        if a is not None:
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)
    for name in ("architecture", "k", "apply_b_dec_to_input", "normalize",
                 "rescale_acts_by_decoder_norm"):
        assert getattr(got, name) == getattr(want, name), name
    if want.norm_scale is not None:
        assert got.norm_scale == pytest.approx(want.norm_scale, rel=1e-12)
    a, b = got.encode(X), want.encode(X)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(got.reconstruct(X), want.reconstruct(X))


# ---- each format, read back -----------------------------------------------------------------

@pytest.mark.parametrize("arch, sl_arch, kw", [
    ("relu", "standard", {}), ("topk", "topk", {"k": 5}), ("jumprelu", "jumprelu", {}),
    ("gated", "gated", {}),
])
def test_saelens_v6(tmp_path, w, X, arch, sl_arch, kw):
    path = F.write_saelens(tmp_path / "sae", w, sl_arch, **kw)
    sae = load_sae(path)
    assert_same_model(sae, expected_sae(w, arch, **kw), X)
    assert sae.info["format"] == "saelens"
    assert sae.info["hookpoint"] == "blocks.2.hook_resid_post"


def test_saelens_matching_pursuit(tmp_path, w, X):
    path = F.write_saelens(tmp_path / "sae", w, "matching_pursuit",
                           extra={"max_iterations": 4, "residual_threshold": 0.05,
                                  "stop_on_duplicate_support": False})
    sae = load_sae(path)
    want = expected_sae(w, "matching_pursuit", max_iterations=4, residual_threshold=0.05,
                        stop_on_duplicate_support=False)
    assert (sae.max_iterations, sae.residual_threshold, sae.stop_on_duplicate_support) == (
        4, 0.05, False)
    assert_same_model(sae, want, X)
    # SAELens' defaults: d_in iterations, threshold 1e-2, stop on a duplicate support
    path = F.write_saelens(tmp_path / "default", w, "matching_pursuit")
    sae = load_sae(path)
    assert (sae.max_iterations, sae.residual_threshold, sae.stop_on_duplicate_support) == (
        D_IN, 1e-2, True)


def test_saelens_jumprelu_log_threshold_and_topk_rescaling(tmp_path, w, X):
    path = F.write_saelens(tmp_path / "sae", w, "topk", k=3,
                           extra={"rescale_acts_by_decoder_norm": True})
    assert_same_model(load_sae(path), expected_sae(w, "topk", k=3,
                                                   rescale_acts_by_decoder_norm=True), X)
    # a training checkpoint stores log_threshold instead of threshold
    from sparsecode.io.safetensors import write_tensors

    path = tmp_path / "jr"
    F.write_saelens(path, w, "jumprelu")
    write_tensors(path / "sae_weights.safetensors",
                  {"W_enc": w["W_enc"], "b_enc": w["b_enc"], "W_dec": w["W_dec"],
                   "b_dec": w["b_dec"], "log_threshold": np.log(w["threshold"])})
    sae = load_sae(path)
    np.testing.assert_allclose(sae.threshold, w["threshold"], rtol=1e-6)


@pytest.mark.parametrize("arch, kw, normalize, want_norm", [
    ("standard", {}, False, "none"), ("topk", {"k": 4}, True, "none"),
    ("standard", {}, "constant_norm_rescale", "constant_norm_rescale"),
    ("jumprelu", {}, "layer_norm", "layer_norm"),
])
def test_saelens_pre6_configs(tmp_path, w, X, arch, kw, normalize, want_norm):
    path = F.write_saelens(tmp_path / "sae", w, arch, pre6=True, normalize=normalize, **kw)
    cfg = json.loads((path / "cfg.json").read_text())
    assert "hook_point" in cfg and "sae_lens_version" not in cfg
    if arch in ("standard", "topk"):
        assert "architecture" not in cfg
    sae = load_sae(path)
    assert sae.info["hookpoint"] == "blocks.2.hook_resid_pre"
    arch = {"standard": "relu"}.get(arch, arch)
    assert_same_model(sae, expected_sae(w, arch, normalize=want_norm, **kw), 3 * X + 1)


def test_saelens_bfloat16_weights_and_sparsity(tmp_path, w, X):
    sparsity = np.linspace(-5, -1, M).astype(np.float32)
    path = F.write_saelens(tmp_path / "sae", w, "topk", k=4, bfloat16=("W_dec", "W_enc"),
                           sparsity=sparsity)
    sae = load_sae(path)
    for name in ("W_dec", "W_enc"):
        want = bfloat16_to_float32(float32_to_bfloat16(w[name]))
        np.testing.assert_array_equal(getattr(sae, name), want)
        assert not np.array_equal(want, w[name])  # the rounding happened
    np.testing.assert_array_equal(sae.info["log_sparsity"], sparsity)
    assert load_sae(path, dtype="float64").W_dec.dtype == np.float64


def test_saelens_float32_weights_are_memory_mapped(tmp_path, w):
    sae = load_sae(F.write_saelens(tmp_path / "sae", w, "topk", k=4))
    base = sae.W_dec
    while getattr(base, "base", None) is not None and not isinstance(base, np.memmap):
        base = base.base
    assert isinstance(base, np.memmap)
    assert not sae.W_dec.flags.writeable


@pytest.mark.parametrize("activation", ["topk", "groupmax"])
def test_sparsify_with_skip_and_hookpoints(tmp_path, w, X, activation):
    W_skip = 0.05 * np.random.default_rng(2).standard_normal((D_IN, D_IN)).astype(np.float32)
    F.write_sparsify(tmp_path, w, k=4, activation=activation, W_skip=W_skip,
                     hookpoint="layers.3")
    F.write_sparsify(tmp_path, w, k=4, activation=activation, hookpoint="layers.5")
    with pytest.raises(FileFormatError, match=r"2 hookpoints \(layers.3, layers.5\)"):
        load_sae(tmp_path)
    sae = load_sae(tmp_path, hookpoint="layers.3")
    assert sae.info["hookpoint"] == "layers.3" and sae.info["format"] == "sparsify"
    assert_same_model(sae, expected_sae(w, activation, k=4, W_skip=W_skip), X)
    assert load_sae(tmp_path / "layers.5" / "sae.safetensors").W_skip is None
    with pytest.raises(FileNotFoundError, match="layers.3, layers.5"):
        load_sae(tmp_path, hookpoint="layers.9")


def test_sparsify_transposed_decoder_is_oriented_by_shape(tmp_path, w, X):
    from sparsecode.io.safetensors import write_tensors

    path = F.write_sparsify(tmp_path, w, k=4)
    write_tensors(path / "sae.safetensors",
                  {"encoder.weight": np.ascontiguousarray(w["W_enc"].T),
                   "encoder.bias": w["b_enc"], "W_dec": np.ascontiguousarray(w["W_dec"].T),
                   "b_dec": w["b_dec"]})
    assert_same_model(load_sae(path), expected_sae(w, "topk", k=4), X)


def test_gemma_scope_1_and_2(tmp_path, w, X):
    want = expected_sae(w, "jumprelu", apply_b_dec_to_input=False)
    assert_same_model(load_sae(F.write_gemma_scope(tmp_path / "g1", w)), want, X)
    path = F.write_gemma_scope_2(tmp_path / "g2", w)
    sae = load_sae(path / "params.safetensors")
    assert sae.info["format"] == "gemma_scope_2"
    assert_same_model(sae, want, X)
    bf = load_sae(F.write_gemma_scope_2(tmp_path / "g2b", w, bfloat16=("W_enc",)))
    np.testing.assert_array_equal(bf.W_enc, bfloat16_to_float32(float32_to_bfloat16(
        w["W_enc"])))


def test_llama_scope_dataset_norm_as_saelens_reads_it(tmp_path, w, X):
    path = F.write_llama_scope(tmp_path / "ls", w, threshold=0.3, norm_in=5.0)
    sae = load_sae(path)
    s = np.sqrt(D_IN) / 5.0
    thr = np.full(M, 0.3 * s, dtype=np.float32)
    want = expected_sae(w, "jumprelu", threshold=thr, apply_b_dec_to_input=False,
                        normalize="scale", norm_scale=s)
    assert_same_model(sae, want, X)
    assert sae.info["hookpoint"] == "blocks.4.hook_resid_post"
    # SAELens folds the factor into the weights: W_enc * s, W_dec / s, b_dec / s
    pre = X.astype(np.float64) @ (w["W_enc"] * s) + w["b_enc"]
    acts = np.where((pre > 0) & (pre > thr), pre, 0.0)
    np.testing.assert_allclose(sae.reconstruct(X), acts @ (w["W_dec"] / s) + w["b_dec"] / s,
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cls, arch, kw", [
    ("AutoEncoder", "relu", {}),
    ("AutoEncoderNew", "relu", {"apply_b_dec_to_input": False}),
    ("AutoEncoderTopK", "topk", {"k": 4}),
    ("JumpReluAutoEncoder", "jumprelu", {"apply_b_dec_to_input": False}),
    ("GatedAutoEncoder", "gated", {}),
])
def test_dictionary_learning(tmp_path, w, X, cls, arch, kw):
    path = F.write_dictionary_learning(tmp_path / "dl", w, cls, k=kw.get("k"))
    sae = load_sae(path)
    want = expected_sae(w, arch, **kw)
    assert_same_model(sae, want, X)
    assert sae.info["hookpoint"] == "resid_post_layer_3"


def test_dictionary_learning_autoencoder_decoder_normalised_as_from_pretrained(tmp_path, X):
    """AutoEncoder.from_pretrained normalises the decoder (its default): unit decoder rows,
    encoder columns and bias scaled by the norms; the reconstruction is unchanged."""
    w = F.random_weights(D_IN, M, seed=5, unit=False)
    norms = np.linalg.norm(w["W_dec"].astype(np.float64), axis=1)
    sae = load_sae(F.write_dictionary_learning(tmp_path / "dl", w, "AutoEncoder"))
    np.testing.assert_allclose(np.linalg.norm(sae.W_dec, axis=1), 1.0, rtol=1e-6)
    raw = expected_sae(w, "relu")
    np.testing.assert_allclose(sae.encode(X).toarray(), raw.encode(X).toarray() * norms,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sae.reconstruct(X), raw.reconstruct(X), rtol=1e-5, atol=1e-5)


def test_dictionary_learning_batch_topk_uses_its_threshold(tmp_path, w, X):
    path = F.write_dictionary_learning(tmp_path / "b", w, "BatchTopKSAE", k=4, threshold=0.4)
    sae = load_sae(path)
    assert_same_model(sae, expected_sae(w, "jumprelu", threshold=np.full(M, 0.4)), X)
    # never calibrated (threshold -1): plain ReLU, as the library runs it
    path = F.write_dictionary_learning(tmp_path / "c", w, "BatchTopKSAE", k=4)
    np.testing.assert_array_equal(load_sae(path).encode(X).toarray(),
                                  expected_sae(w, "relu").encode(X).toarray())


def test_dictionary_learning_bfloat16(tmp_path, w, X):
    path = F.write_dictionary_learning(tmp_path / "dl", w, "AutoEncoderTopK", k=4,
                                       bfloat16=("decoder.weight",))
    sae = load_sae(path)
    np.testing.assert_array_equal(
        sae.W_dec, bfloat16_to_float32(float32_to_bfloat16(w["W_dec"].T.copy())).T)


def test_is_sae(tmp_path, w):
    path = F.write_gemma_scope(tmp_path / "g", w)
    assert is_sae(path) and is_sae(path / "params.npz")
    assert not is_sae(tmp_path / "nothing") and not is_sae(tmp_path / "x.h5")


# ---- refusals -------------------------------------------------------------------------------

def test_a_pickle_that_runs_code_is_refused_and_runs_nothing(tmp_path, w):
    sentinel = tmp_path / "ran"
    path = F.write_dictionary_learning(tmp_path / "dl", w)
    write_archive(path / "ae.pt", call_pickle("os", "system", f"touch {sentinel}"))
    with pytest.raises(FileFormatError, match="refusing to load.*os.system"):
        load_sae(path)
    assert not sentinel.exists()
    write_archive(path / "ae.pt", call_pickle("builtins", "eval",
                                              f"open({str(sentinel)!r}, 'w')"))
    with pytest.raises(FileFormatError, match="refusing to load"):
        load_sae(path)
    assert not sentinel.exists()


def test_not_an_sae(tmp_path):
    (tmp_path / "cfg.json").write_text("{}")
    with pytest.raises(FileFormatError, match="no SAE found"):
        load_sae(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_sae(tmp_path / "missing")


@pytest.mark.parametrize("damage, match", [
    (lambda p, w: _drop_tensor(p, w, "b_enc"), "no tensor 'b_enc'"),
    (lambda p, w: _edit_cfg(p, d_sae=M + 1), r"has shape .*need"),
    (lambda p, w: _edit_cfg(p, architecture="crosscoder"), "architecture 'crosscoder'"),
    (lambda p, w: _edit_cfg(p, normalize_activations="whiten"), "normalize_activations"),
    (lambda p, w: _edit_cfg(p, d_in="eight"), "positive integer"),
    (lambda p, w: _truncate(p / "sae_weights.safetensors"), "sae_weights.safetensors"),
    (lambda p, w: (p / "cfg.json").write_text("{not json"), "not a readable JSON"),
    (lambda p, w: _edit_cfg(p, architecture="topk", k=None), "needs k"),
])
def test_damaged_saelens_files_are_one_clear_error(tmp_path, w, damage, match):
    path = F.write_saelens(tmp_path / "sae", w, "standard")
    damage(path, w)
    with pytest.raises(FileFormatError, match=match) as info:
        load_sae(path)
    assert "\n" not in str(info.value)


def test_nan_weights_are_refused(tmp_path, w):
    w = dict(w)
    w["W_dec"] = w["W_dec"].copy()
    w["W_dec"][3, 1] = np.nan
    with pytest.raises(FileFormatError, match="NaN"):
        load_sae(F.write_gemma_scope(tmp_path / "g", w))


def test_contradicting_configs_are_refused(tmp_path, w):
    path = F.write_dictionary_learning(tmp_path / "dl", w, "AutoEncoder")
    cfg = json.loads((path / "config.json").read_text())
    cfg["trainer"]["dict_size"] = M * 2
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(FileFormatError, match="dict_size 64 contradicts the weights"):
        load_sae(path)
    path = F.write_sparsify(tmp_path / "sp", w, k=4)
    cfg = json.loads((path / "cfg.json").read_text())
    cfg["d_in"] = D_IN + 1
    (path / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(FileFormatError, match="has shape"):
        load_sae(path)
    path = F.write_llama_scope(tmp_path / "ls", w, norm_in=None)
    cfg = json.loads((path / "hyperparams.json").read_text())
    cfg["norm_activation"] = "dataset-wise"
    (path / "hyperparams.json").write_text(json.dumps(cfg))
    with pytest.raises(FileFormatError, match="dataset_average_activation_norm"):
        load_sae(path)


def test_a_transcoder_is_refused(tmp_path, w):
    path = F.write_sparsify(tmp_path, w, k=4)
    cfg = json.loads((path / "cfg.json").read_text())
    cfg["transcode"] = True
    (path / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(FileFormatError, match="transcoder"):
        load_sae(path)


def _drop_tensor(path, w, name):
    from sparsecode.io.safetensors import read_tensors, write_tensors

    file = path / "sae_weights.safetensors"
    tensors = {k: np.array(v) for k, v in read_tensors(file).items() if k != name}
    write_tensors(file, tensors)


def _edit_cfg(path, **changes):
    cfg = json.loads((path / "cfg.json").read_text())
    for key, value in changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    (path / "cfg.json").write_text(json.dumps(cfg))


def _truncate(file):
    size = os.path.getsize(file)
    with open(file, "r+b") as f:
        f.truncate(size - 17)


def test_parallel_bfloat16_widening_is_exact(monkeypatch):
    from sparsecode.io import _dtypes
    from tests.naive import bfloat16_round

    x = np.random.default_rng(3).standard_normal((37, 29)).astype(np.float32)
    x[0, :4] = [np.inf, -np.inf, 0.0, -0.0]
    u = bfloat16_round(x)
    want = (u.astype(np.uint32) << 16).view(np.float32)
    monkeypatch.setattr(_dtypes, "PARALLEL_WIDEN", 1)
    got = _dtypes.bfloat16_to_float32(u)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    out = np.empty_like(got)
    assert _dtypes.bfloat16_to_float32(u, out) is out
    np.testing.assert_array_equal(out.view(np.uint32), want.view(np.uint32))
