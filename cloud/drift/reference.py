"""What a model's reference profile says about each score, and how its windows are read.

From the bundle's profile (``shared.profile``) this builds, per kind of drift, the scores of
``cloud.drift.scores`` with their reference figures:

    input    ridit of every feature, utterance_ms, level_dbfs, snr_db; noise_dbfs (the level of
             the frames the gate did not pass: a dead or unplugged microphone) has no
             reference in the profile and is judged against the device's own baseline and peers
    output   ridit of confidence, the no-answer share, and each label's share (label mix is what
             people say, not how the model is: it is judged against baselines only)
    concept  estimated_accuracy (label-free: each prediction's calibrated accuracy for its label
             and confidence bin, from the profile's ``calibration`` table of the test split),
             audit_accuracy (the random audit sample's feedback, against the profile's per-class
             accuracy for the true labels seen), feedback_accuracy (every correction and
             confirmation: biased towards errors people notice, so judged against baselines only)

Healthy spread between devices (``tau2``) comes from the profile's per-speaker ``chunks``: the
variance of the speakers' mean scores beyond what their sample sizes explain (method of moments),
at its upper 95 % confidence bound: a dozen chunks cannot vouch for a tighter population.
Profiles without chunks (older bundles) get ``DEFAULT_TAU2``, which is conservative.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from cloud.drift.scores import PRIOR_DOF, Score
from shared.histogram import CONFIDENCE_EDGES, NOISE_DBFS_EDGES

KINDS = ("input", "output", "concept")
INPUT_SCALARS = ("utterance_ms", "level_dbfs", "snr_db")
OTHER_LABEL = "other"
PSEUDO = 0.5  # per-bin pseudo-count on reference histograms (Jeffreys)
MIN_CHUNK_N = 5  # chunks with fewer utterances say little about between-speaker spread
TAU2_CONFIDENCE = 0.95  # the between-speaker spread is taken at this upper confidence bound (``_between``)


@dataclass(frozen=True)
class Floors:
    """Effect sizes that matter: ridit shift, standardized share change, accuracy drop."""

    ridit: float = 0.05
    share: float = 0.2
    accuracy: float = 0.05


@dataclass(frozen=True)
class Priors:
    """Healthy spread assumed where the data cannot tell: between devices when the profile has no
    chunks (or no per-speaker accuracy), and a device's own step-to-step spread before its
    warm-up has shown it (``baselines``)."""

    tau2_ridit: float = 0.1 ** 2
    tau2_share: float = 0.03 ** 2
    tau2_accuracy: float = 0.04 ** 2
    within_ridit: float = 0.03 ** 2
    within_share: float = 0.03 ** 2
    within_accuracy: float = 0.03 ** 2
    tau2_min: float = 0.005 ** 2

    def within_tau2(self, family: str) -> float:
        return {"ridit": self.within_ridit, "share": self.within_share}.get(family, self.within_accuracy)


@dataclass
class ModelReference:
    """One model's scores per kind, and the bins of every signal its windows carry."""

    model: str | None
    label_names: list[str]
    feature_names: list[str]
    scores: dict[str, list[Score]]
    shapes: dict[str, int]  # signal → bins
    no_answer_index: int | None
    edges: dict[str, list[float]] = field(default_factory=dict)  # histogram signals → their edges
    chunked: bool = False
    notes: list[str] = field(default_factory=list)

    def signals(self, kind: str) -> list[str]:
        return [s for s in SIGNALS_OF[kind](self)]


def _input_signals(ref: ModelReference) -> list[str]:
    return [f"feature:{n}" for n in ref.feature_names] + list(INPUT_SCALARS) + ["noise_dbfs"]


def _output_signals(ref: ModelReference) -> list[str]:
    return ["confidence", "labels"]


def _concept_signals(ref: ModelReference) -> list[str]:
    return ["conf_by_label", "audit", "feedback"]


SIGNALS_OF = {"input": _input_signals, "output": _output_signals, "concept": _concept_signals}


def _props(counts) -> np.ndarray:
    c = np.asarray(counts, dtype=float) + PSEUDO
    return c / c.sum()


def ridits(counts) -> np.ndarray:
    """Mid-cumulative shares of the (smoothed) reference histogram: each bin's ridit."""
    q = _props(counts)
    return np.cumsum(q) - q / 2.0


