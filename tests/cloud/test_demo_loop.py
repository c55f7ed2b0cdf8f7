"""The demo's data-loop figures: feedback accuracy per model and the gain between two models."""
from __future__ import annotations

from cloud.demo.loop import accuracy_gain, field_accuracy


class _Windows:
    def __init__(self, windows):
        self.rows = windows

    def windows(self, since=None, until=None):
        return [w for w in self.rows if since <= w["t_start"] and (until is None or w["t_start"] < until)]


def _window(t, model, pairs, by_model=None):
    return {"t_start": t, "model": model, "feedback": {"pairs": pairs, "audit": [], "by_model": by_model or {},
                                                       "audit_by_model": {}}}


def test_accuracy_counts_a_models_own_answers_and_those_credited_to_it_after_a_swap():
    store = _Windows([
        _window(0.0, "old", [["yes", "yes", 5]]),  # before `since`: not counted
        _window(10.0, "old", [["yes", "yes", 3], ["no", "yes", 1]]),
        _window(20.0, "new", [["no", "no", 4]], by_model={"old": [["yes", "yes", 2], ["up", "no", 2]]}),
    ])
    assert field_accuracy(store, "old", since=5.0) == {"accuracy": round(5 / 8, 4), "answers": 8}
    assert field_accuracy(store, "new", since=5.0, until=15.0) == {"accuracy": None, "answers": 0}
    assert field_accuracy(store, "new", since=5.0) == {"accuracy": 1.0, "answers": 4}


def test_the_gain_interval_narrows_with_answers_and_is_none_without_them():
    small = accuracy_gain({"accuracy": 0.55, "answers": 100}, {"accuracy": 0.65, "answers": 100})
    large = accuracy_gain({"accuracy": 0.55, "answers": 4000}, {"accuracy": 0.65, "answers": 4000})
    assert small["estimate"] == large["estimate"] == 0.1
    assert small["low"] < 0 < large["low"] and large["high"] - large["low"] < small["high"] - small["low"]
    assert accuracy_gain({"accuracy": None, "answers": 0}, {"accuracy": 0.6, "answers": 10}) is None
