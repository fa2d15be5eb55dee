"""What every subcommand shares: interruption, progress bars, threads."""

import argparse
import contextlib
import signal
import sys


class Interrupted(Exception):
    """Raised by a command that stopped cleanly on Ctrl-C (or SIGTERM)."""


class StopFlag:
    """Turns the first Ctrl-C / SIGTERM into a flag the work loop checks between steps,
    so that it can save its state; a second one aborts at once."""

    def __init__(self):
        self.set = False
        self._old = {}

    def _handler(self, signum, frame):
        if self.set:
            raise KeyboardInterrupt
        self.set = True
        print("\nsparsecode: stopping after the current step (again to abort) ...",
              file=sys.stderr, flush=True)

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


def stop_flag(args):
    """The :class:`StopFlag` that ``main`` installed for this command (a fresh, never set
    one when the command runs without ``main``)."""
    stop = getattr(args, "stop", None)
    return stop if stop is not None else StopFlag()


def progress_bar(total, unit, desc, enabled=True):
    """A tqdm bar with rate and ETA on stderr (None when disabled or tqdm is missing)."""
    from sparsecode._progress import progress_bar as bar

    return bar("auto" if enabled else False, total, unit=unit, desc=desc)


def say(bar, text):
    """Print a line on stderr without breaking the progress bar."""
    if bar is not None:
        bar.write(text, file=sys.stderr)
    else:
        print(text, file=sys.stderr, flush=True)


def set_threads(n):
    """Numba's thread count for the run (None: leave it)."""
    if n is None:
        return
    import numba

    if n < 1 or n > numba.config.NUMBA_NUM_THREADS:
        raise ValueError(
            f"--threads must be in [1, {numba.config.NUMBA_NUM_THREADS}]; got {n}"
        )
    numba.set_num_threads(n)


class HelpFormatter(argparse.HelpFormatter):
    """Help that ends each option with its default, where it has a meaningful one."""

    def _get_help_string(self, action):
        text = action.help or ""
        shown = not (action.default is None or action.default is False
                     or action.default is argparse.SUPPRESS)
        if shown and action.option_strings and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def add_scheduler_option(parser):
    """``--scheduler ADDRESS|local:N``: run the work on a Dask cluster."""
    parser.add_argument(
        "--scheduler", default=None, metavar="ADDRESS",
        help="run on a Dask cluster: a scheduler address (tcp://host:8786), or local:N for "
        "N worker processes on this machine (needs sparsecode[dask]); files must be "
        "readable at the same paths on every worker",
    )


@contextlib.contextmanager
def cluster(scheduler):
    """A Dask client for ``--scheduler`` (None without it)."""
    if scheduler is None:
        yield None
        return
    from sparsecode.distributed import connect

    with connect(scheduler) as client:
        yield client


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, ``sparsecode: error: ...``, exit code
    2, like every other error of the command (no usage block)."""

    def error(self, message):
        self.exit(2, f"sparsecode: error: {message} (see {self.prog} --help)\n")


def count(minimum=1):
    """An argparse ``type``: an integer ``>= minimum`` (the option is named in the error)."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be an integer >= {minimum}; got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}; got {value}")
        return value

    parse.__name__ = "count"
    return parse


def _number(text, strict):
    import math

    bound = "> 0" if strict else ">= 0"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number {bound}; got {text!r}") from None
    if not (math.isfinite(value) and (value > 0 if strict else value >= 0)):
        raise argparse.ArgumentTypeError(f"must be a finite number {bound}; got {text}")
    return value


def positive_number(text):
    """An argparse ``type``: a finite number > 0."""
    return _number(text, strict=True)


def non_negative_number(text):
    """An argparse ``type``: a finite number >= 0."""
    return _number(text, strict=False)
