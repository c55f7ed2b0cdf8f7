"""From staged chunks to a stored sample, and what happens to samples over time.

``Assembler.assemble(pairs)`` runs after an ingest batch that completed some clips: for each
(device, sha256) it reads the header and chunks back, checks the whole file (its sha256 and
size, and that it is a 16 kHz mono 16-bit WAV whose length matches ``duration_ms``), writes the
file to the sample directory, then stores the row and drops the staged pieces in one
transaction. A crash in between leaves the pieces staged; ``sweep`` (the collector's
maintenance) finishes any complete clip that was missed (collector replicas each hold some of
a clip's chunks, so the last one in may not see them all committed), drops clips that stayed
incomplete past ``incomplete_s`` (counted ``sample_incomplete``), and applies the retention.
A clip that fails its checks is kept as a reject (``sample_corrupt``, ``sample_not_wav``).
"""
from __future__ import annotations

import hashlib
import io
import logging
import time
import wave
from dataclasses import dataclass

from cloud.samples.files import SampleFiles
from cloud.store.base import Reject, Store
from shared.audio import SAMPLE_RATE
from shared.samples import sample_id

log = logging.getLogger(__name__)

DURATION_SLACK_MS = 1.0


@dataclass(frozen=True)
class Retention:
    """How long samples are kept after they were received (None: for ever)."""

    unlabelled_s: float | None = 30 * 86400.0
    labelled_s: float | None = None
    incomplete_s: float = 86400.0


def check_wav(data: bytes, duration_ms: float) -> str | None:
    """Why ``data`` is not the clip its header describes (None: it is)."""
    try:
        with wave.open(io.BytesIO(data)) as w:
            shape = (w.getnchannels(), w.getsampwidth(), w.getframerate())
            frames = w.getnframes()
    except (wave.Error, EOFError) as exc:
        return f"not a WAV file ({exc})"
    if shape != (1, 2, SAMPLE_RATE):
        return f"{shape[0]} channel(s), {8 * shape[1]}-bit, {shape[2]} Hz; samples are 16 kHz mono 16-bit"
    if abs(1000.0 * frames / SAMPLE_RATE - duration_ms) > DURATION_SLACK_MS:
        return f"{frames} frames, but the header says {duration_ms} ms"
    return None


def sample_row(head: dict, received_t: float) -> dict:
    """The ``samples`` row of a verified clip."""
    return {"sha256": head["sha256"], "id": sample_id(head["sha256"]), "device": head["device"],
            "model": head.get("model"), "utterance": head.get("utterance"), "captured_t": head["captured_t"],
            "received_t": received_t, "predicted": head.get("label"), "confidence": head.get("confidence"),
            "reason": head["reason"], "alert": head.get("alert"), "request": head.get("request"),
            "duration_ms": head["duration_ms"], "size_bytes": head["size_bytes"], "conflict": 0}


class Assembler:
    """Turns complete staged clips into files and rows; counts what it did."""

    def __init__(self, store: Store, files: SampleFiles, retention: Retention = Retention(),
                 clock=time.time):
        self.store, self.files, self.retention, self.clock = store, files, retention, clock
        self.stored = self.duplicates = self.refused = self.incomplete = self.expired = 0

    def assemble(self, pairs) -> int:
        """Finish each complete (device, sha256); returns how many new samples were stored."""
        new = 0
        for device, sha in pairs:
            head, parts = self.store.sample_staged(device, sha)
            if head is None or len(parts) < head["chunks"]:
                continue  # finished by another replica already, or not complete after all
            new += self._finish(device, sha, head, b"".join(parts))
        return new

    def _finish(self, device: str, sha: str, head: dict, data: bytes) -> int:
        now = self.clock()
        why = None
        if len(data) != head["size_bytes"] or hashlib.sha256(data).hexdigest() != sha:
            why = ("sample_corrupt", f"the {len(data)} bytes of sample {sha[:16]} do not hash to its name")
        elif (bad := check_wav(data, head["duration_ms"])) is not None:
            why = ("sample_not_wav", f"sample {sha[:16]}: {bad}")
        if why is not None:
            self.refused += 1
            log.warning("device %s: %s", device, why[1])
            self.store.finish_sample(device, sha, None, Reject.of(now, f"device:{device}", why[0], why[1], data))
            return 0
        self.files.write(sha, data)
        if self.store.finish_sample(device, sha, sample_row(head, now)):
            self.stored += 1
            log.debug("stored sample %s from %s (%s, %d bytes)", sha[:16], device, head["reason"], len(data))
            return 1
        self.duplicates += 1
        return 0

    def sweep(self, now: float | None = None) -> dict:
        """Maintenance: finish missed clips, drop stale pieces, apply the retention."""
        now = self.clock() if now is None else now
        finished = self.assemble(self.store.samples_ready())
        dropped = self.store.drop_stale_samples(now - self.retention.incomplete_s)
        self.incomplete += dropped
        r = self.retention
        doomed = self.store.prune_samples(
            unlabelled_before=None if r.unlabelled_s is None else now - r.unlabelled_s,
            labelled_before=None if r.labelled_s is None else now - r.labelled_s)
        for sha in doomed:
            self.files.delete(sha)
        self.expired += len(doomed)
        if dropped or doomed:
            log.info("samples: %d incomplete clip(s) dropped, %d expired", dropped, len(doomed))
        return {"finished": finished, "incomplete": dropped, "expired": len(doomed)}
