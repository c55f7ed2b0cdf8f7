"""The agent's configuration: one typed, strict dataclass (file < environment < flags).

TOML sections map onto prefixed names: ``[vad] aggressiveness = 3`` is ``vad_aggressiveness``,
its environment variable ``HARKEN_AGENT_VAD_AGGRESSIVENESS`` and its flag
``--vad-aggressiveness``. VAD settings left unset come from the active bundle's manifest,
so the device gates audio the way the model was trained.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from shared.config import check_broker_url, check_tls_files, load_config, secret_file, setting
from shared.errors import ConfigError
from shared.gate_config import GateConfig  # not shared.gate: every `harken agent` command loads this
from shared.messages import AUTOMATION_LEVELS
from shared.topics import DEFAULT_PREFIX, Topics, check_device_id

ENV_PREFIX = "HARKEN_AGENT_"
VAD_PREFIX = "vad_"


@dataclass
class AgentConfig:
    device_id: str = setting("", "This device's id: its MQTT client id and topic level (A-Z a-z 0-9 _ . -).")
    # -- broker ----------------------------------------------------------------------
    broker_url: str = setting("", "mqtt://host:port or mqtts://host:port; empty runs offline (no broker).")
    username: str = setting("", "MQTT user name (per-device credentials).")
    password: str = setting("", "MQTT password; prefer password_file or the environment variable to a flag.",
                            secret=True)
    password_file: str = secret_file("password", "MQTT password")
    tls_ca: str = setting("", "CA certificate (PEM) that signed the broker's certificate (mqtts).")
    tls_cert: str = setting("", "Client certificate (PEM) for mutual TLS; needs tls_key.")
    tls_key: str = setting("", "Client private key (PEM) for mutual TLS; needs tls_cert.", secret=True)
    tls_insecure: bool = setting(False, "Skip the broker host name check (test rigs only).")
    topic_prefix: str = setting(DEFAULT_PREFIX, "Prefix of every Harken topic.")
    keepalive_s: int = setting(30, "MQTT keep-alive interval.", ge=5, le=3600)
    session_expiry_s: int = setting(86400, "How long the broker keeps this device's session while it is away.",
                                    ge=0, le=4294967295)
    reconnect_min_s: float = setting(1.0, "First reconnect delay; doubles per failure, with jitter.", ge=0.05, le=600)
    reconnect_max_s: float = setting(60.0, "Longest reconnect delay.", ge=0.05, le=3600)
    flush_rate: float = setting(20.0, "Windows per second sent from the spool backlog after a reconnect.",
                                ge=0.1, le=10000)
    spool_max_bytes: int = setting(64 * 1024 * 1024, "Bound of the on-disk spool; the oldest windows go first.",
                                   ge=16 * 1024, le=1 << 40)
    spool_inflight: int = setting(20, "Windows sent and not yet acknowledged by the broker, at most.", ge=1, le=1000)
    resend_unconfirmed_s: float = setting(30.0, "A window the broker acknowledged but the collector never "
                                          "confirmed is sent again once the collector has confirmed a later "
                                          "one this long ago (the broker lost it).", ge=0.1, le=86400)
    # -- audio -----------------------------------------------------------------------
    source: str = setting("-", "Audio: '-' raw 16 kHz s16le on stdin, 'mic' or 'mic:NAME', a directory, a WAV file.")
    realtime: bool = setting(False, "Deliver file audio no faster than real time.")
    chunk_samples: int = setting(4096, "Samples per chunk read from the source.", ge=16, le=16000 * 60)
    window_s: float = setting(10.0, "Length of one statistics window.", ge=1.0, le=3600.0)
    automation: str = setting("shadow", "What the agent does with a prediction (desired state may change it).",
                              choices=AUTOMATION_LEVELS)
    # -- VAD gate: unset values come from the active bundle's manifest ----------------
    vad_aggressiveness: int | None = setting(None, "webrtcvad mode; higher rejects more non-speech.", ge=0, le=3)
    vad_frame_ms: int | None = setting(None, "VAD frame length.", choices=(10, 20, 30))
    vad_padding_ms: int | None = setting(None, "Ring of recent frames the start/end decisions look at.",
                                         ge=10, le=5000)
    vad_start_ratio: float | None = setting(None, "Voiced fraction of the ring that starts an utterance.",
                                            ge=0.01, le=1.0)
    vad_end_ratio: float | None = setting(None, "Unvoiced fraction of the ring that ends an utterance.",
                                          ge=0.01, le=1.0)
    vad_pre_roll_ms: int | None = setting(None, "Audio kept before the first and after the last voiced frame.",
                                          ge=0, le=2000)
    vad_min_utterance_ms: int | None = setting(None, "Shorter speech spans are dropped.", ge=0, le=60000)
    vad_max_utterance_ms: int | None = setting(None, "Longer utterances are split.", ge=10, le=600000)
    vad_energy_floor_dbfs: float | None = setting(None, "Frames quieter than this are unvoiced.", ge=-120, le=0)
    # -- model lifecycle ---------------------------------------------------------------
    state_dir: str = setting("harken-agent", "Directory of the model store, slots file and spool.")
    trust_keys: list[str] = setting([], "Public keys (signing.pub paths) whose bundles this device runs.")
    release_keys: list[str] = setting([], "Release public keys (release.pub paths): a bundle must carry a release "
                                          "signed by one of them (several while a key is rotated).")
    require_release: bool = setting(True, "Refuse bundles without a release (`harken model release`); false "
                                          "accepts lab-signed bundles as older agents did.")
    bundle: str = setting("", "A bundle file to install and activate at start (devices without a broker).")
    probation_utterances: int = setting(50, "A new model passes probation after this many utterances ...",
                                        ge=1, le=1000000)
    probation_s: float = setting(600.0, "... or after this many seconds, whichever comes first.", ge=1, le=604800)
    latency_budget_ms: float = setting(500.0, "Model latency (90th percentile) above this fails probation.",
                                       ge=1, le=600000)
    max_error_rate: float = setting(0.05, "Inference error rate above this fails probation.", ge=0.0, le=1.0)
    smoke_memory_mb: int = setting(1024, "Address space the install-time smoke test (a child process) may use; "
                                   "a model needing more is refused.", ge=256, le=1 << 20)
    smoke_timeout_s: float = setting(60.0, "Time the install-time smoke test may take; a model that runs longer "
                                     "is refused.", ge=1, le=3600)
    fetch_timeout_s: float = setting(120.0, "A bundle download with no progress for this long (connected) is "
                                     "given up and reported (bundle_rejected, fetch_timeout).", ge=0.1, le=86400)
    # -- outputs -----------------------------------------------------------------------
    decisions: str = setting("", "Where decisions go: '-' stdout (JSON lines), a file path, or empty for nowhere.")
    feedback_path: str = setting("", "JSON-lines file of human feedback the agent follows (harken agent feedback).")
    audit_rate: float = setting(0.02, "Share of decisions flagged at random (whatever the confidence) for a person "
                                "to label: the audit sample. Flags travel on decisions, so none at human_only.",
                                ge=0.0, le=1.0)
    capture_dir: str = setting("", "Opt-in: keep low-confidence utterances as WAV + JSON here (empty = never).")
    capture_max_per_hour: float = setting(12.0, "Sustained rate limit of captured utterances.", ge=0.001, le=3600)
    capture_burst: int = setting(3, "Captures allowed back to back.", ge=1, le=1000)
    capture_max_confidence: float | None = setting(None, "Capture below this confidence; unset uses the "
                                                   "bundle's threshold.", ge=0.001, le=1.0)
    # -- field samples (opt-in upload to the collector; edge/samples.py) ----------------
    samples_upload: bool = setting(False, "Opt-in: upload low-confidence, audit and alert-requested utterances "
                                   "to the collector (WAV, over MQTT). Off: no audio leaves the device, whatever "
                                   "the collector asks; on, the collector may switch uploads off and on again.")
    samples_low_confidence: bool = setting(True, "Upload utterances below the confidence threshold.")
    samples_audit: bool = setting(True, "Upload the utterances the audit sample flags (audit_rate).")
    samples_max_confidence: float | None = setting(None, "Low confidence means below this; unset uses the "
                                                   "bundle's threshold.", ge=0.001, le=1.0)
    samples_max_bytes_per_hour: int = setting(4 * 1024 * 1024, "Bytes of clips queued for upload in any hour, at "
                                              "most; clips over it are dropped and counted.", ge=1024, le=1 << 34)
    samples_max_clip_bytes: int = setting(256 * 1024, "Largest clip uploaded (256 KiB is 8 s); longer ones are "
                                          "dropped and counted.", ge=1024, le=16 * 1024 * 1024)
    samples_ring_bytes: int = setting(2 * 1024 * 1024, "Recent utterances kept in memory (16-bit, 2 MiB is ~65 s "
                                      "of speech) for the collector's requests around an alert; only when opted "
                                      "in.", ge=0, le=1 << 32)
    samples_request_max_clips: int = setting(50, "Clips one collector request may take, at most.", ge=0, le=10000)
    samples_spool_max_bytes: int = setting(32 * 1024 * 1024, "Bound of the on-disk spool of clips waiting for the "
                                           "broker; a clip that does not fit is dropped and counted.",
                                           ge=64 * 1024, le=1 << 40)
    samples_flush_rate: float = setting(10.0, "Sample messages (a header or a 64 KiB chunk) sent per second, at most.",
                                        ge=0.1, le=10000)

    # -- named cross-field checks ------------------------------------------------------
    def check(self) -> None:
        for rule in (self._check_device, self._check_broker, self._check_tls, self._check_reconnect,
                     self._check_trust, self._check_vad, self._check_prefix):
            rule()

    def _check_device(self) -> None:
        if not self.device_id:
            raise ConfigError("device_id is required: set it in the config file, HARKEN_AGENT_DEVICE_ID "
                              "or --device-id (1-64 characters from A-Z a-z 0-9 _ . -)")
        try:
            check_device_id(self.device_id)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def _check_broker(self) -> None:
        if self.broker_url:
            check_broker_url(self.broker_url)

    def _check_tls(self) -> None:
        check_tls_files(self.broker_url, self.tls_ca, self.tls_cert, self.tls_key)

    def _check_reconnect(self) -> None:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ConfigError(f"reconnect_min_s ({self.reconnect_min_s}) exceeds reconnect_max_s "
                              f"({self.reconnect_max_s}); lower the first or raise the second")

    def _check_trust(self) -> None:
        if (self.broker_url or self.bundle) and not self.trust_keys:
            raise ConfigError("trust_keys is empty: a device only runs signed bundles; pass the signer's "
                              "signing.pub with --trust-keys (or trust_keys = [...] in the config file)")
        for path in self.trust_keys:
            if not Path(path).expanduser().is_file():
                raise ConfigError(f"trust key {path!r} is not a readable file; copy the signer's signing.pub here")
        if (self.broker_url or self.bundle) and self.require_release and not self.release_keys:
            raise ConfigError("release_keys is empty but require_release is on (the default): add the release key's "
                              "release.pub with --release-keys (release_keys = [...] in the config file), or set "
                              "require_release = false to run lab-signed bundles without a release")
        for path in self.release_keys:
            if not Path(path).expanduser().is_file():
                raise ConfigError(f"release key {path!r} is not a readable file; copy the release key's release.pub here")

    def _check_vad(self) -> None:
        try:
            self.gate_config(None)
        except ConfigError as exc:
            raise ConfigError(f"vad settings: {exc}") from None

    def _check_prefix(self) -> None:
        try:
            Topics(self.topic_prefix)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    # -- derived values ----------------------------------------------------------------
    def vad_overrides(self) -> dict[str, Any]:
        return {f.name[len(VAD_PREFIX):]: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name.startswith(VAD_PREFIX) and getattr(self, f.name) is not None}

    def gate_config(self, bundle_gate: Mapping[str, Any] | None) -> GateConfig:
        """The bundle's gate settings with this config's vad_* values laid over them."""
        base = dict(bundle_gate or {})
        return GateConfig.from_dict({**base, **self.vad_overrides()})

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir).expanduser()

    @property
    def broker_host_port(self) -> tuple[str, int, bool]:
        parts = urlsplit(self.broker_url)
        tls = parts.scheme == "mqtts"
        return parts.hostname or "", parts.port or (8883 if tls else 1883), tls


def load_agent_config(file: str | os.PathLike | None = None, *, env: Mapping[str, str] | None = None,
                      overrides: Mapping[str, Any] | None = None) -> AgentConfig:
    """AgentConfig from a TOML file < HARKEN_AGENT_* environment < overrides (flags)."""
    return load_config(AgentConfig, file=file, env=env, env_prefix=ENV_PREFIX, overrides=overrides)
