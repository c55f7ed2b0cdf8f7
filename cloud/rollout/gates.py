"""Rollout gates: compare what the candidate did with what the control did, in figures.

A ``Sample`` is the gate-relevant part of a set of windows (any models: latency and
confidence grids are fixed, labels are names). ``evaluate`` checks one stage's treatment
against its control and returns one ``GateResult`` per gate: ``pass``, ``fail``, ``wait``
(too few samples for a verdict) or ``skip`` (no data of that kind, and the gate is
optional). Each result carries the figures it was decided on and a one-line reason.

Absolute ceilings (error rate, latency) fail a candidate only when it is also worse than
its control (or there is none): a stage is not blamed for what the old model does too.
Rate gates fail only when the excess over control is larger than the allowed margin *and*
a one-sided two-proportion z-test says the excess is real (z above ``z_fail``), so a small
sample that happens to look bad holds rather than rolls back.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

from shared.config import setting, load_config
from shared.histogram import LATENCY_MS_EDGES, quantile

VERDICTS = ("pass", "fail", "wait", "skip")


@dataclass
class Gates:
    """Thresholds and minimum sample sizes; a TOML file given with ``--gates`` overrides them."""

    min_inferences: int = setting(200, "Inferences needed on each side before rate gates decide.", ge=1, le=10**9)
    max_error_rate: float = setting(0.02, "Candidate inference error rate above this fails.", ge=0.0, le=1.0)
    max_error_rate_increase: float = setting(0.01, "Error rate above control by more than this fails.", ge=0.0, le=1.0)
    max_no_answer_increase: float = setting(0.10, "Low-confidence rate above control by more than this fails.",
                                            ge=0.0, le=1.0)
    max_latency_p99_ms: float = setting(500.0, "Candidate model latency p99 above this (ms) fails.", ge=0.1, le=1e6)
    max_latency_p99_ratio: float = setting(2.0, "Candidate p99 above control p99 times this fails.", ge=1.0, le=100.0)
    latency_ratio_floor_ms: float = setting(50.0, "The ratio gate ignores a candidate p99 under this (ms): on a "
                                                  "busy device a few ms of scheduling noise doubles a small p99.",
                                            ge=0.0, le=1e6)
    max_label_distance: float = setting(0.25, "Jensen-Shannon distance (base 2) of the label mix against control "
                                              "above this fails.", ge=0.0, le=1.0)
    min_shadow_compared: int = setting(200, "Shadow comparisons needed before the agreement gate decides.",
                                       ge=1, le=10**9)
    min_shadow_agreement: float = setting(0.80, "Shadow agreement with the active model below this fails.",
                                          ge=0.0, le=1.0)
    min_feedback: int = setting(30, "Human labels needed on each side before the feedback gate decides.",
                                ge=1, le=10**9)
    max_feedback_accuracy_drop: float = setting(0.05, "Feedback accuracy below control by more than this fails.",
                                                ge=0.0, le=1.0)
    z_fail: float = setting(2.33, "One-sided z a rate excess must reach to fail (2.33 ≈ 1 % false alarms).",
                            ge=0.0, le=10.0)

    @classmethod
    def load(cls, path=None, **overrides) -> "Gates":
        return load_config(cls, file=path, env={}, overrides=overrides)


@dataclass
class Sample:
    """Summed gate inputs of a set of windows."""

    windows: int = 0
    inferences: int = 0
    errors: int = 0
    no_answer: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    latency_ms: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_MS_EDGES) + 1))
    shadow_latency_ms: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_MS_EDGES) + 1))
    shadow_compared: int = 0
    shadow_agree: int = 0
    feedback_n: int = 0
    feedback_correct: int = 0

    def add(self, w: dict) -> "Sample":
        sw, out = w["software"], w["output"]
        self.windows += w.get("n_windows", 1)
        self.inferences += sw["inferences"]
        self.errors += sw["errors"]
        self.no_answer += out["no_answer"]
        for k, v in out["labels"].items():
            self.labels[k] = self.labels.get(k, 0) + v
        for stage, target in (("model", self.latency_ms), ("shadow", self.shadow_latency_ms)):
            for i, c in enumerate(sw["latency_ms"].get(stage, ())[:len(target)]):
                target[i] += c
        shadow = w.get("shadow") or {}
        self.shadow_compared += shadow.get("compared", 0)
        self.shadow_agree += shadow.get("agree", 0)
        for truth, pred, n in w["feedback"]["pairs"]:
            self.feedback_n += n
            self.feedback_correct += n if truth == pred else 0
        return self

    @classmethod
    def of(cls, windows: Iterable[dict]) -> "Sample":
        s = cls()
        for w in windows:
            s.add(w)
        return s

    @property
    def error_rate(self) -> float | None:
        return _ratio(self.errors, self.inferences + self.errors)

    @property
    def no_answer_rate(self) -> float | None:
        return _ratio(self.no_answer, self.inferences)

    @property
    def latency_p99_ms(self) -> float | None:
        return quantile(LATENCY_MS_EDGES, self.latency_ms, 0.99)

    @property
    def shadow_latency_p99_ms(self) -> float | None:
        return quantile(LATENCY_MS_EDGES, self.shadow_latency_ms, 0.99)

    @property
    def shadow_agreement(self) -> float | None:
        return _ratio(self.shadow_agree, self.shadow_compared)

    @property
    def feedback_accuracy(self) -> float | None:
        return _ratio(self.feedback_correct, self.feedback_n)


@dataclass(frozen=True)
class GateResult:
    gate: str
    verdict: str
    reason: str
    figures: dict

    def as_dict(self) -> dict:
        return {"gate": self.gate, "verdict": self.verdict, "reason": self.reason, "figures": self.figures}


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _r(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)


def excess_z(k_t: int, n_t: int, k_c: int, n_c: int, margin: float) -> float:
    """One-sided z of ``p_t - p_c > margin`` (pooled variance; 0 when undefined)."""
    if not n_t or not n_c:
        return 0.0
    p_t, p_c = k_t / n_t, k_c / n_c
    pooled = (k_t + k_c) / (n_t + n_c)
    var = pooled * (1 - pooled) * (1 / n_t + 1 / n_c)
    diff = p_t - p_c - margin
    if var <= 0:
        return math.inf if diff > 0 else 0.0
    return diff / math.sqrt(var)


def js_distance(a: dict[str, int], b: dict[str, int]) -> float | None:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two label count maps."""
    na, nb = sum(a.values()), sum(b.values())
    if not na or not nb:
        return None
    div = 0.0
    for k in set(a) | set(b):
        p, q = a.get(k, 0) / na, b.get(k, 0) / nb
        m = (p + q) / 2
        if p:
            div += 0.5 * p * math.log2(p / m)
        if q:
            div += 0.5 * q * math.log2(q / m)
    return math.sqrt(max(div, 0.0))


