"""The secured broker: generated files, and the real mosquitto enforcing TLS, passwords and the ACL.

One broker (``harken broker init`` + ``harken broker run``, as a user runs them) serves the module.
Negative outcomes ("never receives") are proved by ordering: the forbidden message is sent first,
the broker's PUBACK says it refused it, then a permitted control message on the same subscription
is received -- so the forbidden one would have arrived before it.
"""
from __future__ import annotations

import json
import select
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud import broker as brokers
from cloud.broker import certs
from cloud.broker.config import find_program, queue_limits
from shared.cli import main as harken
from shared.errors import ConfigError
from shared.topics import Topics
from tests.brokers import free_port

REPO = Path(__file__).resolve().parents[2]
T = Topics()
WAIT_S = 5.0
NOT_AUTHORIZED = 0x87  # MQTT v5 reason code in PUBACK and CONNACK


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shared.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60)


class Client:
    """A paho 2.x MQTTv5 client that records CONNACK, PUBACKs and messages for the test to wait on."""

    def __init__(self, port: int, user: str | None, password: str | None, *, ca: Path | None,
                 cert: tuple[Path, Path] | None = None, client_id: str = "", clean_start: bool = True, session_expiry_s: int = 0, inflight: int = 20):
        self.port, self.clean_start, self.session_expiry_s = port, clean_start, session_expiry_s
        self.mqtt = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.mqtt.max_inflight_messages_set(inflight)
        self.mqtt.reconnect_delay_set(min_delay=0.05, max_delay=0.5)  # so close() never waits out a backoff
        if user is not None:
            self.mqtt.username_pw_set(user, password)
        if ca is not None:
            key, crt = cert or (None, None)
            self.mqtt.tls_set(ca_certs=str(ca), certfile=crt and str(crt), keyfile=key and str(key))
        self.cond = threading.Condition()
        self.connack = None
        self.answered, self.disconnected = threading.Event(), threading.Event()
        self.pubacks: dict[int, object] = {}
        self.subacks: dict[int, list] = {}
        self.messages: list[tuple[str, bytes]] = []
        self.mqtt.on_connect = self._on_connect
        self.mqtt.on_disconnect = self._on_disconnect
        self.mqtt.on_publish = self._on_publish
        self.mqtt.on_subscribe = self._on_subscribe
        self.mqtt.on_message = self._on_message

    def _on_connect(self, client, userdata, flags, reason, props):
        self.connack = reason
        self.answered.set()

    def _on_disconnect(self, client, userdata, flags, reason, props):
        self.disconnected.set()
        self.answered.set()

    def _on_publish(self, client, userdata, mid, reason, props):
        with self.cond:
            self.pubacks[mid] = reason
            self.cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, reasons, props):
        with self.cond:
            self.subacks[mid] = reasons
            self.cond.notify_all()

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.messages.append((msg.topic, msg.payload))
            self.cond.notify_all()

    def connect(self):
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry_s
        try:
            self.mqtt.connect("127.0.0.1", self.port, keepalive=30, clean_start=self.clean_start,
                              properties=props)
        except (ssl.SSLError, OSError):
            return None  # refused during the TLS handshake
        self.mqtt.loop_start()
        assert self.answered.wait(WAIT_S), "no answer from the broker"
        return self.connack

    def subscribe(self, *topics: str) -> None:
        for topic in topics:
            _, mid = self.mqtt.subscribe(topic, qos=1)
            with self.cond:
                assert self.cond.wait_for(lambda: mid in self.subacks, WAIT_S), f"no SUBACK for {topic}"
                assert not self.subacks[mid][0].is_failure

    def publish(self, topic: str, payload: bytes, wait: bool = True):
        """Publish at QoS 1 and return the PUBACK reason (success, or 'Not authorized')."""
        info = self.mqtt.publish(topic, payload, qos=1)
        if not wait:
            return info.mid
        with self.cond:
            assert self.cond.wait_for(lambda: info.mid in self.pubacks, WAIT_S), f"no PUBACK for {topic}"
            return self.pubacks[info.mid]

    def wait_for(self, payload: bytes, timeout_s: float = WAIT_S) -> str:
        with self.cond:
            assert self.cond.wait_for(lambda: any(p == payload for _, p in self.messages), timeout_s), \
                f"{payload!r} never arrived"
            return next(t for t, p in self.messages if p == payload)

    def payloads(self) -> set[bytes]:
        with self.cond:
            return {p for _, p in self.messages}

    def close(self) -> None:
        self.mqtt.disconnect()
        self.mqtt.loop_stop()


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    directory = tmp_path_factory.mktemp("broker") / "b"
    port, plain_port = free_port(), free_port()
    done = cli("broker", "init", str(directory), "--device", "dev-A", "--device", "dev-B",
               "--port", str(port), "--plain-port", str(plain_port))
    assert done.returncode == 0, done.stderr
    started = cli("broker", "run", str(directory))
    assert started.returncode == 0, started.stderr
    assert f"mqtts://127.0.0.1:{port}" in started.stdout
    yield {"dir": directory, "port": port, "plain_port": plain_port,
           "creds": json.loads((directory / "credentials.json").read_text())}
    stopped = cli("broker", "stop", str(directory))
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stderr


