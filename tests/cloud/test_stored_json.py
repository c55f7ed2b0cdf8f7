"""Stored JSON is read with msgspec (``cloud.store.records.loads``): it must give exactly what
``json.loads`` gave, types included (1 is not 1.0), for every body the store can hold."""
from __future__ import annotations

import json
import random

from cloud.store.records import dumps, loads
from shared.window import merge_windows
from tests.cloud.conftest import random_window


def _same(text) -> bool:
    a, b = loads(text), json.loads(text)
    return a == b and json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_window_and_bucket_bodies_read_as_json_loads_reads_them():
    rng = random.Random(11)
    windows = [random_window(rng, f"dev-{i % 5}", 1, i, shadow=i % 3 == 0, n_features=1 + i % 12) for i in range(200)]
    merged = [merge_windows([w for w in windows if len(w["input"]["features"]) == n]) for n in (1, 12)]
    for body in windows + merged:
        assert _same(dumps(body))
        assert _same(json.dumps(body, indent=1))  # a sender's own spacing is kept in stored bodies


def test_floats_and_odd_texts_match_json_loads():
    rng = random.Random(5)
    floats = [rng.uniform(-1e6, 1e6) for _ in range(2000)] + [rng.random() * 10 ** rng.randint(-300, 300)
                                                              for _ in range(2000)]
    assert _same(json.dumps({"x": floats}))
    for text in ['{"a": 123456789012345678901234567890}', '{"a": -0.0, "b": -0}', '{"a": 1e-7, "b": 1E+16}',
                 '{"a": NaN}', '{"a": 1e400}', '{"a": "\\ud800"}', '{"a": "\\u00e9\\u0000"}', '{"a": 1, "a": 2}',
                 '{"é": ["ü", {"x": null, "y": true}]}', '[]', '{"deep": ' + "[" * 200 + "]" * 200 + "}"]:
        assert _same(text), text
    assert _same(b'{"bytes": 1}')
