"""Session fixtures for drift tests: one seeded reference profile (with and without accuracy)."""
from __future__ import annotations

import numpy as np
import pytest

from cloud.drift.calibrate import Calibrator
from tests.cloud.drift.population import make_profile


@pytest.fixture(scope="session")
def profile() -> dict:
    """Reference profile of 2,000 healthy utterances, with the lab's per-class accuracy."""
    return make_profile(np.random.default_rng(1234), with_accuracy=True)


@pytest.fixture(scope="session")
def calibrator() -> Calibrator:
    """The default calibrator, shared so simulated nulls are paid for once per session."""
    return Calibrator()