@pytest.fixture
def connect(broker):
    """connect(user, ...) -> a connected Client; every client is closed after the test."""
    clients: list[Client] = []

    def connect(user: str | None, *, tls: bool = True, plain: bool = False, password: str | None = None,
                expect_ok: bool = True, **kw) -> Client:
        pw = password if password is not None else broker["creds"].get(user)
        c = Client(broker["plain_port"] if plain else broker["port"], user, pw,
                   ca=broker["dir"] / "ca.crt" if tls else None, **kw)
        clients.append(c)
        reason = c.connect()
        if expect_ok:
            assert reason is not None and not reason.is_failure, f"{user} refused: {reason}"
        return c

    yield connect
    for c in clients:
        c.close()


def token() -> bytes:
    return uuid.uuid4().hex.encode()


# -- the generated directory ------------------------------------------------------------------


def test_init_writes_secrets_private_and_passwords_hashed(tmp_path, capsys):
    assert harken(["broker", "init", str(tmp_path / "b"), "--devices", "3", "--backlog-windows", "5000"]) == 0
    out = capsys.readouterr().out
    d = tmp_path / "b"
    creds = json.loads((d / "credentials.json").read_text())
    assert sorted(creds) == ["collector", "dev-0001", "dev-0002", "dev-0003", "operator"]
    assert len(set(creds.values())) == 5 and min(map(len, creds.values())) >= 32
    for secret in ("credentials.json", "ca.key", "server.key", "passwd", "passwd-local"):
        assert stat.S_IMODE((d / secret).stat().st_mode) == 0o600, secret
    passwd = (d / "passwd").read_text()
    assert sorted(line.split(":")[0] for line in passwd.splitlines()) == sorted(creds)
    assert all(line.split(":", 1)[1].startswith("$7$") for line in passwd.splitlines())
    assert not any(pw in passwd for pw in creds.values()) and not any(pw in out for pw in creds.values())
    local = (d / "passwd-local").read_text()
    assert sorted(line.split(":")[0] for line in local.splitlines()) == ["collector", "operator"]
    conf = (d / "mosquitto.conf").read_text()
    limits = queue_limits(3, 5000)
    assert limits.max_queued_messages >= 3 * 5000 > 1000
    assert f"\nmax_queued_messages {limits.max_queued_messages}\n" in conf
    assert f"\nmax_queued_bytes {limits.max_queued_bytes}\n" in conf
    assert "use_username_as_clientid true" in conf and "allow_anonymous false" in conf
    assert "3 devices x 5000 windows" in conf  # the sizing is explained where it is set


def test_acl_is_pattern_based_and_does_not_grow_with_the_fleet(tmp_path):
    assert harken(["broker", "init", str(tmp_path / "small"), "--devices", "2"]) == 0
    assert harken(["broker", "init", str(tmp_path / "big"), "--devices", "300", "--prefix", "acme/x"]) == 0
    small = (tmp_path / "small" / "acl").read_text()
    big = (tmp_path / "big" / "acl").read_text()
    assert "pattern write harken/v1/dev/%u/stats" in small and "dev-0001" not in small
    assert small.replace("harken/v1", "acme/x") == big


