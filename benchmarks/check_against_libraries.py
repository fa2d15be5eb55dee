"""Check sparsecode's PyTorch-free SAE loader, encoders and exports against the original
libraries: SAELens, EleutherAI sparsify and dictionary_learning.

For tiny random SAEs (16 features, 64 atoms, float32) each format is written by the
fixture writers of ``tests/sae_files.py``, loaded both by the library (``torch``) and by
:func:`sparsecode.io.load_sae`, and the same random rows are encoded by both.  Fitted
MPSAEs exported by :func:`sparsecode.io.export_saelens` and
:func:`sparsecode.io.export_sparsify` (and a few loaded SAEs re-exported) are loaded by
the libraries and compared with ``model.transform`` / the loaded SAE.  One line per case:
the mean number of active atoms, the largest activation and its largest absolute
difference, the same for the reconstruction, and whether the supports (non-zero
activations) are identical.  The ``torch.save`` fixture ``tests/data/torch_saved_small.pt``
is also read by ``torch.load`` and by :mod:`sparsecode.io.torch_archive` and compared.

dictionary_learning's ``ae.pt`` is compared as the library writes it: the fixture's
tensors are loaded into the class by a strict ``load_state_dict`` (so the writer's keys and
shapes are the class's) and saved again by ``torch.save(ae.state_dict())``; sparsecode must
read the same arrays from both files.  Whether ``torch.load`` reads the fixture's own file
is reported under the table.

It is not part of the test suite: it needs PyTorch and the three libraries, in an
environment of their own (CPU only, a few seconds to run)::

    python3 -m venv /work/libcheck-venv                        # Python 3.11
    /work/libcheck-venv/bin/pip install torch==2.13.0          # the CPU build
    echo "torch==2.13.0" > /tmp/constraints.txt                # keep that torch
    /work/libcheck-venv/bin/pip install -c /tmp/constraints.txt -e . safetensors sae-lens
    /work/libcheck-venv/bin/pip install -c /tmp/constraints.txt --no-deps \\
        eai-sparsify dictionary-learning "nnsight>=0.3,<0.4"
    /work/libcheck-venv/bin/pip install -c /tmp/constraints.txt simple-parsing natsort \\
        accelerate schedulefree einops "python-socketio[client]" pydantic protobuf \\
        sentencepiece pillow
    /work/libcheck-venv/bin/python benchmarks/check_against_libraries.py

(``dictionary-learning`` on PyPI is 0.1.0; its package ``__init__`` imports
``nnsight`` 0.3, whose imports need the packages of the last line.  The SAE classes
there are the same as in the repository's newest sources.)

Exit status 0 when every case has identical supports and differences within float32
rounding (``--atol``, default 1e-4 for values of order 1), 1 otherwise.  Cases whose
difference is a known, documented library behaviour are marked ``(note)`` and explained
under the table; they do not fail the run.
"""

import argparse
import contextlib
import io
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sparsecode import MPSAE  # noqa: E402
from sparsecode.io import export_saelens, export_sparsify, load_sae  # noqa: E402
from sparsecode.io.torch_archive import read_torch_archive  # noqa: E402
from tests.sae_files import (  # noqa: E402
    random_weights,
    write_dictionary_learning,
    write_saelens,
    write_sparsify,
)

D, M, K = 16, 64, 4
N_ROWS = 256


def free_norm_weights(seed):
    """``random_weights`` with decoder rows of norms drawn in [0.6, 1.3] (matching
    pursuit on rows of norm above sqrt(2) lets the residual grow) and the encoder
    scaled to match."""
    w = random_weights(D, M, seed=seed)
    n = np.random.default_rng(seed + 100).uniform(0.6, 1.3, M).astype(np.float32)
    w["W_dec"] = w["W_dec"] * n[:, None]
    w["W_enc"] = w["W_enc"] * n
    return w


# ---- the libraries' side -------------------------------------------------------------------

