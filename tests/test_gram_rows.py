"""The cached Gram path (GramRows), 16-bit Gram rows and the gram='auto' decision."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import sparsecode
from sparsecode import GramRows, _config
from sparsecode._halves_numba import narrow, widen
from sparsecode.pursuit import decide_gram
from tests import naive
from tests.helpers import MARGIN, assert_codes_equal_reference
from tests.strategies import planted, problems

RULES = ["abs", "positive", "signed"]


def small_store(D, rows, dtype=None, defer="auto"):
    """A store of ``rows`` rows of ``D`` (so most calls evict)."""
    item = 2 if dtype in ("float16", "bfloat16") else np.dtype(D.dtype).itemsize
    store = GramRows(D, max_bytes=rows * D.shape[0] * item, dtype=dtype, defer=defer)
    assert store.capacity == min(rows, D.shape[0])
    return store


@given(problems(), st.integers(1, 12), st.sampled_from([0.0, 0.1]), st.sampled_from(RULES),
       st.integers(0, 3), st.booleans())
def test_mp_cached_equals_reference(problem, k, tol, rule, rows, defer):
    X, D = (a.astype(np.float32) for a in problem)  # one dtype: CI compile time
    ref_i, ref_v, margin = naive.encode(naive.mp, X, D, k=k, tol=tol, rule=rule, dtype=X.dtype)
    assume(margin > MARGIN[X.dtype])
    store = small_store(D, rows if defer else max(rows, 1), defer=defer)
    codes = sparsecode.mp(X, D, k=k, tol=tol or None, selection=rule, gram=store)
    assert_codes_equal_reference(codes, ref_i, ref_v, D, X.dtype)


@given(problems(), st.integers(1, 8), st.sampled_from([0.0, 0.05]), st.booleans(),
       st.integers(0, 4), st.booleans())
def test_omp_cached_equals_reference(problem, k, tol, positive, spare, defer):
    X, D = (a.astype(np.float32) for a in problem)  # one dtype: CI compile time
    k = min(k, D.shape[0])
    ref_i, ref_v, margin = naive.encode(naive.omp, X, D, k=k, tol=tol, positive=positive,
                                        dtype=X.dtype)
    assume(margin > MARGIN[X.dtype])
    for idx in ref_i:
        if len(idx):
            assume(np.linalg.cond(D[idx].astype(np.float64)) < 30)
    # a store that defers needs no rows at all (positive OMP always waits for them)
    rows = spare if defer and not positive else k + spare
    store = small_store(D, rows, defer=defer)
    codes = sparsecode.omp(X, D, k=k, tol=tol or None, positive=positive, gram=store)
    assert_codes_equal_reference(codes, ref_i, ref_v, D, X.dtype)


@given(problems(), st.integers(1, 8), st.sampled_from([0.0, 0.1]),
       st.sampled_from(["gp", "acgp"]), st.booleans(), st.integers(0, 4))
def test_gp_cached_equals_reference(problem, k, tol, variant, positive, spare):
    X, D = (a.astype(np.float32) for a in problem)  # one dtype: CI compile time
    k = min(k, D.shape[0])
    ref_i, ref_v, margin = naive.encode(naive.gp, X, D, k=k, tol=tol, variant=variant,
                                        positive=positive, dtype=X.dtype)
    assume(margin > MARGIN[X.dtype])
    store = small_store(D, k + spare)
    codes = sparsecode.gp(X, D, k=k, tol=tol or None, variant=variant, positive=positive,
                          gram=store)
    assert_codes_equal_reference(codes, ref_i, ref_v, D, X.dtype)


@pytest.mark.parametrize("solver", ["mp", "omp", "gp"])
def test_cached_path_evicts_under_a_tiny_budget_and_keeps_the_codes(solver, rng,
                                                                   monkeypatch):
    X, D, _ = planted(rng, 60, 32, 200, 4, noise=0.05, dtype=np.float32)
    fn = getattr(sparsecode, solver)
    whole = fn(X, D, k=4, gram=True)
    monkeypatch.setattr(_config, "GRAM_CACHE_BYTES", 6 * 200 * 4)  # six rows
    store = GramRows(D, defer=False)  # signals wait for the rows they lack
    assert store.capacity == 6 and not store.complete
    codes = fn(X, D, k=4, gram=store)
    # more rows computed than the store holds, and more than the atoms used: evictions
    used = np.unique(whole.indices[whole.indices >= 0]).size
    assert store.rows_computed > max(store.capacity, used)
    np.testing.assert_array_equal(codes.indices, whole.indices)
    np.testing.assert_allclose(codes.values, whole.values, rtol=1e-5, atol=1e-6)
    # gram="cached" builds a store of that size itself (which defers missing rows for
    # MP and OMP, n k >= n_atoms / 2 here): the same codes
    again = fn(X, D, k=4, gram="cached")
    np.testing.assert_array_equal(again.indices, whole.indices)


def test_store_keeps_rows_across_calls_and_evicts_the_least_used(rng):
    X, D, _ = planted(rng, 20, 24, 64, 3, noise=0.01, dtype=np.float32)
    store = small_store(D, 60, defer=False)  # 20 signals of 3 steps: at most 60 atoms
    sparsecode.mp(X, D, k=3, gram=store)
    first = store.rows_computed
    assert 0 < first <= 60
    sparsecode.mp(X, D, k=3, gram=store)  # the same signals: every row is present
    assert store.rows_computed == first
    # a full store evicts the rows read in the fewest rounds, never the asked ones
    store = small_store(D, 4)
    store.ensure(np.array([0, 1, 2, 3]))
    for _ in range(3):  # atoms 0 and 1 read in three rounds, 2 and 3 in none
        rnd = store.next_round()
        store.used[store.slot[[0, 1]]] = rnd
        store.end_round()
    store.ensure(np.array([5, 6]))
    assert set(store.atom) == {0, 1, 5, 6}
    with pytest.raises(ValueError, match="rows asked"):
        store.ensure(np.arange(5))


def test_store_rows_are_the_gram_rows(rng):
    D = rng.standard_normal((50, 20)) * rng.uniform(0.5, 2, (50, 1))
    Du = D / np.linalg.norm(D, axis=1, keepdims=True)
    store = small_store(D, 7)
    atoms = np.array([3, 17, 49])
    store.ensure(atoms)
    np.testing.assert_allclose(store.rows[store.slot[atoms]], Du[atoms] @ Du.T, atol=1e-12)
    whole = GramRows(D)  # fits: computed at once, the exact Gram matrix of the unit atoms
    assert whole.complete
    np.testing.assert_array_equal(whole.rows, sparsecode.gram(whole.D))


@pytest.mark.parametrize("storage, eps", [("float16", 2.0 ** -11), ("bfloat16", 2.0 ** -8)])
def test_narrow_rounds_to_nearest(storage, eps, rng):
    x = rng.uniform(-1, 1, 10000).astype(np.float32)
    back = widen(narrow(x, storage))
    # round to nearest: at most half a unit in the last place (relative to |x| for normals)
    normal = np.abs(x) > 1e-4
    assert np.all(np.abs(back - x)[normal] <= eps * np.abs(x)[normal])
    assert np.abs(back - x).max() > 0  # it does round
    exact = widen(narrow(back, storage))
    np.testing.assert_array_equal(exact, back)


@pytest.mark.parametrize("storage, bound", [("float16", 2e-3), ("bfloat16", 1.5e-2)])
@pytest.mark.parametrize("solver", ["mp", "omp", "gp"])
def test_16_bit_rows_keep_supports_on_well_conditioned_problems(solver, storage, bound, rng):
    # planted 4-sparse signals over 128 atoms in 96 dimensions (coherence about 0.4), 1%
    # noise: 16-bit rows give the supports of float32 rows, and coefficients within
    # `bound` of their size (the bound the docs state)
    X, D, _ = planted(rng, 200, 96, 128, 4, noise=0.01, dtype=np.float32)
    fn = getattr(sparsecode, solver)
    ref = fn(X, D, k=4, gram=True)
    for rows in (128, 8):  # whole, then cached with evictions
        # float16 rows on the deferring path, bfloat16 on the waiting one (one compiled
        # variant of each cached kernel per storage: CI time)
        store = small_store(D, rows, storage, defer=storage == "float16")
        codes = fn(X, D, k=4, gram=store)
        np.testing.assert_array_equal(codes.indices, ref.indices)
        scale = np.abs(ref.values).max(axis=1, keepdims=True)
        assert np.abs(codes.values - ref.values).max() <= bound * scale.max()
        assert np.all(np.abs(codes.values - ref.values) <= bound * scale)


def test_auto_decision_at_the_boundaries(monkeypatch):
    D = np.zeros((1000, 256), dtype=np.float32)
    row = 1000 * 4
    monkeypatch.setattr(_config, "GRAM_BUDGET_BYTES", 1000 * row)  # exactly the whole G
    monkeypatch.setattr(_config, "GRAM_CACHE_BYTES", 8 * row)  # eight rows
    assert decide_gram("auto", 125, 8, D) is True  # n k = n_atoms: pays
    assert decide_gram("auto", 124, 8, D) is False  # fits but does not pay: no Gram
    monkeypatch.setattr(_config, "GRAM_BUDGET_BYTES", 1000 * row - 1)
    assert decide_gram("auto", 10**6, 8, D) == "cached"  # over budget: cached rows
    assert decide_gram("auto", 10**6, 9, D) is False  # a support needs 9 rows: no Gram
    assert decide_gram("auto", 10**6, 9, D, rows_per_signal=1) == "cached"  # MP needs 1
    monkeypatch.setattr(_config, "CACHED_MIN_FEATURES", 257)
    assert decide_gram("auto", 10**6, 8, D) is False  # short atoms: GEMMs cost less
    assert decide_gram("cached", 1, 8, D) == "cached"
    with pytest.raises(ValueError, match="gram"):
        decide_gram("whole", 1, 8, D)


def test_auto_takes_the_cached_path_over_budget(rng, monkeypatch):
    X, D, _ = planted(rng, 30, 160, 300, 4, noise=0.01, dtype=np.float32)
    whole = sparsecode.omp(X, D, k=4, gram=True)
    monkeypatch.setattr(_config, "GRAM_BUDGET_BYTES", 300 * 300 * 4 - 1)
    from tests.helpers import spy_gram_rows

    made = spy_gram_rows(monkeypatch)
    codes = sparsecode.omp(X, D, k=4)
    assert len(made) == 1 and made[0].rows_computed > 0
    np.testing.assert_array_equal(codes.indices, whole.indices)


def test_bad_stores_are_refused(rng):
    X, D, _ = planted(rng, 5, 16, 32, 3, dtype=np.float32)
    other = rng.standard_normal((32, 16)).astype(np.float32) * 3
    with pytest.raises(ValueError, match="another dictionary"):
        sparsecode.mp(X, D, k=3, gram=GramRows(other))
    with pytest.raises(ValueError, match="another dictionary"):
        sparsecode.mp(X.astype(np.float64), D.astype(np.float64), k=3, gram=GramRows(D))
    with pytest.raises(ValueError, match="needs 3"):
        sparsecode.omp(X, D, k=3, gram=small_store(D, 2, defer=False))
    with pytest.raises(ValueError, match="needs 3"):  # positive OMP never defers
        sparsecode.omp(X, D, k=3, positive=True, gram=small_store(D, 2, defer=True))
    with pytest.raises(ValueError, match="defer must be"):
        GramRows(D, defer="yes")
    with pytest.raises(ValueError, match="dtype must be one of"):
        GramRows(D, dtype="int8")
    with pytest.raises(ValueError, match="differs from the dictionary"):
        GramRows(D, dtype="float64")
    with pytest.raises(ValueError, match="max_bytes"):
        GramRows(D, max_bytes=-1)
    with pytest.raises(ValueError, match="zero norm"):
        GramRows(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="for the CPU"):
        sparsecode.mp(X, D, k=3, gram=GramRows(D), backend="gpu")


@pytest.mark.parametrize("storage, agree", [("float16", 1.0)])
def test_a_whole_16_bit_gram_runs_the_per_signal_kernels(storage, agree, rng):
    # 2,048 atoms in 128 dimensions (coherence about 0.45): OMP takes its deferred-update
    # kernel on float16 rows; it keeps float32's supports and the error stays within 1% of
    # float32's.  (bfloat16 runs the same kernels with the
    # support Gram from the atoms; its 8 bits moved under 1% of the support entries
    # here: not in CI, for its compile time)
    X, D, _ = planted(rng, 100, 128, 2048, 8, noise=0.01, dtype=np.float32)
    store = GramRows(D, dtype=storage)
    assert store.complete and store.rows.dtype.itemsize == 2
    for fn in (sparsecode.omp,):  # MP's kernel on 16-bit rows: the test above
        ref = fn(X, D, k=8, gram=True)
        codes = fn(X, D, k=8, gram=store)
        assert np.mean(codes.indices == ref.indices) >= agree
        err = np.sum((X - codes.decode(D)) ** 2)
        assert err <= 1.01 * np.sum((X - ref.decode(D)) ** 2)


@pytest.mark.parametrize("solver", ["mp", "omp"])
@pytest.mark.parametrize("rows, group", [(0, 256), (6, 256), (0, 32)])
def test_deferred_rows_keep_the_codes_and_save_payments(solver, rows, group, rng,
                                                         monkeypatch):
    # 256 atoms in 128 dimensions (coherence about 0.35): with no rows or six, every
    # missing row is deferred; the selections stay exact, and most steps go on without
    # paying (one product per payment), so payments are far fewer than missing rows
    X, D, _ = planted(rng, 80, 128, 256, 6, noise=0.01, dtype=np.float32)
    monkeypatch.setattr(_config, "COHERENCE_GROUP", group)  # bounds by group of atoms
    fn = getattr(sparsecode, solver)
    whole = fn(X, D, k=6, gram=True)
    store = small_store(D, rows, defer=True)
    codes = fn(X, D, k=6, gram=store)
    np.testing.assert_array_equal(codes.indices, whole.indices)
    np.testing.assert_allclose(codes.values, whole.values, rtol=1e-4, atol=1e-5)
    assert 0 < store.payments < 80 * 5 / 2
    # the bound is exact about the error it allows: a coherence of 0 would claim
    # every selection certain and take wrong atoms
    store = small_store(D, rows, defer=True)
    store.coherence()
    store.mu[:] = 0.0
    store.mu_groups[:] = 0.0
    wrong = fn(X, D, k=6, gram=store)
    assert store.payments == 0
    assert not np.array_equal(wrong.indices, whole.indices)


@pytest.mark.parametrize("group", [6, 32, 256])
def test_coherence_bounds_each_row_of_the_gram_matrix_by_group(group, rng, monkeypatch):
    from sparsecode._parallel import coherence

    D = rng.standard_normal((70, 12))
    D[5] = D[40] + 0.01 * rng.standard_normal(12)  # a near duplicate, across blocks
    D = (D / np.linalg.norm(D, axis=1, keepdims=True)).astype(np.float32)
    ref = naive.coherence(D.astype(np.float64), group)
    assert ref.shape == (70, -(-70 // group))
    for block in (7, 70, 512):  # blocks that cut the atoms unevenly, one block, more
        mu, mub = coherence(D, group, block=block)
        assert mub.dtype == np.float32 and mub.shape == ref.shape
        assert np.all(mub >= ref) and np.all(mub <= ref + 1e-3)
        np.testing.assert_allclose(mu, mub.max(axis=1), rtol=1e-6)
    assert ref[5, 40 // group] > 0.99 and ref[40, 5 // group] > 0.99
    monkeypatch.setattr(_config, "COHERENCE_GROUP", group)
    store = GramRows(D, max_bytes=0)
    np.testing.assert_array_equal(store.coherence(), coherence(D, group)[0])
    np.testing.assert_array_equal(store.mu_groups, coherence(D, group)[1])
    given = GramRows(D, max_bytes=0)
    given.mu = store.mu  # the bound by atom alone: the groups' are computed when needed
    given.coherence()
    np.testing.assert_array_equal(given.mu_groups, store.mu_groups)


def test_auto_defers_when_the_coherence_pays_for_itself(rng):
    D = rng.standard_normal((1000, 16)).astype(np.float32)
    store = GramRows(D, max_bytes=0)
    assert store.defers(500, 1) and not store.defers(499, 1)  # 2 n k >= n_atoms
    assert store.defers(63, 8) and not store.defers(62, 8)
    store.coherence()
    assert store.defers(1, 1)  # once known it is free
    assert not GramRows(D, max_bytes=0, defer=False).defers(10**6, 64)
    assert GramRows(D, max_bytes=0, defer=True).defers(1, 1)


def test_atoms_taken_often_without_a_row_get_one(rng):
    from sparsecode.pursuit._rows import HOT_MISSES

    X, D, _ = planted(rng, 40, 64, 128, 3, noise=0.01, dtype=np.float32)
    X = (X + 3.0 * D[7] + 2.0 * D[9]).astype(np.float32)  # every signal uses 7 and 9
    store = small_store(D, 16, defer=True)
    whole = sparsecode.mp(X, D, k=3, gram=True)
    codes = sparsecode.mp(X, D, k=3, gram=store)
    np.testing.assert_array_equal(codes.indices, whole.indices)
    taken = np.bincount(whole.indices.ravel(), minlength=128)
    assert taken[7] >= 30 and store.slot[7] >= 0  # its row was computed and kept
    rare = np.flatnonzero((taken > 0) & (taken < HOT_MISSES))
    assert rare.size and np.all(store.slot[rare] < 0)  # too rare for a row


@pytest.mark.parametrize("gram", [True, "cached"])
def test_block_encoder_builds_its_gram_once(gram, rng, monkeypatch):
    from sparsecode.distributed.encode import BlockEncoder
    from tests.helpers import spy_gram_rows

    X, D, _ = planted(rng, 96, 160, 300, 4, noise=0.01, dtype=np.float32)
    D = D * rng.uniform(0.5, 2.0, (300, 1)).astype(np.float32)  # atoms of any norm
    monkeypatch.setattr(_config, "GRAM_CACHE_BYTES", 50 * 300 * 4)  # "cached": 50 rows
    whole = sparsecode.omp(X, D, k=4, gram=gram)  # one call on all the signals
    made = spy_gram_rows(monkeypatch)
    enc = BlockEncoder(D, solver="omp", k=4, tol=None, options={"gram": gram},
                       n_samples=96, dtype=np.float32)
    first, second = enc(X[:48]), enc(X[48:])
    assert len(made) == 1 and made[0].complete == (gram is True)
    # the same codes as the one call (for the store: the same exact selections)
    np.testing.assert_array_equal(np.vstack([first.indices, second.indices]), whole.indices)
    np.testing.assert_allclose(np.vstack([first.values, second.values]), whole.values,
                               rtol=0 if gram is True else 1e-5)
    import pickle

    again = pickle.loads(pickle.dumps(enc))  # sent to a worker: without the Gram
    assert again._gram is None and len(made) == 1
    np.testing.assert_array_equal(again(X[:48]).indices, first.indices)
    assert len(made) == 2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gram_in_float16_rounds_the_products(dtype, rng):
    D = rng.standard_normal((50, 12)).astype(dtype)
    G16 = sparsecode.gram(D, dtype="float16")
    assert G16.dtype == np.float16 and G16.shape == (50, 50)
    exact = D.astype(np.float64) @ D.T.astype(np.float64)
    # round to nearest from the dtype's product: half a float16 step and the product's error
    assert np.all(np.abs(G16 - exact) <= 2.0**-11 * np.abs(exact) + 1e-5 * np.abs(exact).max())
    assert np.any(G16 != exact.astype(dtype))  # it does round
    with pytest.raises(ValueError, match="dtype must be one of 'float16'"):
        sparsecode.gram(D, dtype="bfloat16")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gram_in_float16_is_the_symmetric_gram_rounded_once(dtype, rng):
    from sparsecode._parallel import gram_symmetric

    D = rng.standard_normal((600, 20)).astype(dtype)  # several tiles of GRAM_TILE atoms
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    G16 = sparsecode.gram(D, dtype="float16")
    # the products of gram(D), each rounded once to float16, as NumPy rounds
    np.testing.assert_array_equal(G16.view(np.uint16),
                                  gram_symmetric(D).astype(np.float16).view(np.uint16))
    np.testing.assert_array_equal(G16, G16.T)
    # a complete float16 store holds the same bits
    np.testing.assert_array_equal(GramRows(D, dtype="float16").rows, G16.view(np.uint16))


def test_jitted_float16_rounding_is_numpys(rng):
    from numba import njit

    from sparsecode._halves_numba import entry

    @njit
    def to_bits(x, out):
        for i in range(x.shape[0]):
            out[i] = entry(x[i], out)

    # every kind of float32: random bit patterns (subnormals, overflow to inf, signs) and
    # the ties and edges of float16's range
    bits = rng.integers(0, 2**32, size=200000, dtype=np.uint64).astype(np.uint32)
    edges = [65504, 65519.99, 65520, 2.0**-24, 2.0**-25, 3 * 2.0**-26, 1 + 2.0**-11,
             1 + 3 * 2.0**-11, np.inf, -np.inf, 0.0, -0.0, -1 - 2.0**-11]
    # float64 between float32's values too: one rounding, not two through float32
    wide = rng.standard_normal(200000) * np.exp2(rng.uniform(-30, 17, 200000))
    for dtype in (np.float32, np.float64):
        x = np.concatenate([bits.view(np.float32), np.array(edges, np.float32)]).astype(dtype)
        if dtype == np.float64:
            x = np.concatenate([x, wide, 1 + 2.0**-11 + np.array([2.0**-40, -2.0**-40])])
        x = x[~np.isnan(x)]
        out = np.empty(x.size, np.uint16)
        to_bits(x, out)
        with np.errstate(over="ignore"):
            np.testing.assert_array_equal(out, x.astype(np.float16).view(np.uint16))


@pytest.mark.parametrize("kw", [{}, {"positive": True}])
@pytest.mark.parametrize("solver", ["mp", "omp", "gp"])
def test_a_float16_gram_is_read_as_16_bit_rows(solver, kw, rng):
    # gram= a float16 matrix runs what a whole float16 store runs, on the same rows:
    # the same bits (the GPU reads it the same way)
    if solver == "mp" and kw:
        kw = {"selection": "positive"}
    X, D, _ = planted(rng, 60, 48, 200, 4, noise=0.01, dtype=np.float32)
    store = GramRows(D, dtype="float16")
    G16 = store.rows.view(np.float16)
    fn = getattr(sparsecode, solver)
    codes = fn(X, D, k=4, gram=G16, **kw)
    same = fn(X, D, k=4, gram=store, **kw)
    np.testing.assert_array_equal(codes.indices, same.indices)
    np.testing.assert_array_equal(codes.values, same.values)
    ref = fn(X, D, k=4, gram=True, **kw)  # and not the float32 Gram's bits
    assert np.any(codes.values != ref.values)


def test_bad_float16_grams_are_refused(rng):
    X, D, _ = planted(rng, 5, 16, 32, 3, dtype=np.float32)
    G16 = sparsecode.gram(D, dtype="float16")
    with pytest.raises(ValueError, match="must have unit norm"):
        sparsecode.mp(X, 2 * D, k=3, gram=G16)
    bad = G16.copy()
    bad[3, 3] = 0.5
    with pytest.raises(ValueError, match="at atom 3 it is 0.5"):
        sparsecode.omp(X, D, k=3, gram=bad)
    with pytest.raises(ValueError, match="shape"):
        sparsecode.gp(X, D, k=3, gram=G16[:31, :31])
    with pytest.raises(ValueError, match="must have unit norm"):
        GramRows.from_gram(2 * D, G16)
