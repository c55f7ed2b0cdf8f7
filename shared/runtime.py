"""Facts about the installed onnxruntime, read without building a session."""
from __future__ import annotations

import functools

# onnxruntime release → highest default-domain opset it implements (from its release notes).
_ORT_MAX_OPSET = {
    (1, 14): 18, (1, 15): 19, (1, 16): 19, (1, 17): 20, (1, 18): 21, (1, 19): 21,
    (1, 20): 21, (1, 21): 22, (1, 22): 22, (1, 23): 23,
}


@functools.lru_cache(maxsize=1)
def max_supported_opset() -> int | None:
    """Highest ONNX opset the installed onnxruntime runs; None if onnxruntime is absent."""
    try:
        import onnxruntime
    except ImportError:
        return None
    try:
        major, minor = (int(p) for p in onnxruntime.__version__.split(".")[:2])
    except ValueError:
        return None
    if (major, minor) in _ORT_MAX_OPSET:
        return _ORT_MAX_OPSET[(major, minor)]
    known = max(_ORT_MAX_OPSET)
    # Newer than the table: at least what the newest known release runs.
    return _ORT_MAX_OPSET[known] if (major, minor) > known else min(_ORT_MAX_OPSET.values())
