"""Hash every solver's and every trainer's output on fixed seeds.

A refactor that must not change a single result runs this before and after and compares
the two lists (``diff`` them, or ``--check FILE``)::

    python benchmarks/hash_outputs.py > before.txt
    ...  # change the code
    python benchmarks/hash_outputs.py --check before.txt

Covered: ``mp`` (every selection rule), ``omp`` (plain and non-negative), ``gp`` (both
variants, plain and non-negative), each in float32 and float64, on the Gram and the
no-Gram path, with ``k`` and with ``tol``, on unit and non-unit atoms; ``mpsae_grad``
(MP and TopK encoders); ``MPSAE.fit`` for every solver x update pair (and free / unit
atom norms), its history (less the wall time), ``transform`` with every solver, and a
save / load round trip of the training state.
"""

import argparse
import hashlib
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np


def digest(*arrays):
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def codes_digest(codes):
    return digest(codes.indices, codes.values)


def history_digest(history):
    rows = [[float(v) for k, v in sorted(r.items()) if k != "seconds"] for r in history]
    return digest(np.array(rows, dtype=np.float64))


def pursuit_hashes():
    import sparsecode

    rng = np.random.default_rng(1234)
    out = []
    for dt in ("float32", "float64"):
        X = rng.standard_normal((97, 24)).astype(dt)
        D = rng.standard_normal((61, 24)).astype(dt)
        Du = D / np.linalg.norm(D, axis=1, keepdims=True)
        for atoms, DD in (("unit", Du), ("free", D)):
            for gram in (True, False):
                stop = (("k", {"k": 7}), ("tol", {"tol": 0.05}), ("k+tol", {"k": 9, "tol": 0.1}))
                for sname, kw in stop:
                    tag = f"{dt} {atoms} gram={gram} {sname}"
                    for sel in ("abs", "positive", "signed"):
                        c = sparsecode.mp(X, DD, selection=sel, gram=gram, **kw)
                        out.append((f"mp {sel} {tag}", codes_digest(c)))
                    for pos in (False, True):
                        c = sparsecode.omp(X, DD, positive=pos, gram=gram, **kw)
                        out.append((f"omp positive={pos} {tag}", codes_digest(c)))
                        for var in ("gp", "acgp"):
                            c = sparsecode.gp(X, DD, variant=var, positive=pos, gram=gram, **kw)
                            out.append((f"gp {var} positive={pos} {tag}", codes_digest(c)))
        G = sparsecode.gram(Du)
        c = sparsecode.mp(X, Du, k=5, gram=G)
        out.append((f"mp precomputed gram {dt}", codes_digest(c)))
        b = rng.standard_normal(24).astype(dt) * 0.1
        for enc in ("mp", "topk"):
            for sel in ("abs", "positive", "signed"):
                g = sparsecode.mpsae_grad(X, D * 0.7, b, k=6, selection=sel, encoder=enc)
                out.append((f"mpsae_grad {enc} {sel} {dt}", digest(
                    np.array([g.loss]), g.grad_D, g.grad_b, g.codes.indices, g.codes.values,
                    g.residual_norms2)))
    return out


def training_hashes():
    from sparsecode import MPSAE
    from sparsecode.datasets import make_sparse_signals
    from sparsecode.io import load_model, save_model

    X, _, _ = make_sparse_signals(1500, 16, 40, 3, noise=0.01, random_state=0)
    X = (X * 2.0 + 0.3).astype(np.float32)
    out = []
    combos = [(s, u) for s in ("mp", "topk", "omp", "gp") for u in ("adam", "mod", "ksvd",
                                                                       "online")
              if not (s == "topk" and u != "adam")]
    with tempfile.TemporaryDirectory() as tmp:
        for solver, update in combos:
            for unit in ((False, True) if update == "adam" else (False,)):
                for dtype in ("float32", "float64"):
                    bs = None if update in ("mod", "ksvd") else 200
                    m = MPSAE(40, 3, solver=solver, update=update, batch_size=bs,
                              n_epochs=2 if bs else 3, lr=1e-2, unit_atoms=unit,
                              log_every=2, dead_window=600, progress=False, dtype=dtype,
                              random_state=7)
                    m.fit(X.astype(dtype))
                    tag = f"fit solver={solver} update={update} unit={unit} {dtype}"
                    out.append((tag + " model", digest(m.components_, m.bias_,
                                                       np.array([m.n_steps_,
                                                                 m.n_samples_seen_]))))
                    out.append((tag + " history", history_digest(m.history_)))
                    for s in ("mp", "omp", "gp") + (("topk",) if solver == "topk" else ()):
                        c = m.transform(X[:300], solver=s)
                        out.append((tag + f" transform {s}", codes_digest(c)))
                    c = m.transform(X[:50], k=None, tol=0.1, solver="omp")
                    out.append((tag + " transform omp tol", codes_digest(c)))
                    path = Path(tmp) / f"{solver}-{update}-{unit}-{dtype}.h5"
                    save_model(m, path)
                    m2 = load_model(path)
                    m.partial_fit(X[:200])
                    m2.partial_fit(X[:200])
                    out.append((tag + " resumed step", digest(m2.components_, m2.bias_)))
                    assert digest(m.components_) == digest(m2.components_), tag
        # iterable of batches and partial_fit from scratch
        m = MPSAE(40, 3, lr=1e-2, progress=False, random_state=3, log_every=1)
        m.fit([X[i:i + 250] for i in range(0, 1500, 250)])
        out.append(("fit list of batches", digest(m.components_, m.bias_)))
        out.append(("fit list of batches history", history_digest(m.history_)))
        m = MPSAE(40, 3, update="online", progress=False, random_state=3, batch_size=100)
        for i in range(0, 600, 100):
            m.partial_fit(X[i:i + 100])
        out.append(("partial_fit online", digest(m.components_, m.bias_)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", help="a file of hashes written by an earlier run")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    lines = [f"{name}\t{h}" for name, h in pursuit_hashes() + training_hashes()]
    if args.check is None:
        print("\n".join(lines))
        return 0
    want = Path(args.check).read_text().splitlines()
    bad = [(a, b) for a, b in zip(want, lines, strict=False) if a != b]
    if len(want) != len(lines):
        print(f"{len(lines)} hashes, the file has {len(want)}")
    for a, b in bad:
        print(f"differs: {a}  now  {b.split(chr(9))[1]}")
    print(f"{len(lines) - len(bad)} of {len(want)} identical")
    return 1 if bad or len(want) != len(lines) else 0


if __name__ == "__main__":
    sys.exit(main())
