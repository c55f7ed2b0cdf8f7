"""The compiled window schema (``cloud.window_schema``) against the full validator (``shared.messages``).

The fast path may only ever accept what the full validator accepts, with the same dict; on
every fixture window (the contract's, random ones, and the agent's own recorded windows) it
must accept. On 8,000 mutated windows (fields retyped, removed, pushed past their bounds,
text-level damage, the JSON oddities that ``json.loads`` takes and msgspec does not) the two
must agree case by case, the fast path leaving to the full one only the documented oddities.
Then the ingest handler, which chains the two, must refuse exactly what ``decode`` refuses,
with the same code.
"""
from __future__ import annotations

import copy
import json
import random
import time
import zlib
from pathlib import Path

import pytest

from cloud.ingest_handler import IngestHandler
from cloud.store import Batch
from cloud.window_schema import HEADER_FIELDS, MAX_BRACKETS, FastWindows, Undecided, WindowHeader
from shared.codec import encode, parse_json
from shared.errors import ProtocolError
from shared.messages import validate
from shared.topics import Topics
from tests.cloud.conftest import random_window
from tests.shared.windows import make_window, make_window_v11

GOLDEN = Path(__file__).resolve().parents[1] / "edge" / "data" / "windows_golden.json"
CASES = 8000
FAST = FastWindows()
TOPICS = Topics()
I64 = 2 ** 63


def agent_windows() -> list[dict]:
    """The agent's recorded windows (tests/edge), with the timing fields the recording leaves out."""
    out = []
    for scenario in json.loads(GOLDEN.read_text()).values():
        for text in scenario["windows"]:
            w = json.loads(text)
            w["software"].update(cpu_s=0.125, rss_mb=61.5, latency_ms={"vad": [0, 3, 1], "model": [2, 0, 0]})
            out.append(w)
    return out


def fixtures() -> list[dict]:
    rng = random.Random(7)
    made = [make_window(), make_window_v11(), make_window(model=None), make_window(labels={"go": 1}, n_features=0)]
    made += [random_window(rng, f"dev-{i}", i, i, shadow=i % 2 == 0) for i in range(40)]
    return made + agent_windows()


def full(raw: bytes):
    """(True, dict) or (False, code) from the reference validator."""
    try:
        return True, validate(parse_json(raw), expect="window")
    except ProtocolError as exc:
        return False, exc.code


def fast(raw: bytes):
    try:
        return True, FAST.decode(raw)
    except Undecided:
        return False, None


def canonical(message: dict) -> str:
    return json.dumps(message, sort_keys=True, allow_nan=True)  # 1 and 1.0 differ, as they must


@pytest.mark.parametrize("window", fixtures(), ids=lambda w: f"{w['device']}-{w['v']}-{w['seq']}-{w['boot']}")
def test_every_fixture_window_takes_the_fast_path_with_the_full_validators_result(window):
    raw = json.dumps(window).encode()
    ok, reference = full(raw)
    assert ok, reference
    accepted, message = fast(raw)
    assert accepted
    assert canonical(message) == canonical(reference)


def test_the_agents_recorded_windows_are_among_the_fixtures():
    windows = agent_windows()
    assert len(windows) >= 4 and {w["v"] for w in windows} == {"1.1"} and any(w.get("shadow") for w in windows)


# -- mutations --------------------------------------------------------------------------------
ODD_VALUES = [None, True, False, 0, -1, 1, 1.0, 0.5, -0.0, I64 - 1, I64, -I64, -I64 + 1, 10 ** 30, 1e308, -1e308,
              "", "x", "dev-1\n", "1.0", [], {}, [1, 2], [[1, 2, 3]], ["a", "b", 1], ["a", "b", -1], ["a", "b"],
              {"a": 1}, {"a": -1}, {"a": [1]}, {"a": [["x", "y", 1]]}, [None], [1.0], [True], "\u00e9\u2028"]
TEXTS = {"v": ["1.0", "1.1", "01.0", "1.0\n", "1", "1.", ".0", "2.0", "0.9", "1.0.0", "\u0661.0", "10.0", "1.x",
               " 1.0"],
         "kind": ["window", "state", "Window", "", "window\n"],
         "device": ["dev-1", "dev-1\n", "a" * 64, "a" * 65, "", "dev/1", "dev 1", "d\u00e9v", "-._"],
         "automation": ["full", "partial", "shadow", "assist", "human_only", "FULL", "none", ""]}
