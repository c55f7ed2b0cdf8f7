"""The VAD gate on real espeak-ng speech and real webrtcvad."""
from __future__ import annotations

import numpy as np
import pytest

from shared.errors import ConfigError
from shared.gate import GateConfig, Utterance, VadGate, cut_clip, place

WORDS = ["seven", "banana", "yellow", "window"]
MS = 16  # samples per millisecond


def stream_of(parts: list[np.ndarray], gap_ms: int = 700, lead_ms: int = 500, seed: int = 0):
    """Speech parts separated by quiet noise (-60 dBFS); returns audio and each part's span."""
    pieces, spans, pos = [np.zeros(lead_ms * MS, dtype=np.float32)], [], lead_ms * MS
    for part in parts:
        loud = np.nonzero(np.abs(part) > 0.01)[0]  # espeak pads its output with silence
        spans.append((pos + loud[0], pos + loud[-1] + 1))
        pieces += [part, np.zeros(gap_ms * MS, dtype=np.float32)]
        pos += len(part) + gap_ms * MS
    x = np.concatenate(pieces)
    x += 0.001 * np.random.default_rng(seed).standard_normal(len(x)).astype(np.float32)
    return x, spans


def run(x: np.ndarray, config: GateConfig = GateConfig(), chunk: int | None = None):
    gate = VadGate(config)
    step = chunk or max(1, len(x))
    found: list[Utterance] = []
    for i in range(0, len(x), step):
        found += gate.feed(x[i:i + step])
    return found + gate.flush(), gate


@pytest.fixture(scope="module")
def words(say):
    return stream_of([say(w) for w in WORDS])


@pytest.fixture(scope="module")
def sentence(say):
    return say("turn on the kitchen lights and then close the garage door please")


def test_finds_each_word_of_a_sentence_with_pauses(words):
    x, spans = words
    found, gate = run(x)
    assert len(found) == len(WORDS)
    for utt, (onset, offset) in zip(found, spans):
        assert utt.start_sample <= onset and utt.end_sample >= offset  # the whole word
        assert onset - utt.start_sample < 300 * MS and utt.end_sample - offset < 400 * MS
        assert utt.samples.dtype == np.float32
        assert len(utt.samples) == utt.end_sample - utt.start_sample
        assert np.array_equal(utt.samples, x[utt.start_sample:utt.end_sample])
        assert utt.duration_ms == pytest.approx(len(utt.samples) / MS)
        assert 0 < utt.voiced_frames <= len(utt.samples) // 480
    assert gate.samples_in == len(x)
    assert gate.frames == len(x) // 480
    assert gate.samples_passed == sum(len(u.samples) for u in found)
    assert gate.pass_ratio == pytest.approx(gate.samples_passed / len(x))
    assert 0 < gate.voiced_frames < gate.frames and gate.invalid_frames == 0
    assert gate.cost_s > 0 and not gate.in_utterance


@pytest.mark.parametrize("chunk", [160, 480, 4096, 1234])
def test_chunking_does_not_change_the_utterances(words, sentence, chunk):
    x = np.concatenate([words[0], sentence, np.zeros(8000, dtype=np.float32)])
    config = GateConfig(max_utterance_ms=1000)  # exercise splits as well
    whole, _ = run(x, config)
    pieces, gate = run(x, config, chunk)
    assert len(whole) >= len(WORDS) + 2
    assert [(u.start_sample, u.end_sample, u.voiced_frames) for u in pieces] == \
        [(u.start_sample, u.end_sample, u.voiced_frames) for u in whole]
    assert all(np.array_equal(a.samples, b.samples) for a, b in zip(pieces, whole))
    assert gate.samples_in == len(x)


def test_silence_and_quiet_noise_yield_nothing():
    found, gate = run(np.zeros(3 * 16000, dtype=np.float32))
    assert found == [] and gate.frames == 100 and gate.samples_passed == 0
    noise = 0.001 * np.random.default_rng(1).standard_normal(3 * 16000).astype(np.float32)
    found, gate = run(noise)
    assert found == [] and gate.pass_ratio == 0.0


def test_pre_roll_moves_the_start_back_by_exactly_its_length(words):
    x, spans = words
    without, _ = run(x, GateConfig(pre_roll_ms=0))
    with_roll, _ = run(x, GateConfig(pre_roll_ms=300))
    assert len(without) == len(with_roll) == len(WORDS)
    for a, b, (onset, _) in zip(without, with_roll, spans):
        assert a.start_sample - b.start_sample == 300 * MS
        assert b.start_sample < onset - 200 * MS  # the onset is well inside the clip
        assert abs(a.start_sample - onset) <= 60 * MS  # without pre-roll: at the onset


