"""Model lifecycle on real onnxruntime: install checks, activation, probation, rollback, crashes."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from edge.desired import DesiredState
from edge.fetch import BundleFetch
from edge.lifecycle import Lifecycle, ProbationPolicy
from shared import keys
from shared.codec import encode
from shared.errors import (BundleTamperedError, BundleTruncatedError, InstallCrashedError, ModelError,
                           NotABundleError, SignatureError)
from tests.edge import bundles as variants

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


sha = variants.model_sha


def file_sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Events:
    def __init__(self):
        self.items: list[dict] = []

    def __call__(self, event, *, model=None, reason=None, detail=None):
        self.items.append({"event": event, "model": model, "reason": reason, "detail": detail})

    def names(self) -> list[str]:
        return [e["event"] for e in self.items]

    def last(self, name: str) -> dict:
        return [e for e in self.items if e["event"] == name][-1]


@pytest.fixture(scope="module")
def blobs(bundle_paths):
    return [p.read_bytes() for p in bundle_paths]


@pytest.fixture
def make(tmp_path, signing):
    def build(policy=ProbationPolicy(), clock=None, events=None):
        extra = {"clock": clock} if clock is not None else {}
        return Lifecycle(tmp_path / "state", [signing[1]], policy, report=events or Events(), **extra)
    return build


def test_install_activate_and_restart(make, blobs):
    events = Events()
    lc = make(events=events)
    lc.start()
    assert lc.active is None and lc.boot > 0 and lc.health() == "ok"
    a = lc.install(blobs[0])
    assert a == sha(blobs[0]) and lc.store.has(a)
    assert events.names() == ["bundle_verified", "model_installed"]
    assert lc.active is None  # installed is not active
    lc.activate(a)
    assert lc.active.sha256 == lc.store.load(a, lc.public_keys).sha256
    assert events.names()[-1] == "model_activated" and lc.health() == "probation"
    b = lc.install(blobs[1])
    lc.activate(b)
    assert (lc.slots.active, lc.slots.previous) == (b, a)  # a had not passed probation, but ran
    again = make()
    again.start()
    assert again.boot not in (0, lc.boot) and again.slots.active == b and again.active is not None
    assert again.slots.probation.boots == 1  # the restart is counted against b's probation


@pytest.mark.parametrize("variant, error, code", [
    ("tampered", BundleTamperedError, "tampered"),
    ("unsigned", SignatureError, "bad_signature"),
    ("other_key", SignatureError, "bad_signature"),
    ("truncated", BundleTruncatedError, "truncated"),
    ("not_a_bundle", NotABundleError, "not_a_bundle"),
    ("smoke_test", ModelError, "smoke_test_failed"),
])
def test_a_bad_bundle_is_refused_with_its_reason_and_never_runs(make, blobs, signing, tmp_path, variant, error, code):
    other = keys.load_private_key(keys.generate_keypair(tmp_path / "other")[0])
    data = {"tampered": lambda: variants.tampered(blobs[1]),
            "unsigned": lambda: variants.unsigned(blobs[1]),
            "other_key": lambda: variants.resigned(blobs[1], other),
            "truncated": lambda: blobs[1][: len(blobs[1]) // 2],
            "not_a_bundle": lambda: b"\x7fELF not a bundle at all",
            "smoke_test": lambda: variants.wrong_expectations(blobs[1], signing[0])}[variant]()
    events = Events()
    lc = make(events=events)
    lc.start()
    lc.activate(lc.install(blobs[0]))
    _feed(lc, 50)  # past probation: health is "ok"
    before = lc.active
    with pytest.raises(error):
        lc.install(data)
    rejected = events.last("bundle_rejected")
    assert rejected["reason"] == code and rejected["detail"]["bundle_sha256"] == file_sha(data)
    assert lc.store.list() == [sha(blobs[0])]
    assert lc.active is before and "model_installed" not in events.names()[-2:]
    assert lc.health() == "degraded" and code in lc.slots.last_error


def _feed(lc, n, *, error=False, latency_ms=2.0):
    for _ in range(n):
        lc.record_inference(lc.active.sha256, latency_ms, RuntimeError("injected") if error else None)


def test_probation_rolls_back_on_errors(make, blobs):
    events = Events()
    lc = make(ProbationPolicy(utterances=20, max_error_rate=0.1), events=events)
    lc.start()
    a, b = lc.install(blobs[0]), lc.install(blobs[1])
    lc.activate(a)
    _feed(lc, 20)
    assert events.names()[-1] == "probation_passed" and lc.slots.probation is None
    lc.activate(b)
    _feed(lc, 7)
    _feed(lc, 3, error=True)  # 3 of 10 > 10 %
    back = events.last("model_rolled_back")
    assert back["model"] == b and back["reason"] == "error_rate" and back["detail"]["to"] == a
    assert lc.slots.active == a and lc.active.sha256 == lc.store.load(a, lc.public_keys).sha256
    assert "error_rate" in lc.slots.failed[b] and lc.health() == "degraded"
    restarted = make()
    restarted.start()
    assert restarted.slots.active == a and restarted.slots.probation is None


def test_probation_rolls_back_on_latency_and_passes_on_time(make, blobs):
    now = [1000.0]
    events = Events()
    lc = make(ProbationPolicy(utterances=100, seconds=60, latency_budget_ms=50), clock=lambda: now[0],
              events=events)
    lc.start()
    a, b = lc.install(blobs[0]), lc.install(blobs[1])
    lc.activate(a)
    _feed(lc, 3)
    now[0] += 61
    lc.tick()
    assert events.names()[-1] == "probation_passed"
    lc.activate(b)
    _feed(lc, 8, latency_ms=20)
    _feed(lc, 2, latency_ms=400)  # p90 of 10 inferences is over the 50 ms budget
    assert events.last("model_rolled_back")["reason"] == "latency" and lc.slots.active == a


def test_crash_loop_rolls_back_after_three_starts(make, blobs):
    lc = make()
    lc.start()
    a = lc.install(blobs[0])
    lc.activate(a)
    _feed(lc, 50)
    b = lc.install(blobs[1])
    lc.activate(b)
    for boots in (1, 2):
        again = make()
        again.start()
        assert again.slots.active == b and again.slots.probation.boots == boots
    events = Events()
    third = make(events=events)
    third.start()
    back = events.last("model_rolled_back")
    assert back["reason"] == "crash_loop" and back["model"] == b
    assert third.slots.active == a and third.active is not None


def test_damaged_stored_model_falls_back_to_previous(make, blobs):
    lc = make()
    lc.start()
    a, b = lc.install(blobs[0]), lc.install(blobs[1])
    lc.activate(a)
    _feed(lc, 50)
    lc.activate(b)
    path = lc.store.path(b)
    path.write_bytes(variants.tampered(path.read_bytes()))  # bit rot on the device
    events = Events()
    again = make(events=events)
    again.start()
    assert again.slots.active == a and again.active is not None
    assert events.names() == ["bundle_rejected", "model_rolled_back"]
    assert events.items[0]["reason"] == "tampered"


# --------------------------------------------------------------------- kill -9 during an install

CRASH_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, ROOT)
    point, state, bundle, pub = sys.argv[1:]
    from shared import keys
    import shared.bundle, edge.lifecycle, edge.store

    def die(*a, **k):
        os.kill(os.getpid(), signal.SIGKILL)

    if point == "after_download":
        edge.lifecycle.load_bundle = die
    elif point == "mid_store_write":
        whole = edge.store.atomic_write
        def half(path, data):
            if not str(path).endswith("bundle.hkb"):
                return whole(path, data)
            with open(str(path.parent / ".bundle.hkb.x.tmp"), "wb") as f:
                f.write(data[: len(data) // 2])
            die()
        edge.store.atomic_write = half
    elif point == "after_store_write":
        put = edge.store.ModelStore.put
        edge.store.ModelStore.put = lambda self, data, sha: (put(self, data, sha), die())
    elif point == "mid_slots_write":
        replace = shared.bundle.os.replace
        shared.bundle.os.replace = lambda a, b: die() if str(b).endswith("slots.json") else replace(a, b)
    elif point == "after_slots_write":
        write = edge.store.SlotsFile.write
        first = []
        def once(self, slots):
            write(self, slots)
            first.append(slots.active)
            if slots.active != first[0]:  # the write that activates the new bundle
                die()
        edge.store.SlotsFile.write = once
    lc = edge.lifecycle.Lifecycle(state, [keys.load_public_key(pub)])
    lc.start()
    lc.activate(lc.install(open(bundle, "rb").read()))
    print("survived")
""").replace("ROOT", repr(ROOT))