LONG = {"counts": (4096, 4097), "features": (256, 257), "map": (1024, 1025), "models": (64, 65)}
# text-level oddities json.loads reads and msgspec refuses: the fast path leaves them to the full one
LEFT_TO_FULL = ("nan", "infinity", "bom", "utf16", "surrogate", "deep")


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _set(obj, path, value=None, delete=False):
    for key in path[:-1]:
        obj = obj[key]
    if delete:
        if isinstance(obj, dict):
            obj.pop(path[-1], None)
        else:
            del obj[path[-1]]
    else:
        obj[path[-1]] = value


def _lengthen(w: dict, rng: random.Random) -> None:
    """Push one list or map to its limit or one past it."""
    which = rng.choice(list(LONG))
    n = LONG[which][rng.randrange(2)]
    if which == "counts":
        section, name = rng.choice([("input", "utterance_ms"), ("output", "confidence"), ("input", "snr_db")])
        w[section][name] = [1] * n
        w["output"].pop("confidence_by_label", None)
    elif which == "features":
        w["input"]["features"] = [[0, 1]] * n
    elif which == "map":
        w["output"]["labels"] = {f"l{i}": 1 for i in range(n)}
    else:
        w["feedback"]["by_model"] = {f"{i:064x}": [["a", "b", 1]] for i in range(n)}


def _text_mutation(raw: bytes, rng: random.Random) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:  # flip a bit
        b = bytearray(raw)
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return bytes(b)
    if kind == 1:  # cut short
        return raw[:rng.randrange(len(raw))]
    if kind == 2:  # a duplicate key (json.loads keeps the last)
        return raw[:-1] + b',"seq":' + rng.choice([b"5", b"-5", b'"5"', b"5.0"]) + b"}"
    junk = rng.choice([b"\x00", b"\xff", b"\xc0\x80", b"\t", b" ", b"\n", b"]", b"{}"])  # trailing junk or space
    return raw + junk


def _oddity(w: dict, rng: random.Random) -> tuple[bytes, str]:
    """A valid window spelled in a way only json.loads reads (``LEFT_TO_FULL``)."""
    name = rng.choice(LEFT_TO_FULL)
    if name == "nan":
        w["extra"] = float("nan")
        return json.dumps(w).encode(), name
    if name == "infinity":
        w["extra"] = float("-inf")
        return json.dumps(w).encode(), name
    if name == "bom":
        return b"\xef\xbb\xbf" + json.dumps(w).encode(), name
    if name == "utf16":
        return json.dumps(w).encode("utf-16"), name
    if name == "surrogate":
        w["agent_version"] = "x\ud800"
        return json.dumps(w).encode(), name  # \ud800 escaped: json.loads reads a lone surrogate
    depth = rng.choice([MAX_BRACKETS, 900, 990, 993, 995, 997, 1100])
    return json.dumps(w).encode()[:-1] + b',"deep":' + b"[" * depth + b"]" * depth + b"}", name


def mutated(base: list[dict], rng: random.Random) -> tuple[bytes, str]:
    """One mutated window as JSON text, and what was done to it."""
    w = copy.deepcopy(rng.choice(base))
    roll = rng.random()
    if roll < 0.08:
        return _oddity(w, rng)
    if roll < 0.15:
        _lengthen(w, rng)
        return json.dumps(w).encode(), "long"
    what = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        paths = [p for p in _paths(w) if p]
        path = rng.choice(paths)
        r = rng.random()
        if r < 0.2:
            _set(w, path, delete=True)
            what.append("delete")
        elif r < 0.3 and path[-1] in TEXTS:
            _set(w, path, rng.choice(TEXTS[path[-1]]))
            what.append("text")
        elif r < 0.4:
            _set(w, path[:-1] + (f"unknown{rng.randrange(3)}",) if isinstance(path[-1], str) else path,
                 rng.choice(ODD_VALUES))
            what.append("extra")
        else:
            _set(w, path, copy.deepcopy(rng.choice(ODD_VALUES)))
            what.append("retype")
    raw = json.dumps(w, allow_nan=True).encode()
    if rng.random() < 0.15:
        return _text_mutation(raw, rng), "bytes"
    return raw, "+".join(what)


@pytest.fixture(scope="module")
def fuzz_cases() -> list[tuple[bytes, str]]:
    rng = random.Random(11)
    base = fixtures()
    return [mutated(base, rng) for _ in range(CASES)]


