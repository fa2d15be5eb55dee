"""Pretrained SAEs on the command line (info, encode, evaluate) and the streaming
evaluation behind ``evaluate``, checked against the library's own answers."""

import json

import numpy as np
import pytest

from sparsecode.cli import build_parser, main
from sparsecode.cli import encode as encode_cmd
from sparsecode.cli import evaluate as evaluate_cmd
from sparsecode.cli._common import Interrupted, StopFlag
from sparsecode.io import load_model, load_sae, read_codes, save_model, write_activations
from sparsecode.metrics import dead_fraction, fvu, l0
from sparsecode.pretrained import RunningVariance, evaluate
from tests.helpers import file_digest as _digest
from tests.helpers import one_line_error as _one_line_error
from tests.sae_files import (
    random_weights,
    write_dictionary_learning,
    write_gemma_scope,
    write_gemma_scope_2,
    write_llama_scope,
    write_saelens,
    write_sparsify,
)

N, D, M, K = 1200, 8, 32, 4
BS = 256  # a multiple of the row group: batches of exactly this many rows


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """An activation file and an SAE of every format on it."""
    work = tmp_path_factory.mktemp("pretrained_cli")
    w = random_weights(D, M, seed=0)
    rng = np.random.default_rng(1)
    X = (rng.standard_normal((N, D)) + w["b_dec"]).astype(np.float32)
    acts = write_activations(work / "acts.h5", X, dataset="acts")
    saes = {
        "relu": write_saelens(work / "relu", w, "standard"),
        "topk": write_saelens(work / "topk", w, "topk", k=K, bfloat16=("W_dec",)),
        "matching_pursuit": write_saelens(work / "mp", w, "matching_pursuit"),
        "gemma_scope": write_gemma_scope(work / "gemma", w),
        "gemma_scope_2": write_gemma_scope_2(work / "gemma2", w, bfloat16=("W_enc",)),
        "llama_scope": write_llama_scope(work / "llama", w, norm_in=3.0),
        "gated": write_dictionary_learning(work / "dl_gated", w, "GatedAutoEncoder"),
    }
    write_sparsify(work / "sparsify", w, k=K, hookpoint="layers.3")
    write_sparsify(work / "sparsify", random_weights(D, M, seed=2), k=K,
                   hookpoint="layers.4", activation="groupmax")
    saes["sparsify"] = work / "sparsify"
    return {"work": work, "X": X, "acts": acts, "w": w, "saes": saes}






def _encode(files, model, out, *extra):
    return main(["encode", str(model), str(files["acts"]), "--dataset", "acts", "--out",
                 str(out), "--batch-size", str(BS), "--quiet", *extra])


