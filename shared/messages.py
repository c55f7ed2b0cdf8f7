"""Message schemas (version 1.x) and their validation.

``decode(payload, expect=None)`` turns bytes into a validated dict; ``encode`` (from
``shared.codec``) turns a dict into bytes. Readers ignore unknown fields, so a minor version
may add fields freely; removing or retyping a field needs a new major version.

Kinds and their required fields (units in the names):

    window   device, boot, seq, t_start, duration_s, audio_start_s, agent_version,
             model, automation, software, input, output, feedback   (shadow optional)
             1.1 adds (optional, absent in 1.0 = empty): output.confidence_by_label,
             output.audit_requested, input.noise_dbfs (levels of the frames the gate did not pass),
             feedback.by_model, feedback.audit, feedback.audit_by_model
             and validates shadow.errors (optional; the candidate's failures, sent since 1.0)
    state    device, online, t           (everything else optional; the last will is minimal)
    event    device, boot, seq, t, event (model, reason, detail optional)
    desired  device, rev, t              (active, shadow: model sha256s, 64 hex; automation, config,
                                          probation)
    receipt  device, t, windows          ([boot, seq] pairs the collector stored; events optional,
                                          the same for events; shared.receipts explains why)
    bundle   sha256, size, chunks, chunk_size, chunk_sha256   (chunked bundle header)
    alert    id, status, cohort, signal, pattern, opened_t
    sample   device, sha256, size_bytes, chunks, chunk_bytes, chunk_sha256, reason, captured_t,
             duration_ms   (utterance, model, label, confidence, alert, request optional;
             ``shared.samples`` holds the cross-field rules)
"""
from __future__ import annotations

import math
from typing import Any, Callable

from shared.codec import decode_raw, encode  # noqa: F401  (re-exported for callers)
from shared.errors import ProtocolError
from shared.receipts import MAX_REFS

AUTOMATION_LEVELS = ("human_only", "shadow", "assist", "partial", "full")
LATENCY_STAGES = ("vad", "model", "shadow", "decision")
EVENTS = (
    "agent_started", "bundle_received", "bundle_verified", "bundle_rejected", "model_installed",
    "model_activated", "probation_passed", "model_rolled_back", "shadow_started",
    "shadow_stopped", "automation_changed", "desired_rejected", "feedback", "capture",
)
HEALTH = ("ok", "probation", "degraded", "error")
WINDOW_VERSION = "1.1"  # the window schema the agent writes (readers accept every 1.x)


_INT_LIMIT = 2 ** 63  # every integer field fits a signed 64-bit database column


def _is_int(x) -> bool:
    return type(x) is int and -_INT_LIMIT < x < _INT_LIMIT


def _nonneg_int(x) -> bool:
    return type(x) is int and 0 <= x < _INT_LIMIT


def _number(x) -> bool:
    if type(x) is int:
        return -_INT_LIMIT < x < _INT_LIMIT
    return type(x) is float and math.isfinite(x)


def _str(x) -> bool:
    return isinstance(x, str)


def _opt_str(x) -> bool:
    return x is None or isinstance(x, str)


def _counts(x) -> bool:
    """A list of at most 4096 ``_nonneg_int``s (checked by C-level set/min/max: a window holds hundreds)."""
    return isinstance(x, list) and len(x) <= 4096 and (
        not x or (set(map(type, x)) == _JUST_INT and min(x) >= 0 and max(x) < _INT_LIMIT))


_JUST_INT = {int}


def _count_map(x) -> bool:
    return isinstance(x, dict) and len(x) <= 1024 and all(_str(k) and _nonneg_int(v) for k, v in x.items())


Check = Callable[[Any], bool]


def _check_fields(obj: dict, where: str, required: dict[str, Check], optional: dict[str, Check] | None = None) -> None:
    if not isinstance(obj, dict):
        raise ProtocolError("bad_field", f"{where} must be an object")
    for name, ok in required.items():
        if name not in obj:
            raise ProtocolError("missing_field", f"{where}.{name} is required")
        if not ok(obj[name]):
            raise ProtocolError("bad_field", f"{where}.{name} has a wrong type or value: {str(obj[name])[:60]!r}")
    for name, ok in (optional or {}).items():
        if obj.get(name) is not None and not ok(obj[name]):
            raise ProtocolError("bad_field", f"{where}.{name} has a wrong type or value: {str(obj[name])[:60]!r}")


def _device(x) -> bool:
    from shared.topics import _ID_RE

    return isinstance(x, str) and bool(_ID_RE.match(x))


def _automation(x) -> bool:
    return x in AUTOMATION_LEVELS


def _latency(x) -> bool:
    return isinstance(x, dict) and all(_str(k) and _counts(v) for k, v in x.items())


def _features(x) -> bool:
    return isinstance(x, list) and len(x) <= 256 and all(_counts(c) for c in x)


def _pairs(x) -> bool:
    return isinstance(x, list) and len(x) <= 4096 and all(
        isinstance(p, list) and len(p) == 3 and _str(p[0]) and _str(p[1]) and _nonneg_int(p[2]) for p in x
    )


def _pairs_by_model(x) -> bool:
    return isinstance(x, dict) and len(x) <= 64 and all(_str(k) and _pairs(v) for k, v in x.items())


def _hist_map(x) -> bool:
    return isinstance(x, dict) and len(x) <= 1024 and all(_str(k) and _counts(v) for k, v in x.items())


