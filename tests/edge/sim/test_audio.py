"""Device streams: real dataset clips, seeded per (seed, device), gaps, held-out speakers; the person."""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from edge.decisions import Decision
from edge.sim.audio import BabbleNoise, ClipPool, DeviceStream, SimSource, Timeline, device_stream
from edge.sim.households import cast, held_out_speakers
from edge.sim.person import Answer, FeedbackFileWriter, Person, PipelineFeedback
from edge.sim.traffic import GAP_S
from edge.sim.scenarios import ScenarioParams, active_level_dbfs
from shared.audio import SAMPLE_RATE as SR
from shared.errors import DatasetError
from shared.levels import level_dbfs


def take_in(stream: DeviceStream, total: int, chunk: int) -> np.ndarray:
    return np.concatenate([stream.take(min(chunk, total - i)) for i in range(0, total, chunk)])


def test_same_seed_and_device_give_the_same_stream_in_any_chunking(pool):
    a = take_in(DeviceStream(pool, 7, 3), 30 * SR, 4096)
    b = take_in(DeviceStream(pool, 7, 3), 30 * SR, 1111)
    np.testing.assert_array_equal(a, b)
    other_device = DeviceStream(pool, 7, 4).take(30 * SR)
    other_seed = DeviceStream(pool, 8, 3).take(30 * SR)
    assert not np.array_equal(a, other_device) and not np.array_equal(a, other_seed)


def test_the_stream_is_dataset_clips_with_quiet_gaps_and_a_timeline(pool):
    s = DeviceStream(pool, 0, 1)
    x = s.take(60 * SR)
    spans = [sp for sp in s.timeline.spans() if sp.end <= len(x)]
    assert len(spans) >= 20
    gaps = [b.start - a.end for a, b in zip(spans, spans[1:])]
    assert min(gaps) >= GAP_S[0] * SR - 1 and max(gaps) <= GAP_S[1] * SR + 1
    labels = {sp.label for sp in spans}
    assert len(labels) >= 6 and labels <= set(pool.labels)
    # each span holds that clip's audio (plus the device's hiss), the gaps only the hiss
    first = spans[0]
    clip = next(c for c in pool.clips if c.label == first.label and np.allclose(
        pool.audio(c), x[first.start:first.end], atol=1e-2))
    assert clip is not None
    gap = x[spans[0].end:spans[1].start]
    assert -70 < level_dbfs(gap) < -56
    assert s.timeline.label_at(first.start / SR, first.end / SR) == first.label
    assert s.timeline.label_at(spans[0].end / SR + 0.01, spans[1].start / SR - 0.01) is None


def test_new_speakers_switch_to_held_out_voices_shifted_after_the_onset(pool):
    held = held_out_speakers(pool.speakers, 0.34, seed=0)
    assert 1 <= len(held) < len(pool.speakers) and held == held_out_speakers(pool.speakers, 0.34, seed=0)
    params = ScenarioParams(name="new-speakers", onset_s=40.0, shift=1.25)
    casting = cast(pool.speakers, speaker_split="all", split_names=None, speakers_per_device=None, params=params,
                   seed=0)
    assert set(casting.new_voices) == held and not held & set(casting.pool)
    s = device_stream(pool, params, casting, seed=0, device_index=0, targeted=True)
    s.take(100 * SR)
    spans = s.timeline.spans()
    speech = [sp for sp in spans if sp.label != "_silence_"]
    before = [sp for sp in speech if sp.start < 40 * SR]
    after = [sp for sp in speech if sp.start >= 40 * SR]
    assert before and after
    assert not any(sp.speaker in held for sp in before)
    assert all(sp.speaker in held for sp in after)
    assert {sp.end - sp.start for sp in before} == {SR}
    assert {sp.end - sp.start for sp in after} == {int(np.ceil(SR / 1.25))}  # played 1.25x faster
    untargeted = device_stream(pool, params, casting, seed=0, device_index=1, targeted=False)
    untargeted.take(100 * SR)
    assert not any(sp.speaker in held for sp in untargeted.timeline.spans() if sp.label != "_silence_")


def test_babble_is_speech_shaped_noise_at_unit_level(pool):
    b = BabbleNoise(pool, np.random.default_rng(0))
    x = np.concatenate([b.take(4096) for _ in range(40)])
    assert level_dbfs(x) == pytest.approx(0.0, abs=3.0)
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SR)
    assert spec[f < 4000].sum() / spec.sum() > 0.8  # white noise would put half above 4 kHz
    again = BabbleNoise(pool, np.random.default_rng(0))
    np.testing.assert_array_equal(np.concatenate([again.take(1000) for _ in range(164)])[:len(x)], x)


def test_sudden_babble_noise_on_a_real_stream_at_5_db(pool):
    from edge.sim.scenarios import build_transform

    ref = pool.reference_level_dbfs(seed=0)
    params = ScenarioParams(name="sudden-noise", onset_s=0.0, snr_db=5.0, noise="babble")
    x = DeviceStream(pool, 0, 2).take(20 * SR)
    y = build_transform(params, True, ref_level_dbfs=ref, rng=np.random.default_rng(0),
                        babble=lambda rng: BabbleNoise(pool, rng)).process(x)
    assert ref - level_dbfs(y - x) == pytest.approx(5.0, abs=1.5)


