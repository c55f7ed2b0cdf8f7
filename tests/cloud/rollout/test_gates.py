"""Each gate on constructed samples: pass, fail and wait; the device as the unit of variance;
the confidence sequences themselves; the error budget."""
from __future__ import annotations

import math

import numpy as np
import pytest

from cloud.rollout import sequential as sq
from cloud.rollout.gates import Gates, Sample, Totals, evaluate, gate_alpha, overall
from cloud.rollout.state import DEFAULT_STAGE_TIMEOUT_S, Policy, Rollout
from shared.histogram import LATENCY_MS_EDGES

from tests.cloud.rollout.fakes import make_rollout, sample
from tests.shared.windows import make_window

ALPHA = gate_alpha(Gates(), "canary", 3)  # the default canary plan's budget per gate


def by_gate(kind: str, t: Sample, c: Sample, g: Gates | None = None, **kw) -> dict:
    """Gate name → result, in the default canary plan (three stages)."""
    return {r.gate: r for r in evaluate(kind, t, c, g or Gates(), stages=3, **kw)}


def devices(rates: list[float], n: int | list[int], field: str = "no_answer") -> Sample:
    """One device per rate, each with ``n`` inferences and ``round(rate * n)`` events of ``field``."""
    ns = n if isinstance(n, list) else [n] * len(rates)
    per = {}
    for i, (p, k) in enumerate(zip(rates, ns)):
        t = Totals(windows=1, inferences=k, labels={"yes": k})
        setattr(t, field, int(round(p * k)))
        t.latency_ms[10] = k
        per[f"d{i:03d}"] = t
    return Sample.from_totals(per)


# --- the confidence sequence ---------------------------------------------------------------------


def test_the_boundary_is_where_the_normal_mixture_martingale_reaches_one_over_alpha():
    for se, scale, alpha in ((0.01, 0.05, 0.01), (0.2, 0.4, 0.003), (1.0, 0.1, 0.05)):
        h = float(sq.halfwidth(se, scale, alpha))
        v, tau2 = 1 / se ** 2, scale ** 2  # information and mixing variance
        score = h * v
        martingale = math.exp(tau2 * score ** 2 / (2 * (1 + tau2 * v))) / math.sqrt(1 + tau2 * v)
        assert martingale == pytest.approx(1 / alpha, rel=1e-9)
        assert h > 2.5 * se  # wider than a one-look interval at the same level


def test_looking_after_every_observation_keeps_the_error_under_alpha_unlike_a_fixed_interval():
    rng = np.random.default_rng(0)
    runs, steps, alpha = 2000, 500, 0.05
    x = rng.normal(0.0, 1.0, (runs, steps))
    n = np.arange(1, steps + 1)
    mean = np.cumsum(x, axis=1) / n
    se = 1 / np.sqrt(n)
    ever_cs = (np.abs(mean) > sq.halfwidth(se, 0.2, alpha)).any(axis=1).mean()
    ever_fixed = (np.abs(mean) > 1.96 * se).any(axis=1).mean()
    assert ever_cs < alpha  # the truth (0) left the sequence in under 5 % of the runs
    assert ever_fixed > 0.3  # a 95 % interval looked at 500 times excludes it in most runs


def test_the_spread_between_devices_is_recovered_and_a_lone_device_gives_none():
    rng = np.random.default_rng(1)
    true = rng.normal(0.1, 0.03, 400).clip(0.01, 0.99)  # device rates, sd 0.03
    n = rng.integers(200, 2000, 400)
    k = rng.binomial(n, true)
    tau2 = sq.between_variance(sq.rates(k, n))
    assert math.sqrt(tau2) == pytest.approx(0.03, rel=0.15)
    assert sq.between_variance(sq.rates([5], [100])) == 0.0


# --- rate gates ----------------------------------------------------------------------------------


def test_error_rate_passes_fails_and_waits_on_its_interval():
    equal = by_gate("canary", sample(50000, errors=1000), sample(50000, errors=1000))["error_rate"]
    assert equal.verdict == "pass" and equal.figures["high"] <= equal.figures["margin"] == 0.005
    worse = by_gate("canary", sample(50000, errors=1500), sample(50000, errors=1000))["error_rate"]
    assert worse.verdict == "fail" and worse.figures["low"] > 0.005 and "over the margin 0.0050" in worse.reason
    unsure = by_gate("canary", sample(5000, errors=100), sample(5000, errors=100))["error_rate"]
    assert unsure.verdict == "wait" and unsure.figures["low"] < 0.005 < unsure.figures["high"]
    assert "not yet within 0.0050 nor clearly over 0.0050; collecting" in unsure.reason


