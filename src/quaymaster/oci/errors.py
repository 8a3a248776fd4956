"""The single error type of the format layer, carrying a registry error code for the API."""

from __future__ import annotations


class OCIError(Exception):
    """Raised when content breaks a format rule; `code` maps straight to a registry error code."""

    def __init__(self, code: str, message: str, detail: object | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail

    def __repr__(self) -> str:
        return f"OCIError({self.code!r}, {self.message!r}, {self.detail!r})"