@pytest.mark.parametrize("point, expect_new, refused", [
    ("after_download", False, False), ("mid_store_write", False, True), ("after_store_write", False, True),
    ("mid_slots_write", False, False), ("after_slots_write", True, False),
])
def test_kill_9_during_install_restarts_on_a_verified_model(make, blobs, bundle_paths, signing, tmp_path,
                                                            point, expect_new, refused):
    lc = make()
    lc.start()
    a = lc.install(blobs[0])
    lc.activate(a)
    proc = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, point, str(tmp_path / "state"),
                           str(bundle_paths[1]), str(signing[2])], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    events = Events()
    after = make(events=events)
    after.start()
    want = sha(blobs[1]) if expect_new else a
    assert after.slots.active == want and after.active is not None
    assert after.active.sha256 == after.store.load(want, after.public_keys).sha256  # verified again
    assert not list((tmp_path / "state").rglob(".*.tmp"))  # crash leftovers swept
    if refused:  # the agent died installing it: reported, refused for that desired rev (no crash loop)
        rejected = events.last("bundle_rejected")
        assert (rejected["model"], rejected["reason"]) == (sha(blobs[1]), "install_crashed")
        with pytest.raises(InstallCrashedError):
            after.install(blobs[1])
        assert after.install(blobs[1], rev=1) == sha(blobs[1])  # a newer desired rev tries again
    else:
        assert "bundle_rejected" not in events.names()
    if not expect_new and not refused:  # the interrupted install simply happens again
        assert after.install(blobs[1]) == sha(blobs[1])


