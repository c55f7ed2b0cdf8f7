"""The agent's field-sample uploader on espeak-ng speech, real webrtcvad and real onnxruntime:
opt-in only, which utterances leave and why, the caps, the collector's switch and requests."""
from __future__ import annotations

import hashlib
import io
import wave

import numpy as np
import pytest

from edge.pipeline import StaticModels
from edge.samples import SampleSettings, SampleUploader
from edge.spool import Spool
from shared import samples as wire
from shared.audio import to_int16, wav_bytes
from shared.errors import StoreError
from shared.messages import decode
from shared.topics import Topics
from tests.edge.conftest import run_pipeline

T = Topics()


class Outbox:
    """Stands in for the spool: keeps every clip's messages (``full`` makes it refuse)."""

    def __init__(self):
        self.clips: list[list[tuple[str, bytes]]] = []
        self.full = False

    def put(self, messages):
        if self.full:
            raise StoreError("spool full")
        self.clips.append(list(messages))

    def headers(self) -> list[dict]:
        return [decode(c[0][1], "sample") for c in self.clips]

    def wav(self, i: int) -> bytes:
        return b"".join(p for _, p in self.clips[i][1:])


def uploader(outbox: Outbox, clock=lambda: 1000.0, state_dir=None, **settings) -> SampleUploader:
    return SampleUploader(SampleSettings(**{"opt_in": True, **settings}), device="dev-1", topics=T, put=outbox.put,
                          state_dir=state_dir, clock=clock)


