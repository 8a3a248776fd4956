"""Clair's pre-shared-key JWT scheme: HS256 with the base64-decoded key, issuer allow-list."""

from __future__ import annotations

import time
import warnings

import jwt

try:  # Quay's PSKs are often shorter than RFC 7518 recommends; they are what users configured.
    from jwt.warnings import InsecureKeyLengthWarning

    warnings.filterwarnings("ignore", category=InsecureKeyLengthWarning)
except ImportError:  # older PyJWT has no such warning
    pass

INTRASERVICE_ISSUER = "clair-intraservice"
NOTIFIER_ISSUER = "clair-notifier"
LEEWAY_SECONDS = 15
_ALGORITHMS = ["HS256", "HS384", "HS512"]


class PSKVerifier:
    """Checks `Authorization: Bearer <jwt>`; exp/nbf/iat are checked only when present."""

    def __init__(self, key: bytes, issuers: list[str]):
        self.key = key
        self.issuers = frozenset([*issuers, INTRASERVICE_ISSUER])

    def verify_header(self, value: str | None) -> bool:
        if not value or not value.startswith("Bearer "):
            return False
        return self.verify(value[len("Bearer "):].strip())

    def verify(self, token: str) -> bool:
        try:
            claims = jwt.decode(
                token, self.key, algorithms=_ALGORITHMS, leeway=LEEWAY_SECONDS,
                options={"require": [], "verify_aud": False, "verify_iss": False},
            )
        except jwt.PyJWTError:
            return False
        iat = claims.get("iat")
        if iat is not None and (not isinstance(iat, (int, float)) or iat > time.time() + LEEWAY_SECONDS):
            return False
        return claims.get("iss") in self.issuers


def sign(key: bytes, issuer: str, lifetime: int = 60) -> str:
    """A token the way Clair signs its own outbound requests (iat, nbf a minute back, exp)."""
    now = int(time.time())
    return jwt.encode({"iss": issuer, "iat": now, "nbf": now - 60, "exp": now + lifetime}, key, algorithm="HS256")
