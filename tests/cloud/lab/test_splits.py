"""Splits: speaker-disjoint, stratified by label, deterministic from the seed."""
from __future__ import annotations

from collections import Counter

import pytest

from cloud.lab import dataset, engines, splits
from cloud.lab.dataset import Clip
from shared.errors import DatasetError

LABELS = ["a", "b", "c", "d"]


def _clips(n_speakers=40, per_label=3, skew=False):
    clips = []
    for s in range(n_speakers):
        for li, label in enumerate(LABELS):
            n = per_label + (s % 3 if skew else 0) + (li if skew else 0)
            clips += [Clip(f"{s}-{label}-{k}.wav", label, f"spk{s:02d}", "0" * 64) for k in range(n)]
    return clips


def _check_disjoint_and_complete(clips, sp):
    seen = {}
    for name, idx in sp.indices.items():
        for i in idx:
            assert i not in seen, "a clip in two splits"
            seen[i] = name
    assert len(seen) == len(clips)
    owners = {}
    for i, name in seen.items():
        assert owners.setdefault(clips[i].speaker, name) == name, "a speaker in two splits"


@pytest.mark.parametrize("skew", [False, True])
def test_speaker_disjoint_and_stratified(skew):
    clips = _clips(skew=skew)
    sp = splits.split(clips, LABELS, seed=3)
    _check_disjoint_and_complete(clips, sp)
    total = Counter(c.label for c in clips)
    for name, frac in zip(splits.SPLITS, splits.DEFAULT_FRACTIONS):
        got = Counter(clips[i].label for i in sp.indices[name])
        size = len(sp.indices[name])
        assert abs(size / len(clips) - frac) < 0.05
        for label in LABELS:  # each split mirrors the label mix of the whole set
            assert abs(got[label] / size - total[label] / len(clips)) < 0.03


def test_deterministic_from_seed():
    clips = _clips()
    assert splits.split(clips, LABELS, seed=1) == splits.split(clips, LABELS, seed=1)
    assert splits.split(clips, LABELS, seed=1).speakers != splits.split(clips, LABELS, seed=2).speakers


def test_every_split_gets_a_speaker_even_with_three():
    clips = _clips(n_speakers=3)
    sp = splits.split(clips, LABELS, seed=0)
    assert all(len(v) == 1 for v in sp.speakers.values())


def test_too_few_speakers_is_a_dataset_error():
    with pytest.raises(DatasetError, match="speaker"):
        splits.split(_clips(n_speakers=2), LABELS)


def test_real_dataset_split_and_distribution_table(tiny_lab):
    ds = dataset.load(tiny_lab.data_dir)
    sp = splits.split(ds.clips, ds.labels, seed=0)
    _check_disjoint_and_complete(ds.clips, sp)
    rows = splits.distribution(ds.clips, ds.labels, sp)
    assert [r["label"] for r in rows] == ds.labels
    for r in rows:
        assert r["all"] == r["train"] + r["dev"] + r["test"] == (12 if r["label"] == "_unknown_" else 6)
        assert r["test"] >= 1 and r["dev"] >= 1


def test_accents_are_spread_over_the_splits():
    accents = ["en-us", "en-gb", "en-029", "en-gb-scotland"]
    clips = []
    for a in accents:
        for v in range(10):
            clips += [Clip(f"{a}{v}{label}.wav", label, f"{a}+v{v}", "0" * 64) for label in LABELS]
    for seed in range(3):
        sp = splits.split(clips, LABELS, seed=seed)
        for name in ("dev", "test"):
            per_accent = Counter(s.split("+")[0] for s in sp.speakers[name])
            assert set(per_accent) == set(accents), (seed, name, per_accent)  # every accent, ~1-2 each
            assert max(per_accent.values()) <= 2


def _engine_clips(counts={"espeak-ng": 48, "festival": 9, "flite": 12}, per_label=2):
    clips = []
    for engine, n in counts.items():
        for v in range(n):
            speaker = f"{engine}:voice{v % 3}+x{v}"
            clips += [Clip(f"{speaker}{label}{k}.wav", label, speaker, "0" * 64, {"engine": engine})
                      for label in LABELS for k in range(per_label * (4 if engine != "espeak-ng" else 1))]
    return clips


def test_every_engine_is_in_every_split_in_proportion():
    """festival has 9 speakers, espeak-ng 48; each split still gets its share of every engine's clips."""
    clips = _engine_clips()
    for seed in range(5):
        sp = splits.split(clips, LABELS, seed=seed)
        _check_disjoint_and_complete(clips, sp)
        for engine in ("espeak-ng", "festival", "flite"):
            mine = [i for i, c in enumerate(clips) if c.tags["engine"] == engine]
            for name, frac in zip(splits.SPLITS, splits.DEFAULT_FRACTIONS):
                share = len(set(mine) & set(sp.indices[name])) / len(mine)
                assert abs(share - frac) <= 0.08, (seed, engine, name, share)  # about a speaker of 9


def test_one_source_splits_as_before_engines_were_named():
    """A pre-engine espeak-ng dataset ("en-us+m3") and the same with "espeak-ng:" names split
    alike, so a bundle's recorded split still means the same clips."""
    accents = ["en-us", "en-gb", "en-029", "en-gb-scotland"]
    old = [Clip(f"{a}{v}{label}.wav", label, f"{a}+v{v}", "0" * 64) for a in accents for v in range(10)
           for label in LABELS]
    new = [Clip(c.path, c.label, "espeak-ng:" + c.speaker, c.sha256) for c in old]
    for seed in range(3):
        assert splits.split(old, LABELS, seed=seed).indices == splits.split(new, LABELS, seed=seed).indices


def test_a_real_multi_engine_dataset_splits_by_speaker_with_every_engine_everywhere(engines_data):
    ds = dataset.load(engines_data)
    sp = splits.split(ds.clips, ds.labels, seed=0)
    _check_disjoint_and_complete(ds.clips, sp)
    for name in splits.SPLITS:
        assert {ds.clips[i].tags["engine"] for i in sp.indices[name]} - {None} == set(engines.ENGINES), name
