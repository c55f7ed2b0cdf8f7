"""The canary checks: candidate devices against control devices, one metric each.

Each check turns two ``Sample``s into a ``GateResult`` with a non-inferiority verdict on a
confidence sequence (``cloud.rollout.sequential``), devices as the unit. ``Judge`` carries
what the stage allows: the error budget of one check (``alpha``) and how much wider than the
margin a pass may be (``widen``: 1, or ``guard_margin_factor`` in a guard stage). Failing is
always judged on the margin itself. The gates and their margins are listed in
``cloud.rollout.gates``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from cloud.rollout import sequential as sq
from cloud.rollout.sample import LOG_MS_BIN_VARIANCE, Sample, geometric_mean_ms

if TYPE_CHECKING:
    from cloud.rollout.gates import Gates


@dataclass(frozen=True)
class GateResult:
    gate: str
    verdict: str
    reason: str
    figures: dict

    def as_dict(self) -> dict:
        return {"gate": self.gate, "verdict": self.verdict, "reason": self.reason, "figures": self.figures}


@dataclass(frozen=True)
class Judge:
    """What one check of a stage may spend and allow."""

    alpha: float
    widen: float = 1.0  # a pass may be this many times the margin (guard stages)

    def verdict(self, iv: sq.Interval, margin: float) -> str:
        """``fail`` when the whole interval is beyond the margin, ``pass`` when it is all within
        the (widened) margin, ``wait`` otherwise."""
        if iv.low > margin:
            return "fail"
        return "pass" if iv.high <= margin * self.widen else "wait"

    def both_ways(self, iv: sq.Interval, margin: float) -> str:
        """As ``verdict`` for a change that counts in either direction (a label's share)."""
        if iv.low > margin or iv.high < -margin:
            return "fail"
        return "pass" if -margin * self.widen <= iv.low and iv.high <= margin * self.widen else "wait"

    def figures(self, iv: sq.Interval, margin: float) -> dict:
        out = {**iv.figures(), "margin": _r(margin), "alpha": _r(self.alpha, 6)}
        if self.widen != 1.0:
            out["pass_margin"] = _r(margin * self.widen)
        return out


def _r(x: float | None, digits: int = 4) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), digits)


def short_of(name: str, figures: dict, t_n: int, c_n: int | None, g: "Gates", what: str = "inferences",
             need: int | None = None) -> GateResult | None:
    """A ``wait`` when a side has too few samples for the normal approximation."""
    need = g.min_inferences if need is None else need
    if t_n < need:
        return GateResult(name, "wait", f"candidate has {t_n} {what}, needs {need}", figures)
    if c_n is not None and c_n == 0:
        return GateResult(name, "wait", f"no control {what} to compare with yet", figures)
    if c_n is not None and c_n < need:
        return GateResult(name, "wait", f"control has {c_n} {what}, needs {need}", figures)
    return None


def worse_reason(verdict: str, head: str, iv: sq.Interval, margin: float, j: Judge, unit=lambda x: f"{x:.4f}"):
    if verdict == "fail":
        return f"{head}: worse by at least {unit(iv.low)}, over the margin {unit(margin)}"
    guard = f" (guard stage: {j.widen:g}x the margin {unit(margin)})" if j.widen != 1.0 else ""
    if verdict == "pass":
        return f"{head}: worse by at most {unit(iv.high)}, within {unit(margin * j.widen)}{guard}"
    return (f"{head}: worse by {unit(iv.low)} to {unit(iv.high)}, not yet within {unit(margin * j.widen)}{guard} "
            f"nor clearly over {unit(margin)}; collecting")


# --- rates -------------------------------------------------------------------------------------


def rate_margin(control_rate: float, g: "Gates") -> float:
    """An error rate may exceed control by the larger of the floor and (ratio − 1) × control."""
    return max(g.error_rate_floor, (g.max_error_rate_ratio - 1.0) * control_rate)


