import json
import zlib

import pytest

from shared import codec
from shared.errors import ProtocolError
from shared.messages import decode, validate
from tests.shared.windows import make_window


def test_plain_messages_are_sorted_compact_json_byte_for_byte():
    msg = {"kind": "state", "device": "d1", "online": False, "t": 5}
    assert codec.encode(msg) == b'{"device":"d1","kind":"state","online":false,"t":5,"v":"1.0"}'


def test_windows_are_zlib_compressed_and_round_trip():
    w = make_window()
    payload = codec.encode(w)
    assert payload[:1] == b"\x78"
    assert json.loads(zlib.decompress(payload)) == w
    assert decode(payload, "window") == w


def test_default_window_fits_the_1kb_budget():
    w = make_window(labels={f"l{i}": i for i in range(12)}, scale=37)
    assert len(codec.encode(w)) <= 1024


def test_encoding_is_deterministic():
    w = make_window()
    assert codec.encode(w) == codec.encode(dict(reversed(list(w.items()))))


@pytest.mark.parametrize("payload, code", [
    (b"", "empty"),
    (b"\xff\xfe", "not_json"),
    (b"[1,2]", "not_object"),
    (b'{"v":"1.0"}', "no_kind"),
    (b'{"kind":"state"}', "no_version"),
    (b'{"kind":"state","v":"2.0","device":"d","online":true,"t":1}', "unsupported_major"),
    (b'{"kind":"state","v":"one","device":"d","online":true,"t":1}', "bad_version"),
    (b'{"kind":"gossip","v":"1.0"}', "unknown_kind"),
    (b'{"kind":"state","v":"1.0","online":true,"t":1}', "missing_field"),
    (b'{"kind":"state","v":"1.0","device":"a/b","online":true,"t":1}', "bad_field"),
    (b"\x78\x9c\x01\x02", "bad_zlib"),
])
def test_bad_payloads_raise_protocol_errors_with_stable_codes(payload, code):
    with pytest.raises(ProtocolError) as info:
        decode(payload)
    assert info.value.code == code


def test_truncated_zlib_is_rejected():
    payload = codec.encode(make_window())
    with pytest.raises(ProtocolError) as info:
        decode(payload[: len(payload) // 2])
    assert info.value.code == "bad_zlib"


def test_zlib_bomb_is_refused_before_it_is_inflated_whole():
    bomb = zlib.compress(b'{"kind":"window","v":"1.0","x":"' + b"a" * (codec.MAX_MESSAGE_BYTES * 4) + b'"}')
    with pytest.raises(ProtocolError) as info:
        decode(bomb)
    assert info.value.code == "too_large"


def test_unknown_fields_are_ignored_and_minor_versions_accepted():
    msg = {"kind": "state", "v": "1.7", "device": "d1", "online": True, "t": 1.0, "future_field": {"x": 1}}
    assert decode(codec.dumps(msg))["future_field"] == {"x": 1}


def test_wrong_kind_for_topic_is_rejected():
    with pytest.raises(ProtocolError) as info:
        decode(codec.encode({"kind": "state", "device": "d", "online": True, "t": 1}), expect="window")
    assert info.value.code == "wrong_kind"


@pytest.mark.parametrize("path, value", [
    (("software", "frames"), -1),
    (("software", "frames"), 1.5),
    (("input", "features"), [[1, "x"]]),
    (("output", "labels"), {"yes": -2}),
    (("feedback", "pairs"), [["yes", "no"]]),
    (("automation",), "autopilot"),
    (("shadow", "errors"), -1),
    (("shadow", "errors"), "3"),
])
def test_window_field_types_are_checked(path, value):
    w = make_window()
    w["shadow"] = {"compared": 4, "agree": 3, "errors": 1, "confidence": [0] * 11, "labels": {"yes": 4}}
    validate(w)  # shadow.errors is an optional count
    target = w
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ProtocolError) as info:
        validate(w)
    assert info.value.code == "bad_field"


def test_nan_cannot_be_encoded():
    w = make_window()
    w["software"]["cpu_s"] = float("nan")
    with pytest.raises(ValueError):
        codec.encode(w)


@pytest.mark.parametrize("counts", [[], [0], [1, 2, 3], [2 ** 63 - 1], [0] * 4096, [True], [1, False], [-1], [3, -2],
                                    [2 ** 63], [1.0], [1, "2"], [None], [0] * 4097, (1, 2), "12", {1: 2}])
def test_a_count_list_passes_exactly_when_every_item_is_a_nonnegative_64_bit_int(counts):
    """The window validator's fast count check says what checking each item one by one says."""
    from shared.messages import _counts, _nonneg_int

    assert _counts(counts) == (isinstance(counts, list) and len(counts) <= 4096 and all(map(_nonneg_int, counts)))
