"""The reference's between-speaker spread (``reference._between``) on speakers drawn from a
population whose spread is known: a dozen chunks must vouch for the population, not for itself."""
from __future__ import annotations

import numpy as np

from cloud.drift.reference import _between, ridits

BASE = np.array([1, 2, 4, 7, 9, 9, 7, 4, 2, 1], float)
CONCENTRATION = 60.0  # each speaker's histogram: Dirichlet around BASE (a smaller value spreads speakers more)


def test_the_between_speaker_spread_covers_the_populations_at_its_confidence():
    """The method-of-moments point estimate is below the true spread about half the time (the
    spread of a dozen chunk means is mostly their sampling noise); the upper 95 % bound covers it
    in about 95 % of profiles, and not in all of them (it is a bound, not an arbitrary inflation)."""
    rng = np.random.default_rng(5)
    w = ridits(BASE * 100)
    speaker = BASE / BASE.sum() * CONCENTRATION
    true_tau2 = float(np.var(rng.dirichlet(speaker, size=200_000) @ w))
    covered, repeats = 0, 300
    for _ in range(repeats):  # one profile: 12 speakers of 30 utterances each, none seen again
        chunks = np.stack([rng.multinomial(30, p) for p in rng.dirichlet(speaker, size=12)])
        tau2, used = _between(chunks, w, 0.0)
        assert used == 12
        covered += tau2 >= true_tau2
    assert 0.90 <= covered / repeats <= 0.99