def test_the_error_margin_is_relative_above_the_floor():
    # control 9.1 %: the margin is 25 % of it (2.3 points), so 9.9 % is within it
    r = by_gate("canary", sample(100000, errors=11000), sample(100000, errors=10000))["error_rate"]
    assert r.figures["margin"] == pytest.approx(0.25 * 10000 / 110000, abs=1e-4) and r.verdict == "pass"


def test_an_excess_over_the_margin_that_is_not_yet_clear_waits_instead_of_passing():
    # the case the old gate passed: 20 % vs 6.7 % no-answer on 60 inferences each (z < 2.33)
    g = Gates(min_inferences=50)
    r = by_gate("canary", sample(60, no_answer=12), sample(60, no_answer=4), g)["no_answer_rate"]
    assert r.verdict == "wait" and r.figures["low"] < 0.05 < r.figures["high"]
    clear = by_gate("canary", sample(4000, no_answer=800), sample(4000, no_answer=268), g)["no_answer_rate"]
    assert clear.verdict == "fail" and clear.figures["candidate"] == 0.2 and clear.figures["control"] == 0.067


def test_one_busy_noisy_device_does_not_fail_a_candidate_but_the_same_excess_on_every_device_does():
    rng = np.random.default_rng(2)
    control = devices(list(rng.uniform(0.06, 0.14, 30)), 2000)
    # nine ordinary devices and one busy device in a noisy room: 60 % no-answer on 20 000 inferences
    noisy = devices([0.1] * 9 + [0.6], [2000] * 9 + [20000])
    r = by_gate("canary", noisy, control)["no_answer_rate"]
    assert r.figures["candidate"] > 0.35  # pooled over inferences it looks far worse than 10 %
    p_t, p_c, n_t, n_c = r.figures["candidate"], r.figures["control"], r.figures["candidate_n"], r.figures["control_n"]
    naive_z = (p_t - p_c - 0.05) / math.sqrt(p_t * (1 - p_t) / n_t + p_c * (1 - p_c) / n_c)
    assert naive_z > 50  # an inference-level test would roll it back at once
    assert r.verdict == "wait"  # with devices as the unit: one device in ten is not evidence
    everywhere = devices([0.36] * 10, 2000)
    assert by_gate("canary", everywhere, control)["no_answer_rate"].verdict == "fail"


def test_a_comparison_waits_until_enough_devices_report():
    r = by_gate("canary", sample(50000, devices=1), sample(50000, devices=2))["error_rate"]
    assert r.verdict == "wait" and "3 devices report, needs 4" in r.reason
    nothing = by_gate("canary", sample(5000), Sample())["error_rate"]
    assert nothing.verdict == "wait" and "no control inferences to compare with yet" in nothing.reason


def test_feedback_can_fail_a_stage_but_never_holds_one_unless_required():
    g = Gates(min_feedback=30)
    worse = by_gate("canary", sample(4000, feedback=(400, 240)), sample(4000, feedback=(400, 360)), g)
    assert worse["feedback_accuracy"].verdict == "fail"
    assert "feedback accuracy 0.6000 vs control 0.9000" in worse["feedback_accuracy"].reason
    sparse = by_gate("canary", sample(4000, feedback=(40, 34)), sample(4000, feedback=(200, 180)), g)
    assert sparse["feedback_accuracy"].verdict == "skip" and "never holds a stage" in sparse["feedback_accuracy"].reason
    strict = by_gate("canary", sample(4000, feedback=(40, 34)), sample(4000, feedback=(200, 180)),
                     Gates(min_feedback=30, feedback_required=True))
    assert strict["feedback_accuracy"].verdict == "wait" and overall(list(strict.values())) == "wait"
    none = by_gate("canary", sample(4000), sample(4000, feedback=(200, 180)))["feedback_accuracy"]
    assert none.verdict == "skip" and none.reason == "no human feedback on the candidate"


# --- latency -------------------------------------------------------------------------------------


def _bin(ms: float) -> int:
    return int(np.searchsorted(LATENCY_MS_EDGES, ms, side="right"))


def test_a_nine_times_slower_fast_model_fails_the_latency_gate():
    fast, slow = sample(4000, latency_bin=_bin(4.5)), sample(4000, latency_bin=_bin(40))
    r = by_gate("canary", slow, fast)["latency"]
    assert r.verdict == "fail" and r.figures["ratio_low"] > 5
    assert "over the margin" in r.reason and "fails only beyond 1.5x and +10 ms" in r.reason


