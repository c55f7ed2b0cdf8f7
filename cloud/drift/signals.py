"""What drift watches, as count vectors: a window (or a merge) and its model's reference profile.

Three kinds of drift, each a set of named signals whose counts add across windows, so the
counts of a merge equal the sum of the counts of its windows (``shared.window.merge_windows``
adds the same histograms):

    input    feature:<name> (one per watched feature), utterance_ms, level_dbfs, snr_db
    output   labels (profile order + an "other" bin), confidence, no_answer ([answered, none])
    concept  accuracy and class:<label>: feedback pairs as [correct, wrong] per true label

One signal has no reference in the profile: ``speech_frames`` (input), the window's frames as
[unvoiced, voiced]. A cohort of some devices is compared with the *other* devices of its model
over the same steps (``PEER_SIGNALS``): a dead microphone (silence or DC) makes the gate cut no
utterance at all, so every profile signal is empty, but its voiced share collapses while its
peers' does not. Whole-fleet cohorts have no peers and skip it.

The reference of ``no_answer`` is the share of reference confidences below the agent's
no-answer threshold (the bundle's ``confidence_threshold``), which must be one of the
profile's confidence edges; otherwise the signal is left out. The reference of concept signals is
``profile["accuracy"]`` = ``{"names": [...], "correct": [...], "total": [...]}`` when the
profile carries it; without it the engine uses the first half of its own look-back.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

KINDS = ("input", "output", "concept")
INPUT_SCALARS = ("utterance_ms", "level_dbfs", "snr_db")
PEER_SIGNALS = {"input": ("speech_frames",), "output": (), "concept": ()}  # referenced by the cohort's peers
OTHER_LABEL = "other"


@dataclass
class Reference:
    """The reference counts of one model, per kind and signal, and how to read its windows."""

    model: str | None
    n_features: int
    label_names: list[str]
    signals: dict[str, dict[str, np.ndarray]]  # kind → signal → reference counts
    no_answer_index: int | None  # confidence bins [0, i] are below the no-answer threshold
    concept_from_profile: bool = False
    shapes: dict[str, int] = field(default_factory=dict)  # signal → number of bins

    def kind_signals(self, kind: str) -> list[str]:
        """Every signal counted for ``kind``: the profile's, then those referenced by peers."""
        return list(self.signals[kind]) + list(PEER_SIGNALS[kind])


def _arr(counts) -> np.ndarray:
    return np.asarray(counts, dtype=np.int64)


def reference_of(profile: dict, model: str | None, no_answer_confidence: float = 0.5) -> Reference:
    """Reference counts per kind and signal from a (validated) reference profile.

    ``profile["no_answer_confidence"]`` (the bundle's ``confidence_threshold``, added by
    ``cloud.drift.source``) wins over the ``no_answer_confidence`` argument.
    """
    no_answer_confidence = float(profile.get("no_answer_confidence", no_answer_confidence))
    feats = profile["features"]
    inp = {f"feature:{name}": _arr(c) for name, c in zip(feats["names"], feats["counts"])}
    for s in INPUT_SCALARS:
        inp[s] = _arr(profile[s]["counts"])
    labels = list(profile["labels"]["names"])
    conf_edges, conf_counts = profile["confidence"]["edges"], _arr(profile["confidence"]["counts"])
    out = {"labels": np.append(_arr(profile["labels"]["counts"]), 0), "confidence": conf_counts}
    na_index = next((i for i, e in enumerate(conf_edges) if abs(e - no_answer_confidence) < 1e-9), None)
    if na_index is not None:
        below = int(conf_counts[: na_index + 1].sum())
        out["no_answer"] = np.array([int(conf_counts.sum()) - below, below], dtype=np.int64)
    concept, from_profile = _concept_reference(profile.get("accuracy"), labels)
    signals = {"input": inp, "output": out, "concept": concept}
    shapes = {s: len(c) for kind in signals.values() for s, c in kind.items()}
    shapes["speech_frames"] = 2
    return Reference(model=model, n_features=len(feats["names"]), label_names=labels, signals=signals,
                     no_answer_index=na_index, concept_from_profile=from_profile, shapes=shapes)


def _concept_reference(acc: dict | None, labels: list[str]) -> tuple[dict[str, np.ndarray], bool]:
    ref = {"accuracy": np.zeros(2, dtype=np.int64)}
    ref.update({f"class:{name}": np.zeros(2, dtype=np.int64) for name in labels})
    if not acc:
        return ref, False
    for name, correct, total in zip(acc["names"], acc["correct"], acc["total"]):
        pair = np.array([int(correct), int(total) - int(correct)], dtype=np.int64)
        ref["accuracy"] += pair
        if f"class:{name}" in ref:
            ref[f"class:{name}"] = pair
    return ref, True


def extract(window: dict, ref: Reference) -> dict[str, dict[str, np.ndarray]]:
    """Observed counts of one window (or merge) in the reference's layout.

    Raises ValueError when the window's histograms do not fit the profile (another model's
    bins): the caller should count it and go on.
    """
    inp, out = window["input"], window["output"]
    if len(inp["features"]) != ref.n_features:
        raise ValueError(f"window has {len(inp['features'])} feature histograms, the profile {ref.n_features}")
    obs_in: dict[str, np.ndarray] = {}
    for name, counts in zip(ref.signals["input"], inp["features"]):
        obs_in[name] = _arr(counts)
    for s in INPUT_SCALARS:
        obs_in[s] = _arr(inp[s])
    index = {name: i for i, name in enumerate(ref.label_names)}
    labels = np.zeros(len(ref.label_names) + 1, dtype=np.int64)
    for name, n in out["labels"].items():
        labels[index.get(name, len(ref.label_names))] += n
    obs_out = {"labels": labels, "confidence": _arr(out["confidence"])}
    if "no_answer" in ref.signals["output"]:
        inferences = int(window["software"]["inferences"])
        no_answer = min(int(out["no_answer"]), inferences)
        obs_out["no_answer"] = np.array([inferences - no_answer, no_answer], dtype=np.int64)
    obs = {"input": obs_in, "output": obs_out, "concept": _concept_counts(window["feedback"]["pairs"], ref)}
    for kind, sigs in obs.items():
        for s, c in sigs.items():
            if len(c) != ref.shapes[s]:
                raise ValueError(f"{kind} signal {s} has {len(c)} bins, the profile {ref.shapes[s]}")
    return obs


def peer_counts(window: dict) -> dict[str, dict[str, np.ndarray]]:
    """Counts of the peer-referenced signals of one window (or merge), by kind."""
    sw = window["software"]
    voiced = int(sw["voiced_frames"])
    return {"input": {"speech_frames": _arr([max(0, int(sw["frames"]) - voiced), voiced])}}


def _concept_counts(pairs: list, ref: Reference) -> dict[str, np.ndarray]:
    counts = {s: np.zeros(2, dtype=np.int64) for s in ref.signals["concept"]}
    for true, predicted, n in pairs:
        slot = 0 if true == predicted else 1
        counts["accuracy"][slot] += n
        key = f"class:{true}"
        if key in counts:
            counts[key][slot] += n
    return counts
