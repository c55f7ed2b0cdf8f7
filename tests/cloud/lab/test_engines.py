"""Speech engines, for real: espeak-ng, mbrola, festival, flite, pico and rhvoice speak words the
device's gate cuts, pitch follows the variant, the same request gives the same audio, and a
missing engine says how to install it."""
from __future__ import annotations

import numpy as np
import pytest

from cloud.lab import cast, engines, synth
from cloud.lab.engines import festival, flite, mbrola, pico, rhvoice, variation
from shared.audio import read_wav
from shared.errors import DatasetError
from shared.gate import GateConfig, cut_clip

FEW_VOICES = {"mbrola": mbrola.VOICES, "festival": festival.VOICES, "flite": flite.VOICES, "pico": pico.VOICES,
              "rhvoice": rhvoice.VOICES}
EVERY_VOICE = [("espeak-ng", "en-us", "m3")] + [(e, v, "mid-m") for e, table in FEW_VOICES.items() for v in table]


@pytest.fixture(scope="module")
def engine_set(tmp_path_factory):
    es = engines.Engines(tmp_path_factory.mktemp("scratch"))
    yield es
    es.close()


def f0_hz(x: np.ndarray, rate: int) -> float:
    """Median autocorrelation pitch of the voiced 40 ms frames (60-400 Hz)."""
    n, out = int(0.04 * rate), []
    loud = np.sqrt(np.mean(x.astype(np.float64) ** 2))
    for i in range(0, len(x) - n, n // 2):
        f = x[i: i + n].astype(np.float64) - x[i: i + n].mean()
        if np.sqrt(np.mean(f ** 2)) < 0.3 * loud:
            continue
        ac = np.correlate(f, f, "full")[n - 1:]
        lo, hi = rate // 400, rate // 60
        k = lo + int(np.argmax(ac[lo:hi]))
        if ac[k] > 0.5 * ac[0]:
            out.append(rate / k)
    return float(np.median(out))


@pytest.mark.parametrize("engine,voice,variant", EVERY_VOICE)
def test_every_engine_and_voice_says_a_word_the_gate_cuts(engine, voice, variant, engine_set, tmp_path):
    speaker = engines.speaker_name(engine, voice, variant)
    record = synth.make_clip(synth.ClipSpec(0, "yes", "yes", speaker, 0), str(tmp_path), engine_set)
    assert record["speaker"] == speaker and record["tags"]["engine"] == engine
    assert (record["tags"]["voice"], record["tags"]["variant"]) == (voice, variant)
    clip = read_wav(tmp_path / record["path"])
    assert len(clip) == 16000
    utt = cut_clip(clip, GateConfig())
    assert utt is not None, f"the gate cut nothing from {speaker}"
    assert 150 <= utt.duration_ms <= 1000


@pytest.mark.parametrize("engine,voice", [(e, v) for e, v, _ in EVERY_VOICE if e != "espeak-ng"])
def test_the_variant_sets_the_pitch(engine, voice, engine_set):
    """lo and hi are 6 semitones apart (a factor 1.41), whether the engine sets the pitch
    (mbrola, pico, rhvoice, kal, ked, kal16, awb, slt) or sox moves it afterwards (festival's HTS
    slt, flite's rms)."""
    e = engine_set.get(engine)
    # mbrola's male voices say "yes" with an 83 ms vowel at 76-102 Hz: too few periods for
    # the autocorrelation; "down" has a long vowel
    word = "down" if engine == "mbrola" else "yes"
    pitch = {}
    for variant in ("lo-m", "hi-m"):
        r = e.render(word, voice, variant, np.random.default_rng(3))  # same stretch and jitter
        pitch[variant] = f0_hz(r.samples, r.rate)
    assert pitch["hi-m"] / pitch["lo-m"] == pytest.approx(2 ** 0.5, rel=0.12), pitch


def test_festival_gives_the_same_bytes_whatever_it_said_before(engine_set, tmp_path):
    fest = engine_set.get("festival")
    first = fest.render("left", "kal", "hi-s", np.random.default_rng(1)).samples
    fest.render("backward", "slt", "lo-l", np.random.default_rng(2))
    fest.render("seven", "ked", "mid-m", np.random.default_rng(3))
    again = fest.render("left", "kal", "hi-s", np.random.default_rng(1)).samples
    fresh = festival.Festival(tmp_path)
    try:
        other = fresh.render("left", "kal", "hi-s", np.random.default_rng(1)).samples
    finally:
        fresh.close()
    assert np.array_equal(first, again) and np.array_equal(first, other)


def test_variant_settings_keep_duration_and_move_formants():
    s = variation.setting("lo-s", np.random.default_rng(0))
    assert s.formant_scale == 1.1 and s.engine_stretch == pytest.approx(s.stretch * 1.1)
    # asked for 1/1.1 of the pitch, then read 1.1x faster: the listener hears pitch_st
    assert s.engine_pitch_st + 12 * np.log2(1.1) == pytest.approx(s.pitch_st)
    assert s.rate_after(16000) == 17600
    with pytest.raises(DatasetError, match="unknown variant"):
        variation.setting("loud", np.random.default_rng(0))


def test_speaker_names_carry_engine_voice_and_variant():
    assert engines.parse_speaker("festival:ked+lo-l") == ("festival", "ked", "lo-l")
    assert engines.parse_speaker("en-us+m3") == (None, "en-us", "m3")  # datasets before engines
    assert engines.parse_speaker("speech-commands:0a7c2a8d") == ("speech-commands", "0a7c2a8d", None)
    assert engines.source_of(engines.speaker_name("flite", "awb", "hi-m")) == "flite"


def test_a_missing_engine_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no program on it
    monkeypatch.setattr(rhvoice, "LIBRARY", "libRHVoice-not-here.so.5")  # rhvoice is a library
    for name, package in (("festival", "festvox-kallpc16k"), ("flite", "apt-get install flite"),
                          ("espeak-ng", "apt-get install espeak-ng"), ("mbrola", "apt-get install mbrola mbrola-us1"),
                          ("pico", "apt-get install libttspico-utils"), ("rhvoice", "apt-get install librhvoice5")):
        with pytest.raises(DatasetError, match=package):
            cast.check(cast.default_cast((name,)))


def test_a_missing_voice_names_its_package(monkeypatch, tmp_path):
    """mbrola and rhvoice voices are packages (or folders) of their own; RHVoice would fall back
    silently to its default voice, so the check must catch it."""
    monkeypatch.setattr(mbrola, "DATABASES", tmp_path)
    with pytest.raises(DatasetError, match="apt-get install mbrola-en1"):
        cast.check([cast.Cast("mbrola", ("en1",), ("mid-m",), 1.0)])
    monkeypatch.setattr(rhvoice, "VOICE_DIR", tmp_path)
    with pytest.raises(DatasetError, match="rhvoice-english"):
        cast.check([cast.Cast("rhvoice", ("clb",), ("mid-m",), 1.0)])
    with pytest.raises(DatasetError, match="unknown pico voice 'en-au'"):
        cast.check([cast.Cast("pico", ("en-au",), ("mid-m",), 1.0)])


def test_the_new_engines_give_the_same_bytes_for_the_same_request(engine_set):
    for name, voice in (("mbrola", "us2"), ("pico", "en-gb"), ("rhvoice", "clb")):
        e = engine_set.get(name)
        first = e.render("forward", voice, "hi-l", np.random.default_rng(5)).samples
        e.render("seven", voice, "lo-s", np.random.default_rng(6))
        assert np.array_equal(first, e.render("forward", voice, "hi-l", np.random.default_rng(5)).samples), name


def test_shares_interleave_engines_in_every_prefix():
    turns = cast.interleave([0.5, 0.25, 0.25], 100)
    assert [turns.count(k) for k in range(3)] == [50, 25, 25]
    for n in (4, 8, 40):
        assert [turns[:n].count(k) for k in range(3)] == [n // 2, n // 4, n // 4]
