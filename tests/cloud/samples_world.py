"""A collector's world of field samples for the API, CLI and dashboard tests: a real SQLite store,
a registry with one signed model, and samples of real espeak-ng speech sent by three devices,
staged and assembled as ingest does."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cloud.api.backend import Services
from cloud.api.tokens import Principal, TokenBook
from cloud.registry import Registry
from cloud.samples.assemble import Assembler
from cloud.samples.files import SampleFiles
from cloud.store import Store, open_store
from shared.keys import generate_keypair, load_private_key, load_public_key
from tests.cloud.api.bundles import make_bundle
from tests.cloud.api.fleet_data import reference_profile
from tests.cloud.samples_data import clip, ingest

LABELS = ["yes", "no", "up", "down"]
READ_TOKEN = "read-token-9f8e7d6c5b4a"
OPERATE_TOKEN = "operate-token-1a2b3c4d5e6f"
# (device, word, reason, confidence, speed): what the devices sent, oldest first
SENT = [("kitchen-1", "yes", "low_confidence", 0.31, 150), ("kitchen-1", "no", "audit", 0.88, 150),
        ("hall-2", "up", "low_confidence", 0.42, 140), ("hall-2", "down", "alert", 0.65, 160),
        ("porch-3", "yes", "audit", 0.97, 175)]


@dataclass
class SamplesWorld:
    path: Path
    store: Store
    registry: Registry
    files: SampleFiles
    model: str
    ids: list[str]  # sample ids in the order of SENT
    now: float

    def services(self, **kw) -> Services:
        tokens = TokenBook({READ_TOKEN: Principal("viewer", "read"), OPERATE_TOKEN: Principal("ana", "operate")})
        args = dict(store=self.store, tokens=tokens, registry=self.registry, samples=self.files,
                    clock=lambda: self.now)
        return Services(**{**args, **kw})


def build(path: Path, now: float = 1_770_000_000.0) -> SamplesWorld:
    path.mkdir(parents=True, exist_ok=True)
    priv, pub = generate_keypair(path / "keys")
    store = open_store(str(path / "harken.db"))
    registry = Registry(store, path / "registry", [load_public_key(pub)])
    bundle = path / "kws.hkb"
    make_bundle(bundle, load_private_key(priv), name="kws", version="1.0.0", seed=0, labels=LABELS,
                profile=reference_profile(), accuracy=0.9)
    model = registry.register(bundle, now=now - 7200)[0].sha256
    files = SampleFiles(path / "samples")
    ids = []
    for i, (device, word, reason, conf, speed) in enumerate(SENT):
        t = now - 3600 + 60 * i
        extra = {"alert": "al-1"} if reason == "alert" else {}
        wav, msgs = clip(device, word, speed=speed, reason=reason, confidence=conf, t=t, model=model, **extra)
        ingest(store, Assembler(store, files, clock=lambda t=t: t + 5), msgs, received_t=t + 5)
        ids.append(store.samples(device=device, limit=1)[0]["id"])
    return SamplesWorld(path, store, registry, files, model, ids, now)
