"""Field samples in the collector: staged in any order, stored once by content hash, refused with
a code (and kept) when malformed or oversized, limited per device, expired, labelled with history."""
from __future__ import annotations

import hashlib
import random

import pytest

from cloud.ingest_handler import IngestHandler
from cloud.samples.assemble import Assembler, Retention
from cloud.samples.files import SampleFiles
from cloud.store import open_store
from shared import samples as wire
from shared.codec import encode
from tests.cloud.samples_data import MODEL, T, clip, ingest

RECEIVED = 1_700_000_100.0


@pytest.fixture
def files(tmp_path):
    return SampleFiles(tmp_path / "samples")


def _staged(store) -> tuple[int, int]:
    with store.transaction(write=False) as cur:
        return (cur.execute("SELECT COUNT(*) FROM sample_pending").fetchone()[0],
                cur.execute("SELECT COUNT(*) FROM sample_parts").fetchone()[0])


def test_clips_arrive_in_any_order_and_each_is_stored_once(store, files):
    """Two collector replicas each see some pieces, in any order, some twice: one row and one file per clip."""
    assembler = Assembler(store, files, clock=lambda: RECEIVED)
    wav_a, msgs_a = clip("dev-1", "yes", reason="audit", confidence=0.91)
    wav_b, msgs_b = clip("dev-2", "left", reason="low_confidence", confidence=0.22)
    assert len(msgs_a) >= 4 and len(msgs_b) >= 4  # several chunks each
    pieces = msgs_a + msgs_b + [msgs_a[2], msgs_b[0], msgs_b[-1]]  # a chunk, a header and a last chunk re-sent
    random.Random(3).shuffle(pieces)
    results = [ingest(store, assembler, pieces[i:i + 3]) for i in range(0, len(pieces), 3)]
    assert sum(r.rejects for r in results) == 0
    assert sum(r.samples_staged for r in results) == len(msgs_a) + len(msgs_b)  # duplicates stored once
    rows = {s["device"]: s for s in store.samples()}
    assert sorted(rows) == ["dev-1", "dev-2"] and assembler.stored == 2
    for device, wav, reason, conf, word in (("dev-1", wav_a, "audit", 0.91, "yes"),
                                            ("dev-2", wav_b, "low_confidence", 0.22, "left")):
        s = rows[device]
        sha = hashlib.sha256(wav).hexdigest()
        assert (s["sha256"], s["id"], s["reason"], s["predicted"], s["model"], s["label"]) == \
            (sha, sha[:16], reason, word, MODEL, None)
        assert s["confidence"] == pytest.approx(conf) and s["size_bytes"] == len(wav)
        assert s["duration_ms"] == pytest.approx(1000.0 * (len(wav) - 44) / 2 / 16000, abs=0.1)
        assert files.read(sha) == wav and files.verify(sha)
    assert _staged(store) == (0, 0)
    again = ingest(store, assembler, msgs_a)  # the whole clip once more, after it was stored
    assert (again.samples_staged, again.rejects, len(store.samples())) == (0, 0, 2)


def test_bad_sample_messages_are_rejected_by_code_kept_and_counted_and_cost_nothing_else(sqlite_url, files):
    store = open_store(sqlite_url)
    handler = IngestHandler(T, sample_max_clip_bytes=40_000)
    assembler = Assembler(store, files, clock=lambda: RECEIVED)
    wav, good = clip("dev-1", "go")
    _, big = clip("dev-1", "seven eight nine ten eleven twelve")  # over 40,000 bytes
    _, other = clip("dev-2", "up", chunk_bytes=4096)
    _, corrupt = clip("dev-3", "down")
    head = good[0][1]
    not_wav = wire.messages(T, "dev-4", b"RIFF" + bytes(20_000), {"reason": "audit", "captured_t": 1.0,
                                                                  "duration_ms": 624.0})
    bad = [
        (T.sample("dev-1"), b"{not json"),
        (T.sample("dev-1"), head.replace(b'"reason":"low_confidence"', b'"reason":"bored"')),
        (T.sample("dev-1"), big[0][1]),
        (T.sample("dev-9"), head),  # a header of dev-1 on dev-9's topic
        (T.sample_chunk("dev-1", "ab" * 32, 0), b"x" * (256 * 1024 + 1)),
        (T.sample_chunk("dev-1", "ab" * 32, 0), b""),
        (corrupt[1][0], corrupt[1][1][:-1] + b"\x00"),  # after its header: one byte changed
        (other[1][0].rsplit("/", 1)[0] + "/99", b"x"),  # past the last chunk its header announced
    ]
    result = ingest(store, assembler, [*good, *bad, corrupt[0], other[0], *not_wav], handler=handler)
    codes = sorted(r["code"] for r in store.rejected())
    assert codes == sorted(["not_json", "bad_field", "sample_too_large", "device_mismatch", "sample_chunk_size",
                            "sample_chunk_size", "sample_chunk_corrupt", "sample_chunk_index", "sample_not_wav"]), codes
    assert result.rejects == 8 and assembler.refused == 1  # one refused once assembled (not a WAV)
    assert store.reject_counts()["sample_chunk_size"] == 2 and handler.rejected["sample_too_large"] == 1
    assert [s["sha256"] for s in store.samples()] == [hashlib.sha256(wav).hexdigest()]  # the good clip is in
    by_code = {r["code"]: r for r in store.rejected()}
    assert by_code["sample_chunk_corrupt"]["topic"] == corrupt[1][0]
    assert bytes.fromhex(by_code["not_json"]["head_hex"]) == b"{not json"  # kept for inspection
    store.close()


