"""What every router needs: the backend of the running app and time-range parsing."""
from __future__ import annotations

from fastapi import HTTPException, Request

from cloud.api.backend import Backend

DEFAULT_RANGE_S = 3600.0
MAX_RANGE_S = 90 * 86400.0


def backend(request: Request) -> Backend:
    return request.app.state.backend


def time_range(now: float, t_from: float | None, t_to: float | None, range_s: float | None) -> tuple[float, float]:
    """``[from, to)`` from explicit bounds, or the last ``range_s`` seconds (default one hour)."""
    to = now if t_to is None else t_to
    start = t_from if t_from is not None else to - (range_s or DEFAULT_RANGE_S)
    if start >= to:
        raise HTTPException(400, f"from ({start}) must be before to ({to})")
    if to - start > MAX_RANGE_S:
        raise HTTPException(400, f"a range of {to - start:.0f} s is over the {MAX_RANGE_S:.0f} s limit: "
                                 "ask for a shorter one")
    return start, to
