"""A real ``harken serve`` for tests: the Service and uvicorn on a free loopback port, a private broker."""
from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass

import httpx
import pytest

from shared.audio import write_wav
from tests.brokers import Mosquitto, free_port

TOKEN = "test-token-0123456789abcdef"
DEVICE = "serve-test-1"


@dataclass
class Served:
    """A running server: its URL, the Service behind it, and what it was started with."""

    url: str
    service: object
    server: object
    thread: threading.Thread

    def client(self, token: str | None = TOKEN, **kwargs) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30.0, **kwargs)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10.0)
        self.service.stop()


def start_served(tmp, *, bundle, trust_key, release_key, **settings) -> Served:
    """Start Service + uvicorn in this process (a thread); ``settings`` are ServeConfig fields."""
    import uvicorn

    from edge.serve.app import create_app
    from edge.serve.config import load_serve_config
    from edge.serve.service import Service

    token_file = tmp / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    port = free_port()
    cfg = load_serve_config(env={}, overrides={
        "device_id": DEVICE, "bundle": str(bundle), "trust_keys": [str(trust_key)],
        "release_keys": [str(release_key)], "state_dir": str(tmp / "state"),
        "http_token_file": str(token_file), "http_port": port, **settings})
    service = Service(cfg).start()
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20.0
    while not server.started:  # uvicorn sets it once the socket listens
        if not thread.is_alive() or time.monotonic() > deadline:
            service.stop()
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    return Served(f"http://127.0.0.1:{port}", service, server, thread)


@pytest.fixture(scope="module")
def serve_broker(tmp_path_factory):
    broker = Mosquitto(tmp_path_factory.mktemp("serve-broker")).start()
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def served(tmp_path_factory, bundle_paths, signing, release_signing, serve_broker):
    """Bundle seed 0 active, seed 1 as shadow, windows every second to a private mosquitto."""
    s = start_served(tmp_path_factory.mktemp("served"), bundle=bundle_paths[0], trust_key=signing[2],
                     release_key=release_signing[2],
                     shadow=str(bundle_paths[1]), broker_url=serve_broker.url, window_s=1.0,
                     http_max_pending=4, http_max_body_bytes=4 << 20, http_max_audio_s=60.0, http_timeout_s=10.0)
    yield s
    s.stop()


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory, speech):
    """The ~31 s espeak-ng stream as a 22.05 kHz stereo 24-bit WAV (3.3 MB) (decoded and resampled on the way in)."""
    folder = tmp_path_factory.mktemp("serve-audio")
    plain, wav = folder / "speech16k.wav", folder / "speech.wav"
    write_wav(plain, speech[0])
    subprocess.run(["sox", str(plain), "-r", "22050", "-c", "2", "-b", "24", str(wav)], check=True,
                   capture_output=True)
    return wav


@pytest.fixture(scope="session")
def short_clips(tmp_path_factory, say):
    """Three ~4 s streams of three words: (16 kHz WAV bytes, float32 samples) each."""
    from tests.edge.conftest import make_stream

    folder = tmp_path_factory.mktemp("serve-clips")
    out = []
    for seed in (1, 2, 3):
        x, _ = make_stream(say, 3, seed=seed)
        path = folder / f"clip{seed}.wav"
        write_wav(path, x)
        out.append((path.read_bytes(), x))
    return out
