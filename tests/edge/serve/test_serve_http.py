"""``harken serve`` over real HTTP (uvicorn on loopback, httpx): decisions, limits, malformed input, auth."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from shared.audio import to_int16, write_wav
from tests.edge.conftest import WORDS
from tests.edge.serve.conftest import TOKEN
from tests.prom_text import parse, value

ROOT = Path(__file__).resolve().parents[3]


def _post_wav(client: httpx.Client, data: bytes, headers: dict | None = None) -> httpx.Response:
    return client.post("/v1/predict", content=data, headers={"Content-Type": "audio/wav", **(headers or {})})


def _replay(wav: Path, bundle: Path, key: Path) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "shared.cli", "agent", "replay", str(wav), "--bundle", str(bundle),
                          "--trust-key", str(key), "--automation", "partial", "--json"],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout)["decisions"]


def _key(u: dict) -> tuple:
    return (round(u["start_s"], 4), round(u["end_s"], 4), u["label"], u["confidence"], u["action"])


def test_a_wav_gets_the_decisions_harken_agent_replay_gives(served, speech_wav, bundle_paths, signing):
    with served.client() as client:
        r = _post_wav(client, speech_wav.read_bytes())
    assert r.status_code == 200, r.text
    body = r.json()
    replayed = _replay(speech_wav, bundle_paths[0], signing[2])
    assert len(replayed) >= 10  # 16 words spoken
    assert [_key(u) for u in body["utterances"]] == [
        (round(d["audio_start_s"], 4), round(d["audio_end_s"], 4), d["label"], d["confidence"], d["action"])
        for d in replayed]
    assert body["device"] == "serve-test-1" and body["automation"] == "partial"
    assert body["model"]["sha256"] == replayed[0]["model"]
    assert body["shadow_model"] and body["shadow_model"] != body["model"]["sha256"]
    for u in body["utterances"]:
        assert u["shadow_label"] in WORDS and 0.0 < u["shadow_confidence"] <= 1.0
        assert u["actions"]["partial"] == u["action"] and u["actions"]["full"] == "act"
        assert u["actions"]["assist"] == ("no_answer" if u["no_answer"] else "suggest")


def test_raw_pcm_by_content_type_or_flag_gets_the_same_decisions_as_its_wav(served, short_clips):
    wav, x = short_clips[0]
    pcm = to_int16(x).astype("<i2").tobytes()
    with served.client() as client:
        as_wav = _post_wav(client, wav).json()["utterances"]
        by_type = client.post("/v1/predict", content=pcm, headers={"Content-Type": "audio/pcm"}).json()["utterances"]
        by_flag = client.post("/v1/predict?format=s16le", content=pcm,
                              headers={"Content-Type": "application/octet-stream"}).json()["utterances"]
        sniffed = client.post("/v1/predict", content=wav).json()["utterances"]  # no Content-Type: RIFF
    assert len(as_wav) >= 2
    assert [_key(u) for u in by_type] == [_key(u) for u in by_flag] == [_key(u) for u in sniffed] \
        == [_key(u) for u in as_wav]
    ids = [u["utterance"] for u in as_wav + by_type + by_flag + sniffed]
    assert len(set(ids)) == len(ids)  # each utterance keeps its own id, for feedback


def test_a_token_is_required_except_for_the_probes(served, short_clips):
    wav = short_clips[0][0]
    with served.client(token=None) as anonymous:
        missing = _post_wav(anonymous, wav)
        wrong = _post_wav(anonymous, wav, headers={"Authorization": "Bearer not-the-token-at-all"})
        basic = anonymous.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"})
        health, ready = anonymous.get("/healthz"), anonymous.get("/readyz")
    for r in (missing, wrong, basic):
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
        assert r.json()["error"] == "unauthorized" and "http_token_file" in r.json()["detail"]
    assert health.status_code == 200 and health.json() == {"ok": True}
    models = served.service.models()
    assert ready.status_code == 200 and ready.json() == {"ready": True, "models": models}
    assert models["active"] and models["shadow"]


def test_oversized_bodies_and_audio_get_413_with_the_limit(served):
    limit = served.service.config.http_max_body_bytes
    silence = np.zeros(61 * 16000, dtype="<i2").tobytes()  # 61 s of PCM: under the body limit, over 60 s

    def chunks():  # no Content-Length: the server counts as it reads
        for _ in range(limit // 65536 + 2):
            yield b"\0" * 65536

    with served.client() as client:
        declared = client.post("/v1/predict?format=s16le", content=b"\0" * (limit + 2))
        streamed = client.post("/v1/predict?format=s16le", content=chunks())
        too_long = client.post("/v1/predict", content=silence, headers={"Content-Type": "audio/pcm"})
        after = client.post("/v1/predict", content=silence[:32000], headers={"Content-Type": "audio/pcm"})
    for r in (declared, streamed):
        assert r.status_code == 413, r.text
        assert r.json()["error"] == "body_too_large" and r.json()["limit_bytes"] == limit
        assert str(limit) in r.json()["detail"] and "shorter requests" in r.json()["detail"]
    assert too_long.status_code == 413 and too_long.json()["error"] == "audio_too_long"
    assert "61.0 s" in too_long.json()["detail"] and too_long.json()["limit_s"] == 60.0
    assert after.status_code == 200 and after.json()["utterances"] == []  # a second of silence


def _empty_wav(tmp_path) -> bytes:
    write_wav(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32))
    return (tmp_path / "empty.wav").read_bytes()


def _wav_bytes(tmp_path, encoding: str) -> bytes:
    path = tmp_path / f"{encoding}.wav"
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-e", encoding, str(path), "synth", "0.5", "sine", "440"],
                   check=True, capture_output=True)
    return path.read_bytes()


def test_malformed_input_gets_a_fix_hint_is_counted_and_harms_nothing(served, short_clips, tmp_path):
    wav, _ = short_clips[1]
    cases = [  # (body, content type, query, status, code, words the fix names)
        (b"this is not audio at all", "audio/wav", "", 400, "not_wav", "sox"),
        (wav[: len(wav) // 2], "audio/wav", "", 400, "truncated_wav", "cut short"),
        (wav[:44], "audio/wav", "", 400, "truncated_wav", "cut short"),
        (_empty_wav(tmp_path), "audio/wav", "", 400, "empty", "re-record"),
        (b"", "audio/wav", "", 400, "empty", "--data-binary"),
        (b"\x01\x02\x03", "audio/pcm", "", 400, "pcm_odd_length", "16-bit"),
        (wav, "text/plain", "", 415, "unsupported_media_type", "audio/pcm"),
        (b"\x00\x01" * 800, "application/octet-stream", "", 415, "unknown_format", "format=s16le"),
        (wav, "audio/wav", "?format=mp3", 400, "bad_format", "format=wav"),
        (_wav_bytes(tmp_path, "mu-law"), "audio/wav", "", 415, "unsupported_encoding", "sox"),
    ]
    before = _errors(served)
    with served.client() as client:
        for body, ctype, query, status, code, hint in cases:
            r = client.post(f"/v1/predict{query}", content=body, headers={"Content-Type": ctype})
            assert (r.status_code, r.json()["error"]) == (status, code), (code, r.text)
            assert hint in r.json()["detail"], (code, r.json()["detail"])
        ok = _post_wav(client, wav)
    assert ok.status_code == 200 and ok.json()["utterances"]
    after = _errors(served)
    expected = {}
    for *_, code, _hint in cases:
        expected[code] = expected.get(code, 0) + 1
    assert {c: after.get(c, 0) - before.get(c, 0) for c in expected} == expected


def _errors(served) -> dict[str, int]:
    with served.client() as client:
        m = parse(client.get("/metrics").text)
    return {labels["code"]: int(n) for labels, n in m["harken_serve_errors_total"]}


def test_concurrent_requests_are_all_answered_or_cleanly_refused(served, short_clips):
    """24 clients at once against 4 admitted: each gets its clip's decisions or a 503 with Retry-After."""
    expected = []
    with served.client() as client:
        for wav, _ in short_clips:
            expected.append([_key(u) for u in _post_wav(client, wav).json()["utterances"]])
    n, start, results = 24, threading.Barrier(24), [None] * 24
    served.service.admission.peak = 0

    def one(i: int) -> None:
        with served.client() as client:
            start.wait()
            results[i] = _post_wav(client, short_clips[i % 3][0])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    codes = [r.status_code for r in results]
    assert set(codes) <= {200, 503} and codes.count(200) >= 1, codes
    for i, r in enumerate(results):
        if r.status_code == 200:
            assert [_key(u) for u in r.json()["utterances"]] == expected[i % 3]
        else:
            assert r.headers["Retry-After"] == "1" and r.json()["error"] == "busy"
    assert 1 <= served.service.admission.peak <= served.service.config.http_max_pending
    assert served.service.admission.in_flight == 0


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


