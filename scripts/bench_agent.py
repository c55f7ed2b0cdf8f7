"""Benchmark the agent against a bare webrtcvad + onnxruntime loop doing the same work.

    .venv/bin/python scripts/bench_agent.py [--bundle B.hkb (--trust-key signing.pub | --no-verify) | --lab-graph]
                                            [--seconds 600] [--repeat 5] [--chunk 160000] [--profile]

Without ``--bundle`` it trains a small bundle with the model lab's default hyperparameters (the
default feature graph and network, on a tiny espeak-ng dataset: ~15 s); ``--lab-graph`` puts
a random head on the lab's feature graph instead. Three streams of ``--seconds`` each are
composed from espeak-ng speech and written as 16-bit WAV: ``typical`` (about a third speech),
``speech`` (continuous) and ``silence90`` (90 % silence); see ``bench_agent_data.py``.

Each repeat runs the agent (``harken agent replay`` after start-up) and then the bare loop in
child processes pinned to one core that import only what a device imports (see
``bench_agent_loops.py``); figures are medians over the repeats, CPU seconds, with the bare
loop beside each; a ratio is the median of the repeats' agent / bare (each pair runs back to
back, so a change in the machine's load hits both). Decision latency is the gate's hang-over
(audio time from the end of speech to the frame that closes the utterance) plus processing
(that frame's arrival to the decision: wall time, and the thread's CPU time beside it), from a
run fed 30 ms at a time at ``--pace`` times real time (the thread sleeps until each frame is
due, as on a device) at the agent service's niceness (``Nice=-10``); the bare loop is fed the
same way in the same run and runs the model when the agent's closing frames arrive. The script refuses to print figures (exit 1, reasons on stderr) when
what it times did not happen: a frame not classified, an utterance not run through the model,
a decision missing, the bare loop doing less than the agent, repeats disagreeing, the agent
or the ``--baseline-code`` run importing other code than asked, the baseline finding other
utterances or decisions.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import bench_agent_loops as loops  # noqa: E402

TARGETS = {"ratio": 1.25, "rtf_typical": 1000.0, "rtf_silence90": 3000.0, "rss_mb": 120.0, "processing_p99_ms": 5.0,
           "window_bytes": 1024}


# ---------------------------------------------------------------------------- children

def child_agent(args) -> dict:
    from edge.replay import load_model
    from edge.windows import process_rss_mb

    core = loops.pin_one_core()
    model = load_model(args.bundle, public_keys=[args.trust_key] if args.trust_key else None,
                       verify=args.trust_key is not None)
    streams = json.loads(args.streams)
    loops.agent_run(model, args.warmup, args.chunk)  # after start-up: lazy imports and first-call costs paid
    out: dict = {"core": core, "streams": {}}
    for name, path in streams.items():
        out["streams"][name] = loops.agent_run(model, path, args.chunk)
        if args.latency:
            out["streams"][name]["latency"] = loops.agent_latency(model, path, args.pace)
    out["rss_mb"] = round(process_rss_mb(), 1)
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    out["modules"] = sorted({m.split(".")[0] for m in sys.modules})
    out["code"] = agent_code()
    return out


def agent_code() -> str:
    """The checkout this process's agent was imported from (``--code``, or this script's)."""
    return str(Path(sys.modules["edge.pipeline"].__file__).resolve().parents[1])


def child_bare(args) -> dict:
    from edge.windows import process_rss_mb
    from shared.bundle import load_bundle

    core = loops.pin_one_core()
    bundle = load_bundle(args.bundle, None, require_signature=False)
    session, names, feed, n_input = loops.bare_session(bundle)
    mode = bundle.manifest.get("gate", {}).get("aggressiveness", 2)
    spans = json.loads(Path(args.spans).read_text())
    loops.bare_run(session, names, feed, n_input, bundle.placement, args.warmup, args.chunk, spans["typical"], mode)
    out: dict = {"core": core, "streams": {}}
    for name, path in json.loads(args.streams).items():
        out["streams"][name] = loops.bare_run(session, names, feed, n_input, bundle.placement, path, args.chunk,
                                              spans[name], mode)
    out["rss_mb"] = round(process_rss_mb(), 1)
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    if args.latency:
        for name, path in json.loads(args.streams).items():
            out["streams"][name]["latency"] = loops.bare_latency(session, names, feed, n_input, bundle.placement,
                                                                 path, spans["closes"][name], mode, args.pace)
    return out


def child_profile(args) -> dict:
    import cProfile
    import pstats

    from edge.replay import load_model

    loops.pin_one_core()
    model = load_model(args.bundle, verify=False)
    path = json.loads(args.streams)["typical"]
    loops.agent_run(model, args.warmup, args.chunk)
    profiler = cProfile.Profile()
    profiler.enable()
    loops.agent_run(model, path, args.chunk)
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = sum(row[2] for row in stats.stats.values())
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:20]
    return {"total_s": round(total, 3), "top_by_own_time": [
        {"function": f"{Path(f).name}:{line}({fn})", "calls": row[1], "own_s": round(row[2], 4),
         "share": round(row[2] / total, 3)} for (f, line, fn), row in rows]}


def peak_rss_mb() -> float:
    """VmHWM: this process's peak RSS (ru_maxrss would carry the parent's over fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmHWM in /proc/self/status")


