"""The common estimator checks, with a short, documented list of expected failures
(``sparsecode.sae.estimator.EXPECTED_FAILED_CHECKS``)."""

import pytest

pytest.importorskip("sklearn")

from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from sparsecode.sae import MPSAE  # noqa: E402
from sparsecode.sae.estimator import EXPECTED_FAILED_CHECKS  # noqa: E402

ESTIMATORS = [
    MPSAE(n_atoms=6, k=2, batch_size=64, n_epochs=2, progress=False, random_state=0),
    MPSAE(n_atoms=6, k=2, solver="omp", update="ksvd", batch_size=None, n_epochs=2,
          progress=False, random_state=0),
]


@pytest.mark.filterwarnings("ignore:Estimator MPSAE does not inherit")
@parametrize_with_checks(ESTIMATORS, expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_common_checks(estimator, check):
    check(estimator)
