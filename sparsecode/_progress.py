"""Progress bars (tqdm when installed), shared by the estimators, the cluster jobs and the
command line."""


def progress_bar(progress, total, *, unit, desc=None, initial=0):
    """A bar with rate and ETA on stderr, or None.

    Parameters
    ----------
    progress : bool, "auto" or None
        False: no bar.  True: always.  "auto" or None: when stderr is a terminal.
    total : int or None
    unit : str
    desc : str, optional
    initial : int
        Work already done (a resumed job).
    """
    if progress is False:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, unit=unit, desc=desc, unit_scale=True,
                dynamic_ncols=True, disable=None if progress in ("auto", None) else False)
