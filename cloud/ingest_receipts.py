"""Receipts waiting to go out, merged per device while ingest has a backlog.

Each committed batch names, per device, the windows and events it dealt with for good
(``shared.receipts``). With nothing waiting for the writer they go out at once, one receipt per
device of the batch. While a backlog drains (a collector back after an outage, a burst), a
device has a window in nearly every batch, and a receipt per device per batch cost paho's
network thread more than the window itself (its PUBLISH out and its PUBACK in, parsed in
Python). So then they are merged per device for up to ``coalesce_s`` and sent together: the same
names, in the same order, later by at most ``coalesce_s`` (a device resends only what stays
unconfirmed for ``resend_unconfirmed_s``, 30 s by default, after a later one was confirmed).
"""
from __future__ import annotations

import time
from typing import Callable

from shared.codec import encode
from shared.receipts import MAX_REFS, receipt
from shared.topics import Topics

COALESCE_S = 1.0

Named = dict[str, tuple[list, list]]  # device -> ([(boot, seq) of windows], [(boot, seq) of events])


class PendingReceipts:
    def __init__(self, topics: Topics, coalesce_s: float = COALESCE_S, clock: Callable[[], float] = time.monotonic):
        self.topics = topics
        self.coalesce_s = coalesce_s
        self._clock = clock
        self._named: Named = {}
        self._since: float | None = None  # when the oldest waiting name was added

    def __bool__(self) -> bool:
        return bool(self._named)

    def add(self, named: Named) -> None:
        for device, (windows, events) in named.items():
            mine = self._named.get(device)
            if mine is None:
                self._named[device] = (list(windows), list(events))
            else:
                mine[0].extend(windows)
                mine[1].extend(events)
        if self._named and self._since is None:
            self._since = self._clock()

    def due(self, backlog: bool) -> bool:
        """Send now? At once without a backlog, else once the oldest has waited ``coalesce_s``."""
        return self._since is not None and (not backlog or self._clock() - self._since >= self.coalesce_s)

    def take(self) -> list[tuple[str, bytes]]:
        """(topic, payload) of every waiting receipt (at most ``MAX_REFS`` names per list); empties the queue."""
        now, out = time.time(), []
        for device, (windows, events) in self._named.items():
            for i in range(0, max(len(windows), len(events)), MAX_REFS):
                body = receipt(device, now, windows[i:i + MAX_REFS], events[i:i + MAX_REFS])
                out.append((self.topics.receipt(device), encode(body)))
        self._named, self._since = {}, None
        return out