def _evaluate(files, model, capsys, *extra):
    capsys.readouterr()
    assert main(["evaluate", str(model), str(files["acts"]), "--batch-size", str(BS),
                 "--quiet", "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def _assert_same_codes(stored, mem):
    """The codes file holds ``mem``'s codes row for row, padded with -1 / 0.

    Indices exactly; values to 1e-6 relative (each batch's GEMM is a separate BLAS call:
    a library may sum a row's products in another order for another number of rows)."""
    w = mem.indices.shape[1]
    assert stored.indices.shape[1] >= w
    np.testing.assert_array_equal(stored.indices[:, :w], mem.indices)
    np.testing.assert_allclose(stored.values[:, :w], mem.values, rtol=1e-6, atol=1e-7)
    assert (stored.indices[:, w:] == -1).all() and (stored.values[:, w:] == 0).all()


# ------------------------------------------------------------------------------------ info


@pytest.mark.parametrize("name, fragments", [
    ("relu", ["saelens format", "architecture relu", "hookpoint blocks.2.hook_resid_post",
              "apply_b_dec_to_input True", "sae_weights.safetensors: float32"]),
    ("topk", ["architecture topk: k 4", "bfloat16 (W_dec), float32 (W_enc, b_dec, b_enc)",
              "loaded as float32"]),
    ("matching_pursuit", ["architecture matching_pursuit: up to 8 steps"]),
    ("gemma_scope", ["gemma_scope format", "apply_b_dec_to_input False",
                     "params.npz: float32", "hookpoint not recorded"]),
    ("gemma_scope_2", ["gemma_scope_2 format", "bfloat16 (w_enc), float32"]),
    ("llama_scope", ["llama_scope format", "threshold", "(every atom)",
                     "input normalisation scale (x 0.942809)",
                     "checkpoints/final.safetensors"]),
    ("gated", ["dictionary_learning format", "architecture gated", "ae.pt: float32",
               "hookpoint resid_post_layer_3"]),
])
def test_info_describes_each_format(files, capsys, name, fragments):
    path = files["saes"][name]
    assert main(["info", str(path)]) == 0
    text = capsys.readouterr().out
    assert f"d_in {D}, n_atoms {M}" in text, text
    for fragment in fragments:
        assert fragment in text, text
    sizes = text.split("files: ")[1]
    for f in path.rglob("*"):  # every file of these SAEs is read, and listed with its size
        n = f.stat().st_size
        shown = f"{n} B" if n < 1024 else f"{n / 1024:.1f} KiB"
        if f.is_file():
            assert f"{f.relative_to(path).as_posix()} {shown}" in sizes, (f, sizes)


def test_info_summarises_per_atom_thresholds(files, capsys):
    assert main(["info", str(files["saes"]["gemma_scope"] / "params.npz")]) == 0
    text = capsys.readouterr().out
    t = files["w"]["threshold"].astype(np.float64)
    assert (f"thresholds min {t.min():.4g}, median {np.median(t):.4g}, max {t.max():.4g}"
            in text), text


def test_info_lists_the_hookpoints_of_a_folder_and_describes_one(files, capsys):
    folder = files["saes"]["sparsify"]
    assert main(["info", str(folder)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "a folder of 2 pretrained SAEs" in lines[0]
    assert lines[1].strip().startswith("layers.3: sparsify, topk, k 4")
    assert lines[2].strip().startswith("layers.4: sparsify, groupmax, k 4 groups of 8")
    assert main(["info", str(folder), "--hookpoint", "layers.4"]) == 0
    text = capsys.readouterr().out
    assert "architecture groupmax" in text and "hookpoint layers.4" in text
    assert main(["info", str(folder), "--hookpoint", "layers.9"]) == 2
    _one_line_error(capsys, "layers.9", "layers.3, layers.4")


def test_info_of_hdf5_files_is_unchanged_and_refuses_hookpoint(files, capsys):
    assert main(["info", str(files["acts"])]) == 0
    assert f"acts: shape ({N}, {D}), float32" in capsys.readouterr().out
    assert main(["info", str(files["acts"]), "--hookpoint", "x"]) == 2
    _one_line_error(capsys, "--hookpoint applies to a folder of pretrained SAEs")


# ---------------------------------------------------------------------------------- encode


@pytest.mark.parametrize("name, hookpoint", [
    ("relu", None), ("topk", None), ("matching_pursuit", None), ("gemma_scope", None),
    ("llama_scope", None), ("gated", None), ("sparsify", "layers.3"),
    ("sparsify", "layers.4"),
])
def test_encode_native_equals_the_library_row_for_row(files, tmp_path, name, hookpoint):
    path = files["saes"][name]
    out = tmp_path / "codes.h5"
    extra = ["--hookpoint", hookpoint] if hookpoint else []
    assert _encode(files, path, out, *extra) == 0
    sae = load_sae(path, hookpoint=hookpoint)
    stored = read_codes(out)
    assert stored.shape == (N, M)
    _assert_same_codes(stored, sae.encode(files["X"]))
    if sae.architecture in ("topk", "groupmax"):
        assert stored.indices.shape[1] == K
    elif sae.architecture in ("relu", "jumprelu", "gated"):
        assert stored.indices.shape[1] == M  # --max-active 256, at most the atoms


@pytest.mark.parametrize("extra, opts", [
    (["--solver", "omp", "--k", "3"], {"solver": "omp", "k": 3}),
    (["--solver", "gp", "--k", "3", "--refit"], {"solver": "gp", "k": 3, "refit": True}),
    (["--solver", "mp", "--k", "5", "--no-positive"],
     {"solver": "mp", "k": 5, "positive": False}),
    (["--refit"], {"refit": True}),
])
def test_encode_with_a_pursuit_equals_the_library(files, tmp_path, extra, opts):
    out = tmp_path / "codes.h5"
    assert _encode(files, files["saes"]["relu"], out, *extra) == 0
    sae = load_sae(files["saes"]["relu"])
    _assert_same_codes(read_codes(out), sae.encode(files["X"], **opts))


def _interrupted(files, model, out, *extra):
    """An encode stopped after its first batch, as by Ctrl-C."""
    args = build_parser().parse_args(
        ["encode", str(model), str(files["acts"]), "--dataset", "acts", "--out", str(out),
         "--batch-size", str(BS), "--quiet", *extra])
    args.stop = StopFlag()
    args.stop.set = True
    with pytest.raises(Interrupted, match="--resume"):
        encode_cmd.run(args)
    partial = out.with_name(out.name + ".partial")
    assert read_codes(partial).shape[0] == BS and not out.exists()
    return partial


@pytest.mark.parametrize("extra", [[], ["--solver", "omp", "--k", "3", "--refit"]])
def test_resumed_sae_encode_equals_an_uninterrupted_one(files, tmp_path, capsys, extra):
    whole = tmp_path / "whole.h5"
    assert _encode(files, files["saes"]["gemma_scope"], whole, *extra) == 0
    out = tmp_path / "resumed.h5"
    _interrupted(files, files["saes"]["gemma_scope"], out, *extra)
    capsys.readouterr()
    assert _encode(files, files["saes"]["gemma_scope"], out, "--resume", *extra) == 0
    assert f"resuming {out}.partial after {BS:,} rows" in capsys.readouterr().err
    a, b = read_codes(whole), read_codes(out)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.values, b.values)
    # a finished file: --resume has nothing to do with the same settings
    assert _encode(files, files["saes"]["gemma_scope"], out, "--resume", *extra) == 0
    assert "nothing to do" in capsys.readouterr().err


def test_resume_with_other_settings_or_weights_is_refused(files, tmp_path, capsys):
    sae = tmp_path / "sae"
    write_saelens(sae, files["w"], "standard")
    out = tmp_path / "codes.h5"
    partial = _interrupted(files, sae, out, "--solver", "omp", "--k", "3")
    before = _digest(partial)
    capsys.readouterr()
    for extra, fragment in [(["--solver", "gp", "--k", "3"], "solver 'omp', not 'gp'"),
                            (["--solver", "omp", "--k", "3", "--no-positive"],
                             "positive True, not False"),
                            (["--solver", "omp", "--k", "3", "--refit"],
                             "refit False, not True")]:
        assert _encode(files, sae, out, "--resume", *extra) == 2
        _one_line_error(capsys, "cannot resume", fragment, "--overwrite")
    # the same settings, other weights at the same path
    write_saelens(sae, random_weights(D, M, seed=5), "standard")
    assert _encode(files, sae, out, "--resume", "--solver", "omp", "--k", "3") == 2
    _one_line_error(capsys, "cannot resume", "model_sha256")
    assert _digest(partial) == before and not out.exists()
    write_saelens(sae, files["w"], "standard")
    assert _encode(files, sae, out, "--resume", "--solver", "omp", "--k", "3") == 0
    capsys.readouterr()
    # finished: another solver is refused too
    assert _encode(files, sae, out, "--resume", "--solver", "gp", "--k", "3") == 2
    _one_line_error(capsys, "is finished", "solver", "--overwrite")


@pytest.fixture(scope="module")
def gated_rows(files):
    """A ReLU SAE none of whose atoms fire on small rows: the first batch of the file
    (small rows) has no active atom, the later rows (large) have many."""
    work = files["work"]
    w = dict(files["w"], W_enc=np.ascontiguousarray(files["w"]["W_dec"].T),
             b_enc=np.full(M, -1.0, np.float32), b_dec=np.zeros(D, np.float32))
    sae = write_saelens(work / "relu_quiet", w, "standard")
    rng = np.random.default_rng(3)
    X = rng.standard_normal((3 * BS, D)).astype(np.float32)
    X[:BS] *= 0.01
    X[BS:] *= 10
    acts = write_activations(work / "acts_wide.h5", X, dataset="acts")
    return sae, acts, X


def test_a_row_wider_than_max_active_is_a_one_line_error(gated_rows, tmp_path, capsys):
    sae, acts, X = gated_rows
    used = (load_sae(sae).encode(X).indices >= 0).sum(axis=1)
    assert used[:BS].max() == 0 and used[BS:].max() > 2
    first_bad = int(np.flatnonzero(used > 2)[0])
    out = tmp_path / "codes.h5"
    argv = ["encode", str(sae), str(acts), "--dataset", "acts", "--out", str(out),
            "--batch-size", str(BS), "--quiet", "--max-active", "2"]
    assert main(argv) == 2
    _one_line_error(capsys, f"row {first_bad} of", "--max-active 2",
                    f"the {BS:,} rows encoded before it are kept", "--resume")
    partial = out.with_name("codes.h5.partial")
    assert read_codes(partial).shape[0] == BS and not out.exists()
    # nothing written before the bad row: no file is left
    out2 = tmp_path / "codes2.h5"
    argv2 = ["encode", str(sae), str(acts), "--dataset", "acts", "--out", str(out2),
             "--batch-size", str(4 * BS), "--quiet", "--max-active", "2"]
    assert main(argv2) == 2
    _one_line_error(capsys, "--max-active 2")
    assert not out2.exists() and not out2.with_name("codes2.h5.partial").exists()
    # wide enough: the file holds rows of that width
    assert main(argv2[:-1] + [str(int(used.max()))]) == 0
    assert read_codes(out2).indices.shape[1] == used.max()


@pytest.mark.parametrize("extra, fragment", [
    (["--dataset", "acts", "--tol", "0.1"], "--tol applies to sparsecode models"),
    (["--dataset", "acts", "--solver", "topk"], "--solver topk applies to sparsecode"),
    (["--dataset", "acts", "--k", "3"], "--k applies to the pursuits"),
    (["--dataset", "acts", "--no-positive"], "--no-positive applies to the pursuits"),
    (["--dataset", "acts", "--solver", "omp"], "--k is needed with --solver"),
    (["--dataset", "acts", "--max-active", "3", "--solver", "omp", "--k", "3"],
     "--max-active applies"),
    (["--dataset", "acts", "--hookpoint", "layers.9"], "no such hookpoint"),
])
def test_bad_sae_options_one_line_exit_2_no_output(files, tmp_path, capsys, extra, fragment):
    out = tmp_path / "codes.h5"
    assert main(["encode", str(files["saes"]["relu"]), str(files["acts"]), "--out",
                 str(out), "--quiet", *extra]) == 2
    _one_line_error(capsys, fragment)
    assert list(tmp_path.iterdir()) == []


def test_the_sole_dataset_of_a_file_is_taken_when_none_is_named(files, tmp_path, capsys):
    sae = files["saes"]["topk"]
    named, unnamed = tmp_path / "named.h5", tmp_path / "unnamed.h5"
    assert _encode(files, sae, named) == 0
    assert main(["encode", str(sae), str(files["acts"]), "--out", str(unnamed),
                 "--quiet"]) == 0
    a, b = read_codes(named), read_codes(unnamed)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.values, b.values)
    assert main(["evaluate", str(sae), str(files["acts"]), "--quiet", "--json"]) == 0
    capsys.readouterr()
    # two 2-D datasets: which one is ambiguous
    two = tmp_path / "two.h5"
    import h5py

    with h5py.File(two, "w") as f:
        f["layer1"] = files["X"]
        f["layer2"] = files["X"]
        f["token_ids"] = np.arange(len(files["X"]))
    for argv in (["encode", str(sae), str(two), "--out", str(tmp_path / "c.h5")],
                 ["evaluate", str(sae), str(two)]):
        assert main(argv + ["--quiet"]) == 2
        _one_line_error(capsys, "--dataset is needed", "layer1, layer2")
    assert not (tmp_path / "c.h5").exists()


# -------------------------------------------------------------------------------- evaluate


@pytest.mark.parametrize("name, extra, opts", [
    ("topk", [], {}),
    ("relu", [], {}),
    ("gemma_scope", ["--refit"], {"refit": True}),
    ("relu", ["--solver", "omp", "--k", "3"], {"solver": "omp", "k": 3}),
    ("llama_scope", ["--solver", "mp", "--k", "4", "--no-positive"],
     {"solver": "mp", "k": 4, "positive": False}),
])
def test_evaluate_equals_the_library_on_the_whole_data(files, capsys, name, extra, opts):
    path = files["saes"][name]
    r = _evaluate(files, path, capsys, "--dataset", "acts", *extra)
    sae = load_sae(path)
    X = files["X"]
    codes = sae.encode(X, **opts)
    # batch sums against one pass over all the rows (metrics.fvu): 1e-6 relative allows
    # for BLAS summing a row in another order when a GEMM has another number of rows
    assert r["fvu"] == pytest.approx(sae.score(X, **opts), rel=1e-6)
    assert r["fvu"] == pytest.approx(fvu(X, sae.decode(codes, X)), rel=1e-6)
    assert r["explained_variance"] == pytest.approx(1 - r["fvu"], abs=1e-12)
    assert r["mean_l0"] == pytest.approx(l0(codes), rel=1e-12)
    assert r["dead_fraction"] == pytest.approx(dead_fraction(codes, M), abs=1e-12)
    assert r["n_rows"] == N and not r["stopped"]


def test_evaluate_max_rows_and_text_output(files, capsys):
    r = _evaluate(files, files["saes"]["topk"], capsys, "--dataset", "acts", "--max-rows",
                  "500")
    sae = load_sae(files["saes"]["topk"])
    assert r["n_rows"] == 500
    assert r["fvu"] == pytest.approx(sae.score(files["X"][:500]), rel=1e-6)
    assert main(["evaluate", str(files["saes"]["topk"]), str(files["acts"]), "--dataset",
                 "acts", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert f"rows                {N:,} of {N:,}" in text
    assert f"FVU                 {sae.score(files['X']):.6f}"[:-1] in text


@pytest.fixture(scope="module")
def mpsae_file(files):
    from sparsecode import MPSAE

    model = MPSAE(16, 3, batch_size=256, n_epochs=2, lr=0.01, progress=False,
                  random_state=0).fit(files["X"])
    path = files["work"] / "model.h5"
    save_model(model, path, position={"dataset": "acts", "finished": True})
    return path


def test_evaluate_an_mpsae_model_file(files, mpsae_file, capsys):
    model = load_model(mpsae_file)
    X = files["X"]
    r = _evaluate(files, mpsae_file, capsys)  # the dataset the model file records
    assert r["dataset"] == "acts" and r["solver"] == "mp" and r["k"] == 3
    assert r["fvu"] == pytest.approx(1 - model.score(X), rel=1e-6)
    codes = model.transform(X)
    assert r["mean_l0"] == pytest.approx(l0(codes), rel=1e-12)
    # --refit: least squares on each row's MP support, against NumPy's lstsq row by row
    refit = _evaluate(files, mpsae_file, capsys, "--refit")
    assert refit["fvu"] < r["fvu"]
    r = refit
    D_, b = model.components_.astype(np.float64), model.bias_.astype(np.float64)
    X_hat = np.empty((N, D))
    for i in range(N):
        S = codes.indices[i][codes.indices[i] >= 0]
        c = np.linalg.lstsq(D_[S].T, X[i] - b, rcond=None)[0]
        X_hat[i] = c @ D_[S] + b
    assert r["fvu"] == pytest.approx(fvu(X, X_hat), rel=1e-4)
    for extra, fragment in [(["--no-positive"], "--no-positive applies to pretrained"),
                            (["--hookpoint", "x"], "--hookpoint applies to pretrained")]:
        assert main(["evaluate", str(mpsae_file), str(files["acts"]), "--quiet",
                     *extra]) == 2
        _one_line_error(capsys, fragment)


def test_evaluate_ctrl_c_prints_the_figures_so_far(files, capsys):
    class SecondAsk:  # Ctrl-C while the first batch is measured
        asked = 0

        @property
        def set(self):
            self.asked += 1
            return self.asked > 1

    path = files["saes"]["topk"]
    args = build_parser().parse_args(["evaluate", str(path), str(files["acts"]),
                                      "--dataset", "acts", "--batch-size", str(BS),
                                      "--quiet", "--json"])
    args.stop = SecondAsk()
    with pytest.raises(Interrupted, match=f"after {BS:,} of {N:,} rows"):
        evaluate_cmd.run(args)
    r = json.loads(capsys.readouterr().out)
    assert r["stopped"] and r["n_rows"] == BS
    assert r["fvu"] == pytest.approx(load_sae(path).score(files["X"][:BS]), rel=1e-6)


# ------------------------------------------------------------------ the variance, streamed


def test_running_variance_is_exact_far_from_the_origin():
    rng = np.random.default_rng(0)
    offset = 1e8
    Y = rng.standard_normal((3000, 4))
    X = offset + Y  # stored rounded; X - offset is exact (Sterbenz)
    Z = X - offset
    reference = float(((Z - Z.mean(axis=0)) ** 2).sum())
    acc = RunningVariance()
    for lo, hi in [(0, 1), (1, 8), (8, 700), (700, 701), (701, 3000)]:
        acc.update(X[lo:hi])
    assert acc.n == 3000
    np.testing.assert_allclose(acc.mean - offset, Z.mean(axis=0), atol=1e-6)
    assert acc.m2 == pytest.approx(reference, rel=1e-9)
    # the textbook formula loses everything here, in float64
    naive = float((X**2).sum() - len(X) * (X.mean(axis=0) ** 2).sum())
    assert abs(naive - reference) > 1e-2 * reference


def test_evaluate_variance_on_a_file_far_from_the_origin(files, tmp_path, capsys):
    rng = np.random.default_rng(4)
    X = (1e4 + 0.05 * rng.standard_normal((N, D))).astype(np.float32)
    acts = write_activations(tmp_path / "far.h5", X, dataset="acts")
    Z = X.astype(np.float64) - 1e4  # exact
    reference = float(((Z - Z.mean(axis=0)) ** 2).sum())
    sae = files["saes"]["topk"]
    capsys.readouterr()
    assert main(["evaluate", str(sae), str(acts), "--dataset", "acts", "--batch-size",
                 "100", "--quiet", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["total_variance"] == pytest.approx(reference, rel=1e-9)
    Xh = load_sae(sae).reconstruct(X).astype(np.float64)
    assert r["squared_error"] == pytest.approx(float(((X - Xh) ** 2).sum()), rel=1e-6)


def test_evaluate_takes_arrays_and_any_sae_like_object(files):
    sae = load_sae(files["saes"]["gemma_scope"])
    X = files["X"]
    seen = []
    r = evaluate(sae, X, batch_size=100, progress=seen.append)
    assert sum(seen) == N and len(seen) == 12
    assert r["fvu"] == pytest.approx(sae.score(X), rel=1e-6)
    with pytest.raises(TypeError, match="encode/decode"):
        evaluate(object(), X)


def test_encode_refuses_an_out_path_that_is_a_file_of_the_sae(files, tmp_path, capsys):
    """The SAE is a folder: --out at one of its files (or through a link to one) would
    replace the weights it is reading."""
    import shutil

    sae = tmp_path / "sae"
    shutil.copytree(files["saes"]["topk"], sae)
    weights = sae / "sae_weights.safetensors"
    before = _digest(weights)
    link = tmp_path / "codes.h5"
    link.symlink_to(weights)
    for out in (weights, link):
        assert main(["encode", str(sae), str(files["acts"]), "--dataset", "acts", "--out",
                     str(out), "--overwrite", "--quiet"]) == 2
        _one_line_error(capsys, "would destroy the input")
        assert _digest(weights) == before
