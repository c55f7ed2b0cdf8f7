"""Real speech clips for the field-sample tests: espeak-ng words as the agent uploads them
(16 kHz mono 16-bit WAV bytes), and helpers that stage them in a store as ingest does."""
from __future__ import annotations

import functools
import subprocess
import tempfile
from pathlib import Path

from cloud.ingest_handler import IngestHandler
from cloud.samples.assemble import Assembler
from cloud.store import Batch
from shared import samples as wire
from shared.audio import SAMPLE_RATE, read_wav, to_int16, wav_bytes
from shared.topics import Topics

T = Topics()
MODEL = "5e" * 32
LABELS = ["yes", "no", "up", "down"]


@functools.lru_cache(maxsize=None)
def word_wav(word: str, speed: int = 150, voice: str = "en-us") -> bytes:
    """The WAV file bytes of one espeak-ng word, as an agent would upload them."""
    with tempfile.TemporaryDirectory() as tmp:
        raw, wav = Path(tmp) / "raw.wav", Path(tmp) / "16k.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), word], check=True,
                       capture_output=True)
        subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(wav)], check=True,
                       capture_output=True)
        return wav_bytes(to_int16(read_wav(wav)))


def clip(device: str, word: str, *, speed: int = 150, reason: str = "low_confidence", label: str | None = None,
         confidence: float = 0.3, chunk_bytes: int = 8192, t: float = 1_700_000_000.0, **extra):
    """(the clip's WAV bytes, its messages: header then chunks) as ``device`` sends them."""
    wav = word_wav(word, speed)
    frames = (len(wav) - 44) // 2
    meta = {"reason": reason, "captured_t": t, "duration_ms": 1000.0 * frames / SAMPLE_RATE,
            "chunk_bytes": chunk_bytes, "model": MODEL, "label": label or word, "confidence": confidence,
            "utterance": f"1-{speed}", **extra}
    return wav, wire.messages(T, device, wav, meta)


def ingest(store, assembler: Assembler, messages, *, handler: IngestHandler | None = None,
           received_t: float = 1_700_000_100.0):
    """One ingest batch: validate, commit, assemble what became complete; returns the BatchResult."""
    handler = handler or IngestHandler(T)
    batch = Batch()
    for topic, payload in messages:
        handler.add(batch, topic, payload, received_t)
    result = store.write(batch)
    assembler.assemble(result.samples_ready)
    return result