def pcm_of(wav: bytes) -> np.ndarray:
    with wave.open(io.BytesIO(wav)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


class Tap:
    """Records what the pipeline offered (the utterance audio), then hands it to the uploader."""

    def __init__(self, inner: SampleUploader):
        self.inner, self.offered = inner, {}

    def offer(self, uid, samples, **kw):
        self.offered[uid] = (to_int16(samples), kw)
        return self.inner.offer(uid, samples, **kw)


def test_low_confidence_and_audit_utterances_leave_once_as_the_wav_the_model_heard(speech, models):
    out = Outbox()
    tap = Tap(uploader(out))
    decisions, _, _ = run_pipeline(speech[0], 4096, StaticModels(models[0]), sampler=tap, audit_rate=0.3)
    threshold = models[0].threshold
    want = {d.utterance: "audit" if d.audit else "low_confidence" for d in decisions
            if d.audit or d.confidence < threshold}
    assert {"audit", "low_confidence"} <= set(want.values())  # both reasons occur in this stream
    heads = out.headers()
    assert {h["utterance"]: h["reason"] for h in heads} == want  # no other utterance left, none twice
    for i, h in enumerate(heads):
        d = next(d for d in decisions if d.utterance == h["utterance"])
        wav = out.wav(i)
        assert hashlib.sha256(wav).hexdigest() == h["sha256"] and len(wav) == h["size_bytes"]
        assert np.array_equal(pcm_of(wav), tap.offered[d.utterance][0])  # exactly the utterance's audio
        assert (h["label"], h["model"]) == (d.label, models[0].sha256)
        assert h["confidence"] == pytest.approx(d.confidence, abs=1e-6)
        assert h["duration_ms"] == pytest.approx(1000 * (d.audio_end_s - d.audio_start_s), abs=0.1)
        for topic, payload in out.clips[i][1:]:
            parsed = T.parse(topic)
            wire.check_chunk(h, parsed.chunk, payload)


def test_a_device_that_did_not_opt_in_sends_nothing_whatever_the_collector_asks(speech, models):
    out = Outbox()
    up = uploader(out, opt_in=False)
    up.apply_config({"samples": True, "sample_request": {"id": "r1", "alert": "a", "from_t": 0, "to_t": 1e12,
                                                          "max_clips": 50}})
    _, _, pipeline = run_pipeline(speech[0], 4096, StaticModels(models[0]), sampler=up, audit_rate=1.0)
    assert pipeline.stats["inferences"] > 10
    assert out.clips == [] and not up.enabled and up.stats["offered"] == 0 and len(up._ring) == 0


def test_clip_and_hourly_caps_hold_and_the_hour_slides(speech, models):
    now = [1000.0]
    out = Outbox()
    one = len(wav_bytes(np.zeros(16000, dtype=np.int16)))  # a 1 s clip
    up = uploader(out, clock=lambda: now[0], audit=False, max_confidence=1.0, max_bytes_per_hour=2 * one,
                  max_clip_bytes=one)
    rng = np.random.default_rng(0)
    speech_like = lambda s: rng.normal(0, 0.1, int(s * 16000)).astype(np.float32)  # noqa: E731
    for i, seconds in enumerate((0.5, 1.5, 0.9, 0.9, 0.9)):
        up.offer(f"1-{i}", speech_like(seconds), label="yes", confidence=0.5, threshold=0.6, model="m")
    assert [h["utterance"] for h in out.headers()] == ["1-0", "1-2"]  # 1.5 s is over the clip cap; then the hour's
    assert (up.stats["too_large"], up.stats["limited"]) == (1, 2)
    now[0] += 3600.0  # an hour later the budget is back
    up.offer("1-9", speech_like(0.5), label="yes", confidence=0.5, threshold=0.6, model="m")
    assert out.headers()[-1]["utterance"] == "1-9"
    out.full = True
    up.offer("1-10", speech_like(0.2), label="yes", confidence=0.5, threshold=0.6, model="m")
    assert up.stats["spool_full"] == 1 and len(out.clips) == 3


def test_a_request_takes_past_utterances_from_the_ring_and_future_ones_until_its_end(tmp_path):
    now = [100.0]
    out = Outbox()
    up = uploader(out, clock=lambda: now[0], state_dir=tmp_path, low_confidence=False, audit=False,
                  request_max_clips=4)
    x = np.full(8000, 0.05, dtype=np.float32)
    for i in range(6):  # utterances at t = 100 .. 150, none uploaded yet (confident, no audit)
        up.offer(f"1-{i}", x * (i + 1), label="go", confidence=0.9, threshold=0.5, model="m")
        now[0] += 10.0
    assert out.clips == []
    request = {"id": "r-1", "alert": "al-7", "from_t": 125.0, "to_t": 175.0, "max_clips": 99}
    up.apply_config({"sample_request": request})
    heads = out.headers()
    assert [h["utterance"] for h in heads] == ["1-3", "1-4", "1-5"]  # t = 130, 140, 150
    assert heads[0]["reason"] == "alert" and heads[0]["alert"] == "al-7" and heads[0]["request"] == "r-1"
    # the rest of the range: one more clip (the device caps the request at 4), then the request is done
    up.offer("1-6", x, label="go", confidence=0.9, threshold=0.5, model="m")  # t = 160
    up.offer("1-7", x * 2, label="go", confidence=0.9, threshold=0.5, model="m")
    assert [h["utterance"] for h in out.headers()] == ["1-3", "1-4", "1-5", "1-6"]
    up.apply_config({"sample_request": request})  # the same desired state again: done already
    assert len(out.clips) == 4
    again = uploader(out, clock=lambda: now[0], state_dir=tmp_path)  # a restart remembers it
    again.apply_config({"sample_request": request})
    assert len(out.clips) == 4


def test_the_collector_switches_an_opted_in_device_off_and_on_and_a_restart_keeps_it(tmp_path):
    out = Outbox()
    up = uploader(out, state_dir=tmp_path, max_confidence=1.0)
    x = np.full(4000, 0.05, dtype=np.float32)
    up.offer("1-1", x, label="go", confidence=0.2, threshold=0.5, model="m")
    up.apply_config({"samples": False})
    up.offer("1-2", x * 2, label="go", confidence=0.2, threshold=0.5, model="m")
    assert len(out.clips) == 1 and len(up._ring) == 0  # off: nothing sent, nothing kept
    restarted = uploader(out, state_dir=tmp_path, max_confidence=1.0)
    assert not restarted.enabled
    restarted.offer("1-3", x * 3, label="go", confidence=0.2, threshold=0.5, model="m")
    restarted.apply_config({"samples": True})
    restarted.offer("1-4", x * 4, label="go", confidence=0.2, threshold=0.5, model="m")
    assert [h["utterance"] for h in out.headers()] == ["1-1", "1-4"]


def test_a_clip_enters_the_spool_whole_or_not_at_all(tmp_path):
    spool = Spool(tmp_path / "samples.db", 64 * 1024)
    rows = [("t/h", b"h" * 100), ("t/0", b"x" * 30_000), ("t/1", b"y" * 20_000)]
    spool.put_many(rows)
    with pytest.raises(StoreError, match="full"):
        spool.put_many(rows)  # a second clip does not fit: refused whole, the first one kept
    assert [r.topic for r in spool.peek(10)] == ["t/h", "t/0", "t/1"] and spool.dropped_total == 0
    spool.close()
