"""Durations and sizes as people write them in hasched's TOML files."""

from __future__ import annotations

import math
import re

_DURATION = re.compile(
    r"(?:(?P<d>\d+(?:\.\d+)?)d)?(?:(?P<h>\d+(?:\.\d+)?)h)?"
    r"(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?"
)
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}

_SIZE = re.compile(r"(?P<n>\d+)\s*(?P<unit>B|KiB|MiB|GiB|TiB|kB|KB|MB|GB|TB)?")
_UNIT_BYTES = {
    None: 1, "B": 1,
    "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40,
    "kB": 1000, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4,
}


def parse_duration(value: str | int | float) -> float:
    """Seconds from "30s", "5m", "2h", "1d", "1h30m", a bare number string or a number."""
    error = ValueError(f"not a duration: {value!r} (use e.g. 30s, 5m, 2h, 1d)")
    if isinstance(value, bool):  # bool is an int subclass; `true` is never a duration
        raise error
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise error
        return float(value)
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
    """Bytes from "10MiB", "512KiB", "1GiB", "100B" or an integer."""
    error = ValueError(f"not a size: {value!r} (use e.g. 512KiB, 10MiB, 1GiB or bytes)")
    if isinstance(value, bool):
        raise error
    if isinstance(value, int):
        if value < 0:
            raise error
        return value
    if not isinstance(value, str):
        raise error
    match = _SIZE.fullmatch(value.strip())
    if match is None:
        raise error
    return int(match["n"]) * _UNIT_BYTES[match["unit"]]
