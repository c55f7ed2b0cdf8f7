"""Helpers for the hardening tests (issue 10, "lose nothing"): a real agent process, a real
collector process, and the agent's config on an anonymous test broker."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from edge.config import load_agent_config
from shared.topics import Topics
from tests.cloud.conftest import wait_until

T = Topics()
ROOT = Path(__file__).resolve().parent.parent.parent


def agent_values(port: int | None, state_dir, trust_key, *, release_key, **changes) -> dict:
    """Config values of a test agent on an anonymous broker: fast reconnects, long probation."""
    values = dict(device_id="dev1", trust_keys=[str(trust_key)], release_keys=[str(release_key)],
                  state_dir=str(state_dir), window_s=2.0,
                  reconnect_min_s=0.05, reconnect_max_s=0.3, flush_rate=500, keepalive_s=5,
                  probation_utterances=1000, probation_s=3600)
    if port is not None:
        values["broker_url"] = f"mqtt://127.0.0.1:{port}"
    return {**values, **changes}


def agent_config(port: int | None, state_dir, trust_key, *, release_key, **changes):
    return load_agent_config(env={}, overrides=agent_values(port, state_dir, trust_key, release_key=release_key,
                                                            **changes))


def start_agent_process(values: dict, log_path) -> subprocess.Popen:
    """``harken agent run`` as its own process, listening to a silent stdin that stays open (own
    session, so a test can kill its whole group)."""
    config = Path(str(log_path) + ".toml")
    config.write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in values.items()) + "\n")
    env = {**os.environ, "HARKEN_LOG_LEVEL": "INFO", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "shared.cli", "agent", "run", "--config", str(config),
                             "--source", "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=open(log_path, "ab"), env=env, cwd=ROOT, start_new_session=True)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process and everything it started (its session)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(10)


def start_collector(broker_url: str, db_url: str, log_path) -> subprocess.Popen:
    env = {**os.environ, "HARKEN_LOG_LEVEL": "INFO", "PYTHONPATH": str(ROOT)}
    env.pop("HARKEN_DB", None)
    return subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "collector", "run", "--broker", broker_url, "--db", db_url,
         "--group", "hardening", "--client-id", "hardening-collector", "--http-port", "0"],
        stdout=subprocess.DEVNULL, stderr=open(log_path, "ab"), env=env, cwd=ROOT, start_new_session=True)


def until(predicate, timeout_s: float = 30.0, what: str = "condition", interval_s: float = 0.05):
    """Poll ``predicate`` until it is true; fail with ``what`` after ``timeout_s``."""
    value = wait_until(predicate, timeout_s, interval_s)
    assert value, f"timed out after {timeout_s} s waiting for {what}"
    return value


class SmallDisk:
    """A real, small filesystem (tmpfs) mounted for one test; ``fill`` makes writes fail with ENOSPC."""

    def __init__(self, mountpoint: Path, size: str = "8m"):
        self.path = Path(mountpoint)
        self.size = size
        self._filler = self.path / "filler"

    def __enter__(self) -> "SmallDisk":
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0700", "harken-test", str(self.path)],
                       check=True, capture_output=True)
        return self

    def __exit__(self, *exc) -> None:
        subprocess.run(["umount", "--lazy", str(self.path)], check=True, capture_output=True)

    @property
    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def fill(self) -> None:
        """Write a filler file until the disk refuses another byte."""
        with open(self._filler, "ab", buffering=0) as f:
            for block in (1 << 16, 1 << 12, 1 << 9, 1):
                try:
                    while True:
                        f.write(b"\0" * block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
        assert self.free_bytes == 0

    def free(self) -> None:
        self._filler.unlink()


def burdened(data: bytes, private_key, kind: str, hog_mb: int = 1500, *, release_key) -> bytes:
    """A validly signed and released copy of a bundle whose model also (``kind``) "hog"s ``hog_mb`` of
    memory or "hang"s in a 2^62-step loop, on every inference; its labels and probabilities are unchanged.

    The extra branch adds ``0 × (its result)`` to the feature output, so onnxruntime must run it.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from shared.bundle import MODEL
    from tests.edge import bundles as variants

    parts = variants.members(data)
    model = onnx.load_from_string(parts[MODEL])
    g, n = model.graph, helper.make_node
    g.initializer.append(numpy_helper.from_array(np.array(0.0, dtype=np.float32), "burden_zero"))
    if kind == "hog":
        rows = hog_mb * 1024 * 1024 // (4 * 16000)
        g.initializer.append(numpy_helper.from_array(np.array([1, rows, 16000], dtype=np.int64), "burden_shape"))
        g.node.extend([n("Expand", ["audio", "burden_shape"], ["burden_big"]),
                       n("ReduceSum", ["burden_big"], ["burden_result"], keepdims=0)])
    elif kind == "hang":
        g.initializer.append(numpy_helper.from_array(np.array(2 ** 62, dtype=np.int64), "burden_trips"))
        g.initializer.append(numpy_helper.from_array(np.array(True), "burden_cond"))
        body = helper.make_graph(
            [n("Identity", ["cond_in"], ["cond_out"]), n("Add", ["v_in", "v_in"], ["v_out"])], "burden_body",
            [helper.make_tensor_value_info("i", TensorProto.INT64, []),
             helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
             helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [])],
            [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
             helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [])])
        g.node.extend([n("ReduceSum", ["audio"], ["burden_v0"], keepdims=0),
                       n("Loop", ["burden_trips", "burden_cond", "burden_v0"], ["burden_result"], body=body)])
    else:
        raise ValueError(kind)
    g.node.extend([n("Mul", ["burden_result", "burden_zero"], ["burden_nothing"]),
                   n("Add", ["features", "burden_nothing"], ["features_burdened"])])
    features = next(o for o in g.output if o.name == "features")
    features.name = "features_burdened"
    onnx.checker.check_model(model)
    manifest = json.loads(parts["manifest.json"])
    manifest["io"]["features"] = "features_burdened"
    manifest["name"] = f"{manifest['name']}-{kind}"
    from shared.bundle import RESERVED, build_bundle, load_bundle
    from shared.release import release_bundle

    extras = {k: v for k, v in parts.items() if k not in RESERVED}
    built = build_bundle(model.SerializeToString(), manifest, private_key, extras)
    return release_bundle(built, load_bundle(built, None, require_signature=False), release_key, version=1,
                          expires_t=time.time() + 86400)
