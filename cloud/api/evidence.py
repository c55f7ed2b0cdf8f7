"""The histograms behind an alert: each top signal's counts now against its model's reference.

An alert's evidence names its top signals (``level_dbfs``, ``feature:mel_03``, ``labels`` …)
with the model each was scored for. For the dashboard we merge the cohort's windows of that
model over the horizon that raised the alert (ending at the alert's last update) and lay
both count vectors out with the bins' names, using the drift package's own reading of a
window (``cloud.drift.signals``), so the bars are exactly what was scored.
"""
from __future__ import annotations

from cloud.drift.signals import INPUT_SCALARS, OTHER_LABEL, extract, reference_of
from cloud.drift.source import profile_from_manifest
from shared.window import merge_windows

MAX_HISTOGRAMS = 4


def _bin_names(profile: dict, signal: str) -> tuple[list[float] | None, list[str] | None]:
    """(edges, None) for histograms over edges; (None, names) for categorical signals."""
    if signal.startswith("feature:"):
        names = profile["features"]["names"]
        return profile["features"]["edges"][names.index(signal.split(":", 1)[1])], None
    if signal in INPUT_SCALARS or signal == "confidence":
        return profile[signal]["edges"], None
    if signal == "labels":
        return None, list(profile["labels"]["names"]) + [OTHER_LABEL]
    if signal == "no_answer":
        return None, ["answered", "no answer"]
    return None, ["correct", "wrong"]  # accuracy, class:<label>


def _span_s(evidence: dict, kind: str, drift_config) -> float:
    step = drift_config.step_of(kind)
    return step * (drift_config.long_steps if evidence.get("horizon") == "long" else drift_config.short_steps)


def histograms(alert: dict, windows_of, manifest_of, drift_config) -> list[dict]:
    """[{model, signal, edges | names, counts, reference, score, threshold, severity}] for the top signals.

    ``windows_of(since, until)`` yields the alert cohort's windows; ``manifest_of(sha)`` returns
    a model's manifest or None.
    """
    evidence, kind = alert.get("evidence") or {}, alert["signal"]
    top = [t for t in evidence.get("top") or [] if t.get("model") and t.get("signal")][:MAX_HISTOGRAMS]
    if not top:
        return []
    until = alert.get("updated_t") or alert["opened_t"]
    windows = list(windows_of(until - _span_s(evidence, kind, drift_config), until))
    out = []
    for t in top:
        manifest = manifest_of(t["model"])
        profile = profile_from_manifest(manifest) if manifest else None
        mine = [w for w in windows if w.get("model") == t["model"]]
        if profile is None or not mine:
            continue
        ref = reference_of(profile, t["model"], drift_config.no_answer_confidence)
        try:
            observed = extract(merge_windows(mine), ref)[kind][t["signal"]]
        except (KeyError, ValueError):
            continue  # a signal or window shape this model's profile does not have
        edges, names = _bin_names(profile, t["signal"])
        out.append({"model": t["model"], "signal": t["signal"], "edges": edges, "names": names,
                    "counts": observed.tolist(), "reference": ref.signals[kind][t["signal"]].tolist(),
                    "score": t.get("score"), "threshold": t.get("threshold"), "severity": t.get("severity")})
    return out
