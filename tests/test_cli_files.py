"""The command line on HDF5 files: train, encode, export, info; bad input; interruption.

The interruption tests run the real command in subprocesses and kill it (SIGKILL, or
SIGINT as Ctrl-C) at random moments, then resume it.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from sparsecode.cli import main
from sparsecode.datasets import make_sparse_signals
from sparsecode.io import (
    load_model,
    model_position,
    read_codes,
    write_activations,
)
from tests.helpers import file_digest as _digest
from tests.helpers import one_line_error as _one_line_error

N, D, ATOMS, K = 3000, 16, 48, 4


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """An activation file and a model trained on it by the command."""
    work = tmp_path_factory.mktemp("cli")
    X, _, _ = make_sparse_signals(N, D, ATOMS, K, noise=0.01, random_state=0)
    acts = write_activations(work / "acts.h5", X, dataset="layer0")
    model = work / "model.h5"
    assert main(["train", str(acts), "--dataset", "layer0", "--atoms", str(ATOMS), "--k",
                 str(K), "--out", str(model), "--batch-size", "256", "--epochs", "2",
                 "--lr", "0.01", "--holdout", "0.1", "--quiet"]) == 0
    return {"work": work, "X": X, "acts": acts, "model": model}






# ----------------------------------------------------------------------------- workflow


def test_train_writes_a_model_and_no_leftovers(files, capsys):
    model = load_model(files["model"])
    assert model.components_.shape == (ATOMS, D)
    assert model.n_steps_ == 2 * int(np.ceil(0.9 * N / 256))
    assert not files["model"].with_name("model.h5.ckpt").exists()
    assert not files["model"].with_name("model.h5.partial").exists()
    pos = model_position(files["model"])
    assert pos["finished"] and pos["dataset"] == "layer0" and pos["rows"] == [0, 2700]
    # the held-out rows were not trained on, and the model explains most of them
    assert model.score(files["X"][2700:]) > 0.8


def test_train_reports_the_held_out_explained_variance(files, tmp_path, capsys):
    out = tmp_path / "m.h5"
    assert main(["train", str(files["acts"]), "--dataset", "layer0", "--atoms", str(ATOMS),
                 "--k", str(K), "--out", str(out), "--batch-size", "256", "--holdout", "0.2",
                 "--quiet"]) == 0
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("held-out rows 2400-3000"))
    printed = float(line.split("explained variance")[1])
    assert printed == pytest.approx(load_model(out).score(files["X"][2400:]), abs=1e-4)


@pytest.mark.blas_sensitive
def test_encode_file_decodes_like_an_in_memory_encode(files):
    out = files["work"] / "codes.h5"
    assert main(["encode", str(files["model"]), str(files["acts"]), "--out", str(out),
                 "--batch-size", "1000", "--quiet"]) == 0
    model = load_model(files["model"])
    codes = read_codes(out)
    assert codes.shape == (N, ATOMS) and codes.k_max == K
    # batches of whole row groups (1000 rows rounded up to 1024): the codes of one
    # in-memory call on all the rows, bit for bit, whatever the BLAS
    mem = model.transform(files["X"])
    np.testing.assert_array_equal(codes.indices, mem.indices)
    np.testing.assert_array_equal(codes.values, mem.values)


def test_encode_with_more_steps_than_training_lowers_the_error(files):
    model = load_model(files["model"])
    errs = []
    for k in (K, 2 * K):
        out = files["work"] / f"codes_k{k}.h5"
        assert main(["encode", str(files["model"]), str(files["acts"]), "--out", str(out),
                     "--k", str(k), "--quiet"]) == 0
        R = files["X"] - model.inverse_transform(read_codes(out))
        errs.append(float((R**2).sum()))
    assert errs[1] < errs[0]


def test_export_and_info(files, capsys):
    pytest.importorskip("safetensors")
    out = files["work"] / "saelens"
    assert main(["export", str(files["model"]), "--saelens", str(out)]) == 0
    cfg = json.loads((out / "cfg.json").read_text())
    assert (cfg["d_in"], cfg["d_sae"], cfg["architecture"]) == (D, ATOMS, "matching_pursuit")
    capsys.readouterr()
    assert main(["info", str(files["model"])]) == 0
    text = capsys.readouterr().out
    assert f"{ATOMS} atoms x {D} features" in text and "(finished)" in text
    assert main(["info", str(files["acts"])]) == 0
    text = capsys.readouterr().out
    assert f"layer0: shape ({N}, {D}), float32" in text and f"{N:,} rows committed" in text


def test_export_into_an_existing_export_names_the_overwrite_flag(files, capsys):
    pytest.importorskip("safetensors")
    out = files["work"] / "saelens_twice"
    assert main(["export", str(files["model"]), "--saelens", str(out)]) == 0
    capsys.readouterr()
    assert main(["export", str(files["model"]), "--saelens", str(out)]) == 2
    err = _one_line_error(capsys, "already holds an export", "--overwrite")
    assert "overwrite=True" not in err
    assert main(["export", str(files["model"]), "--saelens", str(out), "--overwrite"]) == 0


def test_demo_runs_the_file_workflow(tmp_path, capsys):
    work = tmp_path / "demo"
    assert main(["demo", "--samples", "200", "--file-rows", "4000", "--toy-steps", "0",
                 "--workdir", str(work)]) == 0
    out = capsys.readouterr().out
    for name in ("acts.h5", "model.h5", "codes.h5"):
        assert (work / name).exists()
    assert "$ sparsecode train" in out and "$ sparsecode encode" in out
    ev = float(out.split("explained variance of the codes in codes.h5:")[1].split()[0])
    # the figure printed is that of the model on the file's rows
    from sparsecode.io import open_activations

    with open_activations(work / "acts.h5", "activations") as r:
        X = r.read()
    assert ev == pytest.approx(load_model(work / "model.h5").score(X), abs=2e-3)


# ----------------------------------------------------------------------------- bad input


@pytest.fixture
def bad(tmp_path, files):
    """A directory of broken inputs."""
    text = tmp_path / "notes.h5"
    text.write_text("these are not activations\n")
    truncated = tmp_path / "truncated.h5"
    blob = files["acts"].read_bytes()
    truncated.write_bytes(blob[: len(blob) // 2])
    empty = tmp_path / "empty.h5"
    with h5py.File(empty, "w") as f:
        f.create_dataset("layer0", shape=(0, D), dtype="f4")
    narrow = write_activations(tmp_path / "narrow.h5", files["X"][:100, :8], dataset="layer0")
    X = files["X"][:600].copy()
    X[437, 3] = np.nan
    nan = write_activations(tmp_path / "nan.h5", X, dataset="layer0")
    return {"dir": tmp_path, "text": text, "truncated": truncated, "empty": empty,
            "narrow": narrow, "nan": nan}


def _train(acts, out, dataset="layer0", *extra):
    return main(["train", str(acts), "--dataset", dataset, "--atoms", str(ATOMS), "--k",
                 str(K), "--out", str(out), "--batch-size", "256", "--quiet", *extra])


@pytest.mark.parametrize("case, fragment", [
    ("missing", "no such file"),
    ("text", "not an HDF5 file"),
    ("truncated", "truncated"),
    ("wrong_dataset", "has no dataset 'layer1'; datasets in the file: 'layer0'"),
    ("empty", "is empty"),
    ("nan", "row 437 contains NaN"),
])
def test_train_bad_input_one_line_exit_2_no_output(bad, files, capsys, case, fragment):
    acts = {"missing": bad["dir"] / "missing.h5", "wrong_dataset": files["acts"]}.get(
        case, bad.get(case))
    out = bad["dir"] / "model.h5"
    code = _train(acts, out, "layer1" if case == "wrong_dataset" else "layer0")
    assert code == 2
    _one_line_error(capsys, fragment)
    assert not out.exists() and not out.with_name("model.h5.partial").exists()


@pytest.mark.parametrize("case, fragment", [
    ("missing", "no such file"),
    ("text", "not an HDF5 file"),
    ("truncated", "truncated"),
    ("empty", "is empty"),
    ("narrow", "has 8 features per row; the model"),
    ("nan", "row 437 contains NaN"),
])
def test_encode_bad_input_one_line_exit_2_no_output(bad, files, capsys, case, fragment):
    acts = bad["dir"] / "missing.h5" if case == "missing" else bad[case]
    out = bad["dir"] / "codes.h5"
    code = main(["encode", str(files["model"]), str(acts), "--dataset", "layer0", "--out",
                 str(out), "--batch-size", "100", "--quiet"])
    assert code == 2
    _one_line_error(capsys, fragment)
    assert not out.exists() and not out.with_name("codes.h5.partial").exists()


def test_bad_model_file_is_refused(bad, files, capsys):
    out = bad["dir"] / "codes.h5"
    assert main(["encode", str(files["acts"]), str(files["acts"]), "--dataset", "layer0",
                 "--out", str(out)]) == 2
    _one_line_error(capsys, "expected a sparsecode model file")
    assert main(["encode", str(bad["truncated"]), str(files["acts"]), "--out", str(out)]) == 2
    _one_line_error(capsys, "truncated")
    assert not out.exists()


def test_existing_outputs_are_not_touched(files, capsys, tmp_path):
    out = tmp_path / "model.h5"
    out.write_bytes(files["model"].read_bytes())
    before = _digest(out)
    assert _train(files["acts"], out) == 2
    _one_line_error(capsys, "already exists", "--overwrite")
    assert _digest(out) == before
    codes = tmp_path / "codes.h5"
    codes.write_text("precious")
    assert main(["encode", str(files["model"]), str(files["acts"]), "--out", str(codes)]) == 2
    _one_line_error(capsys, "already exists")
    assert codes.read_text() == "precious"
    assert main(["train", str(files["acts"]), "--dataset", "layer0", "--atoms", "8", "--k",
                 "2", "--out", str(tmp_path / "m.h5"), "--resume"]) == 2
    _one_line_error(capsys, "no checkpoint to resume")


def test_resume_refuses_other_data_or_options(files, tmp_path, capsys):
    from sparsecode.cli import build_parser, train
    from sparsecode.cli._common import Interrupted, StopFlag

    out = tmp_path / "m.h5"
    argv = ["train", str(files["acts"]), "--dataset", "layer0", "--atoms", str(ATOMS),
            "--k", str(K), "--out", str(out), "--batch-size", "256", "--quiet"]
    args = build_parser().parse_args(argv)
    args.stop = StopFlag()
    args.stop.set = True  # as if Ctrl-C came during start-up: one step, then a checkpoint
    with pytest.raises(Interrupted, match="--resume"):
        train.run(args)
    capsys.readouterr()
    ckpt = tmp_path / "m.h5.ckpt"
    assert load_model(ckpt).n_steps_ == 1 and not out.exists()
    before = _digest(ckpt)
    for extra, fragment in [(["--max-epochs", "3"], "total_steps"),
                            (["--batch-size", "128"], "batch_size"),
                            (["--seed", "7"], "seed")]:
        assert main(argv + ["--resume"] + extra) == 2
        _one_line_error(capsys, fragment)
    other_k = [str(K + 1) if a == str(K) and argv[i - 1] == "--k" else a
               for i, a in enumerate(argv)]
    assert main(other_k + ["--resume"]) == 2
    _one_line_error(capsys, "--k")
    assert _digest(ckpt) == before and not out.exists()
    assert main(argv + ["--resume"]) == 0  # the same options: it finishes
    assert out.exists() and not ckpt.exists()


# ----------------------------------------------------------------------------- interruption

SC = [sys.executable, "-m", "sparsecode.cli"]


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """Enough rows that a run lasts a few seconds after start-up."""
    work = tmp_path_factory.mktemp("kill")
    X, _, _ = make_sparse_signals(200_000, 32, 128, 6, noise=0.01, random_state=1)
    acts = write_activations(work / "acts.h5", X, dataset="acts")
    return work, acts


def _run(argv, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(SC + [str(a) for a in argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, **kw)


def _timed(argv):
    t0 = time.perf_counter()
    p = _run(argv)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err.decode()
    return time.perf_counter() - t0


def _kill_and_resume(argv, final, partial, duration, rng, n_kills, sig=signal.SIGKILL):
    """Run ``argv``; ``n_kills`` times, once the run has started (its partial output
    exists, and for Ctrl-C its first line is printed), send ``sig`` at a random moment
    and resume; then let it finish.  The final path must never exist before the end.

    Returns the number of signals sent and the number of runs that resumed saved work.
    """
    kills = resumed = 0
    resume = []
    while True:
        p = _run(argv + resume)
        if kills < n_kills:
            if sig == signal.SIGINT:
                first = p.stderr.readline().decode()
            while not partial.exists() and p.poll() is None:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.4) * duration)
            if p.poll() is None:
                p.send_signal(sig)
                out, err = p.communicate(timeout=120)
                kills += 1
                if final.exists():  # it finished just as the signal came
                    return kills, resumed
                if sig == signal.SIGINT:
                    err = first + err.decode()
                    assert p.returncode == 130, err
                    assert "--resume" in err, err
                else:
                    assert p.returncode == -signal.SIGKILL
                resume = ["--resume"] if partial.exists() else []
                resumed += bool(resume)
                continue
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
        assert final.exists() and not partial.exists()
        return kills, resumed


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_encode_killed_and_resumed_equals_an_uninterrupted_run(big, seed):
    work, acts = big
    model = work / "model.h5"
    if not model.exists():
        assert main(["train", str(acts), "--dataset", "acts", "--atoms", "128", "--k", "6",
                     "--out", str(model), "--max-steps", "20", "--quiet"]) == 0
    ref = work / "ref.h5"
    argv = ["encode", model, acts, "--batch-size", "2000", "--commit-every", "0", "--quiet"]
    if not ref.exists():
        _timed(argv + ["--out", ref])
    duration = _timed(argv + ["--out", work / "timing.h5", "--overwrite"])
    out = work / f"out{seed}.h5"
    kills, resumed = _kill_and_resume(argv + ["--out", out], out,
                                      work / f"out{seed}.h5.partial",
                                      duration, random.Random(seed), n_kills=2)
    assert kills >= 1 and resumed >= 1
    a, b = read_codes(ref), read_codes(out)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.values, b.values)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_train_interrupted_and_resumed_equals_an_uninterrupted_run(big, sig):
    work, acts = big
    argv = ["train", acts, "--dataset", "acts", "--atoms", "128", "--k", "6",
            "--batch-size", "1024", "--epochs", "2", "--checkpoint-steps", "10", "--quiet"]
    ref = work / "train_ref.h5"
    if not ref.exists():
        _timed(argv + ["--out", ref])
    duration = _timed(argv + ["--out", work / "train_timing.h5", "--overwrite"])
    out = work / f"train_{sig.name}.h5"
    kills, resumed = _kill_and_resume(argv + ["--out", out], out,
                                      out.with_name(out.name + ".ckpt"),
                                      duration, random.Random(int(sig)), n_kills=2,
                                      sig=sig)
    assert kills >= 1 and resumed >= 1
    a, b = load_model(ref), load_model(out)
    assert a.n_steps_ == b.n_steps_
    # the same data order and state after every resume: the very same model
    np.testing.assert_array_equal(a.components_, b.components_)
    np.testing.assert_array_equal(a.bias_, b.bias_)


# ----------------------------------------------------------------------------- memory

_PEAK = (
    "import resource, sys\n"
    "from sparsecode.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"  # KiB on Linux
    "sys.exit(code)\n"
)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KiB on Linux")
def test_encode_memory_stays_bounded_on_a_file_10x_the_buffer(tmp_path):
    """Peak RSS of ``encode`` on a 100 MiB file with a 10 MiB buffer exceeds that of the
    same command on a file 10x smaller by less than the buffer plus 24 MiB (batch-sized
    work arrays: the batch, its correlations with the atoms, codes): nothing grows with
    the file."""
    d, atoms, bs, buffer_mb = 64, 256, 4096, 10
    X, _, _ = make_sparse_signals(40_960, d, atoms, 6, noise=0.01, random_state=2)
    small = write_activations(tmp_path / "small.h5", X)
    with h5py.File(small) as f:
        assert f["activations"].nbytes == buffer_mb * 2**20
    big = tmp_path / "big.h5"
    from sparsecode.io import ActivationWriter

    with ActivationWriter(big, d) as w:
        for _ in range(10):
            w.append(X)
    assert big.stat().st_size >= 10 * buffer_mb * 2**20
    model = tmp_path / "model.h5"
    assert main(["train", str(small), "--dataset", "activations", "--atoms", str(atoms),
                 "--k", "6", "--out", str(model), "--max-steps", "2", "--quiet"]) == 0

    def peak_mib(acts, out):
        argv = ["encode", model, acts, "--out", out, "--batch-size", bs, "--buffer-mb",
                buffer_mb, "--quiet"]
        res = subprocess.run([sys.executable, "-c", _PEAK, *map(str, argv)],
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        return int(res.stdout.split()[-1]) / 1024

    base = peak_mib(small, tmp_path / "c_small.h5")
    peak = peak_mib(big, tmp_path / "c_big.h5")
    assert read_codes(tmp_path / "c_big.h5").shape[0] == 10 * len(X)
    print(f"peak RSS {base:.0f} MiB on the small file, {peak:.0f} MiB on the big one")
    assert peak - base < buffer_mb + 24, (base, peak)
