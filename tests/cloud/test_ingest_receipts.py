"""Receipts merged per device while a backlog drains (``cloud.ingest_receipts``)."""
from __future__ import annotations

from cloud.ingest_receipts import PendingReceipts
from shared.codec import decode_raw
from shared.receipts import MAX_REFS
from shared.topics import Topics

TOPICS = Topics()


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _bodies(pending: PendingReceipts) -> list[tuple[str, list, list]]:
    return [(decode_raw(p)["device"], decode_raw(p)["windows"], decode_raw(p)["events"]) for _, p in pending.take()]


def test_without_a_backlog_receipts_go_at_once():
    pending = PendingReceipts(TOPICS, clock=Clock())
    assert not pending.due(backlog=False)  # nothing waits
    pending.add({"dev-1": ([(1, 0)], [])})
    assert pending.due(backlog=False)
    assert _bodies(pending) == [("dev-1", [[1, 0]], [])]
    assert not pending and not pending.due(backlog=False)


def test_with_a_backlog_they_merge_per_device_in_order_for_up_to_coalesce_s():
    clock = Clock()
    pending = PendingReceipts(TOPICS, coalesce_s=1.0, clock=clock)
    pending.add({"dev-1": ([(1, 0), (1, 1)], []), "dev-2": ([(3, 7)], [(3, 1)])})
    clock.t += 0.6
    assert not pending.due(backlog=True)
    pending.add({"dev-1": ([(1, 2)], [(1, 0)]), "dev-3": ([], [(2, 5)])})
    clock.t += 0.5  # the oldest has waited 1.1 s
    assert pending.due(backlog=True)
    assert _bodies(pending) == [("dev-1", [[1, 0], [1, 1], [1, 2]], [[1, 0]]), ("dev-2", [[3, 7]], [[3, 1]]),
                                ("dev-3", [], [[2, 5]])]
    assert not pending.due(backlog=True)


def test_a_long_merge_is_split_at_max_refs():
    pending = PendingReceipts(TOPICS, clock=Clock())
    pending.add({"dev-1": ([(1, i) for i in range(MAX_REFS + 5)], [(1, 0)])})
    bodies = _bodies(pending)
    assert [len(w) for _, w, _ in bodies] == [MAX_REFS, 5] and [len(e) for _, _, e in bodies] == [1, 0]
    assert [s for _, w, _ in bodies for _, s in w] == list(range(MAX_REFS + 5))
