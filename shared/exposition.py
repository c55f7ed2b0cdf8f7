"""Prometheus text exposition (format 0.0.4), written by hand: no client library on either side.

``Exposition().family(name, kind, help, samples)`` adds one metric family (``samples`` are
``(labels, value)`` pairs; a None value is left out); ``histogram(...)`` adds a histogram
family from cumulative bucket counts. Both the collector's ``/metrics`` and ``harken serve``'s
use it, so every Harken process exposes metrics the same way.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
Sample = tuple[dict, float]


def _escape_label(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _value(v: float) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def _labels(labels: dict) -> str:
    return ",".join(f'{k}="{_escape_label(v)}"' for k, v in sorted(labels.items()))


class Exposition:
    """Builds the text format one family at a time."""

    def __init__(self):
        self.lines: list[str] = []

    def _head(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text.replace(chr(92), chr(92) * 2).replace(chr(10), ' ')}")
        self.lines.append(f"# TYPE {name} {kind}")

    def _sample(self, name: str, labels: dict, value: float) -> None:
        lab = _labels(labels)
        self.lines.append(f"{name}{{{lab}}} {_value(value)}" if lab else f"{name} {_value(value)}")

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> "Exposition":
        self._head(name, kind, help_text)
        for labels, value in samples:
            if value is not None:
                self._sample(name, labels, value)
        return self

    def histogram(self, name: str, help_text: str, edges: Sequence[float],
                  series: Iterable[tuple[dict, Sequence[int], float]]) -> "Exposition":
        """``series``: (labels, counts per bucket ``<= edges[i]`` plus one past the last edge, sum)."""
        self._head(name, "histogram", help_text)
        for labels, counts, total in series:
            running = 0
            for edge, n in zip(list(edges) + [math.inf], counts):
                running += n
                self._sample(f"{name}_bucket", {**labels, "le": _value(float(edge))}, running)
            self._sample(f"{name}_sum", labels, float(total))
            self._sample(f"{name}_count", labels, running)
        return self

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"