def _validate_window(m: dict) -> None:
    _check_fields(m, "window", {
        "device": _device, "boot": _nonneg_int, "seq": _nonneg_int, "t_start": _number,
        "duration_s": _number, "audio_start_s": _number, "agent_version": _str,
        "model": _opt_str, "automation": _automation,
    }, {"shadow_model": _str})
    _check_fields(m.get("software"), "window.software", {
        "frames": _nonneg_int, "voiced_frames": _nonneg_int, "dropped_frames": _nonneg_int,
        "invalid_frames": _nonneg_int, "utterances": _nonneg_int, "inferences": _nonneg_int,
        "errors": _nonneg_int, "cpu_s": _number, "rss_mb": _number, "latency_ms": _latency,
    }, {"spool_dropped_windows": _nonneg_int})
    _check_fields(m.get("input"), "window.input", {
        "utterance_ms": _counts, "level_dbfs": _counts, "snr_db": _counts,
        "clipped_utterances": _nonneg_int, "features": _features,
    }, {"noise_dbfs": _counts})
    _check_fields(m.get("output"), "window.output", {
        "labels": _count_map, "confidence": _counts, "no_answer": _nonneg_int,
        "deferred": _nonneg_int, "acted": _nonneg_int, "suggested": _nonneg_int,
    }, {"confidence_by_label": _hist_map, "audit_requested": _nonneg_int})
    by_label = m["output"].get("confidence_by_label") or {}
    if any(len(c) != len(m["output"]["confidence"]) for c in by_label.values()):
        raise ProtocolError("bad_field", "window.output.confidence_by_label must use the bins of output.confidence")
    _check_fields(m.get("feedback"), "window.feedback", {"pairs": _pairs}, {
        "by_model": _pairs_by_model, "audit": _pairs, "audit_by_model": _pairs_by_model,
    })
    if m.get("shadow") is not None:
        _check_fields(m["shadow"], "window.shadow", {
            "compared": _nonneg_int, "agree": _nonneg_int, "confidence": _counts, "labels": _count_map,
        }, {"errors": _nonneg_int})


def _validate_state(m: dict) -> None:
    _check_fields(m, "state", {"device": _device, "online": lambda x: isinstance(x, bool), "t": _number}, {
        "agent_version": _str, "boot": _nonneg_int, "automation": _automation,
        "health": lambda x: x in HEALTH, "last_error": _str, "desired_rev": _nonneg_int,
        "models": lambda x: isinstance(x, dict) and all(_str(k) and _opt_str(v) for k, v in x.items()),
    })


def _validate_event(m: dict) -> None:
    _check_fields(m, "event", {
        "device": _device, "boot": _nonneg_int, "seq": _nonneg_int, "t": _number,
        "event": lambda x: x in EVENTS,
    }, {"model": _str, "reason": _str, "detail": lambda x: isinstance(x, dict)})


def _model_sha(x) -> bool:
    """A model named in a desired state: its sha256 as 64 lowercase hex digits (a topic level)."""
    from shared.topics import _SHA_RE

    return isinstance(x, str) and bool(_SHA_RE.fullmatch(x))


def _validate_desired(m: dict) -> None:
    _check_fields(m, "desired", {"device": _device, "rev": _nonneg_int, "t": _number}, {
        "active": _model_sha, "shadow": _model_sha, "automation": _automation, "rollout": _str,
        "config": lambda x: isinstance(x, dict), "probation": lambda x: isinstance(x, dict),
    })


def _boot_seqs(x) -> bool:
    return isinstance(x, list) and len(x) <= MAX_REFS and all(
        isinstance(p, list) and len(p) == 2 and _nonneg_int(p[0]) and _nonneg_int(p[1]) for p in x)


def _validate_receipt(m: dict) -> None:
    _check_fields(m, "receipt", {"device": _device, "t": _number, "windows": _boot_seqs}, {"events": _boot_seqs})


def _validate_bundle(m: dict) -> None:
    _check_fields(m, "bundle", {
        "sha256": _str, "size": _nonneg_int, "chunks": _nonneg_int, "chunk_size": _nonneg_int,
        "chunk_sha256": lambda x: isinstance(x, list) and all(_str(s) for s in x),
    })
    if len(m["chunk_sha256"]) != m["chunks"]:
        raise ProtocolError("bad_field", "bundle.chunk_sha256 must list one hash per chunk")


def _validate_alert(m: dict) -> None:
    _check_fields(m, "alert", {
        "id": _str, "status": _str, "cohort": _str, "signal": _str, "pattern": _str, "opened_t": _number,
    })


def _validate_sample(m: dict) -> None:
    from shared.samples import validate_header

    _check_fields(m, "sample", {
        "device": _device, "sha256": _str, "size_bytes": _nonneg_int, "chunks": _nonneg_int,
        "chunk_bytes": _nonneg_int, "chunk_sha256": lambda x: isinstance(x, list) and all(_str(s) for s in x),
        "reason": _str, "captured_t": _number, "duration_ms": _number,
    }, {"utterance": _str, "model": _str, "label": _str, "confidence": _number, "alert": _str, "request": _str})
    validate_header(m)


VALIDATORS: dict[str, Callable[[dict], None]] = {
    "window": _validate_window, "state": _validate_state, "event": _validate_event,
    "desired": _validate_desired, "receipt": _validate_receipt, "bundle": _validate_bundle,
    "alert": _validate_alert, "sample": _validate_sample,
}


def validate(message: dict, expect: str | None = None) -> dict:
    kind = message.get("kind")
    if kind not in VALIDATORS:
        raise ProtocolError("unknown_kind", f"message kind {kind!r} is not one of {sorted(VALIDATORS)}")
    if expect is not None and kind != expect:
        raise ProtocolError("wrong_kind", f"expected a {expect!r} message on this topic, got {kind!r}")
    VALIDATORS[kind](message)
    return message


def decode(payload: bytes, expect: str | None = None) -> dict:
    """Bytes → validated message dict; raises ProtocolError with a stable code."""
    return validate(decode_raw(payload), expect)
