"""Every Harken MQTT client is built here, from one settings type (paho-mqtt 2, MQTT v5).

    settings = MqttSettings.from_config(cfg, client_id="kitchen-01", session_expiry_s=86400)
    client = build_client(settings)                  # credentials, TLS (with the client certificate)
    client.connect_async(*settings.address, **settings.connect_kwargs())

The agent's link, the collector's connection and the tools' publishers differ only in
their settings and callbacks; how a client logs in, sets up TLS and says what it accepts
(session expiry, receive maximum, maximum packet size) is written once. This module holds
no connection state: it builds clients, the caller owns and runs them.

``CHUNK_BYTES`` is the largest bundle piece the cloud publishes (``model/{sha}`` or
``model/{sha}/{i}``); ``MAX_PACKET_BYTES`` is the broker's packet limit just above it (a
chunk plus its topic, properties and headers), which every window, state and event fits
under by far (a decoded window is capped at 256 KiB inflated, ~1 KB sent).
"""
from __future__ import annotations

import ssl
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from shared.errors import ConfigError

CHUNK_BYTES = 256 * 1024
MAX_PACKET_BYTES = CHUNK_BYTES + 4096


@dataclass(frozen=True)
class MqttSettings:
    """Where and as whom one MQTT connection logs in, and what it accepts."""

    host: str
    port: int
    client_id: str = ""  # empty: the broker assigns one (a clean session only)
    tls: bool = False
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_insecure: bool = False
    username: str = ""
    password: str = field(default="", repr=False)  # never in a log line or a traceback
    keepalive_s: int = 30
    session_expiry_s: int = 0  # 0: a clean session that ends with the connection
    receive_maximum: int | None = None  # unacknowledged QoS 1 messages the broker may send us
    max_packet_bytes: int | None = None  # the broker drops larger packets meant for us
    max_inflight: int = 20  # our QoS 1 messages awaiting the broker's PUBACK

    @classmethod
    def from_url(cls, url: str, client_id: str, **values) -> "MqttSettings":
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ConfigError(f"broker URL {url!r} must look like mqtt://host:1883 or mqtts://host:8883")
        tls = parts.scheme == "mqtts"
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError:
            raise ConfigError(f"broker URL {url!r} has a bad port number") from None
        return cls(host=parts.hostname, port=port, client_id=client_id, tls=tls, **values)

    @classmethod
    def from_config(cls, cfg, client_id: str, **values) -> "MqttSettings":
        """From an agent or collector config (``broker_url``, ``username``, ``password``, ``tls_*``)."""
        login = {name: getattr(cfg, name) for name in ("username", "password", "tls_ca", "tls_cert", "tls_key",
                                                      "tls_insecure", "keepalive_s")}
        return cls.from_url(cfg.broker_url, client_id, **{**login, **values})

    def but(self, **changes) -> "MqttSettings":
        return replace(self, **changes)

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def clean_start(self) -> bool:
        return self.session_expiry_s == 0

    def connect_properties(self) -> Properties:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry_s
        if self.receive_maximum is not None:
            props.ReceiveMaximum = self.receive_maximum
        if self.max_packet_bytes is not None:
            props.MaximumPacketSize = self.max_packet_bytes
        return props

    def connect_kwargs(self) -> dict:
        """Keyword arguments of paho's ``connect`` / ``connect_async`` after the address."""
        return {"keepalive": self.keepalive_s, "clean_start": self.clean_start,
                "properties": self.connect_properties()}


def build_client(settings: MqttSettings, *, manual_ack: bool = False,
                 reconnect_s: tuple[float, float] = (0.5, 30.0)) -> mqtt.Client:
    """A paho client that logs in as ``settings`` say (TLS with the client certificate if any).

    ``manual_ack``: the caller acknowledges each QoS 1 message itself (after storing it).
    Raises ``ConfigError`` when the TLS files cannot be used.
    """
    s = settings
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=s.client_id, protocol=mqtt.MQTTv5,
                         manual_ack=manual_ack, reconnect_on_failure=True)
    if s.username:
        client.username_pw_set(s.username, s.password or None)
    if s.tls:
        try:
            client.tls_set(ca_certs=s.tls_ca or None, certfile=s.tls_cert or None, keyfile=s.tls_key or None,
                           cert_reqs=ssl.CERT_REQUIRED)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"cannot set up TLS with the given tls_ca/tls_cert/tls_key: {exc}") from exc
        client.tls_insecure_set(s.tls_insecure)
    elif s.tls_cert or s.tls_key or s.tls_ca:
        raise ConfigError("TLS files are set but the broker URL is not mqtts://; use mqtts:// for TLS")
    client.max_inflight_messages_set(s.max_inflight)
    client.reconnect_delay_set(*reconnect_s)
    return client
