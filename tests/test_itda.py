"""ITDA against its plain loop reference, its batch semantics, the grown Gram matrix,
and bad input."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsecode import ITDA
from sparsecode.metrics import itda_similarity
from tests import naive


def _data(n=300, d=12, seed=0, clusters=20):
    """Rows near a few directions, so that some are encoded and some added."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d))
    X = centres[rng.integers(0, clusters, n)] + 0.3 * rng.standard_normal((n, d))
    return X * rng.uniform(0.5, 3.0, size=(n, 1))


@pytest.mark.parametrize("selection", ["abs", "positive"])
@pytest.mark.parametrize("max_atoms", [None, 25])
def test_batch_of_one_is_the_sequential_algorithm(selection, max_atoms):
    X = _data()
    ref_atoms, ref_src = naive.itda(X, 4, 0.2, rule=selection, max_atoms=max_atoms)
    m = ITDA(4, 0.2, selection=selection, max_atoms=max_atoms, batch_size=1,
             dtype="float64").fit(X)
    assert 0 < m.n_atoms_ < len(X)
    np.testing.assert_array_equal(m.atom_sources_, ref_src)
    np.testing.assert_allclose(m.components_, ref_atoms, rtol=0, atol=1e-12)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), batch=st.integers(1, 70), k=st.integers(1, 6),
       threshold=st.floats(0.05, 0.6))
def test_every_row_was_added_or_encoded_under_the_threshold(seed, batch, k, threshold):
    X = _data(n=150, d=8, seed=seed)
    m = ITDA(k, threshold, batch_size=batch, dtype="float64").fit(X)
    D, src = m.components_, m.atom_sources_
    # every atom is a normalised row of the stream, in the order it was met
    np.testing.assert_allclose(D, X[src] / np.linalg.norm(X[src], axis=1, keepdims=True),
                               atol=1e-12)
    assert np.all(np.diff(src) > 0)
    added = set(src.tolist())
    for i in range(len(X)):
        if i in added:
            continue
        start = i // batch * batch
        # under the threshold on the atoms of the batch's start, or (a candidate) on
        # those plus the atoms added before it in its batch
        errs = [naive.itda_error(X[i], D[src < start], k), naive.itda_error(X[i], D[src < i], k)]
        assert min(errs) <= threshold + 1e-9, (i, errs)
    # the grown Gram matrix is D D^T, exactly symmetric
    G = m.gram_
    assert np.array_equal(G, G.T)
    np.testing.assert_allclose(G, D @ D.T, atol=1e-12)


def test_candidates_of_one_batch_are_checked_against_each_other():
    x = np.random.default_rng(0).standard_normal(10)
    X = np.tile(x, (50, 1)) * np.linspace(1, 2, 50)[:, None]
    m = ITDA(3, 0.1, batch_size=64).fit(X)
    assert m.n_atoms_ == 1 and m.atom_sources_.tolist() == [0]


def test_stream_equals_one_fit_and_float32_gram():
    X = _data(n=500, d=16, seed=3).astype(np.float32)
    a = ITDA(5, 0.15, batch_size=64).fit(X)
    b = ITDA(5, 0.15, batch_size=64)
    for s in range(0, len(X), 128):
        b.partial_fit(X[s:s + 128])
    np.testing.assert_array_equal(a.atom_sources_, b.atom_sources_)
    np.testing.assert_array_equal(a.components_, b.components_)
    assert a.components_.dtype == np.float32 and b.n_rows_seen_ == len(X)
    D = a.components_.astype(np.float64)
    np.testing.assert_allclose(a.gram_, D @ D.T, atol=1e-5)
    codes = a.transform(X)
    assert codes.indices.shape == (len(X), 5)
    err = ((X - a.inverse_transform(codes)) ** 2).sum(1) / (X**2).sum(1)
    assert np.mean(err) < 0.15 and 0 < a.score(X) <= 1


def test_fit_takes_nested_lists_and_lists_of_batches():
    X = _data(n=120, d=6, seed=8)
    ref = ITDA(3, 0.2, batch_size=40, dtype="float64").fit(X)
    for data in (X.tolist(), [X[:40], X[40:80], X[80:]]):
        m = ITDA(3, 0.2, batch_size=40, dtype="float64").fit(data)
        np.testing.assert_array_equal(m.atom_sources_, ref.atom_sources_)


