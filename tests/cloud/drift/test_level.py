"""The level test (a cohort against the reference) on counts made to measure: it needs three
devices' worth of evidence, so two households that say most of a quiet hour cannot carry it."""
from __future__ import annotations

import numpy as np

from cloud.drift.assess import Part, Settings, assess, effective_devices, level_verdict
from cloud.drift.baselines import learn
from cloud.drift.reference import Priors, build_reference
from cloud.drift.tables import ModelTable, Snapshot

STEPS = 3
# a lenient alpha: what is tested is how much evidence a verdict stands on, not how significant
SETTINGS = Settings(min_n=30, short_steps=STEPS, cusum_k=1.5, cusum_h=5.0, cusum_cap=2.0, level_alpha=0.05,
                    level_test=True)


def input_counts(profile, ref, rng, talking: dict[int, int], steps: int, quieter, devices: int):
    """``{signal: [devices, steps, k]}``: device d says ``talking[d]`` utterances a step, drawn
    from the reference's own histograms, its level ``bins`` quieter where ``quieter(d, t)`` is
    a number of bins (0: as the reference)."""
    counts = {}
    for signal in ref.signals("input"):
        k = ref.shapes[signal]
        q = _reference_counts(profile, signal, k) + 0.5
        p = q / q.sum()
        c = np.zeros((devices, steps, k), dtype=np.int64)
        for d, n in talking.items():
            for t in range(steps):
                c[d, t] = rng.multinomial(n, _quieter(p, quieter(d, t)) if signal == "level_dbfs" else p)
        counts[signal] = c
    return counts


def _quieter(p: np.ndarray, bins: int) -> np.ndarray:
    if not bins:
        return p
    out = np.concatenate([p[bins:], np.zeros(bins)])
    return out / out.sum()


def _reference_counts(profile, signal: str, k: int) -> np.ndarray:
    if signal.startswith("feature:"):
        feats = profile["features"]
        return np.asarray(feats["counts"][feats["names"].index(signal.split(":", 1)[1])], float)
    return np.asarray(profile[signal]["counts"], float) if signal in profile else np.ones(k)


def table(profile, talking: dict[int, int], shifted: set[int], devices: int = 8) -> ModelTable:
    """``devices`` devices over ``STEPS`` steps, those in ``shifted`` 6 level bins quieter."""
    ref = build_reference(profile, "m")
    counts = input_counts(profile, ref, np.random.default_rng(7), talking, STEPS,
                          lambda d, t: 6 if d in shifted else 0, devices)
    return ModelTable(ref, [f"d{i}" for i in range(devices)], {"input": counts, "output": {}, "concept": {}})


def level_found(t: ModelTable) -> bool:
    snap = Snapshot(t0=0.0, step_s=300.0, n_steps=STEPS, tables={"m": t})
    a = assess(snap, "input", [Part("m", t, np.ones(len(t.devices), bool))], lambda d, m: None, SETTINGS)
    return a.detected and a.horizon == "level"


def test_effective_devices_counts_a_household_that_says_most_as_about_one():
    n = np.zeros((4, 2, 3))
    n[:, 0, 0] = [10, 10, 10, 10]
    n[:, 1, 0] = [100, 100, 1, 1]
    assert np.allclose(effective_devices(n), [4.0, 202 ** 2 / 20002])


def test_two_households_far_off_the_reference_are_not_the_fleet_but_four_are(profile):
    # four devices moved, enough for the breadth rule, but two said nearly all of it: 2.8 devices' worth
    two = table(profile, {0: 60, 1: 60, 2: 12, 3: 12}, shifted={0, 1, 2, 3})
    assert not level_found(two)
    four = table(profile, {0: 60, 1: 60, 2: 60, 3: 60}, shifted={0, 1, 2, 3})
    assert level_found(four)


def test_households_whose_other_voice_took_over_have_not_moved(profile):
    """Each household has two voices, one level_dbfs 4 bins under the other, who took turns all
    through the warm-up; in the steps judged every household's quieter voice talks. The fleet
    stands off the reference, and each household off its baseline mean beyond sampling noise,
    but not beyond what its own turn-taking spreads: no household moved, so no fleet verdict."""
    warm, devices, n = 16, 6, 60
    ref = build_reference(profile, "m")
    # the quieter voice talks at even warm-up steps and at every step judged
    counts = input_counts(profile, ref, np.random.default_rng(11), {d: n for d in range(devices)}, warm + STEPS,
                          lambda d, t: 4 if (t >= warm or t % 2 == 0) else 0, devices)
    bases = {f"d{d}": learn(f"d{d}", "m", ref, {"input": {s: c[d, :warm] for s, c in counts.items()}}, 0.0,
                            warm * 300.0, 30, 8, Priors()) for d in range(devices)}
    judged = {s: c[:, warm:] for s, c in counts.items()}
    t = ModelTable(ref, list(bases), {"input": judged, "output": {}, "concept": {}})
    snap = Snapshot(t0=0.0, step_s=300.0, n_steps=STEPS, tables={"m": t})
    a = assess(snap, "input", [Part("m", t, np.ones(devices, bool))], lambda d, m: bases[d], SETTINGS)
    speech = next(g for g in a.groups if g.group == "speech")
    line = next(ln for ln in speech.level if ln.score.name == "level_dbfs")
    assert line.recent.p[0] < 1e-3 and abs(line.recent.effect[0]) >= line.score.floor  # off the reference
    own = next(ln for ln in speech.change if ln.score.name == "level_dbfs")
    assert not level_verdict(speech, SETTINGS, None), own.device_effect