# --------------------------------------------------------------------- chunked delivery, desired state

def test_chunk_reassembly_any_order_and_checks(blobs):
    data = blobs[0]
    header, chunks = variants.chunked(data, 7000)
    fetch = BundleFetch(sha(data))
    order = list(range(len(chunks)))[::-1]
    for i in order[:2]:
        fetch.update_chunk(i, chunks[i])  # before the header: buffered
    fetch.update_model(header)
    for i in order[2:]:
        assert not fetch.complete
        fetch.update_chunk(i, chunks[i])
    assert fetch.complete and fetch.data == data
    assert BundleFetch(sha(data)).update_model(data).data == data  # the raw bundle on model/{sha}
    bad = BundleFetch(sha(data)).update_model(header)
    with pytest.raises(BundleTamperedError, match="chunk 1"):
        bad.update_chunk(1, chunks[1][:-1] + b"\x00")
    wrong_whole = encode(variants.chunk_header(data, 7000, bundle_sha256="0" * 64))
    whole = BundleFetch(sha(data)).update_model(wrong_whole)
    with pytest.raises(BundleTamperedError, match="bundle_sha256"):
        for i, c in enumerate(chunks):
            whole.update_chunk(i, c)
    with pytest.raises(BundleTamperedError, match="names bundle"):
        BundleFetch(sha(blobs[1])).update_model(header)  # a header for another model
    with pytest.raises(NotABundleError):
        BundleFetch(sha(data)).update_model(b'{"kind": "bundle"}')
    with pytest.raises(NotABundleError, match="inconsistent"):
        BundleFetch(sha(data)).update_model(encode(variants.chunk_header(data, 7000, size=10 ** 6)))


class FakeBroker:
    """Retained bundles by sha; a request queues them (header + chunks) until ``deliver``."""

    def __init__(self, bundles: dict[str, bytes], chunk_size=6000):
        self.bundles, self.chunk_size = bundles, chunk_size
        self.requested, self.released, self.queue = [], [], []
        self.target: DesiredState | None = None

    def request(self, sha_):
        self.requested.append(sha_)
        self.queue.append(sha_)

    def deliver(self):
        while self.queue:
            sha_ = self.queue.pop(0)
            header, chunks = variants.chunked(self.bundles[sha_], self.chunk_size)
            for i, c in reversed(list(enumerate(chunks))):
                self.target.on_chunk(sha_, i, c)
            self.target.on_model(sha_, header)


def desired(rev, **fields):
    return encode({"kind": "desired", "device": "d1", "rev": rev, "t": 1.0, **fields})


def test_desired_state_fetches_activates_and_ignores_old_revs(make, blobs):
    events = Events()
    lc = make(events=events)
    lc.start()
    a, b = sha(blobs[0]), sha(blobs[1])
    broker = FakeBroker({a: blobs[0], b: variants.tampered(blobs[1])})  # b arrives damaged at first
    levels = []
    ds = DesiredState(lc, device_id="d1", request_bundle=broker.request, release_bundle=broker.released.append,
                      set_automation=levels.append, report=events)
    broker.target = ds
    ds.on_desired(desired(3, active=a, automation="partial"))
    assert ds.pending is not None and lc.slots.desired_rev == 0  # waiting for the bundle
    broker.deliver()
    assert lc.slots.active == a and lc.slots.desired_rev == 3 and levels == ["partial"]
    assert broker.requested == [a] and broker.released == [a]
    assert events.names() == ["bundle_received", "bundle_verified", "model_installed", "automation_changed",
                              "model_activated"]
    ds.on_desired(desired(3, active=b))  # not newer than applied: ignored
    ds.on_desired(desired(2, active=b))
    assert lc.slots.active == a and broker.requested == [a] and ds.pending is None
    ds.on_desired(desired(4, active=b))  # refused: never runs; the rev is recorded, no loop
    broker.deliver()
    assert events.last("bundle_rejected")["reason"] == "tampered" and events.last("bundle_rejected")["model"] == b
    assert lc.slots.active == a and lc.slots.desired_rev == 4 and not lc.store.has(b)
    assert "tampered" in lc.slots.last_error
    broker.bundles[b] = blobs[1]
    ds.on_desired(desired(5, active=a, shadow=b))
    broker.deliver()
    assert lc.slots.shadow == b and lc.shadow is not None and events.names()[-1] == "shadow_started"
    ds.on_desired(desired(6, active=b))  # shadow absent: stopped; b already stored: no fetch
    assert broker.queue == [] and lc.slots.active == b and lc.slots.previous == a and lc.slots.shadow is None
    assert events.names()[-2:] == ["model_activated", "shadow_stopped"]
    ds.on_desired(b'{"kind": "desired", "v": "9.0"}')
    assert events.last("desired_rejected")["reason"] == "unsupported_major"
    ds.on_desired(desired(7, active=a).replace(b'"d1"', b'"d2"'))
    assert events.last("desired_rejected")["reason"] == "wrong_device"
    assert lc.slots.desired_rev == 6
