"""Households: speakers per device drawn from a split's pool, never the reference's voices."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from edge.sim.audio import SILENCE_LABEL, Timeline, device_stream
from edge.sim.households import cast, resolve_split_names
from edge.sim.scenarios import ScenarioParams
from shared.audio import SAMPLE_RATE as SR
from shared.errors import ConfigError, DatasetError

HEALTHY = ScenarioParams()
NEW = ScenarioParams(name="new-speakers", onset_s=30.0)


def _names(n_train=28, n_dev=6, n_test=6) -> dict[str, list[str]]:
    speakers = [f"acc{i % 4}+v{i}" for i in range(n_train + n_dev + n_test)]
    order = np.random.default_rng(1).permutation(len(speakers))
    shuffled = [speakers[i] for i in order]
    return {"train": sorted(shuffled[:n_train]), "dev": sorted(shuffled[n_train:n_train + n_dev]),
            "test": sorted(shuffled[n_train + n_dev:])}


def test_test_split_households_hold_one_to_three_test_speakers_never_a_reference_or_training_voice():
    names = _names()
    everyone = sorted(s for v in names.values() for s in v)
    casting = cast(everyone, speaker_split="test", split_names=names, speakers_per_device=(1, 3), params=HEALTHY,
                   seed=4)
    assert casting.split == "test" and set(casting.pool) == set(names["test"])
    households = [casting.household(i) for i in range(200)]
    sizes = Counter(len(h) for h in households)
    assert set(sizes) == {1, 2, 3} and min(sizes.values()) > 40  # uniform over 1..3
    heard = {s for h in households for s in h}
    assert heard <= set(names["test"]) and not heard & (set(names["dev"]) | set(names["train"]))
    assert len(heard) == len(names["test"])  # every test voice lives somewhere
    assert all(len(set(h)) == len(h) for h in households)
    again = cast(everyone, speaker_split="test", split_names=names, speakers_per_device=(1, 3), params=HEALTHY,
                 seed=4)
    assert [again.household(i) for i in range(200)] == households  # seeded
    other = cast(everyone, speaker_split="test", split_names=names, speakers_per_device=(1, 3), params=HEALTHY,
                 seed=5)
    assert [other.household(i) for i in range(200)] != households


def test_new_speakers_under_the_test_split_come_from_the_train_split_outside_every_household():
    names = _names()
    everyone = sorted(s for v in names.values() for s in v)
    casting = cast(everyone, speaker_split="test", split_names=names, speakers_per_device=(1, 3), params=NEW, seed=0)
    assert set(casting.new_voices) < set(names["train"]) and not set(casting.new_voices) & set(casting.pool)
    for i in range(50):
        after = casting.new_household(i)
        assert len(after) == len(casting.household(i)) and set(after) <= set(casting.new_voices)


def test_the_split_must_be_in_the_bundle_when_test_voices_are_asked_for():
    with pytest.raises(ConfigError, match="retrain it with the current `harken model train`"):
        cast(["a", "b"], speaker_split="test", split_names=None, speakers_per_device=(1, 3), params=HEALTHY, seed=0,
             bundle="old.hkb")
    with pytest.raises(ConfigError, match="give the bundle"):
        cast(["a", "b"], speaker_split="test", split_names=None, speakers_per_device=(1, 3), params=HEALTHY, seed=0)
    auto = cast(["a", "b"], speaker_split="auto", split_names=None, speakers_per_device=(1, 3), params=HEALTHY, seed=0)
    assert auto.split == "all" and auto.pool == ("a", "b")
    with pytest.raises(DatasetError, match="the dataset the bundle was trained on"):
        cast(["a", "b"], speaker_split="test", split_names=_names(), speakers_per_device=None, params=HEALTHY, seed=0)
    with pytest.raises(ConfigError, match="1 <= lo <= hi"):
        cast(["a", "b"], speaker_split="all", split_names=None, speakers_per_device=(3, 1), params=HEALTHY, seed=0)
    with pytest.raises(ConfigError, match="speaker_split"):
        cast(["a", "b"], speaker_split="dev", split_names=None, speakers_per_device=None, params=HEALTHY, seed=0)


def test_a_real_bundle_tells_its_test_speakers_and_the_stream_plays_only_them(split_lab, pool):
    names = resolve_split_names("auto", str(split_lab.bundle_path))
    assert names == split_lab.names and names["test"]
    casting = cast(pool.speakers, speaker_split="auto", split_names=names, speakers_per_device=(1, 3),
                   params=HEALTHY, seed=0)
    assert casting.split == "test"
    reference = set(names["dev"]) | set(names["train"])
    for i in range(3):
        timeline = Timeline(keep_s=10_000)
        stream = device_stream(pool, HEALTHY, casting, seed=0, device_index=i, targeted=False, timeline=timeline)
        stream.skip(1200 * SR)
        spans = timeline.spans()
        speech = [sp for sp in spans if sp.label != SILENCE_LABEL]
        assert len(speech) > 300
        assert {sp.speaker for sp in speech} <= set(casting.household(i))
        assert not {sp.speaker for sp in spans} & reference  # not even a background clip of theirs
    assert resolve_split_names("auto", str(split_lab.lab.bundle_path)) in (None, names)


def test_every_device_gets_the_pools_share_of_silence_whatever_its_household(pool):
    params = HEALTHY
    casting = cast(pool.speakers, speaker_split="all", split_names=None, speakers_per_device=(1, 1), params=params,
                   seed=0)
    silence, share = pool.silence_of(casting.pool)
    assert silence and 0 < share < 0.5
    for i in range(4):
        timeline = Timeline(keep_s=100_000)
        device_stream(pool, params, casting, seed=0, device_index=i, targeted=False, timeline=timeline).skip(
            20_000 * SR)
        labels = [sp.label for sp in timeline.spans()]
        # ~10,000 clips: the share within 4 standard errors
        assert abs(labels.count(SILENCE_LABEL) / len(labels) - share) < 4 * np.sqrt(share * (1 - share) / len(labels))
