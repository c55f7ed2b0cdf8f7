"""Fuzz: generated malformed payloads through the decoder and through the ingest handler
into a real store. Nothing may crash; every bad message is counted by code and kept in
``rejected``; the valid windows in between are all stored."""
from __future__ import annotations

import itertools
import json
import random
import time
import zlib
from collections import Counter

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cloud.ingest import IngestHandler
from cloud.store import Batch, open_store
from shared.codec import dumps, encode
from shared.errors import ProtocolError
from shared.messages import decode
from shared.topics import Topics
from tests.cloud.conftest import random_window

TOPICS = Topics()
NOW = 1_800_000_000.0
TEMPLATE = random_window(random.Random(0), "dev-1", 1, 0, t_start=NOW, shadow=True)
PATHS = [(k,) for k in TEMPLATE] + [(section, k) for section in ("software", "input", "output", "feedback", "shadow")
                                    for k in TEMPLATE[section]]
FUZZ = settings(max_examples=250, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
HANDLER_FUZZ = settings(FUZZ, max_examples=100)

nasty_text = st.sampled_from(["\x00", "a\x00b", "\ud800", "x\udfffy", "\u2028", "\ufeff"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12) | nasty_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)
versions = st.one_of(st.text(max_size=6), st.integers(), st.none(),
                     st.sampled_from(["2.0", "0.9", "1", "1.", ".0", "x.y", "1.0.0", "10.0", "01.0", "١.0"]))


def _zlib_bomb(size: int) -> bytes:
    return zlib.compress(b'{"kind":"window","v":"1.0","pad":"' + b"A" * size + b'"}', 9)


BOMBS = [_zlib_bomb(300 * 1024), _zlib_bomb(4 * 1024 * 1024), zlib.compress(b"\x00" * (8 * 1024 * 1024), 9)]


def _set_path(msg: dict, path: tuple, value, delete: bool) -> dict:
    msg = json.loads(json.dumps(msg))
    target = msg
    for key in path[:-1]:
        target = target[key]
    if delete:
        target.pop(path[-1], None)
    else:
        target[path[-1]] = value
    return msg


@st.composite
def wrong_types(draw) -> bytes:
    msg = _set_path(TEMPLATE, draw(st.sampled_from(PATHS)), draw(json_values), draw(st.booleans()))
    raw = json.dumps(msg).encode()
    return zlib.compress(raw) if draw(st.booleans()) else raw


@st.composite
def nasty_fields(draw) -> bytes:
    """Text columns holding NUL or an unpaired surrogate (fine in JSON, refused by databases)."""
    field_name = draw(st.sampled_from(["model", "shadow_model", "agent_version"]))
    return encode({**TEMPLATE, field_name: draw(nasty_text)})


@st.composite
def wrong_versions(draw) -> bytes:
    return json.dumps({**TEMPLATE, "v": draw(versions)}).encode()


@st.composite
def truncated_zlib(draw) -> bytes:
    full = encode(TEMPLATE)
    return full[:draw(st.integers(0, len(full) - 1))]


@st.composite
def flipped_bits(draw) -> bytes:
    data = bytearray(encode(TEMPLATE))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] ^= 1 << draw(st.integers(0, 7))
    return bytes(data)


@st.composite
def bombs(draw) -> bytes:
    bomb = draw(st.sampled_from(BOMBS))
    return bomb if draw(st.booleans()) else bomb[: draw(st.integers(2, len(bomb)))]


@st.composite
def json_junk(draw) -> bytes:
    return json.dumps(draw(json_values)).encode()


malformed = st.one_of(st.binary(max_size=400), wrong_types(), nasty_fields(), wrong_versions(), truncated_zlib(),
                      flipped_bits(), bombs(), json_junk(),
                      st.binary(max_size=200).map(lambda b: b"\x78\x9c" + b),
                      st.text(max_size=60).map(str.encode))
def _variants(payload: bytes, rng: random.Random) -> tuple[bytes, bytes]:
    """Two cheap relatives of a drawn payload: cut short, and one byte changed."""
    if not payload:
        return b"\x78", b"\x00"
    flipped = bytearray(payload)
    flipped[rng.randrange(len(payload))] ^= 1 << rng.randrange(8)
    return payload[:rng.randrange(len(payload))], bytes(flipped)


topics = st.sampled_from([TOPICS.stats("dev-1"), TOPICS.stats("dev-2"), TOPICS.state("dev-1"),
                          TOPICS.event("dev-1"), TOPICS.desired("dev-1"), "harken/v1/dev/a+b/stats", "elsewhere"])


@FUZZ
@given(st.lists(malformed, min_size=40, max_size=40))
@example([b'{"kind":"state","v":"\xc2\xb2.0","device":"dev-1","online":true,"t":1}'] * 40)
@example([b'{"kind":"state","v":"1.0","device":"dev-1","online":true,"t":1' + b"0" * 400 + b"}"] * 40)
def test_the_decoder_only_ever_raises_protocol_error(payloads):
    for payload in payloads:
        try:
            decode(payload)
        except ProtocolError as exc:
            assert exc.code and exc.detail


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_the_handler_keeps_every_bad_message_and_every_good_window(engine, tmp_path, pg_schemas):
    """SQLite takes the full 10,000+; PostgreSQL (which refuses NUL text) a third of it."""
    store = open_store(f"sqlite:///{tmp_path / 'fuzz.db'}" if engine == "sqlite" else pg_schemas())
    examples = HANDLER_FUZZ.max_examples if engine == "sqlite" else HANDLER_FUZZ.max_examples // 3
    handler = IngestHandler(TOPICS)
    seqs = itertools.count(1)
    seen = Counter()
    processed = [0]

    @settings(HANDLER_FUZZ, max_examples=examples)
    @given(st.lists(st.tuples(topics, malformed), min_size=40, max_size=40), st.randoms(use_true_random=False))
    def run(drawn, rng):
        bad = [(t, v) for t, p in drawn for v in (p, *_variants(p, rng))]  # 3 payloads per draw
        good = []
        for _ in range(3):
            seq = next(seqs)
            good.append(random_window(rng, f"good-{rng.randrange(5)}", 1, seq, t_start=NOW + seq))
        items = bad + [(TOPICS.stats(w["device"]), encode(w)) for w in good]
        rng.shuffle(items)
        batch = Batch()
        codes = [handler.add(batch, topic, payload, NOW + 1) for topic, payload in items]
        assert len(batch.windows) + len(batch.states) + len(batch.events) + len(batch.rejects) == len(items)
        assert Counter(r.code for r in batch.rejects) == Counter(c for c in codes if c)
        before = sum(store.reject_counts().values())
        store.write(batch)
        seen.update(r.code for r in batch.rejects)
        processed[0] += len(bad)
        assert sum(store.reject_counts().values()) - before == len(batch.rejects)
        for w in good:
            stored = list(store.windows(device=w["device"], since=w["t_start"], until=w["t_start"] + 0.5))
            assert stored == [json.loads(dumps(w))]

    t0 = time.monotonic()
    run()
    total = sum(seen.values())
    assert processed[0] >= (10_000 if engine == "sqlite" else 3_000)
    assert total >= 0.9 * processed[0], f"only {total} of {processed[0]} were rejected"  # a few fuzzed ones are valid
    assert store.reject_counts() == dict(seen)
    with store.transaction(write=False) as cur:
        assert cur.execute("SELECT COUNT(*) FROM rejected").fetchone()[0] == total
    assert {"not_json", "bad_zlib", "too_large", "unsupported_major", "bad_field", "bad_text"} <= set(seen)
    assert time.monotonic() - t0 < 120
    store.close()
