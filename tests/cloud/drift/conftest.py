"""Session fixtures for drift tests: one seeded reference profile (with chunks and concept tables)."""
from __future__ import annotations

import numpy as np
import pytest

from tests.cloud.drift.population import make_profile


@pytest.fixture(scope="session")
def profile() -> dict:
    """Reference profile of 40 dev speakers (chunked) with accuracy and calibration of 40 others."""
    return make_profile(np.random.default_rng(1234))