def saelens_run(folder, X):
    """SAELens: ``encode`` (dense activations) and ``decode(encode(x))``."""
    from sae_lens import SAE

    sae = SAE.load_from_disk(folder)
    x = torch.from_numpy(X)
    with torch.no_grad():
        f = sae.encode(x)
        if f.is_sparse:
            f = f.to_dense()
        # decode in the same call order as SAE.forward: the per-row normalisations keep
        # the statistics of the rows encode saw until decode uses them
        r = sae.decode(f)
    return f.numpy(), r.numpy(), type(sae).__name__


def sparsify_run(folder, X):
    """sparsify: ``encode`` (top_acts, top_indices scattered into a dense array) and
    ``forward(x).sae_out`` (checked against ``decode`` + skip)."""
    from sparsify import SparseCoder

    sae = SparseCoder.load_from_disk(folder)
    x = torch.from_numpy(X)
    with torch.no_grad():
        out = sae.encode(x)
        f = torch.zeros(x.shape[0], sae.num_latents, dtype=out.top_acts.dtype)
        f.scatter_(1, out.top_indices, out.top_acts)
        r = sae(x).sae_out
        r2 = sae.decode(out.top_acts, out.top_indices)
        if sae.W_skip is not None:
            r2 = r2 + x @ sae.W_skip.mT
    gap = float((r - r2).abs().max())
    if gap > 1e-5:
        raise AssertionError(f"sparsify forward and decode + skip differ by {gap}")
    return f.numpy(), r.numpy(), type(sae).__name__


def dictionary_learning_classes():
    from dictionary_learning.dictionary import (
        AutoEncoder,
        GatedAutoEncoder,
        JumpReluAutoEncoder,
    )
    from dictionary_learning.trainers.batch_top_k import BatchTopKSAE
    from dictionary_learning.trainers.top_k import AutoEncoderTopK

    return {"AutoEncoder": AutoEncoder, "GatedAutoEncoder": GatedAutoEncoder,
            "JumpReluAutoEncoder": JumpReluAutoEncoder, "BatchTopKSAE": BatchTopKSAE,
            "AutoEncoderTopK": AutoEncoderTopK}


def dictionary_learning_resave(path, cls_name, k=None):
    """Replace the fixture's ``ae.pt`` by the file dictionary_learning itself writes
    (``torch.save(ae.state_dict(), path)``: plain tensors, buffers ``k`` and
    ``threshold`` included), after loading the fixture's tensors into the class with
    ``load_state_dict`` (strict: the fixture's keys and shapes are the class's).

    Returns what ``torch.load`` made of the fixture's own file: "ok" or the error."""
    file = path / "ae.pt"
    try:
        torch.load(file, weights_only=True)
        verdict = "ok"
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        verdict = f"{type(exc).__name__}: {exc}".splitlines()[0]
    state = {key: torch.from_numpy(np.array(value))
             for key, value in read_torch_archive(file).items()}
    cls = dictionary_learning_classes()[cls_name]
    args = (D, M) if k is None else (D, M, k)
    ae = cls(*args)
    ae.load_state_dict(state, strict=True)
    torch.save(ae.state_dict(), file)
    return verdict


def dictionary_learning_run(path, cls_name, X):
    """dictionary_learning: the class's ``from_pretrained(ae.pt)``, ``encode`` and
    ``decode(encode(x))``."""
    with contextlib.redirect_stdout(io.StringIO()):  # "Normalizing decoder weights"
        ae = dictionary_learning_classes()[cls_name].from_pretrained(str(path / "ae.pt"))
    x = torch.from_numpy(X)
    with torch.no_grad():
        f = ae.encode(x)
        r = ae.decode(f)
    return f.numpy(), r.numpy(), cls_name


# ---- comparison ------------------------------------------------------------------------------

ROWS = []


def row(name, lib, ours, *, note=None):
    """Record one case: ``lib`` and ``ours`` are (activations, reconstruction)."""
    (fa, ra), (fb, rb) = lib, ours
    fa, ra, fb, rb = (np.asarray(a, np.float64) for a in (fa, ra, fb, rb))
    if fa.shape != fb.shape or ra.shape != rb.shape:
        raise AssertionError(f"{name}: shapes differ {fa.shape} {fb.shape} {ra.shape} "
                             f"{rb.shape}")
    ROWS.append({"case": name, "l0": float((fa != 0).sum(1).mean()),
                 "acts": float(np.abs(fa).max()), "d_acts": float(np.abs(fa - fb).max()),
                 "recon": float(np.abs(ra).max()), "d_recon": float(np.abs(ra - rb).max()),
                 "support": bool(np.array_equal(fa != 0, fb != 0)),
                 "support_rows": int((~np.all((fa != 0) == (fb != 0), axis=1)).sum()),
                 "note": note})