def _rate_gate(name: str, k_t: int, n_t: int, k_c: int, n_c: int, g: Gates, *, ceiling: float | None,
               margin: float) -> GateResult:
    p_t, p_c = _ratio(k_t, n_t), _ratio(k_c, n_c)
    figures = {"candidate": _r(p_t), "control": _r(p_c), "candidate_n": n_t, "control_n": n_c, "margin": margin}
    if n_t < g.min_inferences:
        return GateResult(name, "wait", f"candidate has {n_t} inferences, needs {g.min_inferences}", figures)
    if ceiling is not None and p_t > ceiling and (p_c is None or n_c < g.min_inferences or p_t > p_c):
        figures["ceiling"] = ceiling
        return GateResult(name, "fail", f"{name} {p_t:.4f} is above the ceiling {ceiling}", figures)
    if n_c == 0:
        return GateResult(name, "pass", f"{name} {p_t:.4f} (no control to compare with)", figures)
    if n_c < g.min_inferences:
        return GateResult(name, "wait", f"control has {n_c} inferences, needs {g.min_inferences}", figures)
    z = excess_z(k_t, n_t, k_c, n_c, margin)
    figures["z"] = _r(z, 2) if math.isfinite(z) else 99.0
    if p_t - p_c > margin and z >= g.z_fail:
        return GateResult(name, "fail", f"{name} {p_t:.4f} vs control {p_c:.4f}: excess {p_t - p_c:.4f} > "
                                        f"{margin} (z={figures['z']}, n={n_t}/{n_c})", figures)
    return GateResult(name, "pass", f"{name} {p_t:.4f} vs control {p_c:.4f}", figures)


