"""Read a Prometheus text exposition with prometheus_client's own parser (it raises on a malformed line)."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}


def parse(text: str) -> dict[str, list[tuple[dict, float]]]:
    """Sample name → its ``(labels, value)`` pairs. A declared family without samples is present and
    empty (under its exposed name: a counter's ends ``_total``); a family declared twice or a sample
    outside its family fails."""
    assert text.endswith("\n")
    samples: dict[str, list] = {}
    for fam in text_string_to_metric_families(text):
        names = [fam.name + s for s in SUFFIXES.get(fam.type, ("",))]
        for name in names:
            assert name not in samples, f"{name} declared twice"
            samples[name] = []
        for s in fam.samples:
            assert s.name in names, f"{s.name} is not one of {fam.name}'s samples"
            samples[s.name].append((s.labels, s.value))
    return samples


def value(samples, name, **labels) -> float:
    hits = [v for lab, v in samples[name] if lab == labels]
    assert len(hits) == 1, f"{name}{labels}: {samples[name]}"
    return hits[0]
