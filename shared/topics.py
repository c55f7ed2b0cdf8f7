"""MQTT topic names: built and parsed from one template table, never spelled out twice.

    {prefix}/dev/{device}/stats      device → cloud   QoS 1, not retained
    {prefix}/dev/{device}/state      device → cloud   QoS 1, retained, last will "offline"
    {prefix}/dev/{device}/event      device → cloud   QoS 1, not retained
    {prefix}/dev/{device}/desired    cloud → device   QoS 1, retained
    {prefix}/dev/{device}/receipt    cloud → device   QoS 1, not retained (windows and events stored)
    {prefix}/dev/{device}/sample     device → cloud   QoS 1, not retained (a sample header, opt-in)
    {prefix}/dev/{device}/sample/{sha256}/{chunk}   device → cloud   QoS 1, not retained (its bytes)
    {prefix}/model/{sha256}          cloud → devices  QoS 1, retained (bundle or chunk header)
    {prefix}/model/{sha256}/{chunk}  cloud → devices  QoS 1, retained (chunk bytes)
    {prefix}/model/revocations       cloud → devices  QoS 1, retained (signed revocation list)
    {prefix}/alert/{alert_id}        cloud → operators QoS 1, not retained
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from shared.errors import ProtocolError

DEFAULT_PREFIX = "harken/v1"

# kind -> template relative to the prefix
TEMPLATES: dict[str, str] = {
    "stats": "dev/{device}/stats",
    "state": "dev/{device}/state",
    "event": "dev/{device}/event",
    "desired": "dev/{device}/desired",
    "receipt": "dev/{device}/receipt",
    "sample": "dev/{device}/sample",
    "sample_chunk": "dev/{device}/sample/{sha256}/{chunk}",
    "model": "model/{sha256}",
    "chunk": "model/{sha256}/{chunk}",
    "revocations": "model/revocations",  # under model/: every device may read it already
    "alert": "alert/{alert_id}",
}
QOS = 1
DEVICE_KINDS = ("stats", "state", "event", "desired", "receipt", "sample")  # dev/{device}/{kind}
RETAINED = frozenset({"state", "desired", "model", "chunk", "revocations"})

_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def check_device_id(device: str) -> str:
    """Device ids become topic levels and client ids: keep them to a safe alphabet."""
    if not isinstance(device, str) or not _ID_RE.match(device):
        raise ValueError(
            f"device id {device!r} is not valid: use 1-64 characters from A-Z a-z 0-9 _ . -"
        )
    return device


@dataclass(frozen=True)
class ParsedTopic:
    kind: str
    device: str | None = None
    sha256: str | None = None
    chunk: int | None = None
    alert_id: str | None = None


class Topics:
    """Topic builder and parser for one prefix."""

    def __init__(self, prefix: str = DEFAULT_PREFIX):
        prefix = prefix.strip("/")
        if not prefix or any(c in prefix for c in "+#"):
            raise ValueError(f"topic prefix {prefix!r} must be non-empty and contain no wildcards")
        self.prefix = prefix

    def build(self, kind: str, **fields) -> str:
        if "device" in fields:
            check_device_id(fields["device"])
        return f"{self.prefix}/{TEMPLATES[kind].format(**fields)}"

    def stats(self, device: str) -> str:
        return self.build("stats", device=device)

    def state(self, device: str) -> str:
        return self.build("state", device=device)

    def event(self, device: str) -> str:
        return self.build("event", device=device)

    def desired(self, device: str) -> str:
        return self.build("desired", device=device)

    def receipt(self, device: str) -> str:
        return self.build("receipt", device=device)

    def sample(self, device: str) -> str:
        return self.build("sample", device=device)

    def sample_chunk(self, device: str, sha256: str, index: int) -> str:
        return self.build("sample_chunk", device=device, sha256=sha256, chunk=index)

    def model(self, sha256: str) -> str:
        return self.build("model", sha256=sha256)

    def chunk(self, sha256: str, index: int) -> str:
        return self.build("chunk", sha256=sha256, chunk=index)

    def revocations(self) -> str:
        return self.build("revocations")

    def alert(self, alert_id: str) -> str:
        return self.build("alert", alert_id=alert_id)

    def filter(self, kind: str, *, device: str = "+") -> str:
        """A subscription filter for one kind over all devices (or one)."""
        if kind in ("model", "chunk"):
            return f"{self.prefix}/model/#"
        if kind == "alert":
            return f"{self.prefix}/alert/+"
        if kind == "sample_chunk":
            return f"{self.prefix}/dev/{device}/sample/+/+"
        return f"{self.prefix}/{TEMPLATES[kind].format(device=device)}"

    def shared_filter(self, group: str, kind: str) -> str:
        """An MQTT v5 shared subscription so collector replicas split the fleet."""
        return f"$share/{group}/{self.filter(kind)}"

    def parse(self, topic: str) -> ParsedTopic:
        head = self.prefix + "/"
        if not topic.startswith(head):
            raise ProtocolError("bad_topic", f"topic {topic!r} is not under {head!r}")
        parts = topic[len(head):].split("/")
        if len(parts) == 3 and parts[0] == "dev" and parts[2] in DEVICE_KINDS:
            if not _ID_RE.match(parts[1]):
                raise ProtocolError("bad_topic", f"device id in {topic!r} is not valid")
            return ParsedTopic(kind=parts[2], device=parts[1])
        if parts == ["model", "revocations"]:
            return ParsedTopic(kind="revocations")
        if len(parts) == 5 and parts[0] == "dev" and parts[2] == "sample":
            if _ID_RE.match(parts[1]) and _SHA_RE.match(parts[3]) and parts[4].isascii() and parts[4].isdigit() \
                    and len(parts[4]) < 7:
                return ParsedTopic(kind="sample_chunk", device=parts[1], sha256=parts[3], chunk=int(parts[4]))
        if parts[0] == "model" and len(parts) in (2, 3) and _SHA_RE.match(parts[1]):
            if len(parts) == 2:
                return ParsedTopic(kind="model", sha256=parts[1])
            if parts[2].isdigit():
                return ParsedTopic(kind="chunk", sha256=parts[1], chunk=int(parts[2]))
        if len(parts) == 2 and parts[0] == "alert" and parts[1]:
            return ParsedTopic(kind="alert", alert_id=parts[1])
        raise ProtocolError("bad_topic", f"topic {topic!r} matches no Harken topic template")
