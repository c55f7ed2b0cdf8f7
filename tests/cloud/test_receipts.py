"""The collector confirms every window and event it has dealt with for good — stored, a duplicate,
or refused as malformed — in one receipt per device per batch (shared/receipts.py), through the
real mosquitto."""
from __future__ import annotations

import random
import time

from cloud.collector import Collector
from shared.codec import encode
from shared.messages import decode
from shared.receipts import refs_of
from shared.topics import Topics
from tests.cloud.conftest import Publisher, collector_config, random_window
from tests.edge.watcher import Watcher

T = Topics()


def test_stored_duplicate_and_malformed_windows_and_events_are_confirmed_to_their_device(mosquitto, sqlite_url):
    collector = Collector(collector_config(mosquitto.url, sqlite_url))
    collector.start()
    watcher = Watcher(mosquitto.port, [T.filter("receipt")])
    device = Publisher(mosquitto.port)
    try:
        assert collector.ingest.wait_connected(10)
        window = random_window(random.Random(1), "dev-1", boot=5, seq=0, t_start=time.time())
        device.window(window)
        device.window(window)  # redelivered: already stored
        device.event({"kind": "event", "device": "dev-1", "boot": 5, "seq": 0, "t": time.time(), "event": "feedback"})
        device.publish_raw(T.stats("dev-1"), encode({"kind": "window", "device": "dev-1", "boot": 5, "seq": 1}))
        device.window(random_window(random.Random(2), "dev-2", boot=9, seq=3, t_start=time.time()))

        def confirmed(device_id: str) -> list[str]:
            receipts = [decode(p, "receipt") for p in watcher.on(f"/dev/{device_id}/receipt")]
            assert all(r["device"] == device_id for r in receipts)
            return sorted(ref for r in receipts for ref in refs_of(r))

        watcher.wait_for(lambda _: len(confirmed("dev-1")) >= 4 and confirmed("dev-2"), what="the receipts")
        assert confirmed("dev-1") == ["event/5/0", "stats/5/0", "stats/5/0", "stats/5/1"]
        assert confirmed("dev-2") == ["stats/9/3"]
        assert collector.ingest.stats.rejects == 1 and collector.ingest.stats.windows_new == 2
    finally:
        device.close()
        watcher.close()
        collector.stop()
