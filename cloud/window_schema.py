"""The collector's fast path for windows: ``shared.messages``'s window schema, compiled (msgspec).

Windows are nearly all of a fleet's traffic, and checking one field by field in Python cost
more than everything else the collector does with it. ``FastWindows.decode`` parses the JSON
and checks every rule of ``shared.messages._validate_window`` in C, in a third to a half of the
time. It only ever *accepts*: whatever it cannot accept (bad input, and a few odd but valid
spellings it leaves alone: NaN in an unknown field, a UTF-8 byte-order mark, UTF-16, lone
surrogates, very deep nesting) raises ``Undecided``, and the caller asks the full validator,
which stays the reference and gives every refusal its code. So a window is refused exactly
when ``shared.messages.decode`` refuses it (tests/cloud/test_window_schema.py holds the two
together on every fixture and on thousands of mutated windows).

Why those cases are left to the full path: ``json.loads`` reads NaN and Infinity, a BOM,
UTF-16 and UTF-8-encoded surrogates, which msgspec refuses; and ``json.loads`` refuses nesting
about 994 deep where msgspec reads a few levels more, so a payload with more brackets than
``MAX_BRACKETS`` (far above any real window) is never decided here.
"""
from __future__ import annotations

from typing import Annotated, Literal, Optional

import msgspec
from msgspec import Meta, Struct

from shared.messages import AUTOMATION_LEVELS

MAX_BRACKETS = 512  # more '[' + '{' than this: leave the payload to the full validator (see above)
_I64 = 2 ** 63  # shared.messages._INT_LIMIT: integers are in (-2**63, 2**63)
_FLOAT_MAX = 1.7976931348623157e308  # finite floats only, as shared.messages._number

NonNeg = Annotated[int, Meta(ge=0, le=_I64 - 1)]
Number = Annotated[int, Meta(ge=-_I64 + 1, le=_I64 - 1)] | Annotated[float, Meta(ge=-_FLOAT_MAX, le=_FLOAT_MAX)]
Counts = Annotated[list[NonNeg], Meta(max_length=4096)]
CountMap = Annotated[dict[str, NonNeg], Meta(max_length=1024)]
HistMap = Annotated[dict[str, Counts], Meta(max_length=1024)]
Pairs = Annotated[list[tuple[str, str, NonNeg]], Meta(max_length=4096)]
PairsByModel = Annotated[dict[str, Pairs], Meta(max_length=64)]
Automation = Literal[AUTOMATION_LEVELS]  # type: ignore[valid-type]
# shared.topics._ID_RE and parse_version's rule for major 1 ("01.0" is 1.0; "\Z": no trailing newline)
Device = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
Version1 = Annotated[str, Meta(pattern=r"^0*1\.[0-9]+\Z")]


class Software(Struct):
    frames: NonNeg
    voiced_frames: NonNeg
    dropped_frames: NonNeg
    invalid_frames: NonNeg
    utterances: NonNeg
    inferences: NonNeg
    errors: NonNeg
    cpu_s: Number
    rss_mb: Number
    latency_ms: dict[str, Counts]
    spool_dropped_windows: Optional[NonNeg] = None


class Input(Struct):
    utterance_ms: Counts
    level_dbfs: Counts
    snr_db: Counts
    clipped_utterances: NonNeg
    features: Annotated[list[Counts], Meta(max_length=256)]
    noise_dbfs: Optional[Counts] = None


class Output(Struct):
    labels: CountMap
    confidence: Counts
    no_answer: NonNeg
    deferred: NonNeg
    acted: NonNeg
    suggested: NonNeg
    confidence_by_label: Optional[HistMap] = None
    audit_requested: Optional[NonNeg] = None


class Feedback(Struct):
    pairs: Pairs
    by_model: Optional[PairsByModel] = None
    audit: Optional[Pairs] = None
    audit_by_model: Optional[PairsByModel] = None


class Shadow(Struct):
    compared: NonNeg
    agree: NonNeg
    confidence: Counts
    labels: CountMap
    errors: Optional[NonNeg] = None


class Window(Struct):
    kind: Literal["window"]
    v: Version1
    device: Device
    boot: NonNeg
    seq: NonNeg
    t_start: Number
    duration_s: Number
    audio_start_s: Number
    agent_version: str
    model: Optional[str]
    automation: Automation
    software: Software
    input: Input
    output: Output
    feedback: Feedback
    shadow_model: Optional[str] = None
    shadow: Optional[Shadow] = None


HEADER_FIELDS = ("kind", "v", "device", "boot", "seq", "t_start", "duration_s", "audio_start_s", "agent_version",
                 "model", "automation", "shadow_model")


class WindowHeader(dict):
    """A valid window's top-level fields (``HEADER_FIELDS``; an absent ``shadow_model`` reads as
    None): all that ingest and the store read of a window whose full JSON text travels as its body."""


class Undecided(Exception):
    """The fast path does not accept this payload; the full validator decides."""


class FastWindows:
    """``decode(raw)``: JSON text of a window → the validated dict ``json.loads`` would give."""

    def __init__(self):
        self._check = msgspec.json.Decoder(Window)
        self._json = msgspec.json.Decoder()

    def decode(self, raw: bytes) -> dict:
        """Raises ``Undecided`` unless the window is valid."""
        self._checked(raw)
        # A second parse costs less than converting the checked one. The checking parse validated
        # every copy of a repeated key; this one keeps the last as json.loads does.
        return self._json.decode(raw)

    def header(self, raw: bytes) -> WindowHeader:
        """``decode(raw)``'s top-level fields, from one parse (ingest stores ``raw`` itself as the
        body and reads only these). Raises ``Undecided`` unless the window is valid."""
        w = self._checked(raw)
        return WindowHeader({name: getattr(w, name) for name in HEADER_FIELDS})

    def _checked(self, raw: bytes) -> Window:
        if raw.count(b"[") + raw.count(b"{") > MAX_BRACKETS:
            raise Undecided("deeply nested")
        try:
            w = self._check.decode(raw)  # a repeated key: every copy is checked, the last one kept
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
            raise Undecided(str(exc)) from None
        by_label, bins = w.output.confidence_by_label, len(w.output.confidence)
        if by_label and any(len(c) != bins for c in by_label.values()):
            raise Undecided("confidence_by_label bins")
        return w
