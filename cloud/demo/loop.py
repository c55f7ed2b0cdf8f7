"""The demo's data loop: field samples from the drifted fleet, labelled, into the next model.

After the drift alert the demo asks the alert's devices for the utterances around it (the
devices opted in to uploads at start, so low-confidence and audit clips arrive as well); a
simulated labeller labels every uploaded clip with what the simulator says was really said
(each device's ``truth.jsonl``, written by ``harken sim --truth-log``); the labelled samples
are exported, imported as a dataset, merged with the base data and trained into the next
model, all with the same `harken` commands an operator would run.

``field_accuracy`` is the quality figure the demo prints for each model: the share of the
simulated people's answers (feedback, sent at random, so unbiased) that confirmed the
model's prediction, over the windows since a given time.
"""
from __future__ import annotations

import time
from pathlib import Path

from edge.sim.truth import TRUTH_FILE, read_truth
from shared.window import credited_feedback

LABELLER = "simulated-labeller"


class SimulatedLabeller:
    """Labels field samples from the devices' truth logs under ``devices_root/<device>/``."""

    def __init__(self, store, devices_root: Path, registry=None):
        self.store, self.devices_root, self.registry = store, Path(devices_root), registry
        self.labelled = 0
        self.unknown: set[str] = set()  # samples whose utterance is in no truth log (yet)

    def label_new(self) -> int:
        """Label every unlabelled sample the truth logs know; returns how many were labelled now."""
        from cloud.samples.labels import label_sample

        pending = self.store.samples(unlabelled=True, limit=5000, oldest_first=True)
        truths: dict[str, dict[str, str]] = {}
        done = 0
        for s in pending:
            device = s["device"]
            if device not in truths:
                truths[device] = read_truth(self.devices_root / device / TRUTH_FILE)
            truth = truths[device].get(s.get("utterance") or "")
            if truth is None:
                self.unknown.add(s["sha256"])
                continue
            label_sample(self.store, s["sha256"], truth, by=LABELLER, registry=self.registry)
            self.unknown.discard(s["sha256"])
            done += 1
        self.labelled += done
        return done


def field_accuracy(store, model: str, since: float, until: float | None = None) -> dict:
    """Feedback accuracy of ``model`` (sha256) over the windows in ``[since, until)``."""
    right = total = 0
    for w in store.windows(since=since, until=until):
        for true, predicted, n in credited_feedback(w, model):
            total += n
            right += n if true == predicted else 0
    return {"accuracy": round(right / total, 4) if total else None, "answers": total}


def wait_for_labels(labeller: SimulatedLabeller, target: int, timeout_s: float, check_alive) -> int:
    """Label as samples arrive until ``target`` are labelled or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while labeller.labelled < target and time.monotonic() < deadline:
        check_alive()
        if not labeller.label_new():
            time.sleep(1.0)
    return labeller.labelled
