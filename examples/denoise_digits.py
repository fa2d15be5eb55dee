"""Denoise handwritten digits with a learnt patch dictionary (K-SVD denoising, OMP/MP/GP).

The classic recipe of Elad and Aharon (2006) on scikit-learn's bundled digits, with
nothing downloaded:

1. The 1,797 8x8 digits of ``sklearn.datasets.load_digits`` (scaled to [0, 1]) are
   upsampled 3x (bilinear) to 24x24 images, big enough for overlapping patches; 1,300
   train the dictionary, the other 497 are held out.
2. Every overlapping 6x6 patch is a 36-d signal; its mean (the DC) is taken out.  A
   dictionary of 128 atoms is learnt from 40,000 clean training patches by K-SVD
   (``MPSAE(update="ksvd", solver="omp")``: OMP with k = 4, then a K-SVD sweep, 15 times).
3. Gaussian noise (sigma = 0.2) is added to the held-out images.  Each noisy patch is coded
   until its residual holds no more than the noise: ``||r||^2 <= (C sigma)^2 (36 - 1)``,
   with C = 1.15 (the 36 - 1 is the DC taken out).  sparsecode's ``tol`` is relative to
   each signal's energy (``||r||^2 <= tol ||x||^2``), so patches are grouped by energy
   (bins 25% wide) and each group gets the ``tol`` matching that absolute target; patches
   with less energy than the noise are coded with no atom at all.
4. Patches are put back (plus their DC) and overlapping estimates averaged.

The same dictionary and stopping rule are used with ``sparsecode.omp``, ``sparsecode.mp``
and ``sparsecode.gp``; OMP with a fixed k = 4 is shown for reference.  Prints PSNR
(peak 1) of the noisy and the denoised held-out images and writes ``denoise_digits.png``
(clean, noisy and denoised digits) to ``--out``.

Run from the repository root (scikit-learn and matplotlib needed)::

    python examples/denoise_digits.py                  # about 5 s once kernels are compiled
    python examples/denoise_digits.py --quick          # fewer images and patches
    python examples/denoise_digits.py --sigma 0.1 --out /tmp/denoise
"""

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

PATCH = 6
UPSAMPLE = 3


def load_images(n_train):
    """The digits, upsampled to 24x24 in [0, 1], split into train and held-out."""
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits

    images = load_digits().images / 16.0
    images = np.clip(zoom(images, (1, UPSAMPLE, UPSAMPLE), order=1), 0.0, 1.0)
    images = images.astype(np.float32)
    order = np.random.default_rng(0).permutation(len(images))
    return images[order[:n_train]], images[order[n_train:]]


def patches(images):
    """Every overlapping PATCH x PATCH patch, one per row."""
    from numpy.lib.stride_tricks import sliding_window_view

    P = sliding_window_view(images, (PATCH, PATCH), axis=(1, 2))
    return P.reshape(-1, PATCH * PATCH)


def learn_dictionary(train_images, n_atoms, k, n_patches, epochs, seed):
    """K-SVD dictionary of DC-free patches from the clean training images."""
    from sparsecode import MPSAE

    P = patches(train_images)
    rng = np.random.default_rng(seed)
    P = P[rng.choice(len(P), size=min(n_patches, len(P)), replace=False)]
    P = P - P.mean(axis=1, keepdims=True)
    P = P[np.linalg.norm(P, axis=1) > 1e-3]  # flat background patches teach nothing
    model = MPSAE(n_atoms, k, solver="omp", update="ksvd", batch_size=None, n_epochs=epochs,
                  pre_bias=False, progress=False, random_state=seed)
    return model.fit(P)


def encode_to_noise_level(solver, Pc, D, eps2, gram, max_atoms):
    """Code each row of ``Pc`` until ``||r||^2 <= eps2`` (an absolute target).

    ``tol`` is relative to each signal's energy, so rows are grouped in bins of energy
    25% wide, and each bin is coded with the ``tol`` that gives ``eps2`` at the bin's
    geometric centre.  Rows with energy <= eps2 keep a zero code.

    Returns
    -------
    Z_hat : ndarray, the reconstructions ``z D``;  l0 : ndarray, atoms per row.
    """
    energy = np.einsum("ij,ij->i", Pc, Pc, dtype=np.float64)
    Z_hat = np.zeros_like(Pc)
    l0 = np.zeros(len(Pc))
    coded = energy > eps2
    step = np.log(1.25)
    bins = np.floor(np.log(np.maximum(energy, eps2) / eps2) / step).astype(int)
    for b in np.unique(bins[coded]):
        rows = np.flatnonzero(coded & (bins == b))
        tol = min(np.exp(-(b + 0.5) * step), 0.999)  # eps2 / (bin-centre energy)
        codes = solver(Pc[rows], D, tol=tol, k=max_atoms, gram=gram)
        Z_hat[rows] = codes.decode(D)
        l0[rows] = codes.l0
    return Z_hat, l0