def ours(sae, X):
    return sae.encode(X).toarray(), sae.reconstruct(X)


def check_loaded(name, folder, lib_run, X, *, note=None, **load_kw):
    sae = load_sae(folder, **load_kw)
    lib = lib_run(X)
    row(f"{name} [{lib[2]}]", lib[:2], ours(sae, X), note=note)
    return sae


# ---- the cases -------------------------------------------------------------------------------

def saelens_cases(tmp, X):
    w = random_weights(D, M, seed=1)
    free = free_norm_weights(2)
    cases = [
        ("standard", w, {}),
        ("standard constant_norm_rescale", w, {"normalize": "constant_norm_rescale"}),
        ("standard layer_norm", w, {"normalize": "layer_norm"}),
        ("topk", w, {"k": K}),
        ("jumprelu", w, {}),
        ("gated", w, {}),
        ("matching_pursuit", w, {}),
        # beyond the list asked for: other options the loader maps
        ("standard, no b_dec on input", w, {"apply_b_dec_to_input": False}),
        ("standard expected_average_only_in", w, {"normalize": "expected_average_only_in"}),
        ("standard, bfloat16 W_enc/W_dec", w, {"bfloat16": ("W_enc", "W_dec")}),
        ("topk rescale_acts_by_decoder_norm", free,
         {"k": K, "extra": {"rescale_acts_by_decoder_norm": True}}),
        ("topk layer_norm", w, {"k": K, "normalize": "layer_norm"}),
        ("jumprelu constant_norm_rescale", w, {"normalize": "constant_norm_rescale"}),
        ("matching_pursuit 5 steps, no stops", w,
         {"extra": {"max_iterations": 5, "residual_threshold": 0.0,
                    "stop_on_duplicate_support": False}}),
        ("matching_pursuit free-norm decoder", free, {}),
        ("standard pre-6.0 config", w, {"pre6": True}),
        ("topk pre-6.0 config", w, {"k": K, "pre6": True}),
    ]
    for name, weights, kw in cases:
        arch = name.split()[0].rstrip(",")
        folder = write_saelens(tmp / f"saelens-{len(ROWS)}", weights, arch, **kw)
        check_loaded(f"SAELens {name}", folder, lambda X, f=folder: saelens_run(f, X), X)


def sparsify_cases(tmp, X):
    w = random_weights(D, M, seed=3)
    skip = (0.1 * np.random.default_rng(4).standard_normal((D, D))).astype(np.float32)
    for activation, k in (("topk", K), ("groupmax", 8)):
        for W_skip in (None, skip):
            folder = write_sparsify(tmp / f"sparsify-{len(ROWS)}", w, k=k,
                                    activation=activation, W_skip=W_skip)
            name = f"sparsify {activation} k={k}" + (" W_skip" if W_skip is not None else "")
            check_loaded(name, folder, lambda X, f=folder: sparsify_run(f, X), X)
            # and through the parent folder and hookpoint=, as sparsify saves them
            sae = load_sae(folder.parent, hookpoint=folder.name)
            assert np.array_equal(sae.encode(X).toarray(), load_sae(folder).encode(X).toarray())


DL_NOTE_NORM = "free-norm"
#: torch.load's verdict on the fixture writer's own ae.pt files, and the classes concerned
FIXTURE_TORCH_LOAD = {}