def test_a_full_server_refuses_at_once_and_serves_what_it_admitted(served, short_clips):
    """With the model held busy, exactly http_max_pending requests wait; the rest get 503 straight away."""
    wav, limit = short_clips[2][0], served.service.config.http_max_pending
    results: list = []
    lock = threading.Lock()

    def one() -> None:
        with served.client() as client:
            r = _post_wav(client, wav)
        with lock:
            results.append(r)

    turn = served.service._turn
    turn.acquire()
    try:
        threads = [threading.Thread(target=one) for _ in range(limit + 5)]
        for t in threads:
            t.start()
        _wait_for(lambda: served.service.admission.in_flight == limit and len(results) == 5)
        assert [r.status_code for r in results] == [503] * 5
        assert all(r.headers["Retry-After"] == "1" and "http_max_pending" in r.json()["detail"] for r in results)
    finally:
        turn.release()
    for t in threads:
        t.join(60)
    assert sorted(r.status_code for r in results) == [200] * limit + [503] * 5


def test_time_budget_busy_and_timeout(served, short_clips):
    """Waiting for the model past the budget is 503 busy; running past it is 504 (no decisions)."""
    from edge.serve.inputs import RequestError

    wav = short_clips[0][0]
    service = served.service
    service._turn.acquire()
    try:
        with pytest.raises(RequestError) as busy:
            service.predict(wav, "wav", time.monotonic() + 0.2)
    finally:
        service._turn.release()
    assert busy.value.status == 503 and busy.value.headers == {"Retry-After": "1"}
    with pytest.raises(RequestError) as late:
        service.predict(wav, "wav", time.monotonic() - 1.0)  # the budget is spent before the first chunk
    assert late.value.status == 504 and "http_timeout_s" in late.value.detail
    with served.client() as client:
        assert _post_wav(client, wav).status_code == 200  # the pipeline is fine afterwards


def test_a_spent_budget_that_meets_the_window_tickers_flush_is_a_timeout_not_busy(served, short_clips):
    """The ticker holds the model's turn for a few ms to close a window: a request arriving then with
    its budget spent waits that out and gets 504, not a 503 that says the model stayed busy."""
    from edge.serve.inputs import RequestError

    service, held = served.service, threading.Event()

    def flush_like_the_ticker():
        with service._turn:
            held.set()
            time.sleep(0.05)

    ticker = threading.Thread(target=flush_like_the_ticker)
    ticker.start()
    held.wait(5.0)
    try:
        with pytest.raises(RequestError) as late:
            service.predict(short_clips[0][0], "wav", time.monotonic() - 1.0)
    finally:
        ticker.join()
    assert late.value.status == 504


def test_metrics_count_requests_latency_errors_and_models(served, short_clips):
    with served.client() as client:
        _post_wav(client, short_clips[0][0])
        client.post("/v1/predict", content=b"nope", headers={"Content-Type": "audio/wav"})
        m = parse(client.get("/metrics").text)
    assert value(m, "harken_serve_requests_total", code="200", route="/v1/predict") >= 1
    assert value(m, "harken_serve_requests_total", code="400", route="/v1/predict") >= 1
    count = value(m, "harken_serve_request_seconds_count", route="/v1/predict")
    assert value(m, "harken_serve_request_seconds_bucket", le="+Inf", route="/v1/predict") == count >= 2
    assert value(m, "harken_serve_request_seconds_bucket", le="0.001", route="/v1/predict") <= count
    assert value(m, "harken_serve_request_seconds_sum", route="/v1/predict") > 0
    assert value(m, "harken_serve_in_flight") == 0 and value(m, "harken_serve_max_pending") == 4
    assert value(m, "harken_serve_errors_total", code="not_wav") >= 1
    models = served.service.models()
    assert value(m, "harken_serve_model_info", model=models["active"], role="active") == 1
    assert value(m, "harken_serve_model_info", model=models["shadow"], role="shadow") == 1
    assert value(m, "harken_serve_utterances_total") >= 2 and value(m, "harken_serve_pipeline_inferences_total") >= 2


def test_feedback_on_a_served_utterance(served, short_clips):
    with served.client() as client:
        u = _post_wav(client, short_clips[0][0]).json()["utterances"][0]
        ok = client.post("/v1/feedback", json={"utterance": u["utterance"], "label": "yes"})
        confirmed = client.post("/v1/feedback", json={"utterance": u["utterance"], "confirm": True})
        unknown = client.post("/v1/feedback", json={"utterance": "0-999999", "label": "yes"})
        bad_label = client.post("/v1/feedback", json={"utterance": u["utterance"], "label": "banana"})
        malformed = client.post("/v1/feedback", content=b"{not json", headers={"Content-Type": "application/json"})
    assert ok.status_code == 200 and confirmed.status_code == 200
    assert unknown.status_code == 404 and bad_label.status_code == 404
    assert malformed.status_code == 400 and '"utterance"' in malformed.json()["detail"]


def test_a_failure_inside_the_server_costs_one_request_not_the_server(served, short_clips, monkeypatch):
    def broken(*args):
        raise RuntimeError("a bug")

    with served.client() as client:
        monkeypatch.setattr(served.service, "predict", broken)
        r = _post_wav(client, short_clips[0][0])
        monkeypatch.undo()
        after = _post_wav(client, short_clips[0][0])
    assert r.status_code == 500 and r.json()["error"] == "internal" and "log" in r.json()["detail"]
    assert after.status_code == 200 and after.json()["utterances"]
    assert _errors(served).get("internal", 0) >= 1
    assert served.service.admission.in_flight == 0  # the failed request left its slot
