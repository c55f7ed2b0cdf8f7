"""Rollout gates: is the candidate no worse than the control, however often we look?

``evaluate`` checks one stage's treatment ``Sample`` against its control and returns one
``GateResult`` per gate: ``pass``, ``fail``, ``wait`` (keep collecting) or ``skip`` (no data
of that kind and the gate is optional). Each result carries its figures and a one-line reason.

Every gate is a non-inferiority comparison on an anytime-valid confidence sequence
(``cloud.rollout.sequential``) with the device as the unit of variance: it passes when the
whole interval for "how much worse than control" is inside the margin, fails when the whole
interval is beyond it, and waits otherwise. A canary comparison intersects two sequences,
each on half the gate's budget (``checks.Compare``): candidate devices against control
devices, and each device against its own baseline on the old model before the rollout (less
the control devices' change), which sees through devices that differ a lot. A canary step
on under ``guard_below_percent`` of the cohort, with a larger step after it, is a guard
stage: it still fails on the margins but passes within ``guard_margin_factor`` times them,
as its few devices cannot resolve the margins and the larger step can. The gates:

    canary / blue-green (candidate devices against control devices; with no control devices
    left, against the cohort's windows on the old model before the stage):
      error_rate         failed inferences / tries; margin max(floor, (ratio − 1) · control)
      latency            shift of ln(model ms); fail only if worse by more than the ratio AND
                         by more than floor ms, i.e. margin max(ln ratio, ln(1 + floor / control))
      no_answer_rate     low-confidence answers / inferences; margin in points
      label_mix          each label's share of answers, both ways; margin in points, the
                         error budget split over the labels (Bonferroni). A better model answers
                         differently, so a moved label mix is a question feedback answers: it
                         never fails a stage by itself — it holds it until the candidate's
                         feedback accuracy is shown no worse (pass) or worse (that gate fails)
      feedback_accuracy  wrong answers among human labels; margin in points; sparse and late,
                         so unless ``feedback_required`` it can fail a stage but never holds one
    shadow (paired: the candidate and the active model on the same utterances, per device):
      shadow_errors      candidate failures − active failures; margin as error_rate
      shadow_agreement   share of answers equal to the active's: pass when the lower bound is at
                         least the minimum, fail when the upper bound is below it
      shadow_latency     as latency, candidate against active on the same device

The error budget. ``false_rollback_budget`` (α, default 5 %) is the chance that a candidate
as good as its control is rolled back by some gate somewhere in the plan. It is split evenly
over the plan's stages and then over the gates of each stage (Bonferroni: valid whatever
the dependence between stages and gates): with the default canary plan 5 → 25 → 100 % and
five gates, each gate's confidence sequence has α = 0.05 / 3 / 5 ≈ 0.0033. A two-sided
sequence at that level also bounds the chance that a candidate worse than a margin passes
that gate. Waiting is free (the sequences hold at every look); a stage that cannot decide by
its timeout fails closed (``cloud.rollout.core``), which the budget does not cover: it is
the price of too little traffic for the margins, shown by ``scripts/bench_gates.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from cloud.rollout import checks, shadow_checks
from cloud.rollout.checks import Compare, GateResult, Judge
from cloud.rollout.sample import Sample, Totals
from shared.config import load_config, setting

__all__ = ["Gates", "GateResult", "Judge", "Sample", "Totals", "evaluate", "overall", "gate_alpha", "GATES_BY_KIND",
           "VERDICTS"]

VERDICTS = ("pass", "fail", "wait", "skip")
GATES_BY_KIND = {
    "shadow": ("shadow_errors", "shadow_agreement", "shadow_latency"),
    "canary": ("error_rate", "latency", "no_answer_rate", "label_mix", "feedback_accuracy"),
    "blue-green": ("error_rate", "latency", "no_answer_rate", "label_mix", "feedback_accuracy"),
}
CHECKS = {
    "shadow_errors": shadow_checks.shadow_errors, "shadow_agreement": shadow_checks.shadow_agreement,
    "shadow_latency": shadow_checks.shadow_latency,
    "error_rate": checks.error_rate, "latency": checks.latency, "no_answer_rate": checks.no_answer_rate,
    "label_mix": checks.label_mix, "feedback_accuracy": checks.feedback_accuracy,
}


@dataclass
class Gates:
    """Margins, the error budget and minimum samples; a TOML file given with ``--gates`` overrides them."""

    false_rollback_budget: float = setting(0.05, "Chance that a candidate as good as its control is rolled back "
                                                 "by a gate anywhere in the plan (split over stages and gates).",
                                           ge=1e-6, le=0.5)
    min_inferences: int = setting(200, "Inferences needed on each side before a gate decides.", ge=1, le=10**9)
    min_devices: int = setting(4, "Devices, candidate and control together, before a comparison decides (the "
                                  "spread between devices is estimated from them).", ge=2, le=10**6)
    max_error_rate_ratio: float = setting(1.25, "Error rate above control by more than this factor fails "
                                                "(if also over the floor).", ge=1.0, le=100.0)
    error_rate_floor: float = setting(0.005, "Error rate above control by less than this (absolute) never fails.",
                                      ge=0.0, le=1.0)
    max_no_answer_increase: float = setting(0.05, "Low-confidence rate above control by more than this fails.",
                                            ge=0.0, le=1.0)
    max_latency_ratio: float = setting(1.5, "Model latency above control by more than this factor fails (if also "
                                            "over the floor).", ge=1.0, le=100.0)
    latency_floor_ms: float = setting(10.0, "Model latency above control by less than this (ms) never fails.",
                                      ge=0.0, le=1e6)
    max_label_share_change: float = setting(0.1, "A label's share of answers differing from control by more "
                                                 "than this fails.", ge=0.0, le=1.0)
    min_shadow_compared: int = setting(200, "Shadow comparisons needed before the shadow gates decide.",
                                       ge=1, le=10**9)
    min_shadow_agreement: float = setting(0.8, "Shadow agreement with the active model below this fails.",
                                          ge=0.0, le=1.0)
    min_feedback: int = setting(30, "Human labels needed on each side before the feedback gate decides.",
                                ge=1, le=10**9)
    max_feedback_accuracy_drop: float = setting(0.05, "Feedback accuracy below control by more than this fails.",
                                                ge=0.0, le=1.0)
    feedback_required: bool = setting(False, "Hold a stage until feedback accuracy passes (otherwise feedback "
                                             "can fail a stage but, being sparse, never holds one).")
    guard_below_percent: float = setting(25.0, "A canary stage on less of the cohort than this, followed by a larger "
                                               "one, is a guard stage (it passes on wider margins).", ge=0.0, le=100.0)
    guard_margin_factor: float = setting(2.0, "A guard stage passes when the candidate is within this many times "
                                              "the margins (it still fails on the margins themselves).",
                                         ge=1.0, le=100.0)

    @classmethod
    def load(cls, path=None, **overrides) -> "Gates":
        return load_config(cls, file=path, env={}, overrides=overrides)

    @classmethod
    def from_dict(cls, d: dict) -> "Gates":
        """From a persisted rollout; settings of older versions that no longer exist are dropped."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def gate_alpha(gates: Gates, kind: str, stages: int) -> float:
    """The error budget of one gate's confidence sequence in a plan of ``stages`` stages."""
    return gates.false_rollback_budget / max(1, stages) / len(GATES_BY_KIND[kind])