def dictionary_learning_cases(tmp, X):
    w = random_weights(D, M, seed=5)
    free = free_norm_weights(6)
    cases = [
        ("AutoEncoder", w, {}, None),
        ("AutoEncoderTopK", w, {"k": K}, None),
        ("BatchTopKSAE", w, {"k": K}, None),             # threshold -1: ReLU
        ("BatchTopKSAE", w, {"k": K, "threshold": 0.15}, None),
        ("JumpReluAutoEncoder", w, {}, None),
        ("GatedAutoEncoder", w, {}, None),
        ("AutoEncoderTopK", w, {"k": K, "threshold": 0.1}, None),
        ("AutoEncoder", free, {}, DL_NOTE_NORM),
    ]
    for cls, weights, kw, note in cases:
        folder = write_dictionary_learning(tmp / f"dl-{len(ROWS)}", weights, cls, **kw)
        # what sparsecode reads from the fixture's file (copied: the arrays are memory
        # maps of the file, which is rewritten next) must be what it reads from torch's
        fixture_sae = load_sae(folder)
        before = {n: None if getattr(fixture_sae, n) is None else np.array(getattr(
            fixture_sae, n)) for n in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold", "k")}
        del fixture_sae
        verdict = dictionary_learning_resave(folder, cls, kw.get("k"))
        FIXTURE_TORCH_LOAD.setdefault(verdict, set()).add(cls)
        resaved = load_sae(folder)
        for attr, a in before.items():
            b = getattr(resaved, attr)
            assert (a is None and b is None) or np.array_equal(a, b), (cls, attr)
        extra = ", ".join(f"{k}={v}" for k, v in kw.items() if k != "k")
        name = f"dictionary_learning {cls}" + (f" {extra}" if extra else "") + (
            " free-norm decoder" if note == DL_NOTE_NORM else "")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            check_loaded(name, folder,
                         lambda X, f=folder, c=cls: dictionary_learning_run(f, c, X),
                         X, note=note)


def export_cases(tmp, X, X_train):
    models = {
        "MPSAE topk/positive": MPSAE(M, k=K, solver="topk", selection="positive",
                                     random_state=0, n_epochs=1),
        "MPSAE topk/signed": MPSAE(M, k=K, solver="topk", selection="signed",
                                   random_state=0, n_epochs=1),
        "MPSAE mp/positive": MPSAE(M, k=K, solver="mp", selection="positive",
                                   random_state=0, n_epochs=1),
    }
    for name, model in models.items():
        model.fit(X_train)
        codes = model.transform(X)
        mine = (codes.toarray(), model.inverse_transform(codes))
        folder = export_saelens(model, tmp / f"export-saelens-{len(ROWS)}")
        lib = saelens_run(folder, X)
        row(f"export_saelens {name} [{lib[2]}]", lib[:2], mine)
        if model.solver == "topk":
            folder = export_sparsify(model, tmp / f"export-sparsify-{len(ROWS)}")
            lib = sparsify_run(folder, X)
            row(f"export_sparsify {name} [{lib[2]}]", lib[:2], mine)
    # loaded SAEs re-exported, with what the exports fold into the weights
    free = free_norm_weights(7)
    w = random_weights(D, M, seed=8)
    sources = [
        ("SAELens topk rescale", write_saelens(tmp / "src-a", free, "topk", k=K, extra={
            "rescale_acts_by_decoder_norm": True}), ("saelens", "sparsify")),
        ("SAELens jumprelu no b_dec on input", write_saelens(
            tmp / "src-b", w, "jumprelu", apply_b_dec_to_input=False), ("saelens",)),
        ("dictionary_learning GatedAutoEncoder", write_dictionary_learning(
            tmp / "src-c", w, "GatedAutoEncoder"), ("saelens",)),
        ("dictionary_learning AutoEncoderTopK", write_dictionary_learning(
            tmp / "src-d", w, "AutoEncoderTopK", k=K), ("saelens", "sparsify")),
        ("sparsify groupmax W_skip", write_sparsify(
            tmp / "src-e", w, k=8, activation="groupmax",
            W_skip=(0.1 * np.eye(D)).astype(np.float32)), ("sparsify",)),
    ]
    for name, folder, targets in sources:
        sae = load_sae(folder)
        mine = ours(sae, X)
        for target in targets:
            if target == "saelens":
                out = export_saelens(sae, tmp / f"re-saelens-{len(ROWS)}")
                lib = saelens_run(out, X)
            else:
                out = export_sparsify(sae, tmp / f"re-sparsify-{len(ROWS)}")
                lib = sparsify_run(out, X)
            row(f"export_{target} of {name} [{lib[2]}]", lib[:2], mine)


def torch_archive_case():
    """``torch.load`` and sparsecode's reader on the small ``torch.save`` fixture."""
    path = REPO / "tests" / "data" / "torch_saved_small.pt"
    theirs = torch.load(path, weights_only=True)
    mine = read_torch_archive(path)

    def flat(obj, prefix=""):
        for key, value in obj.items():
            if isinstance(value, dict):
                yield from flat(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    a, b = dict(flat(theirs)), dict(flat(mine))
    if a.keys() != b.keys():
        return f"keys differ: {sorted(a)} vs {sorted(b)}"
    bad = []
    for key, t in a.items():
        t = t.detach()
        if t.dtype == torch.bfloat16:
            t = t.float()
        ref, got = t.numpy(), np.asarray(b[key])
        if ref.shape != got.shape or not np.array_equal(ref.astype(got.dtype), got) or (
                ref.dtype != got.dtype and key != "bf16"):
            bad.append(f"{key}: {ref.dtype}{ref.shape} vs {got.dtype}{got.shape}")
    return f"{len(a)} tensors, all equal" if not bad else "DIFFER: " + "; ".join(bad)


# ---- report ------------------------------------------------------------------------------------

NOTES = {
    DL_NOTE_NORM: (
        "dictionary_learning's AutoEncoder.from_pretrained(path) has "
        "normalize_decoder=True by default: it rescales decoder columns to unit norm and "
        "the encoder rows and bias by the same norms (activations times ||W_dec[j]||, "
        "the same reconstruction); load_sae does the same, so the free-norm case "
        "compares equal.  The fixture's other SAEs have unit decoder rows, where this "
        "is a no-op."),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=N_ROWS)
    parser.add_argument("--atol", type=float, default=1e-4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.rows, D)).astype(np.float32)
    X_train = rng.standard_normal((2048, D)).astype(np.float32)

    import sae_lens
    import sparsify  # noqa: F401

    versions = {"torch": torch.__version__, "sae-lens": sae_lens.__version__}
    from importlib.metadata import version
    for dist in ("eai-sparsify", "dictionary-learning", "numpy", "sparsecode"):
        versions[dist] = version(dist)
    print(" ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"{args.rows} random rows, d={D}, {M} atoms, float32\n")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        saelens_cases(tmp, X)
        sparsify_cases(tmp, X)
        dictionary_learning_cases(tmp, X)
        export_cases(tmp, X, X_train)

    width = max(len(r["case"]) for r in ROWS)
    print(f"{'case':<{width}}  {'L0':>5}  {'max|f|':>7}  {'max|df|':>8}  {'max|x^|':>7}  "
          f"{'max|dx^|':>8}  support")
    failed = 0
    for r in ROWS:
        ok = r["support"] and r["d_acts"] <= args.atol * max(1.0, r["acts"]) and (
            r["d_recon"] <= args.atol * max(1.0, r["recon"]))
        verdict = "same" if r["support"] else f"DIFFERS ({r['support_rows']} rows)"
        if not ok:
            verdict += " (note)" if r["note"] else "  <-- FAIL"
            failed += r["note"] is None
        print(f"{r['case']:<{width}}  {r['l0']:5.2f}  {r['acts']:7.3f}  {r['d_acts']:8.1e}  "
              f"{r['recon']:7.3f}  {r['d_recon']:8.1e}  {verdict}")
    print(f"\ntorch_saved_small.pt, torch.load vs sparsecode.io.torch_archive: "
          f"{torch_archive_case()}")
    for verdict, classes in FIXTURE_TORCH_LOAD.items():
        print(f"tests/sae_files.py's ae.pt of {', '.join(sorted(classes))}, torch.load: "
              f"{verdict}")
    for key in sorted({r["note"] for r in ROWS if r["note"]}):
        print(f"\n(note) {NOTES[key]}")
    print(f"\n{len(ROWS)} cases, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
