"""Run external commands so that a failure shows exactly what the tool printed."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

DEFAULT_TIMEOUT = 120.0


class CommandError(RuntimeError):
    """A command exited non-zero or timed out; the message carries its output."""

    def __init__(
        self,
        cmd: Sequence[str],
        returncode: int | None,
        stdout: str,
        stderr: str,
        *,
        timed_out: bool = False,
    ) -> None:
        self.cmd = list(cmd)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.timed_out = timed_out
        what = "timed out" if timed_out else f"exited with {returncode}"
        super().__init__(
            f"command {what}: {' '.join(self.cmd)}\n"
            f"--- stdout ---\n{stdout.rstrip()}\n--- stderr ---\n{stderr.rstrip()}"
        )


def _text(data: str | bytes | None) -> str:
    """Timeouts hand back bytes even in text mode; normalise for the error message."""
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return data


def run(
    cmd: Sequence[str | Path],
    *,
    input: str | bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command with captured text output; raise CommandError on failure or timeout."""
    argv = [os.fspath(part) for part in cmd]
    data = input.decode() if isinstance(input, bytes) else input
    try:
        result = subprocess.run(
            argv,
            input=data,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL if data is None else None,
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandError(
            argv, None, _text(exc.stdout), _text(exc.stderr), timed_out=True
        ) from None
    if check and result.returncode != 0:
        raise CommandError(argv, result.returncode, result.stdout, result.stderr)
    return result