def test_reference_level_is_the_median_active_speech_level(pool):
    ref = pool.reference_level_dbfs(seed=0)
    levels = [active_level_dbfs(pool.audio(c)) for c in pool.clips if c.is_speech]
    assert min(levels) <= ref <= max(levels)
    assert ref == pool.reference_level_dbfs(seed=0)


def test_source_ends_at_the_duration(pool):
    src = SimSource(DeviceStream(pool, 0, 0), _Passthrough(), chunk_samples=4096, duration_s=2.5)
    chunks = list(src.chunks())
    assert sum(len(c) for c in chunks) == int(2.5 * SR)
    assert all(c.dtype == np.float32 for c in chunks)


def test_a_missing_dataset_says_how_to_make_one(tmp_path):
    with pytest.raises(DatasetError, match="harken data synth"):
        ClipPool.from_dataset(tmp_path)


def test_the_person_confirms_right_answers_and_corrects_wrong_ones_later(tmp_path):
    tl = Timeline()
    tl.add(1 * SR, 2 * SR, "yes", "a")
    tl.add(3 * SR, 4 * SR, "no", "a")
    path = tmp_path / "feedback.jsonl"
    person = Person(tl, FeedbackFileWriter(path), rate=1.0, rng=np.random.default_rng(0),
                    labels=["yes", "no", "_silence_"], delay_s=(2.0, 2.0))

    def decide(uid, start, end, label):
        person.emit(Decision(utterance=uid, audio_start_s=start, audio_end_s=end, label=label, confidence=0.9,
                             action="log", automation="shadow", model="m"))

    decide("1-1", 1.1, 1.9, "yes")  # right
    assert path.read_text() == ""  # not yet: the person answers two audio seconds later
    decide("1-2", 3.2, 3.8, "yes")  # wrong: it was "no"
    decide("1-3", 5.0, 5.5, "no")  # the gate fired on the hiss between clips
    decide("1-4", 9.0, 9.5, "no")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [{"confirm": True, "utterance": "1-1"}, {"label": "no", "utterance": "1-2"},
                     {"label": "_silence_", "utterance": "1-3"}]
    assert (person.answered, person.confirmed, person.corrected) == (3, 1, 3)
    person.close()


def test_the_person_answers_about_the_given_fraction(tmp_path):
    tl = Timeline()
    tl.add(0, 10_000 * SR, "yes")
    person = Person(tl, FeedbackFileWriter(tmp_path / "f.jsonl"), rate=0.3, rng=np.random.default_rng(1),
                    delay_s=(0.0, 0.0))
    for i in range(1000):
        person.emit(Decision(utterance=f"1-{i}", audio_start_s=i, audio_end_s=i + 0.5, label="yes",
                             confidence=0.9, action="log", automation="shadow", model="m"))
    assert 240 <= person.answered <= 360
    person.close()


class _Passthrough:
    def process(self, x):
        return x


@dataclass(frozen=True)
class _AuditedDecision(Decision):  # the audit flag the agent adds to a random sample of decisions
    audit: bool = False


def test_the_person_answers_audited_decisions_at_the_audit_rate_and_says_so(tmp_path):
    tl = Timeline()
    tl.add(0, 10_000 * SR, "yes")
    path = tmp_path / "f.jsonl"
    person = Person(tl, FeedbackFileWriter(path), rate=0.0, rng=np.random.default_rng(1), delay_s=(0.0, 0.0),
                    audit_rate=1.0)
    for i in range(200):
        person.emit(_AuditedDecision(utterance=f"1-{i}", audio_start_s=i, audio_end_s=i + 0.5, label="yes",
                                     confidence=0.9, action="act", automation="partial", model="m", audit=i % 2 == 0))
    person.deliver_due(1e9)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [{"utterance": f"1-{i}", "confirm": True, "audit": True} for i in range(0, 200, 2)]
    assert person.audited == person.answered == 100
    person.close()
    never = Person(tl, lambda a: pytest.fail("answered"), rate=0.0, rng=np.random.default_rng(1), audit_rate=0.0)
    never.emit(_AuditedDecision(utterance="1-1", audio_start_s=1, audio_end_s=1.5, label="no", confidence=0.9,
                                action="act", automation="partial", model="m", audit=True))
    never.deliver_due(1e9)


def test_pipeline_feedback_passes_the_audit_flag_when_the_pipeline_takes_it():
    class Old:
        def __init__(self):
            self.calls = []

        def feedback(self, utterance_id, true_label=None, confirm=False):
            self.calls.append((utterance_id, true_label, confirm))
            return True

    class New(Old):
        def feedback(self, utterance_id, true_label=None, confirm=False, audit=False):
            self.calls.append((utterance_id, true_label, confirm, audit))
            return utterance_id != "1-9"

    old, new = Old(), New()
    for target in (old, new):
        answer = PipelineFeedback(target)
        answer(Answer("1-1", None, True))
        answer(Answer("1-9", "no", False))
    assert old.calls == [("1-1", None, True), ("1-9", "no", False)]
    assert new.calls == [("1-1", None, True, True), ("1-9", "no", False, False)]
