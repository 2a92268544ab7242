"""Durations, sizes and counts as people write them in hasched's TOML files and requests.

The one place their bounds are kept: job files, the configuration and the control socket all
parse through here, so a value that passes `hasched jobs validate` cannot overflow later (a
duration of 1e308 seconds passed once, then crashed every start on datetime arithmetic).
"""

from __future__ import annotations

import math
import re

_DURATION = re.compile(
    r"(?:(?P<d>\d+(?:\.\d+)?)d)?(?:(?P<h>\d+(?:\.\d+)?)h)?"
    r"(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?"
)
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}

MAX_DURATION = 100 * 365 * 86400.0  # 100 years: longer means a typo, and datetimes overflow
MAX_SIZE = 1 << 50  # 1 PiB
MAX_INT = 2**63 - 1  # what SQLite and every peer's JSON parser hold exactly

_SIZE = re.compile(r"(?P<n>\d+)\s*(?P<unit>B|KiB|MiB|GiB|TiB|kB|KB|MB|GB|TB)?")
_UNIT_BYTES = {
    None: 1, "B": 1,
    "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40,
    "kB": 1000, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4,
}


def shown(value: object, limit: int = 40) -> str:
    """repr() for a message, cut short: a value of 10,000 digits must not fill the screen."""
    try:
        text = repr(value)
    except ValueError:  # an int too long for repr() at all
        return "<a very long number>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def parse_duration(value: str | int | float) -> float:
    """Seconds from "30s", "5m", "2h", "1d", "1h30m", a bare number string or a number.

    Between 0 and MAX_DURATION (100 years), finite; callers that need more than 0 say so.
    """
    seconds = _duration_seconds(value)
    if not math.isfinite(seconds) or seconds > MAX_DURATION:
        raise ValueError(f"duration {shown(value)} is too long (at most 100 years)")
    return seconds


def _duration_seconds(value: str | int | float) -> float:
    error = ValueError(f"not a duration: {shown(value)} (use e.g. 30s, 5m, 2h, 1d)")
    if isinstance(value, bool):  # bool is an int subclass; `true` is never a duration
        raise error
    if isinstance(value, int | float):
        if isinstance(value, float) and math.isnan(value) or value < 0:
            raise error
        # A huge int is "too long", never an OverflowError from float().
        return math.inf if value > MAX_DURATION else float(value)
    if not isinstance(value, str):
        raise error
    text = value.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    match = _DURATION.fullmatch(text)
    if not text or match is None:
        raise error
    return float(sum(float(n) * _UNIT_SECONDS[u] for u, n in match.groupdict().items() if n))


def format_duration(seconds: float) -> str:
    """The inverse of parse_duration, shortest form: 5400 -> "1h30m", 0.5 -> "0.5s"."""
    if seconds < 0:
        return "-" + format_duration(-seconds)
    whole = int(seconds)
    fraction = seconds - whole
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole >= size:
            parts.append(f"{whole // size}{unit}")
            whole %= size
    if whole or fraction or not parts:
        secs = whole + fraction
        parts.append(f"{secs:g}s" if fraction else f"{whole}s")
    return "".join(parts)


def parse_size(value: str | int) -> int:
    """Bytes from "10MiB", "512KiB", "1GiB", "100B" or an integer, at most MAX_SIZE (1 PiB)."""
    error = ValueError(f"not a size: {shown(value)} (use e.g. 512KiB, 10MiB, 1GiB or bytes)")
    if isinstance(value, bool):
        raise error
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (match := _SIZE.fullmatch(value.strip())) is not None:
        size = int(match["n"]) * _UNIT_BYTES[match["unit"]]
    else:
        raise error
    if size < 0:
        raise error
    if size > MAX_SIZE:
        raise ValueError(f"size {shown(value)} is too large (at most 1PiB)")
    return size


def check_int(value: object, low: int = 0, high: int = MAX_INT) -> int:
    """value itself when it is an integer (not a bool) in [low, high]; ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"must be an integer from {low} to {high}, got {shown(value)}")
    return value