@dataclass(frozen=True)
class Compare:
    """The samples of one canary comparison: candidate devices and control devices in this stage,
    and (when known) the same devices on their baseline model before the rollout. ``historical``:
    the control is the cohort before this stage (no device is left on the old model)."""

    treatment: Sample
    control: Sample
    treatment_before: Sample | None = None
    control_before: Sample | None = None
    historical: bool = False

    def contrast(self, per_device, g: "Gates", *, scale: float, alpha: float) -> tuple[sq.Interval, str, int]:
        """(interval for "candidate worse by", the design, devices behind it). ``per_device``
        turns a Sample into ``sequential.Devices``.

        Two designs, each a valid confidence sequence: candidate devices against control devices
        as two groups; and, where devices have a baseline, each device against itself — its
        change since before the rollout, less the control devices' change over the same time
        (with no control devices left, its change from its own recent windows on the old model: a
        change since before the rollout alone would be confounded with time). The first is best when devices are alike, the
        second when they differ a lot (rooms, boards, what they hear). With both, each gets half
        the error budget and the verdict reads their intersection, which is valid at the whole."""
        t, c = per_device(self.treatment), per_device(self.control)
        own = self._own_baseline(per_device, t, c, g)
        if own is None:
            return sq.difference(t, c, scale=scale, alpha=alpha), "groups", t.devices + c.devices
        groups = sq.difference(t, c, scale=scale, alpha=alpha / 2)
        changes, devices = own
        mine = sq.difference(*changes, scale=scale, alpha=alpha / 2) if len(changes) == 2 else \
            sq.mean(changes[0], scale=scale, alpha=alpha / 2)
        both = sq.Interval(groups.estimate, np.maximum(groups.low, mine.low), np.minimum(groups.high, mine.high),
                           groups.se, groups.tau2)
        return both, "groups+own_baseline", max(devices, t.devices + c.devices)

    def _own_baseline(self, per_device, t: sq.Devices, c: sq.Devices, g: "Gates"):
        """(changes since the baseline: treatment's [, control's], devices) or None without enough."""
        if self.historical:
            # no control devices whose own change would cancel what changed for everyone since
            # before the rollout (a drift, a season): each device is paired with its own recent
            # windows on the old model (the control window, since the previous stage began) instead
            td = sq.change(t, c)
            return ((td,), td.devices) if td.devices >= g.min_devices else None
        if self.treatment_before is None or not len(self.treatment_before):
            return None
        td = sq.change(t, per_device(self.treatment_before))
        cb = self.control_before
        cd = sq.change(c, per_device(cb)) if cb is not None and len(cb) else sq.Devices.empty()
        if td.devices and cd.devices and td.devices + cd.devices >= g.min_devices:
            return (td, cd), td.devices + cd.devices
        return None


def _too_few_devices(name: str, figures: dict, devices: int, g: "Gates") -> GateResult | None:
    if devices < g.min_devices:
        return GateResult(name, "wait", f"{devices} devices report, needs {g.min_devices} to know their spread",
                          figures)
    return None


def _rate_check(name: str, cmp: Compare, num: str, den: str, margin_of, g: "Gates", j: Judge, *,
                need: int | None = None, what: str = "inferences", shown=lambda p: p,
                label: str | None = None) -> GateResult:
    """Candidate rate − control rate of per-device ``num / den`` (``num`` may be a function of
    a Sample), against a margin. ``shown`` maps a rate to the figure reported (accuracy is shown
    for a rate of wrong answers)."""
    col = (lambda s: num(s)) if callable(num) else (lambda s: s.column(num))
    kt, nt, kc, nc = col(cmp.treatment), cmp.treatment.column(den), col(cmp.control), cmp.control.column(den)
    p_t = kt.sum() / nt.sum() if nt.sum() else None
    p_c = kc.sum() / nc.sum() if nc.sum() else None
    figures = {"candidate": _r(None if p_t is None else shown(p_t)), "control": _r(None if p_c is None else shown(p_c)),
               "candidate_n": int(nt.sum()), "control_n": int(nc.sum()), "candidate_devices": int((nt > 0).sum()),
               "control_devices": int((nc > 0).sum())}
    short = short_of(name, figures, int(nt.sum()), int(nc.sum()), g, what, need)
    if short:
        return short
    margin = margin_of(p_c)
    iv, design, devices = cmp.contrast(lambda s: sq.rates(col(s), s.column(den), s.ids), g,
                                       scale=max(margin, 1e-3), alpha=j.alpha)
    figures["design"] = design
    short = _too_few_devices(name, figures, devices, g)
    if short:
        return short
    figures.update(j.figures(iv, margin))
    verdict = j.verdict(iv, margin)
    head = (f"{label or name} {figures['candidate']:.4f} vs control {figures['control']:.4f} "
            f"(n={int(nt.sum())}/{int(nc.sum())}, devices {figures['candidate_devices']}/{figures['control_devices']})")
    return GateResult(name, verdict, worse_reason(verdict, head, iv, margin, j), figures)


