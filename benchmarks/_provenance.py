"""Where a benchmark row came from: the package commit, the machine's load and the BLAS
variables."""

import os
import subprocess


def package_commit():
    """Commit of the working tree under test, with ``+dirty`` when sparsecode/ has
    uncommitted changes (None outside a git checkout)."""
    try:
        run = dict(capture_output=True, text=True, check=True, timeout=10,
                   cwd=os.path.dirname(os.path.abspath(__file__)))
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], **run).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "../sparsecode"],
                               **run).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def load_average():
    """The 1-minute load average: other jobs on the machine skew the timings."""
    return round(os.getloadavg()[0], 2)


def blas_env():
    """The BLAS variables in force (OpenBLAS picks other kernels under them)."""
    return {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                            "OPENBLAS_NUM_THREADS")}


def cpu_model():
    """The processor's model name (timings move with it), or None where unknown."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None
