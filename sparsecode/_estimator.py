"""Estimator conventions without a run-time dependency: ``get_params`` / ``set_params``
from the ``__init__`` signature, a readable ``repr``, and the tags that estimator test
suites ask for."""

import inspect


class ParamsMixin:
    """``get_params`` / ``set_params`` for classes whose ``__init__`` only stores its
    keyword arguments under the same names."""

    @classmethod
    def _param_names(cls):
        sig = inspect.signature(cls.__init__)
        return sorted(
            p.name for p in sig.parameters.values()
            if p.name != "self" and p.kind != p.VAR_KEYWORD
        )

    def get_params(self, deep=True):
        """Parameters of this estimator.

        Parameters
        ----------
        deep : bool
            Unused (there are no sub-estimators); kept for the common signature.

        Returns
        -------
        dict
        """
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params):
        """Set parameters; returns ``self``.

        Raises
        ------
        ValueError
            For a name that is not a parameter of this estimator.
        """
        valid = set(self._param_names())
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"{name!r} is not a parameter of {type(self).__name__}; valid parameters "
                    f"are {', '.join(sorted(valid))}"
                )
            setattr(self, name, value)
        return self

    def __repr__(self):
        defaults = {
            p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()
        }
        shown = []
        for name, value in self.get_params().items():
            default = defaults.get(name, inspect.Parameter.empty)
            if default is inspect.Parameter.empty or _differs(value, default):
                shown.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"

    def __sklearn_tags__(self):
        # Only ever called by scikit-learn itself, so it is importable here.
        from sklearn.utils import InputTags, Tags, TargetTags, TransformerTags

        return Tags(
            estimator_type="transformer",
            target_tags=TargetTags(required=False),
            transformer_tags=TransformerTags(),
            input_tags=InputTags(),
        )


def _differs(a, b):
    try:
        return bool(a != b)
    except Exception:  # noqa: BLE001 - arrays and odd types: show them
        return True