def error_rate(cmp: Compare, g: "Gates", j: Judge) -> GateResult:
    return _rate_check("error_rate", cmp, "errors", "attempts", lambda p: rate_margin(p, g), g, j)


def no_answer_rate(cmp: Compare, g: "Gates", j: Judge) -> GateResult:
    return _rate_check("no_answer_rate", cmp, "no_answer", "inferences", lambda p: g.max_no_answer_increase, g, j)


def _wrong(s: Sample) -> np.ndarray:
    return s.column("feedback_n") - s.column("feedback_correct")


def feedback_accuracy(cmp: Compare, g: "Gates", j: Judge) -> GateResult:
    """Accuracy on human labels, compared as the rate of wrong answers (worse = more wrong)."""
    name = "feedback_accuracy"
    if cmp.treatment.column("feedback_n").sum() == 0:
        return GateResult(name, "skip", "no human feedback on the candidate", {"candidate_n": 0})
    r = _rate_check(name, cmp, _wrong, "feedback_n", lambda p: g.max_feedback_accuracy_drop, g, j,
                    need=g.min_feedback, what="human labels", shown=lambda p: 1.0 - p, label="feedback accuracy")
    if r.verdict == "wait" and not g.feedback_required:
        return GateResult(name, "skip", f"{r.reason} (feedback never holds a stage: feedback_required is off)",
                          r.figures)
    return r


# --- latency -----------------------------------------------------------------------------------


def latency_margin(control_log_ms: float, g: "Gates") -> float:
    """ln-shift beyond which the candidate is worse by more than the ratio AND the floor."""
    return max(math.log(g.max_latency_ratio), math.log1p(g.latency_floor_ms / math.exp(control_log_ms)))


def latency_figures(t_hist: np.ndarray, c_hist: np.ndarray, n_t: int, n_c: int) -> dict:
    return {"candidate_ms": _r(geometric_mean_ms(t_hist.sum(axis=0)), 2),
            "control_ms": _r(geometric_mean_ms(c_hist.sum(axis=0)), 2), "candidate_n": n_t, "control_n": n_c}


def latency_result(name: str, figures: dict, iv: sq.Interval, margin: float, j: Judge, g: "Gates",
                   control_ms: float) -> GateResult:
    figures.update(j.figures(iv, margin), ratio=_r(math.exp(iv.estimate), 3), ratio_low=_r(math.exp(iv.low), 3),
                   ratio_high=_r(math.exp(iv.high), 3), max_ratio=g.max_latency_ratio, floor_ms=g.latency_floor_ms)
    verdict = j.verdict(iv, margin)
    head = f"{name} {figures['candidate_ms']} ms vs {figures['control_ms']} ms (geometric means)"

    def unit(x: float) -> str:
        return f"{math.exp(x):.2f}x (+{control_ms * math.expm1(x):.1f} ms)"

    reason = worse_reason(verdict, head, iv, margin, j, unit)
    if verdict != "pass":
        reason += f"; fails only beyond {g.max_latency_ratio:g}x and +{g.latency_floor_ms:g} ms"
    return GateResult(name, verdict, reason, figures)