def test_latency_fails_only_when_worse_by_the_ratio_and_by_the_floor():
    # a 5 ms model taking 7.5 ms: 1.8x but +3 ms, under the floor
    r = by_gate("canary", sample(4000, latency_bin=_bin(7.5)), sample(4000, latency_bin=_bin(4.2)))["latency"]
    assert r.verdict == "pass" and r.figures["ratio"] > 1.5
    # a 130 ms model taking 175 ms: +45 ms but only 1.33x
    slower = sample(4000, latency_bin=_bin(130))
    for t in slower.histograms["latency_ms"]:
        t[_bin(130)], t[_bin(240)] = 200, 200
    r = by_gate("canary", slower, sample(4000, latency_bin=_bin(130)))["latency"]
    assert r.verdict == "pass" and 1.2 < r.figures["ratio"] < 1.5
    # 1.8x of 130 ms: over both
    r = by_gate("canary", sample(4000, latency_bin=_bin(240)), sample(4000, latency_bin=_bin(130)))["latency"]
    assert r.verdict == "fail"


# --- label mix -----------------------------------------------------------------------------------


def _js(a: np.ndarray, b: np.ndarray) -> float:
    """Jensen–Shannon distance, base 2 (what the replaced gate compared with 0.25)."""
    p, q = a / a.sum(), b / b.sum()
    m = (p + q) / 2

    def kl(x: np.ndarray) -> float:
        on = x > 0
        return float(np.sum(x[on] * np.log2(x[on] / m[on])))

    return math.sqrt(kl(p) / 2 + kl(q) / 2)


def test_label_mix_noise_at_small_samples_is_not_a_failure():
    """The demo's kws:2 was rolled back at 'distance 0.296 > 0.25' on 60 inferences: that is
    what two draws of the same mix look like at that size."""
    rng = np.random.default_rng(4)
    mix = np.array([0.3, 0.2, 0.15, 0.1, 0.1, 0.05, 0.05, 0.05])
    labels = [f"w{i}" for i in range(len(mix))]
    g = Gates(min_inferences=50)
    tried = 0
    for _ in range(200):
        a, b = rng.multinomial(60, mix), rng.multinomial(60, mix)
        if _js(a, b) < 0.25:
            continue
        tried += 1
        t = sample(60, labels=dict(zip(labels, map(int, a))), devices=6)
        c = sample(60, labels=dict(zip(labels, map(int, b))), devices=6)
        assert by_gate("canary", t, c, g)["label_mix"].verdict != "fail"
    assert tried >= 20  # the old gate would have failed every one of these


def test_label_mix_passes_alike_mixes_and_fails_a_shifted_one_naming_the_label():
    even = by_gate("canary", sample(20000), sample(20000))["label_mix"]
    assert even.verdict == "pass" and set(even.figures["by_label"]) == {"yes", "no"}
    skewed = by_gate("canary", sample(4000, labels={"yes": 3000, "no": 1000}), sample(4000))["label_mix"]
    assert skewed.verdict == "wait" and "'yes' 0.750 vs control 0.500" in skewed.reason
    assert "waiting for feedback accuracy" in skewed.reason and skewed.figures["by_label"]["yes"]["low"] > 0.1


def test_a_moved_label_mix_is_explained_by_feedback_or_held_never_failed_alone():
    """A better model answers differently: feedback decides whether the new mix is right."""
    moved = dict(labels={"yes": 3000, "no": 1000})
    right = by_gate("canary", sample(4000, feedback=(400, 390), **moved), sample(4000, feedback=(400, 330)))
    assert right["label_mix"].verdict == "pass" and right["label_mix"].figures["explained_by"] == "feedback_accuracy"
    assert overall(list(right.values())) == "pass"
    wrong = by_gate("canary", sample(4000, feedback=(400, 240), **moved), sample(4000, feedback=(400, 360)))
    assert wrong["feedback_accuracy"].verdict == "fail" and overall(list(wrong.values())) == "fail"
    silent = by_gate("canary", sample(4000, **moved), sample(4000))
    assert silent["label_mix"].verdict == "wait" and overall(list(silent.values())) == "wait"