def test_pre_roll_never_reaches_before_the_stream(say):
    x = np.concatenate([say("yes"), np.zeros(8000, dtype=np.float32)])
    found, _ = run(x, GateConfig(pre_roll_ms=500))
    assert len(found) == 1 and found[0].start_sample == 0


def test_min_length_drops_short_words_and_keeps_long_speech(say, sentence):
    x, _ = stream_of([say("yes"), sentence[: 16000 * 2], say("no")])
    found, _ = run(x, GateConfig(min_utterance_ms=800, max_utterance_ms=4000))
    kept, _ = run(x, GateConfig(min_utterance_ms=100, max_utterance_ms=4000))
    assert len(kept) == 3
    assert len(found) == 1 and found[0].start_sample == kept[1].start_sample


def test_long_speech_is_split_into_contiguous_pieces(sentence):
    x, (span,) = stream_of([sentence])
    found, _ = run(x, GateConfig(max_utterance_ms=1000))
    assert len(found) >= 3
    for a, b in zip(found, found[1:]):
        assert a.end_sample == b.start_sample
    assert all(len(u.samples) == 990 * MS for u in found[:-1])  # 33 whole 30 ms frames
    assert found[-1].duration_ms <= 990
    assert found[0].start_sample <= span[0] and found[-1].end_sample >= span[1] - 300 * MS


def test_energy_floor_turns_quiet_speech_into_silence(words):
    x, _ = words
    quiet = x * 0.02  # about -57 dBFS speech
    assert len(run(quiet)[0]) == len(WORDS)  # webrtcvad alone still hears it
    found, gate = run(quiet, GateConfig(energy_floor_dbfs=-45.0))
    assert found == [] and gate.voiced_frames == 0
    assert len(run(x, GateConfig(energy_floor_dbfs=-45.0))[0]) == len(WORDS)


def test_invalid_frames_are_counted_and_zeroed(words):
    x, spans = words
    bad = x.copy()
    bad[1000] = np.nan  # frame 2, silence
    bad[1001] = np.inf
    inside = spans[1][0] + 2000
    bad[inside] = np.nan  # inside the second word
    bad[inside + 480 * 3] = -np.inf
    found, gate = run(bad)
    assert gate.invalid_frames == 3
    assert len(found) == len(WORDS)
    assert all(np.isfinite(u.samples).all() for u in found)
    assert found[1].samples[inside - found[1].start_sample] == 0.0


def test_flush_emits_speech_cut_off_by_the_end_of_the_stream(say):
    x = np.concatenate([np.zeros(8000, dtype=np.float32), say("seven")[:5000]])
    gate = VadGate()
    assert gate.feed(x) == []
    assert gate.in_utterance
    found = gate.flush()
    assert len(found) == 1 and found[0].end_sample <= len(x)
    assert not gate.in_utterance


def test_cut_clip_returns_the_longest_utterance_or_none(say):
    x, spans = stream_of([say("hi"), say("turn the lights on")])
    utt = cut_clip(x)
    assert utt is not None and utt.start_sample <= spans[1][0] < utt.end_sample
    assert cut_clip(np.zeros(16000, dtype=np.float32)) is None


def test_place_centre_and_start():
    x = np.arange(1, 6, dtype=np.float32)
    assert place(x, 9).tolist() == [0, 0, 1, 2, 3, 4, 5, 0, 0]
    assert place(x, 8).tolist() == [0, 1, 2, 3, 4, 5, 0, 0]  # extra zero goes after
    assert place(x, 3).tolist() == [2, 3, 4]
    assert place(x, 4).tolist() == [1, 2, 3, 4]
    assert place(x, 8, "start").tolist() == [1, 2, 3, 4, 5, 0, 0, 0]
    assert place(x, 3, "start").tolist() == [1, 2, 3]
    assert place(x, 5).tolist() == x.tolist() and place(x, 5).dtype == np.float32
    with pytest.raises(ConfigError, match="centre"):
        place(x, 5, "end")
    with pytest.raises(ConfigError):
        place(x, 0)


def test_place_reads_int16_as_pcm_and_fills_a_given_window():
    pcm = np.array([-32768, -1, 0, 1, 16384, 32767], dtype=np.int16)
    floats = pcm.astype(np.float32) / np.float32(32768.0)
    for n, rule in ((10, "centre"), (4, "centre"), (9, "start"), (3, "start")):
        assert place(pcm, n, rule).tobytes() == place(floats, n, rule).tobytes()
    window = np.full(10, 7.0, dtype=np.float32)  # a reused window: stale values must not survive
    assert place(pcm, 10, out=window) is window and window.tobytes() == place(floats, 10).tobytes()
    with pytest.raises(ConfigError, match="float32 of shape"):
        place(pcm, 9, out=window)


