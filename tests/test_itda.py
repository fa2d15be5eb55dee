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
