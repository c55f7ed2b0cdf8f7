"""The shadow checks: the candidate beside the active model on the same utterances, per device.

The design is paired: each device's candidate figure is compared with the active model's on
the same device and the same utterances, so a device's own noise (its room, its board) is in
both and cancels; what varies between devices is the difference, and that spread is what the
confidence sequence carries.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from cloud.rollout import sequential as sq
from cloud.rollout.checks import (GateResult, Judge, _r, latency_figures, latency_margin, latency_result, rate_margin,
                                  short_of, worse_reason)
from cloud.rollout.sample import LOG_MS_BIN_VARIANCE, Sample

if TYPE_CHECKING:
    from cloud.rollout.gates import Gates

AGREEMENT_SCALE = 0.1  # the mixing scale of the agreement sequence: decisions expected ~0.1 from the minimum


def _shadowed(s: Sample) -> Sample:
    """Devices that ran the candidate in shadow and the active model on the same utterances."""
    return s.subset((s.column("shadow_attempts") > 0) & (s.column("attempts") > 0))


def shadow_errors(s: Sample, g: "Gates", j: Judge) -> GateResult:
    """The candidate's failure rate against the active model's on the same utterances."""
    s = _shadowed(s)
    tot = s.total
    figures = {"candidate": _r(tot.shadow_error_rate), "active": _r(tot.error_rate),
               "candidate_errors": tot.shadow_errors, "candidate_n": tot.shadow_attempts, "devices": len(s)}
    short = short_of("shadow_errors", figures, tot.shadow_attempts, None, g, "shadow inferences",
                     need=g.min_shadow_compared)
    if short:
        return short
    diff = sq.paired(sq.rates(s.column("shadow_errors"), s.column("shadow_attempts")),
                     sq.rates(s.column("errors"), s.column("attempts")))
    margin = rate_margin(tot.error_rate or 0.0, g)
    iv = sq.mean(diff, scale=max(margin, 1e-3), alpha=j.alpha)
    figures.update(j.figures(iv, margin))
    verdict = j.verdict(iv, margin)
    head = (f"the candidate failed on {tot.shadow_errors} of {tot.shadow_attempts} shadow inferences "
            f"({tot.shadow_error_rate:.1%}) vs the active model's {tot.error_rate:.1%} on {len(s)} device(s)")
    return GateResult("shadow_errors", verdict, worse_reason(verdict, head, iv, margin, j), figures)


def disagreement_table(s: Sample) -> dict:
    """Per keyword: the active's and the candidate's answers on the shadowed utterances; each
    answer one model gives more often than the other is at least one disagreement."""
    tot = s.total
    table = {}
    for lab in sorted(set(tot.shadow_labels) | set(tot.shadow_active_labels)):
        a, c = tot.shadow_active_labels.get(lab, 0), tot.shadow_labels.get(lab, 0)
        table[lab] = {"active": a, "candidate": c, "disagree_at_least": abs(a - c)}
    return table


def shadow_agreement(s: Sample, g: "Gates", j: Judge) -> GateResult:
    """Share of the candidate's answers equal to the active model's, per device, against a minimum:
    pass on the lower bound, fail on the upper bound."""
    s = _shadowed(s)
    tot = s.total
    minimum = g.min_shadow_agreement
    figures = {"agreement": _r(tot.shadow_agreement), "compared": tot.shadow_compared, "devices": len(s),
               "min": minimum, "by_label": disagreement_table(s)}
    short = short_of("shadow_agreement", figures, tot.shadow_compared, None, g, "shadow comparisons",
                     need=g.min_shadow_compared)
    if short:
        return short
    iv = sq.mean(sq.rates(s.column("shadow_agree"), s.column("shadow_compared")), scale=AGREEMENT_SCALE,
                 alpha=j.alpha)
    figures.update(iv.figures(), alpha=_r(j.alpha, 6))
    head = (f"shadow agreement {tot.shadow_agreement:.3f} over {tot.shadow_compared} utterances on "
            f"{len(s)} device(s)")
    if iv.low >= minimum:
        return GateResult("shadow_agreement", "pass", f"{head}: at least {iv.low:.3f} ≥ {minimum}", figures)
    if iv.high < minimum:
        return GateResult("shadow_agreement", "fail", f"{head}: at most {iv.high:.3f}, below {minimum}", figures)
    return GateResult("shadow_agreement", "wait", f"{head}: between {iv.low:.3f} and {iv.high:.3f}, not yet clear "
                                                  f"of {minimum}; collecting", figures)


def shadow_latency(s: Sample, g: "Gates", j: Judge) -> GateResult:
    """The candidate's ln(latency) against the active model's on the same device."""
    s = s.subset((s.histograms["shadow_latency_ms"].sum(axis=1) > 0) & (s.histograms["latency_ms"].sum(axis=1) > 0))
    cand = sq.means(*s.latency_moments("shadow_latency_ms"), floor_var=LOG_MS_BIN_VARIANCE)
    active = sq.means(*s.latency_moments("latency_ms"), floor_var=LOG_MS_BIN_VARIANCE)
    figures = latency_figures(s.histograms["shadow_latency_ms"], s.histograms["latency_ms"], cand.n, active.n)
    short = short_of("shadow_latency", figures, cand.n, None, g, "timed shadow inferences",
                     need=g.min_shadow_compared)
    if short:
        return short
    tau2 = sq.between_variance(active)
    active_log_ms = float(sq.pooled_mean(active, tau2)[0])
    margin = latency_margin(active_log_ms, g)
    iv = sq.mean(sq.paired(cand, active), scale=margin, alpha=j.alpha)
    return latency_result("shadow_latency", figures, iv, margin, j, g, math.exp(active_log_ms))
