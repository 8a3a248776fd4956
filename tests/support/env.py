"""Decide whether a missing external tool skips a test locally or fails it in CI."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import NoReturn

import pytest


class MissingDependencyError(RuntimeError):
    """Raised in CI, where every external tool the tests drive must be installed."""


def is_ci() -> bool:
    """CI must never silently skip a test because a tool is missing."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def missing_dependency(message: str) -> NoReturn:
    """Fail loudly in CI, skip on a developer machine that lacks the tool."""
    if is_ci():
        raise MissingDependencyError(f"{message} (CI=true, so this is an error, not a skip)")
    pytest.skip(message)


def find_binary(name: str, candidates: Iterable[str | Path] = (), *, hint: str = "") -> str:
    """Locate an executable on PATH or at known absolute paths, or skip/fail clearly."""
    for candidate in candidates:
        path = Path(candidate)
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which(name)
    if found:
        return found
    suffix = f"; {hint}" if hint else ""
    missing_dependency(f"required binary {name!r} not found{suffix}")
