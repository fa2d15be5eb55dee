"""The fault families end to end, on small files: concurrent runs, outputs that are
inputs, resumes with changed inputs or options, bad rows mid-run, a full disk, outputs
that cannot be written, finished jobs resumed.  Each fails on the code before the fix."""

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from sparsecode import MPSAE
from sparsecode.cli import main
from sparsecode.cli._common import StopFlag
from sparsecode.datasets import make_sparse_signals
from sparsecode.io import (
    OutputLock,
    partial_path,
    read_codes,
    save_model,
    write_activations,
)

N, D, ATOMS, K = 3000, 16, 32, 4


@pytest.fixture()
def files(tmp_path):
    X, _, _ = make_sparse_signals(N, D, ATOMS, K, noise=0.01, random_state=0)
    X = X.astype(np.float32)
    acts = write_activations(tmp_path / "acts.h5", X, dataset="acts")
    model = MPSAE(ATOMS, K, batch_size=500, max_steps=4, progress=False,
                  random_state=0).fit(X)
    path = save_model(model, tmp_path / "model.h5", position={"dataset": "acts"})
    return {"dir": tmp_path, "X": X, "acts": acts, "model": path, "estimator": model}


def _digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _error(capsys, *fragments):
    err = capsys.readouterr().err.strip()
    line = err.splitlines()[-1] if err else ""
    assert line.startswith("sparsecode: error:"), err
    assert "Traceback" not in err, err
    for frag in fragments:
        assert frag in line, err
    return line


def _encode(files, out, *extra):
    return main(["encode", str(files["model"]), str(files["acts"]), "--out", str(out),
                 "--quiet", "--batch-size", "512", "--commit-every", "0", *extra])


def _interrupted_encode(files, out):
    """An encode stopped (as by Ctrl-C) after its first batch: OUT.partial is left."""
    from sparsecode.cli import build_parser

    args = build_parser().parse_args(["encode", str(files["model"]), str(files["acts"]),
                                      "--out", str(out), "--quiet", "--batch-size", "512",
                                      "--commit-every", "0"])
    args.stop = StopFlag()
    args.stop.set = True
    from sparsecode.cli._common import Interrupted

    with pytest.raises(Interrupted):
        args.func(args)
    assert partial_path(out).exists()


# ----------------------------------------------------------------------- concurrent runs