def error_rate_gate(t: Sample, c: Sample, g: Gates) -> GateResult:
    return _rate_gate("error_rate", t.errors, t.inferences + t.errors, c.errors, c.inferences + c.errors, g,
                      ceiling=g.max_error_rate, margin=g.max_error_rate_increase)


def no_answer_gate(t: Sample, c: Sample, g: Gates) -> GateResult:
    return _rate_gate("no_answer_rate", t.no_answer, t.inferences, c.no_answer, c.inferences, g,
                      ceiling=None, margin=g.max_no_answer_increase)


def latency_gate(t: Sample, c: Sample, g: Gates, *, shadow: bool = False) -> GateResult:
    name = "shadow_latency_p99" if shadow else "latency_p99"
    hist_t = t.shadow_latency_ms if shadow else t.latency_ms
    n_t, n_c = sum(hist_t), sum(c.latency_ms)
    p_t, p_c = quantile(LATENCY_MS_EDGES, hist_t, 0.99), c.latency_p99_ms
    figures = {"candidate_ms": _r(p_t, 2), "control_ms": _r(p_c, 2), "candidate_n": n_t, "control_n": n_c}
    if n_t < g.min_inferences:
        return GateResult(name, "wait", f"candidate has {n_t} timed inferences, needs {g.min_inferences}", figures)
    worse = n_c < g.min_inferences or p_c is None or p_t > p_c
    if p_t > g.max_latency_p99_ms and worse:  # over budget, and no better than what runs now
        return GateResult(name, "fail", f"{name} {p_t:.1f} ms is above the ceiling {g.max_latency_p99_ms} ms",
                          figures)
    if n_c >= g.min_inferences and p_c and p_t > p_c * g.max_latency_p99_ratio and p_t >= g.latency_ratio_floor_ms:
        return GateResult(name, "fail", f"{name} {p_t:.1f} ms is over {g.max_latency_p99_ratio}x the control's "
                                        f"{p_c:.1f} ms", figures)
    return GateResult(name, "pass", f"{name} {p_t:.1f} ms (control {p_c if p_c is None else round(p_c, 1)} ms)",
                      figures)


def label_mix_gate(t: Sample, c: Sample, g: Gates) -> GateResult:
    n_t, n_c = sum(t.labels.values()), sum(c.labels.values())
    d = js_distance(t.labels, c.labels)
    figures = {"distance": _r(d), "max": g.max_label_distance, "candidate": dict(t.labels),
               "control": dict(c.labels)}
    if n_c == 0:
        return GateResult("label_mix", "skip", "no control output to compare the label mix with", figures)
    if min(n_t, n_c) < g.min_inferences:
        return GateResult("label_mix", "wait", f"label counts {n_t}/{n_c}, need {g.min_inferences} each", figures)
    if d > g.max_label_distance:
        return GateResult("label_mix", "fail", f"label mix distance {d:.3f} against control is above "
                                               f"{g.max_label_distance}", figures)
    return GateResult("label_mix", "pass", f"label mix distance {d:.3f}", figures)