def _between(chunk_counts, weights: np.ndarray, tau2_min: float) -> tuple[float | None, int]:
    """(tau2, chunks used): variance of chunk mean scores beyond their sampling noise, at its
    upper ``TAU2_CONFIDENCE`` bound.

    The spread of J chunk means is ``(tau2 + noise) * chi2(J - 1) / (J - 1)``; the point estimate
    (that spread less the noise) of a dozen speakers who recorded a few dozen utterances each
    is mostly noise and often ~0 — a promise that households agree to within a hair which the
    next dozen speakers break (measured: held-out speakers spread 0.06 ridit on scores whose point
    estimate was 0). The upper bound is what J chunks can vouch for."""
    if chunk_counts is None:
        return None, 0
    c = np.asarray(chunk_counts, dtype=float)
    if c.ndim != 2 or c.shape[1] != len(weights):
        return None, 0
    n = c.sum(axis=1)
    c, n = c[n >= MIN_CHUNK_N], n[n >= MIN_CHUNK_N]
    if len(n) < 3:
        return None, 0
    means = (c @ weights) / n
    within = np.clip((c @ weights ** 2) / n - means ** 2, 0.0, None)
    j = len(n)
    spread_ub = float(np.var(means, ddof=1)) * (j - 1) / stats.chi2.ppf(1.0 - TAU2_CONFIDENCE, j - 1)
    tau2 = spread_ub - float(np.mean(within / n))
    return max(tau2, tau2_min), j


def _chunk_counts(profile: dict, signal: str):
    chunks = profile.get("chunks") or {}
    names = chunks.get("names") or []
    counts = (chunks.get("counts") or {}).get(signal)
    if counts is None:
        return None
    return [c for name, c in zip(names, counts) if name != "_background_"]


def _distribution_score(name: str, signal: str, family: str, weights: np.ndarray, ref_counts, profile: dict,
                        floor: float, prior: float, priors: Priors) -> Score:
    q = _props(ref_counts)
    mu = float(q @ weights)
    within = float(q @ (weights - mu) ** 2)
    tau2, j = _between(_chunk_counts(profile, signal), weights, priors.tau2_min)
    tau2 = prior if tau2 is None else tau2
    n_ref = max(float(np.sum(ref_counts)), 1.0)
    ref_var = within / n_ref + tau2 / max(j, 1)
    dof = float(max(j - 1, 1)) if j else PRIOR_DOF
    return Score(name, signal, family, weights, "two", mu, within, tau2, ref_var, floor, ref_dof=dof,
                 measured_spread=bool(j))


def build_reference(profile: dict, model: str | None, no_answer_confidence: float = 0.5,
                    floors: Floors = Floors(), priors: Priors = Priors()) -> ModelReference:
    """Every score of every kind for one model's (validated) profile."""
    no_answer_confidence = float(profile.get("no_answer_confidence", no_answer_confidence))
    feats = profile["features"]
    labels = list(profile["labels"]["names"])
    ref = ModelReference(model=model, label_names=labels, feature_names=list(feats["names"]), scores={},
                         shapes={}, no_answer_index=None, chunked=bool(profile.get("chunks")))
    inp: list[Score] = []
    for name, counts in zip(feats["names"], feats["counts"]):
        sig = f"feature:{name}"
        inp.append(_distribution_score(sig, sig, "ridit", ridits(counts), counts, profile, floors.ridit,
                                       priors.tau2_ridit, priors))
        ref.shapes[sig] = len(counts)
    ref.edges.update({f"feature:{n}": list(e) for n, e in zip(feats["names"], feats["edges"])})
    for sig in INPUT_SCALARS:
        counts = profile[sig]["counts"]
        ref.edges[sig] = list(profile[sig]["edges"])
        inp.append(_distribution_score(sig, sig, "ridit", ridits(counts), counts, profile, floors.ridit,
                                       priors.tau2_ridit, priors))
        ref.shapes[sig] = len(counts)
    ref.shapes["noise_dbfs"] = len(NOISE_DBFS_EDGES) + 1
    ref.edges["noise_dbfs"] = list(NOISE_DBFS_EDGES)
    inp.append(Score("noise_dbfs", "noise_dbfs", "ridit", ridits(np.ones(ref.shapes["noise_dbfs"])),
                     floor=floors.ridit, group="frames"))
    ref.scores["input"] = inp
    ref.scores["output"] = _output_scores(ref, profile, no_answer_confidence, floors, priors)
    ref.scores["concept"] = _concept_scores(ref, profile, floors, priors)
    if not ref.chunked:
        ref.notes.append("profile has no per-speaker chunks: healthy spread between devices is a prior")
    return ref


