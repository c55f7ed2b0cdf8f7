"""The install-time smoke test, run in a child process with memory and time limits.

A new bundle's model is loaded and run on its test vectors in ``python -m edge.sandbox``,
not in the agent: a model that crashes onnxruntime, allocates more than ``memory_mb`` or
runs longer than ``timeout_s`` takes down only the child, and is refused with a reason
(``SmokeTestError.code``):

    smoke_test_failed     the outputs differ from the bundle's expectations (or it cannot load)
    smoke_test_memory     it needed more than ``memory_mb`` of address space
    smoke_test_timeout    it ran past ``timeout_s`` (wall clock; CPU time is capped too)
    smoke_test_crashed    the child died on a signal

The child sets its own limits (``resource.setrlimit``) before it imports numpy or
onnxruntime; the parent already verified the bundle (hash and signature) and hands it
over on stdin. The child answers with one JSON line on stdout.
"""
from __future__ import annotations

import json
import logging
import math
import os
import resource
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from shared.errors import HarkenError, SmokeTestError

log = logging.getLogger(__name__)

# the folder holding the top-level package: the repository (edge.sandbox) or site-packages (harken.edge.sandbox)
ROOT = Path(__file__).resolve().parents[__name__.count(".")]
MEMORY_WORDS = ("failed to allocate", "bad_alloc", "memoryerror", "cannot allocate memory",
                "failed to map segment")


@dataclass(frozen=True)
class SmokeLimits:
    memory_mb: int = 1024  # address space of the child (python, numpy and onnxruntime alone take ~250 MB)
    timeout_s: float = 60.0


def smoke_test_in_child(data: bytes, limits: SmokeLimits = SmokeLimits(), *, name: str = "bundle") -> int:
    """Smoke-test verified bundle bytes in a limited child; returns the test-vector count."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "edge.sandbox", str(limits.memory_mb), str(limits.timeout_s)]
    # Same process group as the agent: whatever stops the agent's group stops its smoke test too.
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        out, err = proc.communicate(data, timeout=limits.timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise SmokeTestError("smoke_test_timeout", f"{name}: the smoke test ran past {limits.timeout_s:g} s; the "
                             "model hangs or is far too slow for this device (raise smoke_timeout_s only if it "
                             "is just slow)") from None
    return _verdict(name, proc.returncode, out, err, limits)


def _verdict(name: str, returncode: int, out: bytes, err: bytes, limits: SmokeLimits) -> int:
    try:
        answer = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        answer = None
    if returncode == 0 and isinstance(answer, dict) and answer.get("ok"):
        return int(answer["vectors"])
    if isinstance(answer, dict) and answer.get("code"):
        code, detail = str(answer["code"]), str(answer.get("error", ""))
        if code == "smoke_test_memory":
            raise SmokeTestError(code, f"{_memory_message(name, limits)} ({detail[:200]})")
        raise SmokeTestError(code, f"{name}: {detail}"[:500])
    text = err.decode(errors="replace")
    if returncode == -signal.SIGXCPU:
        raise SmokeTestError("smoke_test_timeout", f"{name}: the smoke test used more than {limits.timeout_s:g} s "
                             "of CPU; the model hangs or is far too slow for this device")
    if any(word in text.lower() for word in MEMORY_WORDS):
        raise SmokeTestError("smoke_test_memory", _memory_message(name, limits))
    if returncode < 0:
        raise SmokeTestError("smoke_test_crashed", f"{name}: the smoke test died on signal "
                             f"{signal.Signals(-returncode).name}; this runtime cannot run the model")
    raise SmokeTestError("smoke_test_crashed", f"{name}: the smoke test exited with {returncode}: "
                         f"{text.strip()[-300:]}")


def _memory_message(name: str, limits: SmokeLimits) -> str:
    return (f"{name}: the model needs more than {limits.memory_mb} MB of memory to run; it is too big for "
            "this device (raise smoke_memory_mb only if the device has the memory)")


# -- the child ---------------------------------------------------------------------------------
def _limit(memory_mb: int, timeout_s: float) -> None:
    memory = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    cpu = math.ceil(timeout_s) + 1  # a backstop: the parent's wall-clock timeout comes first
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _child(memory_mb: int, timeout_s: float) -> dict:
    _limit(memory_mb, timeout_s)
    data = sys.stdin.buffer.read()
    try:
        from edge.model import LoadedModel  # numpy and onnxruntime load under the limits too
        from shared.bundle import load_bundle

        bundle = load_bundle(data, None, require_signature=False)  # the parent verified it
        vectors = LoadedModel.from_bundle(bundle).smoke_test()
    except MemoryError:
        return {"ok": False, "code": "smoke_test_memory", "error": "MemoryError"}
    except (HarkenError, ImportError, OSError) as exc:
        text = str(exc) if isinstance(exc, HarkenError) else f"{type(exc).__name__}: {exc}"
        memory = any(word in text.lower() for word in MEMORY_WORDS)
        return {"ok": False, "code": "smoke_test_memory" if memory else "smoke_test_failed", "error": text[:500]}
    return {"ok": True, "vectors": vectors}


if __name__ == "__main__":
    logging.disable(logging.CRITICAL)
    result = _child(int(sys.argv[1]), float(sys.argv[2]))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    sys.exit(0 if result["ok"] else 1)
