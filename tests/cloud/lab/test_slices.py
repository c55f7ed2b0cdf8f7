"""Slice table arithmetic, checked on a hand-made example."""
from __future__ import annotations

import pytest

from cloud.lab.slices import slice_table, table_text


def test_three_questions_and_priority_on_a_hand_made_example():
    # 10 clips, 4 errors. noise=babble on clips 0-3 (3 errors), noise=none on 4-9 (1 error).
    tags = [{"noise": "babble", "accent": "en-us"}] * 4 + [{"noise": "none", "accent": "en-gb"}] * 6
    tags[9] = {"noise": "none", "accent": None, "offset_ms": 120}
    correct = [False, False, False, True, True, True, True, True, True, False]
    rows = {(r["tag"], r["value"]): r for r in slice_table(tags, correct)}
    babble = rows[("noise", "babble")]
    assert babble["count"] == 4 and babble["errors"] == 3
    assert babble["error_share"] == pytest.approx(3 / 4)  # of all 4 errors
    assert babble["error_rate"] == pytest.approx(3 / 4)  # of the 4 babble clips
    assert babble["data_share"] == pytest.approx(4 / 10)
    assert babble["priority"] == pytest.approx(0.75 * 0.4)
    none = rows[("noise", "none")]
    assert (none["error_share"], none["error_rate"], none["data_share"]) == pytest.approx((1 / 4, 1 / 6, 6 / 10))
    assert rows[("accent", "en-gb")]["count"] == 5  # the None accent is not a slice
    assert ("offset_ms", "120") not in rows  # per-clip tags are skipped
    ordered = slice_table(tags, correct)
    assert [r["priority"] for r in ordered] == sorted((r["priority"] for r in ordered), reverse=True)
    assert (ordered[0]["tag"], ordered[0]["value"]) in {("noise", "babble"), ("accent", "en-us")}


def test_target_error_leaves_only_room_for_improvement():
    tags = [{"snr_db": 5}] * 4 + [{"snr_db": 30}] * 4
    correct = [False, True, True, True] + [True] * 4
    rows = {r["value"]: r for r in slice_table(tags, correct, target_error=0.1)}
    assert rows["5"]["priority"] == pytest.approx((0.25 - 0.1) * 0.5)
    assert rows["30"]["priority"] == 0.0
    text = table_text(slice_table(tags, correct))
    assert "snr_db" in text and "25.0%" in text