# ---------------------------------------------------------------------------- parent

def run_child(mode: str, args, bundle: Path, key: Path | None, streams: dict, spans: Path, latency: bool,
              code: Path | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--bundle", str(bundle), "--chunk", str(args.chunk),
           "--pace", str(args.pace), *(["--code", str(code)] if code else []),
           "--streams", json.dumps({k: v["path"] for k, v in streams.items()}), "--spans", str(spans),
           "--warmup", str(Path(streams["typical"]["path"]).with_name("warmup.wav"))]
    if key is not None:
        cmd += ["--trust-key", str(key)]
    if latency:
        cmd.append("--latency")
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        sys.exit(f"the {mode} child failed:\n{done.stderr}")
    return json.loads(done.stdout)


def measure(args, bundle: Path, key: Path | None, streams: dict, folder: Path) -> dict:
    spans = folder / "spans.json"
    agents, bares, olds = [], [], []
    for r in range(args.repeat):  # alternate, so a change in the machine's load hits both alike
        agents.append(run_child("agent", args, bundle, key, streams, spans, latency=(r == 0)))
        if args.baseline_code:
            olds.append(run_child("agent", args, bundle, key, streams, spans, latency=(r == 0),
                                  code=args.baseline_code))
        if r == 0:
            first = agents[0]["streams"]
            spans.write_text(json.dumps({**{k: v["spans"] for k, v in first.items()},
                                         "closes": {k: v["latency"]["closes"] for k, v in first.items()}}))
        bares.append(run_child("bare", args, bundle, key, streams, spans, latency=(r == 0)))
    profile = run_child("profile", args, bundle, key, streams, spans, False) if args.profile else None
    return {"agents": agents, "bares": bares, "olds": olds, "profile": profile}