def test_a_device_over_its_hourly_quota_is_refused_and_the_others_are_not(sqlite_url, files):
    store = open_store(sqlite_url)
    wav1, first = clip("dev-1", "yes")
    _, second = clip("dev-1", "no")
    _, third = clip("dev-2", "off")
    handler = IngestHandler(T, sample_quota_bytes=len(wav1) + 1000)
    assembler = Assembler(store, files, clock=lambda: RECEIVED)
    ingest(store, assembler, first, handler=handler)
    refused = ingest(store, assembler, second + third, handler=handler)
    assert sorted(s["device"] for s in store.samples()) == ["dev-1", "dev-2"]
    codes = [r["code"] for r in store.rejected()]
    assert set(codes) == {"sample_quota"} and refused.rejects == len(codes)
    assert _staged(store) == (0, 0)  # the refused clip's chunks were refused with its header
    later = ingest(store, assembler, second, handler=handler, received_t=RECEIVED + 3601)  # an hour on
    assert later.rejects == 0 and len(store.samples()) == 3
    store.close()


def test_incomplete_clips_expire_and_retention_deletes_unlabelled_samples(sqlite_url, files):
    store = open_store(sqlite_url)
    now = [RECEIVED]
    assembler = Assembler(store, files, Retention(unlabelled_s=86400.0, labelled_s=None, incomplete_s=3600.0),
                          clock=lambda: now[0])
    _, partial = clip("dev-1", "stop")
    ingest(store, assembler, partial[:-1])  # the last chunk never comes
    wav_kept, kept = clip("dev-1", "yes")
    wav_old, old = clip("dev-2", "no")
    ingest(store, assembler, kept + old)
    sha_kept, sha_old = (hashlib.sha256(w).hexdigest() for w in (wav_kept, wav_old))
    store.label_sample(sha_kept, "yes", "ana", RECEIVED + 10)
    assert assembler.sweep(RECEIVED + 3599) == {"finished": 0, "incomplete": 0, "expired": 0}
    assert assembler.sweep(RECEIVED + 3700)["incomplete"] == 1
    assert _staged(store) == (0, 0) and [r["code"] for r in store.rejected()] == ["sample_incomplete"]
    assert assembler.sweep(RECEIVED + 86401)["expired"] == 1  # the unlabelled one; the labelled one stays
    assert [s["sha256"] for s in store.samples()] == [sha_kept]
    assert files.exists(sha_kept) and not files.exists(sha_old)
    store.close()


def test_a_missed_complete_clip_is_finished_by_the_sweep(store, files):
    """Replicas commit the last chunks at once and neither sees the clip complete: the sweep finishes it."""
    _, msgs = clip("dev-1", "right")
    staged = ingest(store, _NoAssembly(), msgs)  # staged, but nobody assembled it (a lost wake-up)
    assert staged.samples_ready and store.samples() == []
    assert Assembler(store, files, clock=lambda: RECEIVED).sweep(RECEIVED)["finished"] == 1
    assert len(store.samples()) == 1 and _staged(store) == (0, 0)


class _NoAssembly:
    def assemble(self, pairs):
        return 0


def test_labels_keep_their_history_and_disagreeing_labellers_are_a_conflict(sqlite_url, files):
    store = open_store(sqlite_url)
    wav, msgs = clip("dev-1", "up")
    ingest(store, Assembler(store, files), msgs)
    sha = hashlib.sha256(wav).hexdigest()
    s = store.label_sample(sha, "up", "ana", 10.0)
    assert (s["label"], s["conflict"], s["labelled_t"]) == ("up", False, 10.0)
    s = store.label_sample(sha, "off", "ben", 20.0)
    assert (s["label"], s["conflict"]) == ("off", True)
    assert [x["sha256"] for x in store.samples(conflicts=True)] == [sha]
    s = store.label_sample(sha, "off", "ana", 30.0)  # ana changes her mind: they agree now
    assert (s["label"], s["conflict"]) == ("off", False) and store.samples(conflicts=True) == []
    assert s["labels"] == [{"label": "up", "by": "ana", "t": 10.0}, {"label": "off", "by": "ben", "t": 20.0},
                           {"label": "off", "by": "ana", "t": 30.0}]
    assert store.sample(sha[:6])["sha256"] == sha and store.sample_summary()["labelled"] == 1
    store.close()


def test_a_header_on_the_wire_is_plain_readable_json():
    _, msgs = clip("dev-1", "yes")
    assert msgs[0][1].startswith(b"{") and encode({"kind": "sample", "v": "1.0"}).startswith(b"{")
