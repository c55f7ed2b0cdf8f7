"""Soak: a simulated fleet against a real broker and collector for minutes; prints one JSON object.

    .venv/bin/python scripts/soak.py [--minutes 10] [--devices 200] [--speed 1] [--processes 2]
                                     [--data DIR --model B.hkb --trust-key signing.pub --release-key release.pub]
                                     [--window-s 10]

A private mosquitto on a free loopback port, ``harken collector run`` on a fresh SQLite
database, and ``harken sim`` (``python -m edge.sim.cli``) with ``--devices`` real agents, all
as subprocesses. After ``--minutes`` of wall time the sim gets SIGINT and shuts down as
devices do (last window, spool drained, state offline). Then the soak waits for the collector
to store what the broker acknowledged and compares, window by window:

    windows produced    the agents' windows (the sim's final JSON line: per device boot, first
                        and next seq, and the [boot, seq] still in its spool)
    windows delivered   produced minus those still spooled (they go out at the next boot)
    windows stored      rows in the collector's ``windows`` table
    missing / extra / duplicates   delivered-not-stored, stored-not-produced, stored twice

and every device it started: one that never reported a result (its sim process died), ended
with an error, or produced no window fails the soak as surely as a lost window does. ``ok`` is
false then, and the soak exits 1;

and the resident memory (VmRSS) of the collector and of the sim's processes when every
device is up and just before the end. Without ``--data`` it builds the model lab's tiny
dataset and bundle (about 30 s). Nothing leaves the loopback interface.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(workdir: Path) -> tuple[subprocess.Popen, int]:
    import getpass

    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    f"max_queued_messages 100000\nlog_dest none\nuser {getpass.getuser()}\n")
    proc = subprocess.Popen([shutil.which("mosquitto") or "mosquitto", "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("mosquitto did not start")


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        return None
    return None


def process_tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return out


def tree_rss(pid: int) -> dict[str, float]:
    return {str(p): r for p in process_tree(pid) if (r := rss_mb(p)) is not None}


class StderrReader(threading.Thread):
    """Keeps the last JSON status line of the sim and every other line (for the report on failure)."""

    def __init__(self, stream, wanted: str | None = None):
        super().__init__(daemon=True)
        self.stream, self.wanted = stream, wanted
        self.status: dict = {}
        self.lines: list[str] = []
        self.seen = threading.Event()

    def run(self) -> None:
        for raw in self.stream:
            line = raw.decode(errors="replace").rstrip()
            if line.startswith("{"):
                try:
                    self.status = json.loads(line)
                    continue
                except ValueError:
                    pass
            self.lines = (self.lines + [line])[-200:]
            if self.wanted and self.wanted in line:
                self.seen.set()


def stored_windows(db: Path) -> list[tuple[str, int, int]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return [(d, int(b), int(s)) for d, b, s in con.execute("SELECT device, boot, seq FROM windows")]
    finally:
        con.close()


def reject_counts(db: Path) -> dict[str, int]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return {c: int(n) for c, n in con.execute("SELECT code, n FROM reject_counts")}
    finally:
        con.close()


def lab_or_given(args, workdir: Path) -> tuple[str, str, str, str]:
    if args.data and args.model and args.trust_key and args.release_key:
        return args.data, args.model, args.trust_key, args.release_key
    from cloud.lab.fixtures import tiny_dataset_and_bundle

    lab = tiny_dataset_and_bundle(workdir / "lab")
    return (str(lab.data_dir), str(lab.released_bundle_path), str(lab.public_key_path),
            str(lab.release_public_key_path))


def compare(result: dict, stored: list[tuple[str, int, int]]) -> dict:
    expected, unsent = set(), set()
    for d in result["per_device"]:
        if d.get("first_seq") is None:
            continue
        expected.update((d["device"], d["boot"], s) for s in range(d["first_seq"], d["next_seq"]))
        unsent.update((d["device"], b, s) for b, s in d["unsent_seqs"])
    delivered = expected - unsent
    stored_set = set(stored)
    return {"windows_produced": len(expected), "windows_unsent": len(unsent & expected),
            "windows_delivered": len(delivered), "windows_stored": len(stored),
            "missing": len(delivered - stored_set), "extra": len(stored_set - expected),
            "duplicates": len(stored) - len(stored_set),
            "unsent_but_stored": len(unsent & stored_set)}


def fleet_health(result: dict, started: int) -> dict:
    """Every device the soak started, accounted for (lists hold the first 20 names)."""
    rows = result["per_device"]
    reported = {d["device"] for d in rows}
    silent = sorted(d["device"] for d in rows
                    if d.get("first_seq") is None or d.get("next_seq") is None or d["next_seq"] <= d["first_seq"])
    died = sorted(result.get("device_errors") or {})
    return {"started": started, "reported": len(reported), "unreported": started - len(reported),
            "died": len(died), "died_devices": died[:20], "without_window": len(silent),
            "without_window_devices": silent[:20], "sim_worker_failures": len(result.get("failures") or {})}


def fleet_ok(windows: dict, fleet: dict) -> bool:
    return (windows["missing"] == 0 and windows["extra"] == 0 and windows["duplicates"] == 0
            and fleet["unreported"] == 0 and fleet["died"] == 0 and fleet["without_window"] == 0
            and fleet["sim_worker_failures"] == 0)


def wait_for_store(db: Path, want: int, timeout_s: float = 120.0) -> float:
    """Seconds until the store holds ``want`` windows, or stops growing for 10 s (or the timeout)."""
    t0 = time.monotonic()
    last, last_change = -1, t0
    while time.monotonic() - t0 < timeout_s:
        n = len(stored_windows(db)) if db.exists() else 0
        if n >= want:
            break
        if n != last:
            last, last_change = n, time.monotonic()
        elif time.monotonic() - last_change > 10:
            break
        time.sleep(0.5)
    return round(time.monotonic() - t0, 2)


def stop(proc: subprocess.Popen, sig=signal.SIGTERM, timeout_s: float = 60.0) -> int | None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("paho-mqtt", "onnxruntime", "numpy", "webrtcvad", "webrtcvad-wheels"):
        try:
            out[pkg] = version(pkg)
        except Exception:
            continue
    mq = subprocess.run([shutil.which("mosquitto") or "mosquitto", "-h"], capture_output=True, text=True)
    out["mosquitto"] = (mq.stdout or mq.stderr).splitlines()[0] if (mq.stdout or mq.stderr) else None
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="Wall minutes the fleet runs.")
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--speed", type=float, default=1.0, help="Audio seconds per wall second for each device.")
    ap.add_argument("--processes", type=int, default=2, help="Sim worker processes.")
    ap.add_argument("--window-s", type=float, default=10.0)
    ap.add_argument("--scenario", default="healthy")
    ap.add_argument("--feedback-rate", type=float, default=0.1)
    ap.add_argument("--sample-s", type=float, default=60.0, help="Seconds between RSS samples of the series.")
    ap.add_argument("--data"), ap.add_argument("--model"), ap.add_argument("--trust-key")
    ap.add_argument("--release-key", help="release.pub of the --model's release (`harken model release`).")
    ap.add_argument("--workdir", help="Keep everything here (default: a temporary directory, removed).")
    args = ap.parse_args()

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="harken-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []
    try:
        report = soak(args, workdir, procs)
        print(json.dumps(report, indent=1))
        return 0 if report["ok"] else 1
    finally:
        for p in reversed(procs):
            stop(p, signal.SIGKILL if p.poll() is None else signal.SIGTERM, 5)
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def cpu_s(pids) -> float:
    """User + system CPU seconds of these processes so far (/proc/PID/stat)."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            continue
    return round(total, 1)