def check(streams: dict, agents: list, bares: list) -> list[str]:
    """What must have happened for the figures to mean anything; an empty list when it all did."""
    problems = []
    first = agents[0]["streams"]
    for name in streams:
        a = first[name]
        frames = a["samples"] // loops.FRAME
        if a["frames"] != frames:
            problems.append(f"{name}: the agent classified {a['frames']} of {frames} frames")
        if not a["utterances"] or a["inferences"] != a["utterances"] or a["decisions"] != a["inferences"]:
            problems.append(f"{name}: utterances {a['utterances']}, inferences {a['inferences']}, "
                            f"decisions {a['decisions']}: every utterance must reach the model and the sink")
        if a["windows"] < int(streams[name]["seconds"] // 10):
            problems.append(f"{name}: only {a['windows']} windows for {streams[name]['seconds']} s")
        for run in agents[1:]:
            if run["streams"][name]["spans"] != a["spans"]:
                problems.append(f"{name}: the agent's repeats found different utterances")
        for run in bares:
            b = run["streams"][name]
            if b["frames"] != a["frames"] or b["inferences"] != a["utterances"]:
                problems.append(f"{name}: the bare loop ran {b['frames']} frames and {b['inferences']} inferences, "
                                f"the agent {a['frames']} and {a['utterances']}")
        lat = a["latency"]
        if lat["decisions"] != a["decisions"] or len(lat["processing_ms"]) != lat["decisions"] \
                or not lat["hangover_ms"]:
            problems.append(f"{name}: the latency run saw {lat['decisions']} decisions "
                            f"({len(lat['processing_ms'])} timed, {len(lat['hangover_ms'])} ended by the hang-over)")
        bare_lat = bares[0]["streams"][name]["latency"]
        if bare_lat["inferences"] != lat["decisions"]:
            problems.append(f"{name}: the bare latency run ran the model {bare_lat['inferences']} times "
                            f"for the agent's {lat['decisions']} decisions")
    if agents[0]["code"] != str(ROOT):
        problems.append(f"the agent ran the code in {agents[0]['code']}, not this checkout's ({ROOT})")
    leaked = sorted(set(agents[0]["modules"]) & {"cloud", "sklearn", "skl2onnx", "onnx", "scipy", "tests"})
    if leaked:
        problems.append(f"the agent's process imported {leaked}: its RSS is not a device's")
    return problems


def row(figure: str, agent, bare, target: str | None, met: bool | None, ratio=None) -> dict:
    return {"figure": figure, "agent": agent, "bare_loop": bare,
            "ratio": ratio if ratio is not None else (round(agent / bare, 3) if agent and bare else None),
            "target": target, "met": met}


def paired_ratio(agents: list, bares: list, name: str) -> float:
    """Median over repeats of agent / bare, each pair run back to back (a load change hits both)."""
    return statistics.median(a["streams"][name]["cpu_s"] / b["streams"][name]["cpu_s"] for a, b in zip(agents, bares))


def figures(streams: dict, agents: list, bares: list) -> list[dict]:
    rows = []
    for name in streams:
        a_cpu = statistics.median(run["streams"][name]["cpu_s"] for run in agents)
        b_cpu = statistics.median(run["streams"][name]["cpu_s"] for run in bares)
        seconds = streams[name]["seconds"]
        ratio = round(paired_ratio(agents, bares, name), 3)
        wants_ratio = name in ("typical", "speech")
        rows.append(row(f"cpu_s {name} ({seconds:.0f} s audio)", round(a_cpu, 4), round(b_cpu, 4),
                        f"<= {TARGETS['ratio']}x the bare loop" if wants_ratio else None,
                        ratio <= TARGETS["ratio"] if wants_ratio else None, ratio))
        rtf_target = TARGETS.get(f"rtf_{name}")
        rows.append(row(f"real-time factor {name}", round(seconds / a_cpu, 1), round(seconds / b_cpu, 1),
                        f">= {rtf_target:.0f}x real time" if rtf_target else None,
                        seconds / a_cpu >= rtf_target if rtf_target else None, round(b_cpu / a_cpu, 3)))
    lat = agents[0]["streams"]["typical"]["latency"]
    bare_lat = bares[0]["streams"]["typical"]["latency"]
    hang, proc = loops.quantiles(lat["hangover_ms"]), loops.quantiles(lat["processing_ms"])
    proc_cpu = loops.quantiles(lat["processing_cpu_ms"])
    bare, bare_cpu = loops.quantiles(bare_lat["processing_ms"]), loops.quantiles(bare_lat["processing_cpu_ms"])
    for q in ("p99", "p50"):
        target = q == "p99"
        rows.append(row(f"decision latency {q} ms typical = hang-over + processing (wall; thread CPU beside it)",
                        {"total": round(hang[q] + proc[q], 2), "hangover": hang[q], "processing": proc[q],
                         "processing_cpu": proc_cpu[q]},
                        {"processing": bare[q], "processing_cpu": bare_cpu[q]},
                        f"processing {q} <= {TARGETS['processing_p99_ms']} ms" if target else None,
                        proc[q] <= TARGETS["processing_p99_ms"] if target else None,
                        round(proc[q] / bare[q], 3)))
    rss = statistics.median(run["rss_mb"] for run in agents)
    rows.append(row("steady RSS MB (after all three streams)", rss, statistics.median(r["rss_mb"] for r in bares),
                    f"<= {TARGETS['rss_mb']:.0f} MB", rss <= TARGETS["rss_mb"]))
    size = max(run["streams"][n]["window_bytes_max"] for run in agents for n in streams)
    rows.append(row("window bytes max (encoded)", size, None, f"<= {TARGETS['window_bytes']}",
                    size <= TARGETS["window_bytes"]))
    return rows


def baseline(code: Path, streams: dict, agents: list, bares: list, olds: list) -> dict:
    """The older code's figures from the same run, each pair back to back with the current code's."""
    out: dict = {"code": str(code), "rss_mb": statistics.median(r["rss_mb"] for r in olds)}
    if {r["code"] for r in olds} != {str(code.resolve())}:
        sys.exit(f"the baseline ran the code in {sorted({r['code'] for r in olds})}, not {code}: no baseline")
    for name in streams:
        if olds[0]["streams"][name]["spans"] != agents[0]["streams"][name]["spans"]:
            sys.exit(f"{name}: the baseline code found other utterances than this code: not the same work")
        if olds[0]["streams"][name]["latency"]["decisions"] != agents[0]["streams"][name]["latency"]["decisions"]:
            sys.exit(f"{name}: the baseline code's latency run made other decisions than this code's")
        cpu = statistics.median(r["streams"][name]["cpu_s"] for r in olds)
        lat = olds[0]["streams"][name]["latency"]
        out[name] = {"cpu_s": round(cpu, 4), "real_time_factor": round(streams[name]["seconds"] / cpu, 1),
                     "ratio_to_bare": round(paired_ratio(olds, bares, name), 3),
                     "this_code_speedup": round(statistics.median(
                         o["streams"][name]["cpu_s"] / a["streams"][name]["cpu_s"] for o, a in zip(olds, agents)), 3),
                     "processing_ms": loops.quantiles(lat["processing_ms"]),
                     "processing_cpu_ms": loops.quantiles(lat["processing_cpu_ms"])}
    return out


def stream_details(streams: dict, agents: list, bares: list) -> dict:
    out = {}
    for name, info in streams.items():
        a = agents[0]["streams"][name]
        lat = a["latency"]
        out[name] = {**{k: v for k, v in info.items() if k != "path"},
                     "gate_voiced_share": round(a["voiced_frames"] / a["frames"], 3), "gate_pass_ratio": a["pass_ratio"],
                     "utterances": a["utterances"], "windows": a["windows"], "window_bytes_mean": a["window_bytes_mean"],
                     "agent_cpu_s": [round(r["streams"][name]["cpu_s"], 4) for r in agents],
                     "bare_cpu_s": [round(r["streams"][name]["cpu_s"], 4) for r in bares],
                     "ratio_of_medians": round(statistics.median(r["streams"][name]["cpu_s"] for r in agents)
                                               / statistics.median(r["streams"][name]["cpu_s"] for r in bares), 3),
                     "hangover_ms": loops.quantiles(lat["hangover_ms"]),
                     "processing_ms": loops.quantiles(lat["processing_ms"]),
                     "processing_cpu_ms": loops.quantiles(lat["processing_cpu_ms"]), "split_pieces": lat["split_pieces"],
                     "bare_processing_ms": loops.quantiles(bares[0]["streams"][name]["latency"]["processing_ms"]),
                     "bare_processing_cpu_ms": loops.quantiles(bares[0]["streams"][name]["latency"]["processing_cpu_ms"]),
                     "bare_inference_ms": loops.quantiles([ms for r in bares for ms in r["streams"][name]["inference_ms"]])}
    return out


def versions() -> dict:
    from importlib.metadata import version

    import numpy as np
    import onnxruntime

    return {"python": platform.python_version(), "numpy": np.__version__, "onnxruntime": onnxruntime.__version__,
            "webrtcvad": version("webrtcvad-wheels"),
            "espeak-ng": subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.strip()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, help="a bundle to measure instead of a freshly trained small lab bundle")
    ap.add_argument("--trust-key", type=Path)
    ap.add_argument("--no-verify", action="store_true")
    ap.add_argument("--lab-graph", action="store_true", help="the lab's feature graph with a random head")
    ap.add_argument("--seconds", type=float, default=600.0, help="length of each stream")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=160000,
                    help="samples per block read from the file (harken agent replay's default)")
    ap.add_argument("--profile", action="store_true", help="add a cProfile of the agent on the typical stream")
    ap.add_argument("--pace", type=float, default=30.0,
                    help="the latency runs feed 30 ms frames at this many times real time (sleeping until each is due)")
    ap.add_argument("--baseline-code", type=Path,
                    help="a checkout of older agent code (e.g. git worktree add DIR REV) to run beside, in every repeat")
    ap.add_argument("--code", type=Path, help=argparse.SUPPRESS)  # a child imports the agent from here
    ap.add_argument("--child", choices=["agent", "bare", "profile"])
    ap.add_argument("--streams")
    ap.add_argument("--spans", type=Path)
    ap.add_argument("--latency", action="store_true")
    ap.add_argument("--warmup", type=Path)
    args = ap.parse_args()
    if args.child:
        if args.code:
            sys.path.insert(0, str(args.code.resolve()))
        print(json.dumps({"agent": child_agent, "bare": child_bare, "profile": child_profile}[args.child](args)))
        return
    if args.bundle and not (args.trust_key or args.no_verify):
        ap.error("--bundle needs --trust-key KEY (or --no-verify)")
    import bench_agent_data as data

    with tempfile.TemporaryDirectory(prefix="harken-bench-agent-") as tmp:
        folder = Path(tmp)
        streams = data.make_streams(folder, args.seconds)
        if args.bundle:
            bundle, key, what = args.bundle, (None if args.no_verify else args.trust_key), f"given: {args.bundle}"
        else:
            bundle, key, what = (data.random_head_bundle if args.lab_graph else data.train_lab_bundle)(folder)
        runs = measure(args, bundle, key, streams, folder)
    agents, bares = runs["agents"], runs["bares"]
    problems = check(streams, agents, bares)
    if problems:
        print(json.dumps({"error": "refusing to print figures: what they time did not happen", "problems": problems},
                         indent=1), file=sys.stderr)
        sys.exit(1)
    report = {
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "pinned_core": agents[0]["core"],
                    "load_average_1m": round(os.getloadavg()[0], 2)},
        "versions": versions(), "bundle": what, "seconds": args.seconds, "repeat": args.repeat, "chunk": args.chunk,
        "latency_run": {"pace_x_real_time": args.pace, "nice": agents[0]["streams"]["typical"]["latency"]["nice"],
                        "bare_nice": bares[0]["streams"]["typical"]["latency"]["nice"], "pinned_cores": 1},
        "figures": figures(streams, agents, bares), "streams": stream_details(streams, agents, bares),
        "agent_peak_rss_mb": max(r["peak_rss_mb"] for r in agents), "bare_peak_rss_mb": max(r["peak_rss_mb"] for r in bares),
    }
    if runs["olds"]:
        report["baseline_code"] = baseline(args.baseline_code, streams, agents, bares, runs["olds"])
    if runs["profile"]:
        report["profile_typical"] = runs["profile"]
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
