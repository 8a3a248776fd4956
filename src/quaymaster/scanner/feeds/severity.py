"""Mapping vendor severities onto Clair's six normalized words."""

from __future__ import annotations

NORMALIZED = ("Unknown", "Negligible", "Low", "Medium", "High", "Critical")
_DEBIAN_URGENCY = {"unimportant": "Low", "low": "Medium", "medium": "High", "high": "Critical"}
_WORDS = {"negligible": "Negligible", "low": "Low", "moderate": "Medium", "medium": "Medium",
          "important": "High", "high": "High", "critical": "Critical"}


def from_debian_urgency(urgency: str) -> str:
    """Debian urgencies shift up one step; `**` (unverified) and anything else stay Unknown, as in Clair."""
    return _DEBIAN_URGENCY.get(urgency.strip().lower(), "Unknown")


def from_cvss_score(score: float, version: str = "3") -> str:
    if version.startswith("2"):
        return "Low" if score < 4 else "Medium" if score < 7 else "High"
    if score == 0:
        return "Negligible"
    return "Low" if score < 4 else "Medium" if score < 7 else "High" if score < 9 else "Critical"


def from_word(word: str) -> str:
    return _WORDS.get(word.strip().lower(), "Unknown")


RANK = {name: i for i, name in enumerate(NORMALIZED)}