def start_collector(url: str, db: Path, env: dict, procs: list) -> subprocess.Popen:
    collector = subprocess.Popen([sys.executable, "-m", "shared.cli", "-v", "collector", "run", "--broker", url,
                                  "--db", f"sqlite:///{db}", "--client-id", f"soak-collector-{os.getpid()}"],
                                 cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    procs.append(collector)
    err = StderrReader(collector.stderr, wanted="connected to")
    err.start()
    if not err.seen.wait(60):
        raise RuntimeError("the collector did not connect: " + " | ".join(err.lines[-5:]))
    time.sleep(1.0)  # its subscriptions are acknowledged right after the connection
    return collector


def run_sim(args, url: str, lab: tuple[str, str, str, str], workdir: Path, env: dict, procs: list,
            collector: subprocess.Popen) -> tuple[dict, dict]:
    """Run the sim for ``--minutes``, then SIGINT; returns its result and the measurements."""
    data, model, trust_key, release_key = lab
    cmd = [sys.executable, "-m", "edge.sim.cli", "--devices", str(args.devices), "--data", data, "--model", model,
           "--trust-key", trust_key, "--release-key", release_key, "--state-root", str(workdir / "state"), "--broker", url,
           "--speed", str(args.speed), "--processes", str(args.processes), "--window-s", str(args.window_s),
           "--scenario", args.scenario, "--feedback-rate", str(args.feedback_rate), "--json-status",
           "--status-interval", "5"]
    t0 = time.monotonic()
    sim = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    procs.append(sim)
    err = StderrReader(sim.stderr)
    err.start()
    m: dict = {"rss_start": None, "all_up_s": None, "series": []}
    deadline, next_sample = t0 + args.minutes * 60.0, t0
    while time.monotonic() < deadline and sim.poll() is None:
        time.sleep(1.0)
        now = time.monotonic()
        if m["rss_start"] is None and err.status.get("up") == args.devices:
            m["all_up_s"] = round(now - t0, 1)
            m["rss_start"] = {"collector": rss_mb(collector.pid), "sim": tree_rss(sim.pid)}
        if now >= next_sample:  # a series tells warm-up (levels off) from a leak (keeps growing)
            m["series"].append([round(now - t0), rss_mb(collector.pid), round(sum(tree_rss(sim.pid).values()), 1),
                                err.status.get("windows")])
            next_sample += args.sample_s
    tree = process_tree(sim.pid)
    m.update(rss_end={"collector": rss_mb(collector.pid), "sim": tree_rss(sim.pid)}, last_status=err.status,
             cpu_s={"sim": cpu_s(tree), "collector": cpu_s([collector.pid])}, wall_s=round(time.monotonic() - t0, 1))
    t_stop = time.monotonic()
    sim.send_signal(signal.SIGINT)  # the operator's Ctrl-C: every agent shuts down cleanly
    out, _ = sim.communicate(timeout=300)
    m["shutdown_s"] = round(time.monotonic() - t_stop, 2)
    lines = out.decode().strip().splitlines()
    if not lines:
        raise RuntimeError("the sim printed no result: " + " | ".join(err.lines[-10:]))
    return json.loads(lines[-1]), m


def soak(args, workdir: Path, procs: list) -> dict:
    load_before = os.getloadavg()
    lab = lab_or_given(args, workdir)
    broker, port = start_broker(workdir)
    procs.append(broker)
    url, db = f"mqtt://127.0.0.1:{port}", workdir / "soak.db"
    env = dict(os.environ, HARKEN_COLLECTOR_HTTP_PORT="0", PYTHONPATH=str(ROOT))
    env.pop("HARKEN_DB", None)
    collector = start_collector(url, db, env, procs)
    result, m = run_sim(args, url, lab, workdir, env, procs, collector)
    figures = compare(result, [])
    settle_s = wait_for_store(db, figures["windows_delivered"])
    rss_settled = rss_mb(collector.pid)
    collector_cpu = cpu_s([collector.pid])
    code = stop(collector)
    figures = compare(result, stored_windows(db))
    fleet = fleet_health(result, args.devices)
    return {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_avg_before": load_before,
                    "load_avg_after": os.getloadavg()},
        "versions": versions(),
        "config": {k: getattr(args, k) for k in ("devices", "minutes", "speed", "processes", "window_s",
                                                 "scenario", "feedback_rate")},
        "duration": {"wall_s": m["wall_s"], "all_devices_up_s": m["all_up_s"], "sim_shutdown_s": m["shutdown_s"],
                     "collector_settle_s": settle_s, "audio_s_per_device": result["audio_s_mean"],
                     "effective_speed": round(result["audio_s_mean"] / max(m["wall_s"], 1e-9), 3),
                     "speed_at_stop": m["last_status"].get("speed")},
        "windows": figures,
        "devices": fleet,
        "ok": fleet_ok(figures, fleet),
        "utterances": result["utterances"], "feedback_accepted": result["feedback_accepted"],
        "device_errors": result["device_errors"], "sim_failures": result["failures"],
        "collector_rejects": reject_counts(db), "collector_exit_code": code,
        "cpu_s": {"sim_at_stop": m["cpu_s"]["sim"], "collector_at_stop": m["cpu_s"]["collector"],
                  "collector_at_end": collector_cpu},
        "rss_mb": {"collector": {"start": (m["rss_start"] or {}).get("collector"), "end": m["rss_end"]["collector"],
                                 "after_settle": rss_settled},
                   "sim": {"start": (m["rss_start"] or {}).get("sim"), "end": m["rss_end"]["sim"]},
                   "series": {"columns": ["t_s", "collector_mb", "sim_total_mb", "windows"], "rows": m["series"]}},
    }


if __name__ == "__main__":
    sys.exit(main())