def latency(cmp: Compare, g: "Gates", j: Judge) -> GateResult:
    """Shift of the candidate's ln(latency) distribution against control's, devices as the unit."""
    def per_device(s: Sample) -> sq.Devices:
        return sq.means(*s.latency_moments(), floor_var=LOG_MS_BIN_VARIANCE, ids=s.ids)

    dt, dc = per_device(cmp.treatment), per_device(cmp.control)
    figures = latency_figures(cmp.treatment.histograms["latency_ms"], cmp.control.histograms["latency_ms"],
                              dt.n, dc.n)
    short = short_of("latency", figures, dt.n, dc.n, g, "timed inferences")
    if short:
        return short
    control_log_ms = float(sq.pooled_mean(dc, sq.between_variance(dc))[0])
    margin = latency_margin(control_log_ms, g)
    iv, figures["design"], devices = cmp.contrast(per_device, g, scale=margin, alpha=j.alpha)
    return _too_few_devices("latency", figures, devices, g) or \
        latency_result("latency", figures, iv, margin, j, g, math.exp(control_log_ms))


# --- label mix ---------------------------------------------------------------------------------


def label_mix(cmp: Compare, g: "Gates", j: Judge) -> GateResult:
    """Each label's share of answers, candidate against control, both directions; the check's
    error budget is split over the labels."""
    t, c = cmp.treatment, cmp.control
    labels = sorted(set(t.label_names()) | set(c.label_names()))
    ct, cc = t.label_counts(labels), c.label_counts(labels)
    nt, nc = ct.sum(axis=1), cc.sum(axis=1)
    figures = {"candidate_n": int(nt.sum()), "control_n": int(nc.sum()), "labels": len(labels),
               "max_change": g.max_label_share_change}
    short = short_of("label_mix", figures, int(nt.sum()), int(nc.sum()), g, "answers")
    if short:
        return short
    margin, per_label = g.max_label_share_change, Judge(j.alpha / len(labels), j.widen)

    def per_device(s: Sample) -> sq.Devices:
        counts = s.label_counts(labels)
        return sq.rates(counts, counts.sum(axis=1), s.ids)

    ivs, figures["design"], devices = cmp.contrast(per_device, g, scale=max(margin, 1e-3), alpha=per_label.alpha)
    short = _too_few_devices("label_mix", figures, devices, g)
    if short:
        return short
    table, verdicts = {}, {}
    for k, lab in enumerate(labels):
        iv = ivs.column(k)
        verdicts[lab] = per_label.both_ways(iv, margin)
        table[lab] = {"candidate": _r(ct[:, k].sum() / nt.sum()), "control": _r(cc[:, k].sum() / nc.sum()),
                      **iv.figures()}
    worst = max(labels, key=lambda lab: max(abs(table[lab]["low"]), abs(table[lab]["high"])))
    figures.update(by_label=table, worst=worst, alpha=_r(j.alpha, 6))
    return GateResult("label_mix", _overall(verdicts), _label_reason(verdicts, table, worst, margin, j), figures)


def _overall(verdicts: dict[str, str]) -> str:
    values = set(verdicts.values())
    return "fail" if "fail" in values else "wait" if "wait" in values else "pass"


def _label_reason(verdicts: dict, table: dict, worst: str, margin: float, j: Judge) -> str:
    w, allowed = table[worst], margin * j.widen
    bad = [lab for lab, v in verdicts.items() if v == "fail"]
    if bad:
        return "label mix: share of " + ", ".join(
            f"{lab!r} {table[lab]['candidate']:.3f} vs control {table[lab]['control']:.3f} (change "
            f"{table[lab]['low']:+.3f} to {table[lab]['high']:+.3f})" for lab in bad[:3]) + f" is beyond ±{margin}"
    if "wait" in verdicts.values():
        return (f"label mix: share of {worst!r} changes by {w['low']:+.3f} to {w['high']:+.3f}, not yet within "
                f"±{allowed:g}; collecting")
    return (f"label mix: every label's share within ±{allowed:g} of control (largest change {worst!r} "
            f"{w['low']:+.3f} to {w['high']:+.3f})")
