"""The receipt a collector sends a device: its bytes, its validation and the spool refs it names."""
import pytest

from shared.codec import encode
from shared.errors import ProtocolError
from shared.messages import decode
from shared.receipts import MAX_REFS, boot_seq, receipt, refs_of


def test_a_receipt_is_plain_json_byte_for_byte_and_names_spool_refs():
    body = receipt("dev-1", 5.0, [(7, 1), (7, 2)], [(7, 0)])
    assert encode(body) == (b'{"device":"dev-1","events":[[7,0]],"kind":"receipt","t":5.0,"v":"1.0",'
                            b'"windows":[[7,1],[7,2]]}')
    assert refs_of(decode(encode(body), "receipt")) == ["stats/7/1", "stats/7/2", "event/7/0"]


@pytest.mark.parametrize("change, code", [
    ({"windows": None}, "missing_field"),
    ({"windows": [[1, 2, 3]]}, "bad_field"),
    ({"windows": [[1, -2]]}, "bad_field"),
    ({"windows": [[1, 2.0]]}, "bad_field"),
    ({"events": [["1", 2]]}, "bad_field"),
    ({"windows": [[1, 2]] * (MAX_REFS + 1)}, "bad_field"),
    ({"device": "a/b"}, "bad_field"),
])
def test_a_malformed_receipt_is_refused_with_its_code(change, code):
    body = {**receipt("dev-1", 5.0, [(7, 1)], []), **change}
    body = {k: v for k, v in body.items() if v is not None}
    with pytest.raises(ProtocolError) as info:
        decode(encode(body), "receipt")
    assert info.value.code == code


def test_boot_and_seq_are_read_even_from_a_window_the_collector_refuses():
    assert boot_seq(encode({"kind": "window", "boot": 3, "seq": 4, "t_start": "garbage"})) == (3, 4)
    assert boot_seq(encode({"kind": "window", "boot": -1, "seq": 4})) is None
    assert boot_seq(encode({"kind": "event", "boot": 3})) is None
    assert boot_seq(b"not json") is None
