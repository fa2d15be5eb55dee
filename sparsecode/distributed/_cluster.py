"""Clients, local clusters, and the thread budget of a task on a worker."""

import contextlib
import os


def require_dask():
    """Import dask.array and distributed, or say how to install them."""
    try:
        import dask.array  # noqa: F401
        import distributed  # noqa: F401
    except ImportError as exc:  # pragma: no cover - the test extra installs dask
        raise ImportError(
            "sparsecode.distributed needs Dask: pip install 'sparsecode[dask]'"
        ) from exc


@contextlib.contextmanager
def connect(scheduler):
    """A :class:`distributed.Client` for ``scheduler``, closed (with its cluster) on exit.

    Parameters
    ----------
    scheduler : str or distributed.Client
        ``"local:N"``: start ``N`` worker processes on this machine (one task thread each,
        the cores shared out among them).  Otherwise a scheduler address such as
        ``"tcp://10.0.0.5:8786"``.  A client is used as it is (and not closed).

    Yields
    ------
    distributed.Client
    """
    require_dask()
    from distributed import Client, LocalCluster

    if not isinstance(scheduler, str):
        yield scheduler
        return
    if scheduler.startswith("local:"):
        try:
            n = int(scheduler[6:])
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"--scheduler local:N needs a number of workers N >= 1; got "
                             f"{scheduler!r}")
        threads = max(1, (os.cpu_count() or 1) // n)
        env = {"NUMBA_NUM_THREADS": str(threads), "OMP_NUM_THREADS": "1",
               "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                          dashboard_address=None, env=env) as cluster, Client(cluster) as c:
            yield c
        return
    with Client(scheduler) as c:
        yield c


@contextlib.contextmanager
def task_threads():
    """Inside a task: Numba threads shared out among the worker's task threads (a worker
    running ``t`` tasks at once gives each ``NUMBA_NUM_THREADS // t``)."""
    import numba

    try:
        from distributed import get_worker

        per_task = max(1, numba.config.NUMBA_NUM_THREADS // get_worker().state.nthreads)
    except (ImportError, ValueError):
        per_task = numba.config.NUMBA_NUM_THREADS  # not on a worker
    saved = numba.get_num_threads()
    numba.set_num_threads(per_task)
    try:
        yield
    finally:
        numba.set_num_threads(saved)


def scatter_everywhere(client, values, tries=5):
    """Copies of ``values`` on every worker (futures); a worker lost during the transfer
    is retried without (the others hold copies, and a restarted one fetches them)."""
    import time

    for attempt in range(tries):
        try:
            return client.scatter(values, broadcast=True, hash=False)
        except OSError:  # a connection to a worker that died
            if attempt == tries - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