def _hearing(mixes: np.ndarray, n: int, rng, shift: np.ndarray | None = None, prefix: str = "d") -> Sample:
    """Devices that each hear their own mix of words (``shift`` added to every device's shares)."""
    per = {}
    for i, mix in enumerate(mixes):
        p = mix if shift is None else np.clip(mix + shift, 0, None) / np.clip(mix + shift, 0, None).sum()
        counts = rng.multinomial(n, p)
        t = Totals(windows=1, inferences=n, labels={f"w{k}": int(c) for k, c in enumerate(counts) if c})
        t.latency_ms[10] = n
        per[f"{prefix}{i:02d}"] = t
    return Sample.from_totals(per)


def test_each_device_against_its_own_baseline_sees_through_what_devices_hear():
    rng = np.random.default_rng(5)
    mixes = rng.dirichlet(np.full(6, 1.5), 20)  # every device hears its own words: shares differ by ~15 points
    t_mix, c_mix = mixes[:10], mixes[10:]
    after_t, after_c = _hearing(t_mix, 2000, rng), _hearing(c_mix, 2000, rng, prefix="c")
    before_t, before_c = _hearing(t_mix, 2000, rng), _hearing(c_mix, 2000, rng, prefix="c")
    groups = by_gate("canary", after_t, after_c)["label_mix"]
    assert groups.verdict == "wait" and groups.figures["design"] == "groups"  # 10 vs 10 devices: too spread
    own = by_gate("canary", after_t, after_c, before=(before_t, before_c))["label_mix"]
    assert own.verdict == "pass" and own.figures["design"] == "groups+own_baseline"
    # the same devices, a candidate that moves 15 points of every device's answers to one word
    shift = np.array([0.15, -0.03, -0.03, -0.03, -0.03, -0.03])
    moved = _hearing(t_mix, 2000, rng, shift)
    worse = by_gate("canary", moved, after_c, before=(before_t, before_c))["label_mix"]
    assert worse.verdict == "wait" and "'w0'" in worse.reason and "waiting for feedback" in worse.reason
    # no device left on the old model: each device against its own recent windows on the old model
    # (the control window), not against before the rollout
    recent = _hearing(t_mix, 2000, rng)
    alone = by_gate("canary", after_t, recent, before=(before_t, None), historical=True)["label_mix"]
    assert alone.verdict == "pass" and alone.figures["design"] == "groups+own_baseline"


def test_a_drift_since_before_the_rollout_is_not_blamed_on_the_candidate_once_no_control_is_left():
    """The demo's story: noise arrives, a model is retrained and rolled out; in its 100 % stage
    the old model's recent windows are the control, and the no-answer rate of every device rose
    with the noise since before the rollout. An equal candidate must not fail."""
    rng = np.random.default_rng(11)
    base = rng.uniform(0.30, 0.31, 8)  # healthy no-answer rates, device by device
    before = devices(list(base), 3000)
    noisy = list(base + 0.25)  # everyone's rate rose with the noise
    candidate = devices([p + rng.normal(0, 0.005) for p in noisy], 3000)  # as good as the old model now
    control = devices(noisy, 3000)
    verdict = by_gate("canary", candidate, control, before=(before, None), historical=True)["no_answer_rate"]
    assert verdict.verdict == "pass" and verdict.figures["design"] == "groups+own_baseline", verdict.reason


# --- guard stages and the budget -----------------------------------------------------------------


def test_a_guard_stage_passes_within_twice_the_margin_but_fails_on_the_margin_itself():
    t, c = sample(20000, no_answer=3400), sample(20000, no_answer=2000)  # 17 % vs 10 %: excess 0.07 ± 0.015
    assert by_gate("canary", t, c)["no_answer_rate"].verdict == "fail"
    assert by_gate("canary", t, c, guard=True)["no_answer_rate"].verdict == "fail"
    t = sample(20000, no_answer=2800)  # 14 %: excess 0.04 ± 0.015, not yet within 0.05
    assert by_gate("canary", t, c)["no_answer_rate"].verdict == "wait"
    guarded = by_gate("canary", t, c, guard=True)["no_answer_rate"]
    assert guarded.verdict == "pass" and guarded.figures["pass_margin"] == 0.1 and "guard stage" in guarded.reason


def test_the_error_budget_is_split_over_stages_and_gates():
    g = Gates()
    assert gate_alpha(g, "canary", 3) == pytest.approx(0.05 / 3 / 5)
    assert gate_alpha(g, "shadow", 4) == pytest.approx(0.05 / 4 / 3)
    r = by_gate("canary", sample(50000), sample(50000))
    assert r["error_rate"].figures["alpha"] == pytest.approx(ALPHA, abs=1e-6)
    assert r["label_mix"].figures["alpha"] == pytest.approx(ALPHA, abs=1e-6)  # split over its 2 labels inside


