"""Alert notifications: opened and resolved drift alerts go out on MQTT and to a webhook.

MQTT: ``{prefix}/alert/{id}``, QoS 1, not retained (the store keeps the alert; operators
who were away read it from the API). The webhook gets the same JSON, POSTed from a
background thread so a slow receiver never stalls the collector; failures are logged and
counted, never retried forever.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import urllib.error
import urllib.request
from typing import Callable, Iterable

from shared.codec import encode
from shared.topics import Topics

log = logging.getLogger(__name__)

NOTIFIED = ("opened", "resolved")
Publish = Callable[[str, bytes], None]


class AlertNotifier:
    def __init__(self, topics: Topics, publish: Publish | None = None, webhook_url: str = "",
                 timeout_s: float = 5.0):
        self.topics = topics
        self.publish = publish
        self.webhook_url = webhook_url
        self.timeout_s = timeout_s
        self.sent = self.failed = 0
        self._queue: queue.Queue = queue.Queue(maxsize=1000)
        self._thread: threading.Thread | None = None
        if webhook_url:
            self._thread = threading.Thread(target=self._post_loop, name="harken-webhook", daemon=True)
            self._thread.start()

    def notify(self, changes: Iterable) -> None:
        """Send every opened or resolved alert among ``changes`` (AlertChange objects)."""
        for change in changes:
            if change.change not in NOTIFIED:
                continue
            message = change.alert.to_message()
            if self.publish is not None:
                try:
                    self.publish(self.topics.alert(change.alert.id), encode(message))
                    self.sent += 1
                except Exception as exc:  # the alert is stored; a lost notification is logged
                    self.failed += 1
                    log.warning("could not publish alert %s: %s", change.alert.id, exc)
            if self.webhook_url:
                try:
                    self._queue.put_nowait(message)
                except queue.Full:
                    self.failed += 1
                    log.warning("webhook queue full: alert %s not posted", change.alert.id)

    def _post_loop(self) -> None:
        while True:
            message = self._queue.get()
            if message is None:
                return
            body = json.dumps(message).encode()
            request = urllib.request.Request(self.webhook_url, data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    response.read()
                self.sent += 1
            except (urllib.error.URLError, OSError, ValueError) as exc:
                self.failed += 1
                log.warning("webhook %s refused alert %s: %s", self.webhook_url, message.get("id"), exc)

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(self.timeout_s + 1)
