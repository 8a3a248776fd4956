"""The content domain's one error type, shared by its service modules without import cycles."""


class ContentError(Exception):
    """A request the content rules refuse; `code` is the registry error code."""

    def __init__(self, code: str, message: str, detail: object = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail
