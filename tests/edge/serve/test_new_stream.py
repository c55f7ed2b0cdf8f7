"""``Pipeline.new_stream``: each recording through a fresh gate, one set of windows for all of them."""
from __future__ import annotations

from edge.pipeline import StaticModels
from tests.edge.conftest import make_stream, run_pipeline


def _key(d) -> tuple:
    return (d.audio_start_s, d.audio_end_s, d.label, d.confidence, d.action)


def test_after_new_stream_decisions_depend_only_on_the_new_recording(say, models):
    first, _ = make_stream(say, 4, seed=11)
    second, _ = make_stream(say, 4, seed=12)
    odd = first[: len(first) - 77]  # a partial gate frame left behind must not shift the next recording
    alone, _, _ = run_pipeline(second, 480, StaticModels(models[0]))
    both, windows, pipeline = run_pipeline(odd, 480, StaticModels(models[0]), flush=False, window_s=3600.0)
    n_first = len(both)
    pipeline.new_stream()
    for i in range(0, len(second), 480):
        pipeline.feed(second[i:i + 480])
    pipeline.flush()
    assert n_first >= 3 and len(alone) >= 3
    assert [_key(d) for d in pipeline.sink.decisions[n_first:]] == [_key(d) for d in alone]
    assert len({d.utterance for d in pipeline.sink.decisions}) == len(pipeline.sink.decisions)
    (window,) = windows  # one window counted both recordings
    frames = len(odd) // 480 + len(second) // 480  # 30 ms frames of each recording
    assert window["software"]["frames"] == frames
    assert window["software"]["utterances"] == len(pipeline.sink.decisions)
    assert window["duration_s"] == (len(odd) + len(second)) / 16000

