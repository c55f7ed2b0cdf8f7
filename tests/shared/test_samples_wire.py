"""The field-sample wire format: topics, the header, chunks (byte for byte) and their checks."""
from __future__ import annotations

import hashlib
import json

import pytest

from shared import samples as wire
from shared.errors import ProtocolError
from shared.messages import decode
from shared.topics import ParsedTopic, Topics

T = Topics()
SHA = "ab" * 32


def test_sample_topics_are_built_and_parsed_from_one_template():
    assert T.sample("dev-1") == "harken/v1/dev/dev-1/sample"
    assert T.sample_chunk("dev-1", SHA, 7) == f"harken/v1/dev/dev-1/sample/{SHA}/7"
    assert T.parse(T.sample("dev-1")) == ParsedTopic(kind="sample", device="dev-1")
    assert T.parse(T.sample_chunk("d.2", SHA, 12)) == ParsedTopic(kind="sample_chunk", device="d.2", sha256=SHA,
                                                                   chunk=12)
    assert T.shared_filter("g", "sample_chunk") == "$share/g/harken/v1/dev/+/sample/+/+"


@pytest.mark.parametrize("tail", [f"sample/{SHA}", f"sample/{SHA[:-1]}/0", f"sample/{SHA}/x", f"sample/{SHA}/1/2",
                                  f"sample/{SHA}/\u00b2", f"sample/{SHA}/1234567"])
def test_malformed_chunk_topics_are_refused(tail):
    with pytest.raises(ProtocolError) as info:
        T.parse(f"harken/v1/dev/dev-1/{tail}")
    assert info.value.code == "bad_topic"


def test_a_clip_is_a_header_then_its_chunks_byte_for_byte():
    wav = bytes(range(256)) * 600  # 153,600 bytes: 3 chunks of 64 KiB, the last 22,528
    msgs = wire.messages(T, "dev-1", wav, {"reason": "audit", "captured_t": 1700000000.1234, "duration_ms": 4800.04,
                                           "label": "yes", "confidence": 0.41, "model": "cd" * 32, "utterance": "7-3"})
    sha = hashlib.sha256(wav).hexdigest()
    assert [t for t, _ in msgs] == [T.sample("dev-1")] + [T.sample_chunk("dev-1", sha, i) for i in range(3)]
    assert b"".join(p for _, p in msgs[1:]) == wav and [len(p) for _, p in msgs[1:]] == [65536, 65536, 22528]
    chunk_shas = [hashlib.sha256(p).hexdigest() for _, p in msgs[1:]]
    expected = ('{"captured_t":1700000000.123,"chunk_bytes":65536,"chunk_sha256":["%s","%s","%s"],"chunks":3,'
                '"confidence":0.41,"device":"dev-1","duration_ms":4800.0,"kind":"sample","label":"yes","model":"%s",'
                '"reason":"audit","sha256":"%s","size_bytes":153600,"utterance":"7-3","v":"1.0"}'
                % (*chunk_shas, "cd" * 32, sha))
    assert msgs[0][1] == expected.encode()
    head = decode(msgs[0][1], "sample")
    for i, (_, data) in enumerate(msgs[1:]):
        wire.check_chunk(head, i, data)  # each chunk fits its header


def _header(**changes) -> bytes:
    wav = b"x" * 100_000
    head = wire.header("dev-1", wav, reason="low_confidence", captured_t=1.0, duration_ms=3000.0)
    head.update(changes)
    return json.dumps(head).encode()


@pytest.mark.parametrize("changes", [{"chunks": 3}, {"size_bytes": 0}, {"chunk_bytes": 300 * 1024},
                                     {"reason": "curious"}, {"sha256": "AB" * 32}, {"chunk_sha256": ["00" * 32]},
                                     {"confidence": 1.5}, {"size_bytes": wire.MAX_SAMPLE_BYTES + 1}])
def test_headers_that_contradict_themselves_are_refused(changes):
    with pytest.raises(ProtocolError) as info:
        decode(_header(**changes), "sample")
    assert info.value.code == "bad_field"


def test_a_chunk_that_does_not_fit_its_header_is_refused_by_code():
    wav = b"y" * 70_000
    head = wire.header("dev-1", wav, reason="alert", captured_t=1.0, duration_ms=1.0)
    with pytest.raises(ProtocolError) as info:
        wire.check_chunk(head, 2, b"y")
    assert info.value.code == "sample_chunk_index"
    for bad in (wav[:65535], b"z" * 65536):  # short, or the right length with other bytes
        with pytest.raises(ProtocolError) as info:
            wire.check_chunk(head, 0, bad)
        assert info.value.code == "sample_chunk_corrupt"


def test_labels_are_safe_folder_names():
    assert wire.check_label("_silence_") == "_silence_"
    for bad in ("", ".hidden", "-x", "a/b", "x" * 65, "yes no", "..", "é"):
        with pytest.raises(ValueError):
            wire.check_label(bad)