def test_config_round_trips_and_rejects_unknown_keys():
    config = GateConfig(aggressiveness=3, frame_ms=20, energy_floor_dbfs=-50.0)
    assert GateConfig.from_dict(config.to_dict()) == config
    assert GateConfig.from_dict({}) == GateConfig()
    with pytest.raises(ConfigError, match="unknown gate setting.*aggresiveness.*valid keys"):
        GateConfig.from_dict({"aggresiveness": 2})


@pytest.mark.parametrize("bad,words_in_message", [
    ({"aggressiveness": 4}, "aggressiveness.*0, 3"),
    ({"aggressiveness": True}, "aggressiveness"),
    ({"frame_ms": 25}, "10, 20 or 30"),
    ({"frame_ms": 30.0}, "10, 20 or 30"),
    ({"start_ratio": 0.0}, "start_ratio.*\\(0, 1\\]"),
    ({"end_ratio": 1.5}, "end_ratio"),
    ({"padding_ms": 5}, "padding_ms"),
    ({"min_utterance_ms": 3000}, "below min_utterance_ms"),
    ({"pre_roll_ms": 1000, "max_utterance_ms": 1000}, "pre-roll.*raise max_utterance_ms"),
    ({"energy_floor_dbfs": 10.0}, "energy_floor_dbfs"),
])
def test_config_validation_says_what_to_fix(bad, words_in_message):
    with pytest.raises(ConfigError, match=words_in_message):
        GateConfig(**bad)


def test_gate_rejects_rates_webrtcvad_cannot_run():
    with pytest.raises(ConfigError, match="resample"):
        VadGate(sample_rate=22050)


def test_positions_stay_absolute_when_fed_again_after_flush(words):
    x, _ = words
    gate = VadGate()
    first = gate.feed(x[:1000]) + gate.flush()  # 40 samples of a partial frame are dropped
    again = gate.feed(x) + gate.flush()
    assert first == [] and len(again) == len(WORDS)
    stream = np.concatenate([x[:1000], x])
    for utt in again:
        assert len(utt.samples) == utt.end_sample - utt.start_sample
        assert np.array_equal(utt.samples, stream[utt.start_sample:utt.end_sample])
    assert gate.samples_in == len(stream)


def test_the_noise_floor_counts_the_unvoiced_frames_and_tells_a_dead_microphone(sentence):
    from shared.histogram import NOISE_DBFS_EDGES

    rng = np.random.default_rng(3)
    hiss = (rng.normal(0.0, 10 ** (-60 / 20), 16000 * 3)).astype(np.float32)
    cases = {"hiss": np.concatenate([hiss, sentence]), "silence": np.zeros(16000 * 3, np.float32),
             "dc": np.full(16000 * 3, 0.25, np.float32)}
    counts = {}
    for name, x in cases.items():
        gate = VadGate()
        for i in range(0, len(x), 4096):
            gate.feed(x[i:i + 4096])
        counts[name] = gate.noise_counts
        assert counts[name].sum() == gate.frames - gate.voiced_frames
    around = int(np.searchsorted(NOISE_DBFS_EDGES, -60.0, side="right"))
    assert counts["hiss"][around - 1: around + 1].sum() >= 90  # the 100 frames of 3 s of hiss sit at -60 dBFS
    assert counts["silence"][0] == counts["silence"].sum() > 0  # digital silence: below the lowest edge
    assert counts["dc"][-1] == counts["dc"].sum() > 0  # a DC offset of 0.25 sits at -12 dBFS


def test_the_noise_floor_does_not_depend_on_chunking(sentence):
    results = []
    for chunk in (160, 480, 4096):
        gate = VadGate()
        for i in range(0, len(sentence), chunk):
            gate.feed(sentence[i:i + chunk])
        results.append(gate.noise_counts.tolist())
    assert results[0] == results[1] == results[2]


def as_pcm(x: np.ndarray) -> np.ndarray:
    from shared.audio import to_int16

    return to_int16(x)


def summary(found, gate) -> list:
    return [[(u.start_sample, u.end_sample, u.voiced_frames, u.samples.tobytes(), u.levels()) for u in found],
            gate.frames, gate.voiced_frames, gate.invalid_frames, gate.samples_passed, gate.noise_counts.tolist()]