def _hold_lock(path):
    """A process holding the output lock of ``path`` (as a running job does)."""
    code = textwrap.dedent(f"""
        import sys, time
        from sparsecode.io import OutputLock
        lock = OutputLock({str(path)!r})
        print("locked", flush=True)
        sys.stdin.read()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_run_never_touches_the_files_of_a_live_one(files, capsys):
    out = files["dir"] / "codes.h5"
    _interrupted_encode(files, out)
    capsys.readouterr()
    before = _digest(partial_path(out))
    holder = _hold_lock(out)  # the first run, still writing
    try:
        for extra in ([], ["--overwrite"], ["--resume"]):
            assert _encode(files, out, *extra) == 2
            _error(capsys, "being written by another process", f"pid {holder.pid}")
            assert _digest(partial_path(out)) == before and not out.exists()
        assert main(["train", str(files["acts"]), "--dataset", "acts", "--atoms", "8",
                     "--k", "2", "--out", str(out), "--overwrite", "--quiet"]) == 2
        _error(capsys, "being written by another process")
    finally:
        holder.stdin.close()
        holder.wait()
    # once it is gone, the partial file is an interrupted run's again, and resumes
    assert _encode(files, out, "--resume") == 0
    full = files["estimator"].transform(files["X"])
    assert np.array_equal(read_codes(out).indices, full.indices)
    assert not (files["dir"] / "codes.h5.lock").exists()


def test_a_lock_is_reentrant_in_a_process_and_released(tmp_path):
    a = OutputLock(tmp_path / "x.h5")
    b = OutputLock(tmp_path / "x.h5")
    b.release()
    assert (tmp_path / "x.h5.lock").exists()
    a.release()
    assert not (tmp_path / "x.h5.lock").exists()
    OutputLock(tmp_path / "x.h5").release()  # free again


# ---------------------------------------------------------------- outputs that are inputs


@pytest.mark.parametrize("how", ["same", "symlink", "hardlink"])
@pytest.mark.parametrize("which", ["acts", "model"])
def test_an_output_that_is_an_input_is_refused(files, capsys, how, which):
    target = files[which]
    out = files["dir"] / "out.h5"
    if how == "same":
        out = target
    elif how == "symlink":
        out.symlink_to(target)
    else:
        os.link(target, out)
    before = _digest(target)
    assert _encode(files, out, "--overwrite") == 2
    _error(capsys, "the same file")
    if which == "acts":
        assert main(["train", str(files["acts"]), "--dataset", "acts", "--atoms", "8",
                     "--k", "2", "--out", str(out), "--overwrite", "--quiet"]) == 2
        _error(capsys, "the same file")
    assert _digest(target) == before


def test_an_export_onto_its_model_is_refused(files, capsys):
    pytest.importorskip("safetensors")
    export = files["dir"] / "export"
    export.mkdir()
    os.link(files["model"], export / "sae_weights.safetensors")
    before = _digest(files["model"])
    assert main(["export", str(files["model"]), "--saelens", str(export), "--overwrite"]) == 2
    _error(capsys, "the same file")
    assert _digest(files["model"]) == before


def test_a_cluster_encode_is_refused_while_another_run_writes_its_output(files, capsys):
    pytest.importorskip("distributed")
    from sparsecode.distributed import encode

    out = files["dir"] / "codes.h5"
    holder = _hold_lock(out)
    try:
        with pytest.raises(FileExistsError, match="being written by another process"):
            encode(files["X"], files["estimator"], out=out, client=object())
        assert not (files["dir"] / "codes.h5.parts").exists()
    finally:
        holder.stdin.close()
        holder.wait()


# -------------------------------------------------------------- resume with other inputs


def test_encode_resume_refuses_a_retrained_model(files, capsys):
    out = files["dir"] / "codes.h5"
    _interrupted_encode(files, out)
    retrained = MPSAE(ATOMS, K, batch_size=500, max_steps=6, progress=False,
                      random_state=1).fit(files["X"])
    save_model(retrained, files["model"], position={"dataset": "acts"})
    assert _encode(files, out, "--resume") == 2
    _error(capsys, "cannot resume", "model_sha256")
    assert not out.exists()


def test_encode_resume_refuses_changed_activations(files, capsys):
    out = files["dir"] / "codes.h5"
    _interrupted_encode(files, out)
    X = files["X"].copy()
    X[-1] += 1.0  # the last row: always among the sampled ones
    write_activations(files["dir"] / "new.h5", X, dataset="acts")
    os.replace(files["dir"] / "new.h5", files["acts"])
    assert _encode(files, out, "--resume") == 2
    _error(capsys, "cannot resume", "acts_identity")


def test_encode_resume_follows_moved_inputs(files):
    out = files["dir"] / "codes.h5"
    _interrupted_encode(files, out)
    moved = files["dir"] / "moved"
    moved.mkdir()
    files = dict(files, acts=shutil.move(files["acts"], moved / "a.h5"),
                 model=shutil.move(files["model"], moved / "m.h5"))
    assert _encode(files, out, "--resume") == 0  # identity, not paths


# ------------------------------------------------------------ finished jobs, resumed


def test_resuming_a_finished_encode_is_a_success_that_does_nothing(files, capsys):
    out = files["dir"] / "codes.h5"
    assert _encode(files, out) == 0
    before = _digest(out)
    capsys.readouterr()
    assert _encode(files, out, "--resume") == 0
    assert "nothing to do" in capsys.readouterr().err
    assert _digest(out) == before
    assert _encode(files, out, "--resume", "--k", "2") == 2
    _error(capsys, "finished", "k")


def _train(files, out, *extra):
    return main(["train", str(files["acts"]), "--dataset", "acts", "--atoms", "16", "--k",
                 "3", "--out", str(out), "--batch-size", "500", "--max-steps", "4",
                 "--quiet", *extra])


def test_resuming_a_finished_train_is_a_success_that_does_nothing(files, capsys):
    out = files["dir"] / "m2.h5"
    assert _train(files, out) == 0
    before = _digest(out)
    capsys.readouterr()
    assert _train(files, out, "--resume") == 0
    assert "nothing to do" in capsys.readouterr().err and _digest(out) == before
    assert _train(files, out, "--resume", "--solver", "omp") == 2
    _error(capsys, "--solver omp differs")


# ------------------------------------------------------- train --resume, changed options


@pytest.mark.parametrize("option,value", [("--solver", "omp"), ("--selection", "positive"),
                                          ("--update", "mod"), ("--k", "2")])
def test_train_resume_refuses_options_that_change_the_model(files, capsys, option, value):
    out = files["dir"] / "m3.h5"
    assert _train(files, out, "--checkpoint-steps", "2", "--max-steps", "6") == 0
    ckpt = files["dir"] / "m3.h5.ckpt"
    shutil.copy(out, ckpt)  # as if interrupted: a checkpoint to resume
    os.remove(out)
    capsys.readouterr()
    assert _train(files, out, "--resume", "--max-steps", "6", option, value) == 2
    _error(capsys, f"{option} {value} differs")


def test_train_resume_applies_a_new_learning_rate_and_says_so(files, capsys, tmp_path):
    from sparsecode.io import load_model, model_position

    out = files["dir"] / "m4.h5"
    assert _train(files, out, "--max-steps", "6") == 0
    ckpt = files["dir"] / "m4.h5.ckpt"
    model = load_model(out)
    pos = dict(model_position(out), finished=False, epoch=0, batch=0)
    save_model(model, ckpt, position=pos)
    os.remove(out)
    capsys.readouterr()
    assert _train(files, out, "--resume", "--max-steps", "6", "--lr", "0.0005") == 0
    assert "--lr 0.0005 replaces" in capsys.readouterr().err
    assert load_model(out).lr == 0.0005


# --------------------------------------------------------------- bad rows mid-run


@pytest.fixture()
def nan_file(tmp_path):
    """50,000 rows whose row 40,000 is NaN: read with a 1 MiB buffer, the bad row is met
    after two loads of 16,384 rows."""
    X = np.random.default_rng(0).standard_normal((50000, 16)).astype(np.float32)
    model = MPSAE(ATOMS, K, batch_size=500, max_steps=3, progress=False,
                  random_state=0).fit(X[:1000])
    mpath = save_model(model, tmp_path / "m.h5", position={"dataset": "acts"})
    X[40000] = np.nan
    return write_activations(tmp_path / "nan.h5", X, dataset="acts"), mpath


def test_encode_keeps_the_rows_before_a_bad_one(nan_file, tmp_path, capsys):
    acts, model = nan_file
    out = tmp_path / "codes.h5"
    assert main(["encode", str(model), str(acts), "--out", str(out), "--quiet",
                 "--batch-size", "512", "--buffer-mb", "1", "--commit-every", "0"]) == 2
    _error(capsys, "row 40000", "kept in", "for --resume")
    kept = read_codes(partial_path(out)).indices.shape[0]
    assert 0 < kept <= 40000 and kept % 512 == 0
    # a bad row in the first batch leaves nothing
    X = np.ones((100, 16), np.float32)
    X[3] = np.inf
    bad = write_activations(tmp_path / "bad.h5", X, dataset="acts")
    out2 = tmp_path / "codes2.h5"
    assert main(["encode", str(model), str(bad), "--out", str(out2), "--quiet"]) == 2
    assert not partial_path(out2).exists() and not out2.exists()


def test_train_keeps_a_checkpoint_before_a_bad_batch(nan_file, tmp_path, capsys):
    from sparsecode.io import load_model

    acts, _ = nan_file
    out = tmp_path / "m5.h5"
    assert main(["train", str(acts), "--dataset", "acts", "--atoms", "16", "--k", "3",
                 "--out", str(out), "--batch-size", "500", "--buffer-mb", "1",
                 "--seed", "1", "--quiet"]) == 2  # seed 1: the bad row is met mid-run
    _error(capsys, "row 40000", "saved in", "for --resume")
    ckpt = tmp_path / "m5.h5.ckpt"
    assert ckpt.exists() and not out.exists()
    model = load_model(ckpt)
    assert model.n_steps_ > 0 and np.all(np.isfinite(model.components_))


def test_train_divergence_is_reported_and_the_state_before_it_kept(files, capsys):
    out = files["dir"] / "m6.h5"
    assert _train(files, out, "--lr", "1e30") == 2
    _error(capsys, "diverged", "smaller --lr")
    from sparsecode.io import load_model

    model = load_model(files["dir"] / "m6.h5.ckpt")
    assert np.all(np.isfinite(model.components_))


# --------------------------------------------------------------- outputs that cannot be made


def test_a_missing_input_creates_nothing(files, capsys):
    out = files["dir"] / "new" / "deeper" / "m.h5"
    assert main(["train", str(files["dir"] / "missing.h5"), "--dataset", "acts", "--atoms",
                 "8", "--k", "2", "--out", str(out), "--quiet"]) == 2
    _error(capsys, "missing.h5")
    assert not (files["dir"] / "new").exists()


def _read_only_dir(path):
    """A folder nothing can be written in: a read-only mount when this process may mount
    one (root), else a folder without write permission."""
    path.mkdir()
    if os.geteuid() == 0:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)],
                           capture_output=True)
        if r.returncode != 0:
            pytest.skip("cannot mount a read-only file system here")
        return lambda: subprocess.run(["umount", str(path)], check=False)
    path.chmod(0o500)
    return lambda: path.chmod(0o700)


def test_train_refuses_an_unwritable_output_before_training(files, capsys):
    ro = files["dir"] / "ro"
    undo = _read_only_dir(ro)
    try:
        assert main(["train", str(files["acts"]), "--dataset", "acts", "--atoms", "8", "--k",
                     "2", "--out", str(ro / "m.h5"), "--epochs", "50", "--quiet"]) == 2
        _error(capsys, "cannot write in")
        assert "step" not in capsys.readouterr().err
    finally:
        undo()


# --------------------------------------------------------------- a full disk


@pytest.fixture()
def small_disk(tmp_path):
    """A 3 MiB file system (root only; skipped elsewhere), and a way to grow it."""
    path = tmp_path / "small"
    path.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a small file system needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(path)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a file system here")

    def grow():
        subprocess.run(["mount", "-o", "remount,size=64m", str(path)], check=True)

    yield path, grow
    subprocess.run(["umount", str(path)], check=False)


def _cli(*argv):
    return subprocess.run([sys.executable, "-m", "sparsecode.cli", *map(str, argv)],
                          capture_output=True, text=True, timeout=300)


def test_encode_on_a_full_disk_stops_cleanly_and_resumes(tmp_path, small_disk):
    disk, grow = small_disk
    X = np.random.default_rng(0).standard_normal((60000, 16)).astype(np.float32)
    acts = write_activations(tmp_path / "acts.h5", X, dataset="acts")
    model = MPSAE(32, 6, batch_size=1000, max_steps=3, progress=False, random_state=0).fit(X)
    mpath = save_model(model, tmp_path / "m.h5", position={"dataset": "acts"})
    out = disk / "codes.h5"
    r = _cli("encode", mpath, acts, "--out", out, "--quiet", "--batch-size", "1024",
             "--commit-every", "0")
    assert r.returncode == 2, r.stderr  # not a crash
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "disk is full" in lines[0] and "--resume" in lines[0], r.stderr
    assert partial_path(out).exists() and not out.exists()
    grow()
    r = _cli("encode", mpath, acts, "--out", out, "--quiet", "--batch-size", "1024",
             "--resume")
    assert r.returncode == 0, r.stderr
    ref = model.transform(X)
    codes = read_codes(out)
    assert np.array_equal(codes.indices[:, :ref.indices.shape[1]], ref.indices)


def test_train_and_write_activations_on_a_full_disk(tmp_path, small_disk):
    disk, _ = small_disk
    X = np.random.default_rng(0).standard_normal((4000, 64)).astype(np.float32)
    acts = write_activations(tmp_path / "acts.h5", X, dataset="acts")
    # a model of 4096 x 64 atoms with its optimizer state does not fit 3 MiB
    r = _cli("train", acts, "--dataset", "acts", "--atoms", "4096", "--k", "4", "--out",
             disk / "m.h5", "--batch-size", "1000", "--max-steps", "3", "--quiet")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "disk is full" in lines[-1], r.stderr  # before training
    assert not (disk / "m.h5").exists() and not (disk / "m.h5.ckpt").exists()
    code = textwrap.dedent(f"""
        import numpy as np
        from sparsecode.io import write_activations
        X = np.zeros((200000, 64), np.float32)
        try:
            write_activations({str(disk / "big.h5")!r}, X, dataset="acts")
        except OSError as exc:
            print("refused:", exc)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr  # no crash at exit
    assert "refused:" in r.stdout and "disk is full" in r.stdout
    assert "Traceback" not in r.stderr
