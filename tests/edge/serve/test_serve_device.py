"""``harken serve`` is a device to the fleet: windows, state and shadow agreement reach a real mosquitto."""
from __future__ import annotations

from shared.codec import decode_raw
from shared.topics import DEFAULT_PREFIX, Topics
from tests.edge.serve.conftest import DEVICE
from tests.edge.watcher import Watcher

TOPICS = Topics(DEFAULT_PREFIX)


def _windows(watcher: Watcher, since_seq: int) -> list[dict]:
    return [w for w in map(decode_raw, watcher.on("/stats")) if w["seq"] >= since_seq]


def test_windows_with_the_serve_device_id_and_shadow_agreement_reach_the_broker(served, serve_broker, speech_wav):
    service = served.service
    with service._turn:  # close what earlier requests left open: later windows hold this request only
        service.agent.pipeline.flush()
        first_seq = service.agent.pipeline.seq
    watcher = Watcher(serve_broker.port, [TOPICS.stats(DEVICE), TOPICS.state(DEVICE)])
    try:
        with served.client() as client:
            r = client.post("/v1/predict", content=speech_wav.read_bytes(), headers={"Content-Type": "audio/wav"})
        assert r.status_code == 200
        answer = r.json()["utterances"]
        watcher.wait_for(lambda _: sum(w["software"]["inferences"] for w in _windows(watcher, first_seq))
                         >= len(answer), what="the request's windows")
        windows = _windows(watcher, first_seq)
        state = decode_raw(watcher.on("/state")[-1])
    finally:
        watcher.close()
    models = service.models()
    assert {w["device"] for w in windows} == {DEVICE}
    assert {w["boot"] for w in windows} == {service.agent.lifecycle.boot}
    assert {w["model"] for w in windows} == {models["active"]} and {w["shadow_model"] for w in windows} == \
        {models["shadow"]}
    labels: dict[str, int] = {}
    for u in answer:
        labels[u["label"]] = labels.get(u["label"], 0) + 1
    assert sum(w["software"]["inferences"] for w in windows) == len(answer)
    merged: dict[str, int] = {}
    for w in windows:
        for label, n in w["output"]["labels"].items():
            merged[label] = merged.get(label, 0) + n
    assert merged == labels
    agree = sum(u["label"] == u["shadow_label"] for u in answer)
    assert sum(w["shadow"]["compared"] for w in windows) == len(answer)
    assert sum(w["shadow"]["agree"] for w in windows) == agree
    assert 0 < agree < len(answer)  # two different random models: they agree sometimes, not always
    assert abs(sum(w["duration_s"] for w in windows) - r.json()["audio_s"]) < 0.01
    assert state["device"] == DEVICE and state["online"] is True
    assert state["models"]["active"] == models["active"] and state["models"]["shadow"] == models["shadow"]