def test_reinit_adds_devices_without_rotating_and_force_rotates(tmp_path, capsys):
    d = tmp_path / "b"
    assert harken(["broker", "init", str(d), "--device", "dev-A", "--port", "18999"]) == 0
    before, ca_before = json.loads((d / "credentials.json").read_text()), (d / "ca.crt").read_bytes()
    assert harken(["broker", "init", str(d), "--device", "dev-B", "--host", "localhost"]) == 0
    after = json.loads((d / "credentials.json").read_text())
    assert {k: after[k] for k in before} == before and "dev-B" in after
    assert (d / "ca.crt").read_bytes() == ca_before
    assert "listener 18999 localhost" in (d / "mosquitto.conf").read_text()  # earlier --port kept
    capsys.readouterr()
    assert harken(["broker", "init", str(d), "--device", "dev-C", "--force", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["new_ca"] and sorted(result["added"]) == ["collector", "dev-C", "operator"]
    rotated = json.loads((d / "credentials.json").read_text())
    assert sorted(rotated) == ["collector", "dev-C", "operator"]
    assert "listener 18999 localhost" in (d / "mosquitto.conf").read_text()
    assert rotated["collector"] != after["collector"] and (d / "ca.crt").read_bytes() != ca_before


def test_server_certificate_names_the_extra_host(tmp_path):
    ca = certs.make_ca()
    server = certs.issue_server(ca, ["10.1.2.3", "broker.example.org"])
    assert certs.cert_hosts(server.cert) == ["localhost", "broker.example.org", "127.0.0.1", "10.1.2.3"]
    with pytest.raises(ConfigError, match="--host"):
        certs.issue_server(ca, ["bad host"])


@pytest.mark.parametrize("args, code, message", [
    (["--device", "a/b"], 1, "not valid"),
    (["--device", "collector"], 1, "reserved"),
    (["--port", "0"], 2, "--port"),
])
def test_init_rejects_bad_input(tmp_path, capsys, args, code, message):
    assert harken(["broker", "init", str(tmp_path / "b"), *args]) == code
    assert message in capsys.readouterr().err


def test_missing_mosquitto_says_how_to_install_it(tmp_path, capsys):
    with pytest.raises(ConfigError, match="apt-get install mosquitto"):
        find_program("mosquitto", search_path=str(tmp_path))
    assert harken(["broker", "run", str(tmp_path / "nothing")]) == 1
    assert "harken broker init" in capsys.readouterr().err


# -- the running broker: TLS and authentication ------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_tls_certificate_verifies_against_the_generated_ca(broker, host):
    ctx = ssl.create_default_context(cafile=str(broker["dir"] / "ca.crt"))
    with socket.create_connection(("127.0.0.1", broker["port"]), timeout=WAIT_S) as sock:
        with ctx.wrap_socket(sock, server_hostname=host) as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_tls_rejects_a_foreign_ca_and_a_wrong_name(broker, tmp_path):
    other = certs.make_ca()
    certs.write_issued(other, tmp_path / "o.key", tmp_path / "o.crt")
    for cafile, name in ((tmp_path / "o.crt", "127.0.0.1"), (broker["dir"] / "ca.crt", "example.org")):
        ctx = ssl.create_default_context(cafile=str(cafile))
        with socket.create_connection(("127.0.0.1", broker["port"]), timeout=WAIT_S) as sock:
            with pytest.raises(ssl.SSLCertVerificationError):
                ctx.wrap_socket(sock, server_hostname=name)


def test_plain_tcp_to_the_tls_port_is_refused(connect):
    c = connect("dev-A", tls=False, expect_ok=False)
    assert c.disconnected.wait(WAIT_S)
    assert c.connack is None or c.connack.is_failure


@pytest.mark.parametrize("user, password", [(None, None), ("dev-A", "wrong-password"), ("nobody", "x")])
def test_missing_or_wrong_credentials_are_refused(connect, user, password):
    c = connect(user, password=password, expect_ok=False)
    assert c.connack is not None and c.connack.is_failure


def test_device_credentials_are_refused_on_the_plain_listener(connect):
    assert connect("dev-A", tls=False, plain=True, expect_ok=False).connack.is_failure
    assert not connect("operator", tls=False, plain=True).connack.is_failure


# -- the running broker: the ACL ---------------------------------------------------------------


def test_collector_shared_subscription_receives_device_stats(connect):
    collector = connect("collector")
    collector.subscribe(f"$share/g/{T.filter('stats')}")
    a = connect("dev-A")
    payload = token()
    assert not a.publish(T.stats("dev-A"), payload).is_failure
    assert collector.wait_for(payload) == T.stats("dev-A")


def test_device_cannot_publish_as_another_device(connect):
    observer = connect("operator", tls=False, plain=True, client_id="observer-forge")
    observer.subscribe(T.filter("stats"), T.filter("event"), T.filter("state"))
    a = connect("dev-A")
    forged = {T.stats("dev-B"): token(), T.event("dev-B"): token(), T.state("dev-B"): token()}
    for topic, payload in forged.items():
        assert a.publish(topic, payload).value == NOT_AUTHORIZED
    control = token()
    assert not a.publish(T.stats("dev-A"), control).is_failure
    observer.wait_for(control)
    assert not set(forged.values()) & observer.payloads()


def test_device_writes_its_own_sample_topics_and_no_one_elses(connect):
    collector = connect("collector", client_id="collector-samples")
    collector.subscribe(f"$share/g/{T.filter('sample')}", f"$share/g/{T.filter('sample_chunk')}")
    a = connect("dev-A")
    sha = "cd" * 32
    forged = {T.sample("dev-B"): token(), T.sample_chunk("dev-B", sha, 0): token(),
              f"{T.prefix}/dev/dev-B/sample/x": token(), f"{T.prefix}/dev/dev-A/sample/{sha}/0/1": token()}
    for topic, payload in forged.items():
        assert a.publish(topic, payload).value == NOT_AUTHORIZED, topic
    own = {T.sample("dev-A"): token(), T.sample_chunk("dev-A", sha, 3): token()}
    for topic, payload in own.items():
        assert not a.publish(topic, payload).is_failure
        assert collector.wait_for(payload) == topic
    assert not set(forged.values()) & collector.payloads()


def test_device_cannot_write_desired_or_models_but_reads_its_own(connect):
    b = connect("dev-B")
    b.subscribe(T.desired("dev-B"), T.filter("model"))
    a = connect("dev-A")
    sha = "ab" * 32
    forged = {T.desired("dev-B"): token(), T.desired("dev-A"): token(), T.model(sha): token(),
              T.chunk(sha, 0): token(), T.alert("x"): token()}
    for topic, payload in forged.items():
        assert a.publish(topic, payload).value == NOT_AUTHORIZED, topic
    operator = connect("operator", tls=False, plain=True, client_id="op-desired")
    desired, model = token(), token()
    operator.publish(T.desired("dev-B"), desired)
    operator.publish(T.model(sha), model)
    assert b.wait_for(desired) == T.desired("dev-B") and b.wait_for(model) == T.model(sha)
    assert not set(forged.values()) & b.payloads()


def test_device_cannot_read_another_devices_topics(connect):
    a = connect("dev-A")
    # mosquitto grants the SUBACK and filters every delivery through the ACL
    a.subscribe(T.desired("dev-B"), T.filter("desired"), T.stats("dev-B"), f"{T.prefix}/#")
    operator = connect("operator", tls=False, plain=True, client_id="op-read")
    b = connect("dev-B")
    secret_desired, secret_stats, own, model = token(), token(), token(), token()
    operator.publish(T.desired("dev-B"), secret_desired)
    assert not b.publish(T.stats("dev-B"), secret_stats).is_failure
    operator.publish(T.desired("dev-A"), own)
    operator.publish(T.model("cd" * 32), model)
    assert a.wait_for(own) == T.desired("dev-A")
    assert a.wait_for(model) == T.model("cd" * 32)
    assert secret_desired not in a.payloads()
    # dev-B's stats went through a different publisher: prove the order with its own control
    control = token()
    operator.publish(T.desired("dev-A"), control)
    a.wait_for(control)
    assert secret_stats not in a.payloads()


def test_collector_cannot_publish_device_state(connect):
    # (it may write stats and event: only to clear what a device left retained there)
    collector = connect("collector", tls=False, plain=True, client_id="collector-acl")
    assert collector.publish(T.state("dev-A"), token()).value == NOT_AUTHORIZED
    assert not collector.publish(T.desired("dev-A"), token()).is_failure
    assert not collector.publish(T.alert("a1"), token()).is_failure


def test_a_device_cannot_take_over_another_devices_session(connect):
    b = connect("dev-B", client_id="dev-B")  # as the agent connects: client id = device id
    b.subscribe(T.desired("dev-B"))
    intruder = connect("dev-A", client_id="dev-B")  # the broker renames it to dev-A
    assert intruder.publish(T.stats("dev-B"), token()).value == NOT_AUTHORIZED
    operator = connect("operator", tls=False, plain=True, client_id="op-takeover")
    control = token()
    operator.publish(T.desired("dev-B"), control)
    b.wait_for(control)
    assert not b.disconnected.is_set()


def test_new_device_can_connect_after_reinit_of_a_running_broker(broker, connect, capsys):
    assert harken(["broker", "init", str(broker["dir"]), "--device", "dev-C"]) == 0
    assert "reloaded" in capsys.readouterr().out
    creds = json.loads((broker["dir"] / "credentials.json").read_text())
    assert {k: creds[k] for k in broker["creds"]} == broker["creds"]
    c = None
    for _ in range(50):  # SIGHUP is asynchronous: retry until the reload took effect (bounded)
        c = connect("dev-C", password=creds["dev-C"], expect_ok=False)
        if not c.connack.is_failure:
            break
        c.disconnected.wait(0.1)
    assert not c.connack.is_failure
    assert not c.publish(T.stats("dev-C"), token()).is_failure
    assert c.publish(T.stats("dev-A"), token()).value == NOT_AUTHORIZED


def test_fleet_flush_larger_than_mosquittos_default_queue_is_not_dropped(connect):
    """A collector away during an outage gets every window the fleet flushes, past 1000 queued."""
    kw = dict(tls=False, plain=True, client_id="collector-flush", clean_start=False, session_expiry_s=300)
    collector = connect("collector", **kw)
    collector.subscribe(f"$share/flush/{T.filter('stats')}")
    collector.close()
    sent: set[bytes] = set()
    for device in ("dev-A", "dev-B"):
        d = connect(device, inflight=200)  # a device flushing its spool keeps many windows in flight
        mids = []
        for i in range(700):
            payload = f"{device}-{i}-".encode() + token()
            sent.add(payload)
            mids.append(d.publish(T.stats(device), payload, wait=False))
        with d.cond:
            assert d.cond.wait_for(lambda: all(m in d.pubacks for m in mids), 20)
        assert not any(d.pubacks[m].is_failure for m in mids)
    assert len(sent) > 1000  # more than mosquitto's default max_queued_messages
    back = connect("collector", **kw)
    with back.cond:
        assert back.cond.wait_for(lambda: sent <= {p for _, p in back.messages}, 20), \
            f"{len(sent - back.payloads())} of {len(sent)} windows were dropped"


def test_mutual_tls_takes_the_identity_from_the_client_certificate(tmp_path):
    d = tmp_path / "mtls"
    brokers.init_broker(d, devices=["dev-A", "dev-B"], port=free_port(), mtls=True)
    proc = brokers.start(d)
    clients: list[Client] = []

    def connect(cert_user: str | None, ca: Path = d / "ca.crt", cert=None, **kw) -> Client:
        c = Client(proc.broker.settings.port, kw.pop("user", None), kw.pop("password", None), ca=ca,
                   cert=cert or (cert_user and proc.broker.paths.client_cert(cert_user)), **kw)
        clients.append(c)
        c.reason = c.connect()
        return c

    try:
        # dev-A's certificate, claiming dev-B's user name and client id: the broker knows it as dev-A
        a = connect("dev-A", user="dev-B", password="x", client_id="dev-B")
        assert a.reason is not None and not a.reason.is_failure
        assert not a.publish(T.stats("dev-A"), token()).is_failure
        assert a.publish(T.stats("dev-B"), token()).value == NOT_AUTHORIZED
        other = certs.make_ca()
        certs.write_issued(certs.issue_client(other, "dev-A"), tmp_path / "f.key", tmp_path / "f.crt")
        for refused in (connect(None), connect(None, cert=(tmp_path / "f.key", tmp_path / "f.crt"))):
            # refused in the handshake (TLS 1.2), or right after it (TLS 1.3): never a successful CONNACK
            assert refused.reason is None or refused.disconnected.wait(WAIT_S)
            assert refused.connack is None or refused.connack.is_failure
    finally:
        for c in clients:
            c.close()
        assert brokers.stop(d) == proc.pid


def test_foreground_run_stops_the_broker_on_sigterm(tmp_path):
    d = tmp_path / "fg"
    brokers.init_broker(d, port=free_port())
    with open(tmp_path / "fg.log", "w") as err:
        p = subprocess.Popen([sys.executable, "-m", "shared.cli", "broker", "run", str(d), "--foreground"],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        assert select.select([p.stdout], [], [], 15)[0], "harken broker run printed nothing"
        assert p.stdout.readline().startswith("broker running: mqtts://127.0.0.1:")
        pid = brokers.running_pid(d)
        assert pid is not None and pid != p.pid
        p.send_signal(signal.SIGTERM)
        assert p.wait(15) == 0, (tmp_path / "fg.log").read_text()[-2000:]
        assert brokers.running_pid(d) is None and not (d / "mosquitto.pid").exists()
        assert not Path(f"/proc/{pid}").exists()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        brokers.stop(d)  # never leave a broker behind, even when the test failed