def denoise(noisy, D, gram, solver, *, sigma, C=1.15, k=None):
    """Denoise images patch by patch; ``k`` set: fixed number of atoms instead of a tol."""
    n, H, W = noisy.shape
    P = patches(noisy)
    dc = P.mean(axis=1, keepdims=True)
    Pc = P - dc
    if k is None:
        max_atoms = 4 * PATCH * PATCH if solver.__name__ == "mp" else PATCH * PATCH
        eps2 = (C * sigma) ** 2 * (PATCH * PATCH - 1)
        Z_hat, l0 = encode_to_noise_level(solver, Pc, D, eps2, gram, max_atoms)
    else:
        codes = solver(Pc, D, k=k, gram=gram)
        Z_hat, l0 = codes.decode(D), codes.l0
    h, w = H - PATCH + 1, W - PATCH + 1
    R = (Z_hat + dc).reshape(n, h, w, PATCH, PATCH)
    total = np.zeros(noisy.shape, dtype=np.float64)
    count = np.zeros(noisy.shape, dtype=np.float64)
    for i in range(PATCH):
        for j in range(PATCH):
            total[:, i:i + h, j:j + w] += R[:, :, :, i, j]
            count[:, i:i + h, j:j + w] += 1
    return np.clip(total / count, 0.0, 1.0).astype(np.float32), float(np.mean(l0))


def psnr(estimate, clean):
    """Peak signal-to-noise ratio in dB for images in [0, 1]."""
    mse = np.mean((np.asarray(estimate, np.float64) - clean) ** 2)
    return float(10 * np.log10(1.0 / mse))


def save_grid(path, rows, n_show=8):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), n_show, figsize=(1.25 * n_show + 1.6, 1.35 * len(rows)),
                             squeeze=False, layout="constrained")
    for r, (label, images) in enumerate(rows):
        for c in range(n_show):
            ax = axes[r, c]
            ax.imshow(images[c], cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(label, fontsize=8.5, rotation=0, ha="right", va="center")
    fig.suptitle("Held-out digits: clean, noisy, and denoised with a learnt 6x6 patch "
                 "dictionary (PSNR over all held-out images)", fontsize=10)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=".", help="folder for denoise_digits.png")
    parser.add_argument("--sigma", type=float, default=0.2,
                        help="noise standard deviation (images in [0, 1])")
    parser.add_argument("--atoms", type=int, default=128)
    parser.add_argument("--k", type=int, default=4, help="atoms per patch while learning")
    parser.add_argument("--quick", action="store_true",
                        help="8,000 training patches, 5 passes, 60 held-out images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import sparsecode

    t_start = time.perf_counter()
    train, test = load_images(1300)
    n_patches, epochs = (8000, 5) if args.quick else (40000, 15)
    if args.quick:
        test = test[:60]
    t0 = time.perf_counter()
    model = learn_dictionary(train, args.atoms, args.k, n_patches, epochs, args.seed)
    t_learn = time.perf_counter() - t0
    D = model.components_
    G = sparsecode.gram(D)
    noise = np.random.default_rng(args.seed + 1).standard_normal(test.shape)
    noisy = (test + args.sigma * noise).astype(np.float32)

    results = {"noisy": {"psnr": psnr(noisy, test), "atoms": float("nan"), "seconds": 0.0}}
    shown = [("clean", test), (f"noisy\n{results['noisy']['psnr']:.1f} dB", noisy)]
    methods = [("omp", sparsecode.omp, None), ("mp", sparsecode.mp, None),
               ("gp", sparsecode.gp, None), (f"omp, k = {args.k}", sparsecode.omp, args.k)]
    with warnings.catch_warnings():
        # OMP may stop a patch one atom early when its next atom is linearly dependent on
        # those already chosen (a RuntimeWarning); harmless for denoising
        warnings.filterwarnings("ignore", message="omp stopped early", category=RuntimeWarning)
        for name, solver, k in methods:
            t0 = time.perf_counter()
            estimate, atoms = denoise(noisy, D, G, solver, sigma=args.sigma, k=k)
            seconds = time.perf_counter() - t0
            results[name] = {"psnr": psnr(estimate, test), "atoms": atoms, "seconds": seconds}
            if k is None:
                shown.append((f"{name}\n{results[name]['psnr']:.1f} dB", estimate))

    n_patch_test = len(test) * (test.shape[1] - PATCH + 1) ** 2
    print(f"{len(train)} training digits ({model.components_.shape[0]} atoms learnt by K-SVD "
          f"in {t_learn:.1f} s, training fvu {model.history_[-1]['fvu']:.3f}); {len(test)} "
          f"held-out digits, sigma = {args.sigma}, {n_patch_test:,} patches of "
          f"{PATCH}x{PATCH}")
    print(f"{'':<12}{'PSNR (dB)':>10}{'atoms/patch':>13}{'seconds':>9}")
    for name, r in results.items():
        atoms = "" if np.isnan(r["atoms"]) else f"{r['atoms']:.2f}"
        secs = "" if name == "noisy" else f"{r['seconds']:.2f}"
        print(f"{name:<12}{r['psnr']:>10.2f}{atoms:>13}{secs:>9}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_grid(out / "denoise_digits.png", shown)
    print(f"wrote {out / 'denoise_digits.png'}; total {time.perf_counter() - t_start:.1f} s")
    return {name: r["psnr"] for name, r in results.items()}


if __name__ == "__main__":
    main()
