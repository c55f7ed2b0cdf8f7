"""The leave-one-engine-out table as text (``cloud.lab.loeo``'s result).

Apart from ``loeo`` so that ``harken model show`` on a collector, which has no lab extra,
prints a registered model's table without importing the lab's numerics.
"""
from __future__ import annotations


def table_text(result: dict) -> str:
    """The leave-one-engine-out table as aligned text."""
    lines = [f"{'held-out engine':<18}{'test clips':>11}{'in-distribution':>17}{'held out':>10}{'drop':>8}"]
    for engine, r in result.get("engines", {}).items():
        lines.append(f"{engine:<18}{r['test_clips']:>11}{r['in_distribution']:>17.4f}{r['held_out']:>10.4f}"
                     f"{r['in_distribution'] - r['held_out']:>8.4f}")
        for voice, v in r["by_voice"].items():
            lines.append(f"  {voice:<16}{v['test_clips']:>11}{v['in_distribution']:>17.4f}{v['held_out']:>10.4f}")
    return "\n".join(lines)
