"""Parsers for Quay's human-readable sizes ("20G") and durations ("2w")."""

import re

_SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_size(value: str | int) -> int:
    """Bytes from an int or a string such as '20G', '512M', '1024' (binary units, like Quay)."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 20G")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("size must not be negative")
        return value
    m = re.fullmatch(r"\s*(\d+)\s*([BKMGT]?)(?:i?B)?\s*", str(value), re.IGNORECASE)
    if not m:
        raise ValueError(f"{value!r} is not a size such as 20G or 512M")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2).upper()]


def parse_duration(value: str | int) -> int:
    """Seconds from an int or a string such as '2w', '1d', '30m', '0s'."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 2w")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("duration must not be negative")
        return value
    m = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", str(value))
    if not m:
        raise ValueError(f"{value!r} is not a duration such as 2w, 1d, 30m or 0s")
    return int(m.group(1)) * _DURATION_UNITS[m.group(2)]