def test_shuffled_fit_records_the_rows_it_took():
    X = _data(n=200, d=8, seed=5)
    m = ITDA(3, 0.2, batch_size=16, random_state=1).fit(X)
    src = m.atom_sources_
    np.testing.assert_allclose(m.components_,
                               X[src] / np.linalg.norm(X[src], axis=1, keepdims=True),
                               rtol=1e-6)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"threshold": 0.0}, "threshold must be a number in \\(0, 1\\)"),
    ({"threshold": 1.0}, "threshold"),
    ({"threshold": -0.5}, "threshold"),
    ({"threshold": "0.1"}, "threshold"),
    ({"k": 0}, "k must be"),
    ({"max_atoms": 0}, "max_atoms"),
    ({"batch_size": 0}, "batch_size"),
    ({"selection": "max"}, "selection"),
    ({"dtype": "int8"}, "dtype"),
])
def test_bad_parameters(kwargs, match):
    params = {"k": 3, "threshold": 0.2, **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        ITDA(**params).fit(np.ones((4, 3)))


def test_bad_rows_and_unfitted():
    X = np.ones((5, 3))
    X[2, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        ITDA(3, 0.2).fit(X)
    with pytest.raises(ValueError, match="fitted"):
        ITDA(3, 0.2).transform(np.ones((2, 3)))
    m = ITDA(3, 0.2).fit(np.ones((4, 3)))
    with pytest.raises(ValueError, match="features"):
        m.partial_fit(np.ones((2, 4)))


def test_itda_similarity_is_the_jaccard_index_of_sources():
    X = _data(n=300, d=10, seed=2)
    a = ITDA(4, 0.2, batch_size=32).fit(X)
    assert itda_similarity(a, a) == 1.0
    b = ITDA(4, 0.3, batch_size=32).fit(X)
    sa, sb = set(a.atom_sources_.tolist()), set(b.atom_sources_.tolist())
    assert itda_similarity(a, b) == pytest.approx(len(sa & sb) / len(sa | sb))
    assert itda_similarity([1, 2, 3], np.array([3, 4])) == pytest.approx(1 / 4)
    with pytest.raises(ValueError, match="empty"):
        itda_similarity([], [])


# ----------------------------------------------------------------- files and command


def test_saved_and_loaded_it_goes_on_exactly_as_if_never_stopped(tmp_path):
    from sparsecode.io import load_itda, load_model, save_itda

    X = _data(n=600, d=12, seed=4).astype(np.float32)
    whole = ITDA(4, 0.15, batch_size=50).fit(X)
    part = ITDA(4, 0.15, batch_size=50).fit(X[:300])
    path = save_itda(part, tmp_path / "d.h5")
    resumed = load_itda(path)
    assert np.array_equal(resumed.gram_, part.gram_) and resumed.n_rows_seen_ == 300
    resumed.partial_fit(X[300:])
    np.testing.assert_array_equal(resumed.atom_sources_, whole.atom_sources_)
    np.testing.assert_array_equal(resumed.components_, whole.components_)
    # the file is a model to every command: the MP-SAE of its atoms
    mpsae = load_model(path)
    np.testing.assert_array_equal(mpsae.components_, part.components_)
    assert not np.any(mpsae.bias_)
    a, b = mpsae.transform(X[:100]), part.transform(X[:100])
    assert np.mean(a.indices == b.indices) > 0.99


@pytest.mark.parametrize("damage", ["nan", "no-config", "not-unit", "sources"])
def test_a_damaged_itda_file_is_refused(tmp_path, damage):
    import h5py

    from sparsecode.io import FileFormatError, load_itda, save_itda

    path = save_itda(ITDA(3, 0.2).fit(_data(n=100, d=6)), tmp_path / "d.h5")
    with h5py.File(path, "r+") as f:
        if damage == "nan":
            f["components"][0, 0] = np.nan
        elif damage == "no-config":
            del f.attrs["config"]
        elif damage == "not-unit":
            f["components"][0] *= 2
        else:
            f["sources"][0] = 10**9
    with pytest.raises(FileFormatError, match="damaged"):
        load_itda(path)


@pytest.fixture()
def acts(tmp_path):
    from sparsecode.io import write_activations

    X = _data(n=3000, d=16, seed=6).astype(np.float32)
    return write_activations(tmp_path / "acts.h5", X, dataset="acts"), X


def _itda_cli(acts, out, *extra):
    from sparsecode.cli import main

    return main(["itda", str(acts), "--dataset", "acts", "--k", "4", "--threshold", "0.15",
                 "--out", str(out), "--batch-size", "100", "--quiet", *extra])


def test_command_builds_what_the_estimator_builds_and_encode_takes_it(acts, tmp_path,
                                                                      capsys):
    from sparsecode.cli import main
    from sparsecode.io import load_itda, read_codes

    path, X = acts
    out = tmp_path / "d.h5"
    assert _itda_cli(path, out) == 0
    ref = ITDA(4, 0.15, batch_size=100).fit(X)
    got = load_itda(out)
    np.testing.assert_array_equal(got.atom_sources_, ref.atom_sources_)
    assert main(["info", str(out)]) == 0
    assert f"{ref.n_atoms_:,} atoms" in capsys.readouterr().out
    assert main(["encode", str(out), str(path), "--out", str(tmp_path / "c.h5"),
                 "--quiet"]) == 0
    assert read_codes(tmp_path / "c.h5").indices.shape == (len(X), 4)
    capsys.readouterr()
    assert _itda_cli(path, out, "--resume") == 0
    assert "nothing to do" in capsys.readouterr().err


def test_command_interrupted_then_resumed_equals_an_uninterrupted_run(acts, tmp_path):
    from sparsecode.cli import build_parser
    from sparsecode.cli._common import Interrupted, StopFlag
    from sparsecode.io import load_itda

    path, X = acts
    out = tmp_path / "d.h5"
    args = build_parser().parse_args(["itda", str(path), "--dataset", "acts", "--k", "4",
                                      "--threshold", "0.15", "--out", str(out),
                                      "--batch-size", "100", "--quiet"])
    args.stop = StopFlag()
    args.stop.set = True  # as if Ctrl-C came during the first batch
    with pytest.raises(Interrupted):
        args.func(args)
    ckpt = tmp_path / "d.h5.ckpt"
    assert load_itda(ckpt).n_rows_seen_ == 100 and not out.exists()
    assert _itda_cli(path, out, "--threshold", "0.3", "--resume") == 2  # other settings
    assert _itda_cli(path, out, "--resume") == 0
    ref = ITDA(4, 0.15, batch_size=100).fit(X)
    np.testing.assert_array_equal(load_itda(out).atom_sources_, ref.atom_sources_)
    np.testing.assert_array_equal(load_itda(out).components_, ref.components_)
    assert not ckpt.exists()


def test_command_bad_input(acts, tmp_path, capsys):
    from sparsecode.io import write_activations

    path, X = acts
    assert _itda_cli(path, tmp_path / "a.h5", "--threshold", "1.5") == 2
    assert "--threshold must be in (0, 1)" in capsys.readouterr().err
    # a NaN row past the first 16,384-row chunk: met after the first buffer load
    bad = _data(n=40000, d=8, seed=7).astype(np.float32)
    bad[35000] = np.nan
    bpath = write_activations(tmp_path / "bad.h5", bad, dataset="acts")
    assert _itda_cli(bpath, tmp_path / "b.h5", "--buffer-mb", "0.5") == 2
    err = capsys.readouterr().err
    assert "row 35000" in err and "saved in" in err, err
    assert not (tmp_path / "b.h5").exists() and (tmp_path / "b.h5.ckpt").exists()


def test_command_stores_per_row_data_of_the_sources(acts, tmp_path, capsys):
    import h5py

    from sparsecode.io import load_itda

    path, X = acts
    with h5py.File(path, "r+") as f:
        f["token_ids"] = np.arange(len(X), dtype=np.int64) * 3 + 1
        f["short"] = np.arange(10)
    out = tmp_path / "d.h5"
    assert _itda_cli(path, out, "--source-info", "token_ids") == 0
    m = load_itda(out)
    np.testing.assert_array_equal(m.atom_source_info_["token_ids"], m.atom_sources_ * 3 + 1)
    # a file without the data asked for, or with too little: refused before any work
    for name, match in (("doc_offsets", "has no dataset 'doc_offsets'"),
                        ("short", "a value per row")):
        assert _itda_cli(path, tmp_path / f"{name}.h5", "--source-info", name) == 2
        assert match in capsys.readouterr().err
        assert not (tmp_path / f"{name}.h5.ckpt").exists()


def test_an_itda_file_exports_like_a_model(acts, tmp_path):
    pytest.importorskip("safetensors")
    import json

    from sparsecode.cli import main

    path, _ = acts
    out = tmp_path / "d.h5"
    assert _itda_cli(path, out) == 0
    assert main(["export", str(out), "--saelens", str(tmp_path / "sae")]) == 0
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    from sparsecode.io import load_itda

    assert cfg["d_sae"] == load_itda(out).n_atoms_ and cfg["max_iterations"] == 4
