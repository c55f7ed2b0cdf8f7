"""Judge the rollout gates on simulated canaries; prints one JSON object.

    .venv/bin/python scripts/bench_gates.py [--trials 1000] [--devices 1000] [--seed 1]

Pure decision core: no broker, no store. Each trial is a fleet drawn afresh
(``cloud.rollout.simulate``: log-normal traffic per device, device random effects on error
rate, no-answer rate, latency, label mix and feedback accuracy, feedback from a fifth of the
devices) and one canary rollout with the default plan (5 → 25 → 100 %, 10 min bakes), the
default ``Gates`` and ``Policy``, ticked through ``core.decide`` every 5 simulated minutes.

Kinds: ``equal`` (the candidate is the control model again), and three worse candidates:
error rate ×1.5, no-answer rate +10 points, latency ×2. For each kind: how the rollouts
ended, with 95 % Wilson intervals — for ``equal`` the false rollbacks (gate failures and
stage timeouts), for the worse kinds the share stopped before the 100 % step — and the
median time, inferences and devices behind the decisions.

Baseline, same run: the same kinds of canary judged by the gates this replaced (main at
fb3196b: a rate fails when its excess is over the margin and a one-sided pooled z ≥ 2.33,
else passes; latency p99 against 2x control with a 50 ms floor and a 500 ms ceiling; label
mix Jensen–Shannon distance over 0.25; an error-rate ceiling of 2 %), looked at every tick
through the same ``core.decide``, plan and policy.

A rate is printed only when every canary of its kind ran to an outcome; otherwise the
figure is null with the reason, and the exit status is 1.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import statistics
import sys
import time
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import cloud.rollout.core as core  # noqa: E402
from cloud.rollout.checks import GateResult  # noqa: E402
from cloud.rollout.simulate import Effect, FleetModel, run_canary  # noqa: E402
from shared.histogram import LATENCY_MS_EDGES, quantile  # noqa: E402

KINDS = {
    "equal": Effect(),
    "error_rate_x1.5": Effect(error_factor=1.5),
    "no_answer_+10pt": Effect(no_answer_add=0.10),
    "latency_x2": Effect(latency_factor=2.0),
}
TARGETS = {"equal": ("false_rollbacks", "<= 0.05"), "worse": ("stopped_before_100", ">= 0.95")}


# ---------------------------------------------------------------------------- the baseline

def _legacy_rate(name: str, k_t, n_t, k_c, n_c, margin: float, ceiling: float | None = None) -> GateResult:
    """main@fb3196b ``_rate_gate``: fail on excess > margin and pooled one-sided z ≥ 2.33."""
    if n_t < 200 or n_c < 200:
        return GateResult(name, "wait", "few", {})
    p_t, p_c = k_t / n_t, k_c / n_c
    if ceiling is not None and p_t > ceiling and p_t > p_c:
        return GateResult(name, "fail", f"{name} over the ceiling", {})
    pooled = (k_t + k_c) / (n_t + n_c)
    se = math.sqrt(max(pooled * (1 - pooled) * (1 / n_t + 1 / n_c), 1e-18))
    fail = p_t - p_c > margin and (p_t - p_c - margin) / se >= 2.33
    return GateResult(name, "fail" if fail else "pass", name, {})


def _js(a, b) -> float:
    pa, pb = a / a.sum(), b / b.sum()
    m = (pa + pb) / 2
    div = sum(0.5 * x * math.log2(x / y) for x, y in zip(list(pa) + list(pb), list(m) + list(m)) if x)
    return math.sqrt(max(div, 0.0))


def legacy_evaluate(kind, t, c, gates, **_) -> list[GateResult]:
    """The canary gates of main@fb3196b with their defaults, on the same samples."""
    tt, ct = t.total, c.total
    out = [_legacy_rate("error_rate", tt.errors, tt.attempts, ct.errors, ct.attempts, 0.01, ceiling=0.02),
           _legacy_rate("no_answer_rate", tt.no_answer, tt.inferences, ct.no_answer, ct.inferences, 0.10)]
    p_t, p_c = quantile(LATENCY_MS_EDGES, tt.latency_ms, 0.99), quantile(LATENCY_MS_EDGES, ct.latency_ms, 0.99)
    slow = p_t is not None and p_c is not None and (p_t > 500 and p_t > p_c or p_t > 2 * p_c and p_t >= 50)
    out.append(GateResult("latency_p99", "wait" if tt.inferences < 200 else "fail" if slow else "pass", "", {}))
    labels = sorted(set(tt.labels) | set(ct.labels))
    a = [tt.labels.get(x, 0) for x in labels]
    b = [ct.labels.get(x, 0) for x in labels]
    if min(sum(a), sum(b)) < 200:
        out.append(GateResult("label_mix", "wait", "", {}))
    else:
        out.append(GateResult("label_mix", "fail" if _js(np.array(a, float), np.array(b, float)) > 0.25 else "pass",
                              "", {}))
    return out


@contextlib.contextmanager
def legacy_gates():
    """Run ``core.decide`` with the replaced gates (the rest of the core unchanged)."""
    current = core.evaluate
    core.evaluate = legacy_evaluate
    try:
        yield
    finally:
        core.evaluate = current


# ---------------------------------------------------------------------------- figures

def wilson(k: int, n: int, z: float = 1.96) -> dict:
    """A rate with its 95 % Wilson score interval."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return {"rate": round(p, 4), "k": k, "n": n, "low": round(max(0.0, centre - half), 4),
            "high": round(min(1.0, centre + half), 4)}