def _output_scores(ref: ModelReference, profile: dict, no_answer_confidence: float, floors: Floors,
                   priors: Priors) -> list[Score]:
    conf = profile["confidence"]
    ref.shapes["confidence"] = len(conf["counts"])
    ref.edges["confidence"] = list(conf["edges"])
    ref.shapes["labels"] = len(ref.label_names) + 1
    out = [_distribution_score("confidence", "confidence", "ridit", ridits(conf["counts"]), conf["counts"], profile,
                               floors.ridit, priors.tau2_ridit, priors)]
    na = next((i for i, e in enumerate(conf["edges"]) if abs(e - no_answer_confidence) < 1e-9), None)
    ref.no_answer_index = na
    if na is not None:
        w = np.zeros(len(conf["counts"]))
        w[: na + 1] = 1.0
        out.append(_distribution_score("no_answer", "confidence", "share", w, conf["counts"], profile,
                                       floors.share, priors.tau2_share, priors))
    label_counts = list(profile["labels"]["counts"]) + [0]
    for i, name in enumerate(ref.label_names):
        w = np.zeros(len(label_counts))
        w[i] = 1.0
        s = _distribution_score(f"label:{name}", "labels", "share", w, label_counts, profile, floors.share,
                                priors.tau2_share, priors)
        out.append(Score(s.name, s.signal, s.family, s.weights, floor=s.floor))  # baselines only
    return out


def _concept_scores(ref: ModelReference, profile: dict, floors: Floors, priors: Priors) -> list[Score]:
    n_labels = len(ref.label_names)
    k_conf = len(CONFIDENCE_EDGES) + 1
    ref.shapes["conf_by_label"] = (n_labels + 1) * k_conf
    ref.shapes["audit"] = 2 * n_labels
    ref.shapes["feedback"] = 2
    out: list[Score] = []
    cal = calibrated_accuracy(profile.get("calibration"), ref.label_names)
    if cal is not None:
        a, n = cal
        mu = float((n * a).sum() / n.sum())
        within = float((n * (a - mu) ** 2).sum() / n.sum())
        out.append(Score("estimated_accuracy", "conf_by_label", "accuracy", a.reshape(-1), "drop", mu, within,
                         priors.tau2_accuracy, within / n.sum(), floors.accuracy, group="estimate"))
    acc = profile.get("accuracy")
    if acc:
        per_label = dict(zip(acc["names"], zip(acc["correct"], acc["total"])))
        rate = np.array([(per_label.get(name, (0, 0))[0] + 0.5) / (per_label.get(name, (0, 0))[1] + 1.0)
                         for name in ref.label_names])
        expected = np.repeat(rate, 2)
        weights = np.tile([1.0, 0.0], n_labels)
        total = max(sum(int(t) for t in acc["total"]), 1)
        out.append(Score("audit_accuracy", "audit", "accuracy", weights, "drop", None, 0.0, priors.tau2_accuracy,
                         float(np.mean(rate * (1 - rate))) / total, floors.accuracy, expected_bins=expected,
                         group="feedback"))
    out.append(Score("feedback_accuracy", "feedback", "accuracy", np.array([1.0, 0.0]), "drop",
                     floor=floors.accuracy, group="feedback"))
    return out


def calibrated_accuracy(calibration: dict | None, labels: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """([labels + 1, bins] calibrated accuracy, [same] reference counts), or None without a table.

    Each (predicted label, confidence bin) cell's accuracy is shrunk towards its label's overall
    accuracy (one pseudo-observation), which is shrunk towards the global one; the extra row
    (labels the table does not know) holds the global accuracy.
    """
    if not calibration:
        return None
    n = np.zeros((len(labels) + 1, len(CONFIDENCE_EDGES) + 1))
    c = np.zeros_like(n)
    index = {name: i for i, name in enumerate(labels)}
    for name, rn, rc in zip(calibration["labels"], calibration["n"], calibration["correct"]):
        if name in index and len(rn) == n.shape[1]:
            n[index[name]] += rn
            c[index[name]] += rc
    if n.sum() <= 0:
        return None
    overall = (c.sum() + 0.5) / (n.sum() + 1.0)
    per_label = (c.sum(axis=1, keepdims=True) + overall) / (n.sum(axis=1, keepdims=True) + 1.0)
    a = (c + per_label) / (n + 1.0)
    a[-1, :] = overall
    return a, n