@pytest.mark.parametrize("chunk", [333, 4096, 160000])
def test_int16_pcm_gives_what_its_float_values_give(words, sentence, chunk):
    """The int16 path (no conversion before the VAD) is the float path on the same values, bit for bit."""
    pcm = as_pcm(np.concatenate([words[0], 3.0 * sentence, np.zeros(20000, np.float32), sentence]))
    as_float = pcm.astype(np.float32) / np.float32(32768.0)
    for config in (GateConfig(max_utterance_ms=1000), GateConfig(max_utterance_ms=1000, energy_floor_dbfs=-30.0)):
        from_pcm, gate_pcm = run(pcm, config, chunk)  # with a floor, the energies are kept as the frames arrive
        from_float, gate_float = run(as_float, config, chunk)
        assert len(from_pcm) >= len(WORDS) + 2
        assert summary(from_pcm, gate_pcm) == summary(from_float, gate_float)
    assert all(u.samples.dtype == np.float32 for u in from_pcm)
    assert any(u.levels()[2] > 0 for u in from_pcm)  # the loud sentence clips, and the int16 path counts it


def test_levels_from_the_gates_energies_are_the_levels_of_the_samples(words, sentence):
    """``Utterance.levels`` reads frame energies for int16 audio: the same floats as shared.levels."""
    from shared.levels import clipped_fraction, level_dbfs, snr_db

    x = np.concatenate([words[0], np.clip(4.0 * sentence, -1, 1), np.zeros(16000, np.float32), 0.01 * sentence])
    for chunk in (4096, 160000):  # fed live the utterance computes its energies when asked; else the gate's
        found, _ = run(as_pcm(x), GateConfig(max_utterance_ms=5000), chunk)
        assert len(found) >= len(WORDS) + 1
        kept = [u.frame_energy is not None for u in found]
        assert any(kept) if chunk == 160000 else not all(kept)
        for u in found:
            assert u.frame_energy is None or len(u.frame_energy) * 480 == len(u.samples)
            assert u.levels() == (level_dbfs(u.samples), snr_db(u.samples), clipped_fraction(u.samples))
        assert max(u.levels()[2] for u in found) > 0.001  # clipping counted
    float_utt = run(x, GateConfig(max_utterance_ms=5000), 4096)[0][0]
    assert float_utt.frame_energy is None  # float audio: levels come from the samples
    assert float_utt.levels() == (level_dbfs(float_utt.samples), snr_db(float_utt.samples),
                                  clipped_fraction(float_utt.samples))


def test_a_stream_may_mix_int16_and_float_chunks(words, sentence):
    x = as_pcm(np.concatenate([words[0], sentence]))
    reference = summary(*run(x.astype(np.float32) / np.float32(32768.0), GateConfig(), 4096))
    gate, found = VadGate(), []
    for k, i in enumerate(range(0, len(x), 4096)):
        piece = x[i:i + 4096]
        found += gate.feed(piece if k % 3 else piece.astype(np.float32) / np.float32(32768.0))
    found += gate.flush()
    assert summary(found, gate) == reference


def test_replay_blocks_and_live_chunks_in_one_stream_give_what_one_block_gives(words, sentence):
    """Blocks of SETTLE_FRAMES frames or more get their energies as they arrive, live chunks when
    they settle: a stream switching between the two keeps every level and noise count."""
    x = as_pcm(np.concatenate([words[0], sentence, np.zeros(30000, np.float32), 0.3 * sentence, words[0]]))
    reference = summary(*run(x, GateConfig(max_utterance_ms=1000), len(x)))
    sizes, gate, found, i = [130000, 480, 4096, 333, 160000, 7], VadGate(GateConfig(max_utterance_ms=1000)), [], 0
    assert len(x) > 2 * VadGate.SETTLE_FRAMES * 480
    for k in range(len(x)):
        if i >= len(x):
            break
        found += gate.feed(x[i:i + sizes[k % len(sizes)]])
        i += sizes[k % len(sizes)]
    found += gate.flush()
    assert len(found) >= len(WORDS) + 2
    assert summary(found, gate) == reference


def test_a_long_utterance_grows_the_buffer_and_keeps_every_sample(sentence):
    """Frames are held until an utterance ends, however long (max_utterance_ms up to minutes)."""
    x = np.concatenate([np.zeros(8000, np.float32)] + [sentence] * 6 + [np.zeros(16000, np.float32)])
    x = x + 0.01 * np.random.default_rng(1).standard_normal(len(x)).astype(np.float32)  # no pause quite silent
    config = GateConfig(max_utterance_ms=60000, end_ratio=1.0, padding_ms=900)
    for chunk in (480, 100000):
        found, _ = run(as_pcm(x), config, chunk)
        longest = max(found, key=lambda u: len(u.samples))
        assert len(longest.samples) > 5 * len(sentence)
        assert np.array_equal(as_pcm(longest.samples), as_pcm(x[longest.start_sample:longest.end_sample]))
