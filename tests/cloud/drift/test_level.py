"""The level test (a cohort against the reference) on counts made to measure, at the thresholds
the engine gives the fleet: it needs three devices' worth of evidence, so two households that say
most of a quiet hour cannot carry it. The shifts are on ``snr_db``, whose reference spread between
speakers is narrow, so two households' shift is significant at the budget's alpha and only the
evidence rule stands between it and a verdict."""
from __future__ import annotations

import numpy as np

from cloud.drift import blocks
from cloud.drift.assess import Part, Settings, assess, effective_devices, level_verdict
from cloud.drift.baselines import learn
from cloud.drift.budget import Budget
from cloud.drift.engine import DriftConfig
from cloud.drift.reference import Priors, build_reference
from cloud.drift.tables import ModelTable, Snapshot

STEPS = 3
SHIFTED = "snr_db"


def fleet_settings(devices: int) -> Settings:
    """The fleet cohort's settings as ``engine`` derives them for ``devices`` devices on one model
    (the default budget; input: a CUSUM per device and the fleet, a level test per fleet group and
    a peer test per device)."""
    c = DriftConfig()
    groups = len(blocks.groups("input"))
    budget = Budget(c.alerts_per_1000_device_days, devices, 86400.0 / c.step_s)
    return Settings(min_n=c.min_n, short_steps=c.short_steps, cusum_k=c.cusum_k,
                    cusum_h=budget.cusum_h((devices + 1) * groups, c.cusum_k), cusum_cap=c.cusum_cap,
                    level_alpha=budget.alpha(groups + devices), level_test=True, min_devices=c.min_devices,
                    min_device_fraction=c.min_device_fraction, level_min_devices=c.level_min_devices)


def input_counts(profile, ref, rng, talking: dict[int, int], steps: int, lower, devices: int):
    """``{signal: [devices, steps, k]}``: device d says ``talking[d]`` utterances a step, drawn
    from the reference's own histograms, its ``SHIFTED`` signal ``lower(d, t)`` bins lower
    (0: as the reference)."""
    counts = {}
    for signal in ref.signals("input"):
        k = ref.shapes[signal]
        q = _reference_counts(profile, signal, k) + 0.5
        p = q / q.sum()
        c = np.zeros((devices, steps, k), dtype=np.int64)
        for d, n in talking.items():
            for t in range(steps):
                c[d, t] = rng.multinomial(n, _lower(p, lower(d, t)) if signal == SHIFTED else p)
        counts[signal] = c
    return counts


def _lower(p: np.ndarray, bins: int) -> np.ndarray:
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
    """``devices`` devices over ``STEPS`` steps, those in ``shifted`` 6 bins lower."""
    ref = build_reference(profile, "m")
    counts = input_counts(profile, ref, np.random.default_rng(7), talking, STEPS,
                          lambda d, t: 6 if d in shifted else 0, devices)
    return ModelTable(ref, [f"d{i}" for i in range(devices)], {"input": counts, "output": {}, "concept": {}})


def level_found(t: ModelTable) -> bool:
    snap = Snapshot(t0=0.0, step_s=300.0, n_steps=STEPS, tables={"m": t})
    s = fleet_settings(len(t.devices))
    a = assess(snap, "input", [Part("m", t, np.ones(len(t.devices), bool))], lambda d, m: None, s)
    speech = next(g for g in a.groups if g.group == "speech")
    line = next(ln for ln in speech.level if ln.score.name == SHIFTED)
    assert line.recent.p[0] <= s.level_alpha  # significant at the budget's alpha: the rule decides
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
    """Each household has two voices, one 4 ``SHIFTED`` bins under the other, who took turns all
    through the warm-up; in the steps judged every household's lower voice talks. The fleet
    stands off the reference (significant and large at the budget's alpha), and each household off
    its baseline mean beyond sampling noise, but not beyond what its own turn-taking spreads: no
    household moved, so no fleet verdict."""
    warm, devices, n = 16, 6, 60
    ref = build_reference(profile, "m")
    # the lower voice talks at even warm-up steps and at every step judged
    counts = input_counts(profile, ref, np.random.default_rng(11), {d: n for d in range(devices)}, warm + STEPS,
                          lambda d, t: 4 if (t >= warm or t % 2 == 0) else 0, devices)
    bases = {f"d{d}": learn(f"d{d}", "m", ref, {"input": {s: c[d, :warm] for s, c in counts.items()}}, 0.0,
                            warm * 300.0, 30, 8, Priors()) for d in range(devices)}
    judged = {s: c[:, warm:] for s, c in counts.items()}
    t = ModelTable(ref, list(bases), {"input": judged, "output": {}, "concept": {}})
    snap = Snapshot(t0=0.0, step_s=300.0, n_steps=STEPS, tables={"m": t})
    s = fleet_settings(devices)
    a = assess(snap, "input", [Part("m", t, np.ones(devices, bool))], lambda d, m: bases[d], s)
    speech = next(g for g in a.groups if g.group == "speech")
    line = next(ln for ln in speech.level if ln.score.name == SHIFTED)
    assert line.recent.p[0] <= s.level_alpha and abs(line.recent.effect[0]) >= line.score.floor  # off the reference
    assert speech.level[0].households[-1] >= s.level_min_devices  # enough evidence: only _own can refuse
    own = next(ln for ln in speech.change if ln.score.name == SHIFTED)
    assert not level_verdict(speech, s, None), own.device_effect
