"""Registry errors as the spec's JSON: {"errors": [{"code", "message", "detail"}]}."""

from starlette.responses import JSONResponse

STATUS = {
    "BLOB_UNKNOWN": 404,
    "BLOB_UPLOAD_INVALID": 400,
    "BLOB_UPLOAD_UNKNOWN": 404,
    "DIGEST_INVALID": 400,
    "MANIFEST_BLOB_UNKNOWN": 400,
    "MANIFEST_INVALID": 400,
    "MANIFEST_UNKNOWN": 404,
    "TAG_EXPIRED": 404,
    "NAME_INVALID": 400,
    "NAME_UNKNOWN": 404,
    "SIZE_INVALID": 400,
    "TAG_INVALID": 400,
    "TAG_IMMUTABLE": 409,
    "UNAUTHORIZED": 401,
    "DENIED": 403,
    "UNSUPPORTED": 405,
    "TOO_MANY_REQUESTS": 429,
    "RANGE_INVALID": 416,
    "INVALID_REQUEST": 400,
}


class RegistryError(Exception):
    def __init__(self, code: str, message: str, detail: object = None, *, status: int | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail
        self.status = status or STATUS.get(code, 400)
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = {"errors": [{"code": self.code, "message": self.message, "detail": self.detail or {}}]}
        headers = {"Docker-Distribution-API-Version": "registry/2.0", **self.headers}
        return JSONResponse(body, status_code=self.status, headers=headers)
