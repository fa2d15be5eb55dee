"""Loading the optional overcomplete anchor for the benchmarks."""

import sys


def import_sae():
    """overcomplete's SAE subpackage, or None if not installed.

    Importing the top-level package pulls in vision dependencies; load the SAE subpackage
    alone through a bare package module.
    """
    try:
        import importlib
        import types

        if "overcomplete" not in sys.modules:
            spec = importlib.util.find_spec("overcomplete")
            if spec is None:
                return None
            pkg = types.ModuleType("overcomplete")
            pkg.__path__ = list(spec.submodule_search_locations)
            sys.modules["overcomplete"] = pkg
        import overcomplete.sae as sae
    except Exception as exc:  # noqa: BLE001 - the anchor is optional
        print(f"# overcomplete unavailable: {exc!r}", file=sys.stderr)
        return None
    return sae


# ---------------------------------------------------------------------------- part sae
