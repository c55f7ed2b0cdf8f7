"""Per-utterance records of held-out speakers, as a device sees them, for drift calibration.

Each speaker's clips of one split are laid out as one stream (the lab's stream layout), cut by
the bundle's own gate, placed and run through the bundle; every utterance keeps what a device
would count into its windows (features, length, level, SNR, predicted label and confidence)
and the label of the clip it overlaps most (-1: none, the gate fired on the background). The
drift simulator (``cloud.drift.simulation``) resamples these into households.
"""
from __future__ import annotations

import numpy as np

from cloud.lab import dataset as ds_mod
from cloud.lab import infer, stream
from shared.audio import read_wav
from shared.bundle import Bundle
from shared.gate import GateConfig
from shared.levels import level_dbfs, snr_db


def speaker_records(data_dir: str, bundle: Bundle, speakers: list[str], seed: int = 0) -> dict[str, dict]:
    """{speaker: record} for every listed speaker that has clips in the dataset."""
    dataset = ds_mod.load(data_dir)
    gate = GateConfig.from_dict(bundle.manifest["gate"])
    sess = infer.session(bundle.model_bytes, threads=1)
    label_index = {name: i for i, name in enumerate(bundle.labels)}
    out = {}
    for speaker in speakers:
        clips = [c for c in dataset.clips if c.speaker == speaker]
        if not clips:
            continue
        audio = [read_wav(dataset.path_of(c)) for c in clips]
        p = stream.play(audio, lambda w: infer.run(sess, w), gate, bundle.placement, bundle.input_samples, seed)
        if not len(p.utterances):
            continue
        truth = np.array([label_index.get(clips[o].label, -1) if o >= 0 else -1 for o in p.owner])
        out[speaker] = {"features": p.outputs.features.tolist(),
                        "utterance_ms": [u.duration_ms for u in p.utterances],
                        "level_dbfs": [level_dbfs(u.samples) for u in p.utterances],
                        "snr_db": [snr_db(u.samples) for u in p.utterances],
                        "confidence": p.outputs.confidence.tolist(), "predicted": p.outputs.label.tolist(),
                        "truth": truth.tolist()}
    return out
