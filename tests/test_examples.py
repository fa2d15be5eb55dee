"""The documentation figures (docs/figures/*.py) and the examples (examples/) run and
produce what they promise, at their --quick sizes (about 25 s in all on two cores once the
kernels are compiled).  The figures and the denoising example need matplotlib, the
activation examples PyTorch; each is skipped without them."""

import importlib.util
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "docs" / "figures"
EXAMPLES = ROOT / "examples"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["MPLBACKEND"] = "Agg"
    return env


def _run(argv, cwd, timeout=600):
    proc = subprocess.run(argv, cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{argv} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _load(path):
    """Import a script by path (its main() is then callable in this process)."""
    spec = importlib.util.spec_from_file_location(f"_example_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_png(path, min_kib=20, min_side=300):
    data = Path(path).read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= min_side and height >= min_side, (width, height)
    assert len(data) > min_kib * 1024, f"{path}: {len(data)} bytes"
    try:
        import matplotlib.image
    except ImportError:
        return
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[:2] == (height, width)
    assert float(pixels[..., :3].std()) > 0.05  # not a blank canvas


@pytest.mark.parametrize("script, expect", [
    ("hierarchical_toy.py", r"0\.6\s+TopK SAE\s+\d+/20"),
    ("adaptive_sparsity.py", r"topk: trained"),
    ("benchmark_bars.py", r"MP-SAE training step"),
])
def test_figure_script_writes_a_png(script, expect, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "figure.png"
    stdout = _run([sys.executable, str(FIGURES / script), "--quick", "--out", str(out)],
                  cwd=tmp_path)
    assert re.search(expect, stdout), stdout
    _check_png(out)


def test_committed_figures_are_pngs():
    for name in ("hierarchical_toy.png", "adaptive_sparsity.png", "benchmarks.png"):
        _check_png(FIGURES / name)


def test_adaptive_sparsity_mp_sae_improves_past_training_k():
    # the figure's point on its quick problem: more MP steps keep lowering the held-out
    # error; the TopK encoder's error stops falling
    result = _load(FIGURES / "adaptive_sparsity.py").run(
        k=4, n_train=3000, n_test=1000, epochs=2, k_max=16, seed=0)
    mp, topk = result["curves"]["mp"], result["curves"]["topk"]
    assert np.all(np.diff(mp) < 0)
    assert mp[15] < 0.5 * mp[3]
    assert topk[15] > topk[3]


def test_denoise_digits_improves_psnr(tmp_path):
    pytest.importorskip("matplotlib")
    pytest.importorskip("sklearn")
    psnr = _load(EXAMPLES / "denoise_digits.py").main(["--quick", "--out", str(tmp_path)])
    for method in ("omp", "mp", "gp"):
        assert psnr[method] > psnr["noisy"] + 5, psnr
    _check_png(tmp_path / "denoise_digits.png", min_kib=10)


def test_activations_to_hdf5(tmp_path):
    pytest.importorskip("torch")
    from sparsecode.io import ActivationReader

    path = tmp_path / "acts.h5"
    info = _load(EXAMPLES / "activations_to_hdf5.py").main(
        ["--quick", "--out", str(path), "--dataset", "resid"])
    assert info["rows"] == 256 * 64 and info["n_features"] == 64
    assert not Path(str(path) + ".partial").exists()
    import h5py

    with h5py.File(path, "r") as f:
        assert f["resid"].shape == (256 * 64, 64)
        assert f["resid"].attrs["dtype"] == "bfloat16"
    with ActivationReader(path, "resid", batch_size=4096, shuffle=False) as reader:
        X = np.concatenate(list(reader.epoch(0)))
    assert X.shape == (256 * 64, 64) and np.isfinite(X).all()
    assert X.std(axis=0).min() > 0  # every feature varies: real activations


def test_train_on_activations_script(tmp_path):
    pytest.importorskip("torch")
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    work = tmp_path / "work"
    env_python = {"PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(EXAMPLES / "train_on_activations.sh"), str(work)],
                          cwd=tmp_path, env={**_env(), **env_python}, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    for name in ("acts.h5", "model.h5", "codes.h5"):
        assert (work / name).exists(), out
    ev = float(re.search(r"explained variance (\S+)", out).group(1))
    assert ev > 0.5, out
    assert "sparsecode model file" in out and "sparsecode codes file" in out

    from sparsecode.io import load_model, read_codes

    model = load_model(work / "model.h5")
    codes = read_codes(work / "codes.h5", 0, 100)
    assert model.components_.shape == (256, 64)
    assert codes.indices.shape == (100, 8) and (codes.indices >= 0).any()