def _median(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 1) if xs else None


def summarize(kind: str, outcomes: list, last_stage: int) -> dict:
    n = len(outcomes)
    ended = [o for o in outcomes if o.status in ("completed", "rolled_back", "failed")]
    out = {"trials": n, "outcomes": dict(Counter(f"{o.status}@stage{o.stage}" for o in outcomes)),
           "stopped_by": dict(Counter(_cause(o) for o in outcomes if o.status != "completed"))}
    if len(ended) < n:
        out["error"] = f"{n - len(ended)} canaries did not run to an outcome: no rate is printed"
        return out
    stopped = sum(1 for o in outcomes if o.status != "completed" and o.stage < last_stage)
    if kind == "equal":
        out["false_rollbacks"] = wilson(n - sum(o.status == "completed" for o in outcomes), n)
        out["false_rollbacks_by_gate"] = wilson(sum(o.status == "rolled_back" for o in outcomes), n)
        out["false_rollbacks_by_timeout"] = wilson(sum(o.status == "failed" for o in outcomes), n)
        decisions = [d for o in outcomes for d in o.decided]
    else:
        out["stopped_before_100"] = wilson(stopped, n)
        out["stopped_by_gate_before_100"] = wilson(sum(o.status == "rolled_back" and o.stage < last_stage
                                                       for o in outcomes), n)
        decisions = [o.decided[-1] for o in outcomes if o.decided and o.status != "completed"]
    out["median_to_decision"] = {
        "seconds": _median([d["seconds"] for d in decisions]),
        "inferences": _median([d["inferences"] for d in decisions]),
        "devices": _median([d["devices"] for d in decisions]),
        "control_inferences": _median([d["control_inferences"] for d in decisions]),
    }
    if kind == "equal":
        out["median_to_decision"]["by_stage"] = {
            s: {"seconds": _median([d["seconds"] for d in decisions if d["stage"] == s]),
                "inferences": _median([d["inferences"] for d in decisions if d["stage"] == s]),
                "devices": _median([d["devices"] for d in decisions if d["stage"] == s])}
            for s in sorted({d["stage"] for d in decisions})}
        out["median_rollout_s"] = _median([o.elapsed_s for o in outcomes if o.status == "completed"])
    return out


def _cause(o) -> str:
    if o.status == "failed":
        return "timeout"
    return o.reason.split(" ")[1] if o.reason.startswith("gate ") else o.status


def run_kind(model: FleetModel, effect: Effect, trials: int, seed: int, label: str, **kw) -> list:
    t0 = time.process_time()
    out = [run_canary(model, effect, seed * 1_000_003 + i, **kw) for i in range(trials)]
    print(f"{label}: {trials} canaries in {time.process_time() - t0:.0f} s CPU", file=sys.stderr)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=1000, help="canaries per kind (default 1000)")
    ap.add_argument("--baseline-trials", type=int, default=200,
                    help="canaries per kind judged by the replaced gates (default 200)")
    ap.add_argument("--devices", type=int, default=FleetModel.devices)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tick-s", type=float, default=600.0, help="simulated seconds between ticks (default 600)")
    args = ap.parse_args(argv)
    model = replace(FleetModel(), devices=args.devices)
    t0 = time.perf_counter()
    report = {"bench": "gates", "machine": platform.machine(), "python": platform.python_version(),
              "fleet": asdict(model), "plan": "canary 5,25,100 % (defaults)", "tick_s": args.tick_s, "kinds": {}}
    failed = False
    for i, (kind, effect) in enumerate(KINDS.items()):
        outcomes = run_kind(model, effect, args.trials, args.seed + i, kind, tick_s=args.tick_s)
        report["kinds"][kind] = summarize(kind, outcomes, last_stage=2)
        failed |= "error" in report["kinds"][kind]
    report["baseline_replaced_gates"] = {}
    with legacy_gates():
        for i, (kind, effect) in enumerate(KINDS.items()):
            outcomes = run_kind(model, effect, args.baseline_trials, args.seed + 100 + i, f"baseline {kind}",
                                tick_s=args.tick_s)
            report["baseline_replaced_gates"][kind] = summarize(kind, outcomes, last_stage=2)
            failed |= "error" in report["baseline_replaced_gates"][kind]
    report["targets"] = {"equal.false_rollbacks.rate": "<= 0.05", "worse.stopped_before_100.rate": ">= 0.95"}
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["cpu_seconds"] = round(time.process_time(), 1)
    print(json.dumps(report, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