def evaluate(kind: str, treatment: Sample, control: Sample, gates: Gates, *, stages: int = 1,
             guard: bool = False, before: tuple[Sample | None, Sample | None] = (None, None),
             historical: bool = False) -> list[GateResult]:
    """All gates of one stage kind. ``shadow`` reads the treatment's paired shadow figures
    (``control`` is not used: the active model on the same utterances is the control).
    ``guard``: a guard stage, which passes on margins ``guard_margin_factor`` times wider.
    ``before``: the treatment's and control's devices on their baseline model before the
    rollout, to compare each device with itself (``checks.Compare``); ``historical``: the
    control is the cohort before this stage."""
    judge = Judge(gate_alpha(gates, kind, stages), gates.guard_margin_factor if guard else 1.0)
    if kind == "shadow":
        return [CHECKS[name](treatment, gates, judge) for name in GATES_BY_KIND[kind]]
    cmp = Compare(treatment, control, before[0], before[1], historical)
    return explain_label_mix([CHECKS[name](cmp, gates, judge) for name in GATES_BY_KIND[kind]])


def explain_label_mix(results: list[GateResult]) -> list[GateResult]:
    """A label mix beyond its margin holds the stage (wait) unless feedback accuracy shows the
    candidate no worse than control, which explains it (pass); it never fails on its own."""
    by_gate = {r.gate: r for r in results}
    mix, feedback = by_gate.get("label_mix"), by_gate.get("feedback_accuracy")
    if mix is None or mix.verdict not in ("fail", "wait"):
        return results
    if feedback is not None and feedback.verdict == "pass":
        moved = mix.verdict == "fail"
        new = GateResult(mix.gate, "pass", f"{mix.reason}; {'explained' if moved else 'not needed'}: {feedback.reason}",
                         {**mix.figures, "explained_by": "feedback_accuracy"})
    elif mix.verdict == "fail":
        new = GateResult(mix.gate, "wait", f"{mix.reason}; waiting for feedback accuracy to say whether the "
                                           f"candidate is right to answer differently", mix.figures)
    else:
        return results
    return [new if r is mix else r for r in results]


def overall(results: list[GateResult]) -> str:
    """``fail`` if any gate failed, ``wait`` if any still collects, else ``pass`` (skips do not hold)."""
    verdicts = {r.verdict for r in results}
    if "fail" in verdicts:
        return "fail"
    return "wait" if "wait" in verdicts else "pass"
