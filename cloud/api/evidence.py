"""The histograms behind an alert: each top signal's counts then, against its model's reference.

An alert's evidence names its top scores (``level_dbfs``, ``feature:logmel_mean``,
``label:yes``, ``no_answer``, ``audit_accuracy`` …), the model each was scored for, what it was
judged against (the devices' baselines, the reference, or the peers) and the steps it covered
(``t_start``, ``t_end``). For the dashboard we merge the cohort's windows of that model over
those steps and lay out the counts of the score's histogram with the bins' names, beside the
reference profile's counts, using the drift package's own reading of a window
(``cloud.drift.signals``), so the bars are exactly what was scored.
"""
from __future__ import annotations

from cloud.drift.reference import OTHER_LABEL, build_reference
from cloud.drift.signals import extract
from cloud.drift.source import profile_from_manifest
from shared.window import merge_windows

MAX_HISTOGRAMS = 4
HISTOGRAM_SIGNALS = ("labels", "confidence", "utterance_ms", "level_dbfs", "snr_db", "noise_dbfs")


def _reference_counts(profile: dict, signal: str) -> list[int] | None:
    if signal.startswith("feature:"):
        names = profile["features"]["names"]
        return list(profile["features"]["counts"][names.index(signal.split(":", 1)[1])])
    if signal == "labels":
        return list(profile["labels"]["counts"]) + [0]
    if signal in profile and isinstance(profile[signal], dict) and "counts" in profile[signal]:
        return list(profile[signal]["counts"])
    return None


def _bins(ref, signal: str) -> tuple[list[float] | None, list[str] | None]:
    """(edges, None) for histograms over edges; (None, names) for categorical signals."""
    if signal == "labels":
        return None, list(ref.label_names) + [OTHER_LABEL]
    if signal == "feedback":
        return None, ["correct", "wrong"]
    if signal == "audit":
        return None, [f"{name} {v}" for name in ref.label_names for v in ("correct", "wrong")]
    return ref.edges.get(signal), None


def histograms(alert: dict, windows_of, manifest_of, drift_config) -> list[dict]:
    """[{model, signal, score, against, edges | names, counts, reference, effect, severity}] for the top scores.

    ``windows_of(since, until)`` yields the alert cohort's windows; ``manifest_of(sha)`` returns
    a model's manifest or None.
    """
    evidence, kind = alert.get("evidence") or {}, alert["signal"]
    top = [t for t in evidence.get("top") or [] if t.get("model") and t.get("signal")][:MAX_HISTOGRAMS]
    out = []
    for t in top:
        manifest = manifest_of(t["model"])
        profile = profile_from_manifest(manifest) if manifest else None
        if profile is None:
            continue
        until = t.get("t_end") or alert.get("updated_t") or alert["opened_t"]
        since = t.get("t_start") or until - drift_config.step_of(kind) * drift_config.short_steps
        mine = [w for w in windows_of(since, until) if w.get("model") == t["model"]]
        if not mine:
            continue
        ref = build_reference(profile, t["model"], drift_config.no_answer_confidence)
        score = next((s for s in ref.scores.get(kind, []) if s.name == t["signal"]), None)
        if score is None:
            continue
        try:
            observed = extract(merge_windows(mine), ref)[kind][score.signal]
        except (KeyError, ValueError):
            continue  # a window shape this model's profile does not have
        edges, names = _bins(ref, score.signal)
        out.append({"model": t["model"], "signal": score.signal, "score": score.name, "against": t.get("against"),
                    "edges": edges, "names": names, "counts": observed.tolist(),
                    "reference": _reference_counts(profile, score.signal), "effect": t.get("effect"),
                    "severity": t.get("severity")})
    return out
