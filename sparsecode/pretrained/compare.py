"""The SAE's own encoder against pursuits on its decoder, at matched L0, as a table."""

import time

import numpy as np

from sparsecode._validation import check_count


class EncoderComparison(list):
    """Rows of :func:`compare_encoders`, one dict per encoder (``encoder``, ``k``,
    ``l0``, ``fvu``, ``dead_fraction``, ``seconds``); ``str()`` is the table."""

    COLUMNS = (("encoder", "{}"), ("k", "{}"), ("l0", "{:.2f}"), ("fvu", "{:.4f}"),
               ("dead_fraction", "{:.3f}"), ("seconds", "{:.3f}"))

    def table(self):
        """str: the rows as an aligned text table."""
        cells = [[name for name, _ in self.COLUMNS]]
        for row in self:
            cells.append(["-" if row[name] is None else fmt.format(row[name])
                          for name, fmt in self.COLUMNS])
        widths = [max(len(r[c]) for r in cells) for c in range(len(self.COLUMNS))]
        lines = ["  ".join(v.ljust(w) if c == 0 else v.rjust(w)
                           for c, (v, w) in enumerate(zip(r, widths, strict=True)))
                 for r in cells]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def __str__(self):
        return self.table()


def compare_encoders(sae, X, *, solvers=("omp", "gp", "mp"), k=None, positive=True,
                     refit=True):
    """Encode ``X`` with the SAE's own encoder and with pursuits on its decoder at the
    same L0, and measure each.

    Parameters
    ----------
    sae : PretrainedSAE
    X : array-like of shape (n_samples, n_features)
        Activations (not centred or normalised: the SAE does that).
    solvers : sequence of {"omp", "gp", "mp"}
        The pursuits to run.
    k : int, optional
        Atoms per signal for the pursuits; default the native encoder's mean L0 on ``X``,
        rounded (at least 1): matched sparsity.
    positive : bool
        Non-negative pursuit coefficients, as the SAE's activations are.
    refit : bool
        Also the native supports with least-squares coefficients.

    Returns
    -------
    EncoderComparison
        One row per encoder: ``encoder`` (``"native"``, ``"native+refit"``, a solver
        name), ``k``, mean ``l0``, ``fvu`` of the reconstruction (:meth:`score`'s),
        ``dead_fraction`` (atoms no signal of ``X`` uses) and ``seconds`` (encoding only).
    """
    from sparsecode.metrics import dead_fraction, fvu

    X = sae.check_signals(X)
    rows = EncoderComparison()

    def measure(name, kk, encode):
        t0 = time.perf_counter()
        codes = encode()
        secs = time.perf_counter() - t0
        rows.append({"encoder": name, "k": kk, "l0": float(codes.l0.mean()),
                     "fvu": fvu(X, sae.decode(codes, X)),
                     "dead_fraction": dead_fraction(codes, sae.n_atoms), "seconds": secs})
        return codes

    native = measure("native", sae.k, lambda: sae.encode(X))
    if refit:
        measure("native+refit", sae.k, lambda: sae.encode(X, refit=True))
    if k is None:
        k = max(1, int(np.rint(native.l0.mean())))
    k = check_count(k, "k")
    for solver in solvers:
        measure(solver, k, lambda s=solver: sae.encode(X, solver=s, k=k, positive=positive))
    return rows
