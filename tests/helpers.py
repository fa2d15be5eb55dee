"""Assertions shared by the solver tests."""

import numpy as np

#: How far apart (relative to ||x||) the best and second-best scores must be at every
#: step for two implementations to be required to take the same path, per dtype.
MARGIN = {np.dtype(np.float32): 1e-3, np.dtype(np.float64): 1e-7}
#: Coefficient tolerance, per dtype (relative to the largest coefficient of the row).
VTOL = {np.dtype(np.float32): 2e-3, np.dtype(np.float64): 1e-8}


def residual(X, codes, D):
    return np.asarray(X, dtype=np.float64) - codes.decode(D).astype(np.float64)


def assert_codes_equal_reference(codes, ref_idx, ref_val, D, dtype):
    """Row by row: same atoms in the same order and the same coefficients.

    Atoms are compared by gathered atom vectors, not by index, so that duplicated atoms
    (ties) do not fail the comparison.
    """
    dtype = np.dtype(dtype)
    D = np.asarray(D, dtype=np.float64)
    for i, (ri, rv) in enumerate(zip(ref_idx, ref_val, strict=True)):
        l0 = int(codes.l0[i])
        assert l0 == len(ri), f"row {i}: {l0} atoms, reference {len(ri)}"
        got = codes.indices[i, :l0]
        np.testing.assert_allclose(D[got], D[ri], err_msg=f"row {i}: different atoms")
        scale = max(1.0, float(np.abs(rv).max()) if len(rv) else 1.0)
        np.testing.assert_allclose(
            codes.values[i, :l0].astype(np.float64), rv, atol=VTOL[dtype] * scale,
            rtol=VTOL[dtype], err_msg=f"row {i}: different coefficients",
        )
        assert np.all(codes.indices[i, l0:] == -1)
        assert np.all(codes.values[i, l0:] == 0)


def one_line_error(capsys, *fragments):
    """The command's stderr: one line ``sparsecode: error: ...`` holding ``fragments``."""
    err = capsys.readouterr().err.strip()
    assert err.startswith("sparsecode: error:"), err
    assert len(err.splitlines()) == 1, err
    for frag in fragments:
        assert frag in err, err
    return err


def file_digest(path):
    """SHA-256 of a file's bytes."""
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def spy_gram_rows(monkeypatch):
    """Record every GramRows store made from now on (the pursuits and the models take
    the class from its module at call time); returns the list they are appended to."""
    import sparsecode._gram_rows as module

    made = []

    class Spy(module.GramRows):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            made.append(self)

    monkeypatch.setattr(module, "GramRows", Spy)
    return made