def feedback_gate(t: Sample, c: Sample, g: Gates) -> GateResult:
    a_t, a_c = t.feedback_accuracy, c.feedback_accuracy
    figures = {"candidate": _r(a_t), "control": _r(a_c), "candidate_n": t.feedback_n, "control_n": c.feedback_n}
    if t.feedback_n == 0:
        return GateResult("feedback_accuracy", "skip", "no human feedback on the candidate", figures)
    if t.feedback_n < g.min_feedback:
        return GateResult("feedback_accuracy", "wait",
                          f"candidate has {t.feedback_n} human labels, needs {g.min_feedback}", figures)
    if c.feedback_n < g.min_feedback:
        return GateResult("feedback_accuracy", "pass",
                          f"feedback accuracy {a_t:.3f} (control has too few labels to compare)", figures)
    # Accuracy is a rate of correct answers: compare the wrong-answer rates.
    wrong = _rate_gate("feedback_accuracy", t.feedback_n - t.feedback_correct, t.feedback_n,
                       c.feedback_n - c.feedback_correct, c.feedback_n,
                       Gates(min_inferences=g.min_feedback, z_fail=g.z_fail), ceiling=None,
                       margin=g.max_feedback_accuracy_drop)
    figures["z"] = wrong.figures.get("z")
    if wrong.verdict == "fail":
        return GateResult("feedback_accuracy", "fail", f"feedback accuracy {a_t:.3f} vs control {a_c:.3f}: drop "
                                                       f"{a_c - a_t:.3f} > {g.max_feedback_accuracy_drop} "
                                                       f"(z={figures['z']}, n={t.feedback_n}/{c.feedback_n})",
                          figures)
    return GateResult("feedback_accuracy", "pass", f"feedback accuracy {a_t:.3f} vs control {a_c:.3f}", figures)


def shadow_agreement_gate(t: Sample, g: Gates) -> GateResult:
    """Fails when even the optimistic bound (agreement + z·SE) is below the minimum; an
    agreement just under the minimum on a small sample waits for more comparisons."""
    a, n = t.shadow_agreement, t.shadow_compared
    figures = {"agreement": _r(a), "compared": n, "min": g.min_shadow_agreement}
    if n < g.min_shadow_compared:
        return GateResult("shadow_agreement", "wait", f"{n} shadow comparisons, needs {g.min_shadow_compared}",
                          figures)
    if a >= g.min_shadow_agreement:
        return GateResult("shadow_agreement", "pass", f"shadow agreement {a:.3f} over {n}", figures)
    upper = a + g.z_fail * math.sqrt(max(a * (1 - a), 1e-9) / n)
    figures["upper"] = _r(upper)
    if upper < g.min_shadow_agreement:
        return GateResult("shadow_agreement", "fail", f"shadow agreement {a:.3f} over {n} utterances is below "
                                                      f"{g.min_shadow_agreement} (upper bound {upper:.3f})", figures)
    return GateResult("shadow_agreement", "wait", f"shadow agreement {a:.3f} over {n} is under "
                                                  f"{g.min_shadow_agreement} but not clearly (upper bound "
                                                  f"{upper:.3f}); waiting for more comparisons", figures)


def evaluate(kind: str, treatment: Sample, control: Sample, gates: Gates) -> list[GateResult]:
    """All gates of one stage kind (``shadow`` reads the shadow section of the treatment windows)."""
    if kind == "shadow":
        return [shadow_agreement_gate(treatment, gates), latency_gate(treatment, control, gates, shadow=True),
                error_rate_gate(treatment, control, gates)]
    return [error_rate_gate(treatment, control, gates), latency_gate(treatment, control, gates),
            no_answer_gate(treatment, control, gates), label_mix_gate(treatment, control, gates),
            feedback_gate(treatment, control, gates)]


def overall(results: list[GateResult]) -> str:
    """``fail`` if any gate failed, ``wait`` if any still waits for samples, else ``pass``."""
    verdicts = {r.verdict for r in results}
    if "fail" in verdicts:
        return "fail"
    return "wait" if "wait" in verdicts else "pass"