def test_on_mutated_windows_the_fast_path_never_accepts_what_the_full_validator_refuses(fuzz_cases):
    tally = {"both": 0, "refused": 0, "left": 0}
    for raw, what in fuzz_cases:
        ok_full, reference = full(raw)
        ok_fast, message = fast(raw)
        if ok_fast:
            assert ok_full, (what, reference, raw[:300])
            assert canonical(message) == canonical(reference), (what, raw[:300])
            tally["both"] += 1
        elif ok_full:  # undecided, but valid: only the documented oddities may get here
            assert what in LEFT_TO_FULL, (what, raw[:300])
            tally["left"] += 1
        else:
            tally["refused"] += 1
    # the case set is worth something only if it holds plenty of each outcome
    assert min(tally.values()) >= 200, tally


def row(message: dict) -> dict:
    """What the store reads of a window: its top-level fields (all a fast-path row holds)."""
    return {name: message.get(name) for name in HEADER_FIELDS}


def test_a_header_is_the_top_level_of_the_full_decode_from_one_parse():
    for w in fixtures():
        raw = json.dumps(w).encode()
        header = FAST.header(raw)
        assert isinstance(header, WindowHeader) and list(header) == list(HEADER_FIELDS)
        assert canonical(header) == canonical(row(FAST.decode(raw)))
    # a repeated key: each copy is checked and the last one kept, as json.loads keeps it
    w = make_window()
    twice = json.dumps(w)[:-1] + ', "seq": 7, "model": "m2"}'
    assert FAST.header(twice.encode())["seq"] == 7 == json.loads(twice)["seq"]
    assert FAST.header(twice.encode())["model"] == "m2"
    with pytest.raises(Undecided):
        FAST.header((json.dumps(w)[:-1] + ', "seq": -1}').encode())


class FullOnlyHandler(IngestHandler):
    """The ingest handler as it was before the fast path: every window through shared.messages."""

    def _decode(self, raw: bytes, kind: str) -> dict:
        return validate(parse_json(raw), expect=kind)


def test_the_handler_refuses_exactly_what_it_refused_without_the_fast_path(fuzz_cases):
    handler, reference = IngestHandler(TOPICS), FullOnlyHandler(TOPICS)
    for raw, what in fuzz_cases[:3000]:
        payload = zlib.compress(raw) if what != "bytes" else raw
        batch, expected_batch = Batch(), Batch()
        got = handler.add(batch, TOPICS.stats("dev-1"), payload, 1.0)
        expected = reference.add(expected_batch, TOPICS.stats("dev-1"), payload, 1.0)
        assert got == expected, (what, raw[:200])
        assert [(row(r.message), r.body) for r in batch.windows] == [(row(r.message), r.body)
                                                                     for r in expected_batch.windows]
    assert handler.rejected == reference.rejected and handler.accepted == reference.accepted
    assert handler.undecided > 0 and handler.accepted.get("window", 0) > 100


def test_the_fast_path_costs_a_fraction_of_the_full_validator():
    raws = [json.dumps(w).encode() for w in fixtures()] * 20

    def best(check) -> float:  # the best of five: a busy machine slows single runs at random
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            for raw in raws:
                check(raw)
            times.append(time.perf_counter() - t0)
        return min(times)

    assert best(FAST.decode) < best(lambda raw: validate(parse_json(raw), expect="window")) / 2


def test_encoded_windows_round_trip_through_the_handler_on_the_fast_path():
    handler = IngestHandler(TOPICS)
    batch = Batch()
    for w in fixtures():
        assert handler.add(batch, TOPICS.stats(w["device"]), encode(w), time.time()) is None
    assert handler.undecided == 0
    assert [r.message["seq"] for r in batch.windows] == [w["seq"] for w in fixtures()]


def test_a_fast_path_window_naming_nan_in_a_string_is_stored_as_the_full_path_stores_it():
    handler, reference = IngestHandler(TOPICS), FullOnlyHandler(TOPICS)
    w = make_window(device="dev-1")
    w["agent_version"] = "NaN-Infinity-build"
    batch, expected_batch = Batch(), Batch()
    assert handler.add(batch, TOPICS.stats("dev-1"), encode(w), 1.0) is None
    assert reference.add(expected_batch, TOPICS.stats("dev-1"), encode(w), 1.0) is None
    assert handler.undecided == 0 and isinstance(batch.windows[0].message, WindowHeader)
    assert batch.windows[0].body == expected_batch.windows[0].body
    assert json.loads(batch.windows[0].body) == w
