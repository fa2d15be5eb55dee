import numpy as np
import pytest
import scipy.sparse

import sparsecode
from sparsecode import SparseCodes
from tests.strategies import planted


@pytest.fixture
def codes_and_dict(rng):
    X, D, _ = planted(rng, 25, 12, 30, 4, noise=0.1)
    X[3] = 0.0  # an empty row
    return sparsecode.omp(X, D, k=5, tol=0.05), D


def test_toarray_tocsr_decode_agree(codes_and_dict):
    codes, D = codes_and_dict
    dense = codes.toarray()
    assert dense.shape == codes.shape == (25, 30)
    csr = codes.tocsr()
    assert isinstance(csr, scipy.sparse.csr_matrix)
    np.testing.assert_array_equal(csr.toarray(), dense)
    np.testing.assert_array_equal(csr.getnnz(axis=1), codes.l0)
    np.testing.assert_allclose(codes.decode(D), dense @ D, atol=1e-12)
    assert codes.l0[3] == 0


def test_getitem_and_repr(codes_and_dict):
    codes, D = codes_and_dict
    sub = codes[5:9]
    assert len(sub) == 4 and sub.n_atoms == 30
    np.testing.assert_array_equal(sub.toarray(), codes.toarray()[5:9])
    one = codes[2]
    np.testing.assert_array_equal(one.toarray(), codes.toarray()[2:3])
    assert "n_samples=25" in repr(codes)


def test_decode_checks_dictionary_shape(codes_and_dict):
    codes, D = codes_and_dict
    with pytest.raises(ValueError, match="n_atoms=30"):
        codes.decode(D[:10])


def test_constructor_rejects_mismatched_arrays():
    with pytest.raises(ValueError, match="same shape"):
        SparseCodes(np.zeros((2, 3), np.int32), np.zeros((2, 2)), 5)