def test_settings_of_older_rollouts_are_read_and_a_zero_timeout_becomes_finite():
    old = {"min_inferences": 60, "z_fail": 2.33, "max_label_distance": 0.3, "latency_ratio_floor_ms": 50.0}
    assert Gates.from_dict(old) == Gates(min_inferences=60)
    assert Policy.from_dict({"deadline_s": 30.0, "stage_timeout_s": 0.0}).stage_timeout_s == DEFAULT_STAGE_TIMEOUT_S
    # a rollout persisted before this version (its JSON as the store keeps it) loads and carries on
    doc = make_rollout().to_dict()
    for new in ("started_t", "baseline_until_t", "previous_stage_started_t"):
        del doc[new]
    doc.update(control_ref=None, gates={**old, "max_latency_p99_ms": 500.0},
               policy={**doc["policy"], "stage_timeout_s": 0.0})
    r = Rollout.from_dict(doc)
    assert r.gates == Gates(min_inferences=60) and r.policy.stage_timeout_s == DEFAULT_STAGE_TIMEOUT_S
    assert r.sources().before_since is None  # no baseline period known: groups only


# --- shadow --------------------------------------------------------------------------------------


def _failing_shadow(devices_: int = 10, per_device: int = 40) -> Sample:
    per = {}
    for i in range(devices_):
        t = Totals(windows=4, inferences=per_device, labels={"yes": per_device}, shadow_errors=per_device,
                   shadow_active_labels={"yes": per_device})
        t.latency_ms[8] = per_device
        per[f"d{i}"] = t
    return Sample.from_totals(per)


def test_a_shadow_candidate_that_fails_on_every_utterance_fails_the_stage():
    s = _failing_shadow()
    results = by_gate("shadow", s, s)
    err = results["shadow_errors"]
    assert err.verdict == "fail" and overall(list(results.values())) == "fail"
    assert err.reason.startswith("the candidate failed on 400 of 400 shadow inferences (100.0%) vs the active "
                                 "model's 0.0% on 10 device(s): worse by at least")
    assert results["shadow_agreement"].verdict == "wait"  # nothing was compared: the errors gate decides


def test_shadow_agreement_passes_on_its_lower_bound_and_fails_on_its_upper_bound():
    high = by_gate("shadow", sample(4000, shadow_agree=3800), Sample())
    assert high["shadow_agreement"].verdict == "pass" and high["shadow_agreement"].figures["low"] >= 0.8
    assert overall(list(high.values())) == "pass"
    low = by_gate("shadow", sample(4000, shadow_agree=2800), Sample())["shadow_agreement"]
    assert low.verdict == "fail" and low.figures["high"] < 0.8
    near = by_gate("shadow", sample(400, shadow_agree=320), Sample())["shadow_agreement"]
    assert near.verdict == "wait" and near.figures["low"] < 0.8 < near.figures["high"]


def test_the_shadow_figures_keep_a_per_keyword_disagreement_table():
    w = make_window("d1", labels={"yes": 6, "no": 4})
    w["shadow_model"] = "c" * 64
    w["shadow"] = {"compared": 9, "agree": 7, "errors": 1, "confidence": [0] * 11, "labels": {"yes": 8, "up": 1}}
    s = Sample.of([w] * 30)
    assert s.total.shadow_errors == 30 and s.total.shadow_attempts == 300
    table = by_gate("shadow", s, s)["shadow_agreement"].figures["by_label"]
    assert table == {"no": {"active": 120, "candidate": 0, "disagree_at_least": 120},
                     "up": {"active": 0, "candidate": 30, "disagree_at_least": 30},
                     "yes": {"active": 180, "candidate": 240, "disagree_at_least": 60}}


def test_a_sample_keeps_devices_apart_and_sums_windows_of_any_model():
    a = make_window("d1", seq=0, model="a" * 64, labels={"yes": 6, "no": 4})
    b = make_window("d2", seq=0, model="b" * 64, labels={"yes": 1, "up": 9})
    b["software"]["errors"] = 2
    s = Sample.of([a, b, make_window("d1", seq=1, labels={"no": 5})])
    assert s.ids == ["d1", "d2"] and list(s.column("inferences")) == [15, 10]
    assert list(s.column("attempts")) == [15, 12]
    t = s.total
    assert (t.windows, t.inferences, t.errors, t.labels) == (3, 25, 2, {"yes": 7, "no": 9, "up": 9})
    assert s.subset(np.array([False, True])).total.labels == {"yes": 1, "up": 9}
