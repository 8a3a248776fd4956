"""Registry bearer tokens: RS256 JWTs signed by this instance's key, verifiable by any node.

Each process mints an RSA key at start and registers its public half in the service-key table
(auto-approved, expiring); a refresh loop extends it. Verifiers look keys up by `kid`.
"""

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import timedelta

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from sqlalchemy import delete, select, update

from quaymaster.accounts.models import ServiceKey
from quaymaster.db.base import utcnow
from quaymaster.db.engine import Database

log = logging.getLogger(__name__)

TOKEN_LIFETIME_S = 3600
EXPIRED_KEY_GRACE = timedelta(days=1)  # an expired key still verifies nothing; kept a day for the panel
LEEWAY_S = 30
ANONYMOUS_SUBJECT = "(anonymous)"
KEY_CACHE_S = 60
VERIFIED_CACHE_SIZE = 10_000


class TokenError(Exception):
    """The bearer token is malformed, expired, for another audience, or signed by an unknown key."""


@dataclass
class TokenClaims:
    subject: str
    access: list[dict]
    context: dict = field(default_factory=dict)

    def actions_for(self, repository: str) -> set[str]:
        granted: set[str] = set()
        for entry in self.access:
            if entry.get("type") == "repository" and entry.get("name") == repository:
                granted.update(entry.get("actions") or [])
        return granted


def _kid_for(public_jwk: dict) -> str:
    """RFC 7638 thumbprint: a stable id derived from the public key itself."""
    canonical = json.dumps({k: public_jwk[k] for k in ("e", "kty", "n")}, separators=(",", ":"))
    return jwt.utils.base64url_encode(hashlib.sha256(canonical.encode()).digest()).decode()


class InstanceKeys:
    """Signs tokens with this process's key; verifies any registered key of the service."""

    def __init__(self, db: Database, service: str, audience: str, max_fresh_s: int,
                 expiration_min: int = 120):
        self.db = db
        self.service = service
        self.audience = audience
        self.max_fresh_s = max_fresh_s
        self.expiration = timedelta(minutes=expiration_min)
        self._private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_jwk = json.loads(RSAAlgorithm.to_jwk(self._private.public_key()))
        self.kid = _kid_for(self.public_jwk)
        self.public_jwk["kid"] = self.kid
        # kid -> (verifying key, cached_until monotonic seconds)
        self._cache: dict[str, tuple[object, float]] = {}
        # Verified tokens, so the signature check runs once per token rather than per request.
        self._verified: OrderedDict[str, tuple[TokenClaims, float]] = OrderedDict()

    async def register(self) -> None:
        async with self.db.write() as session:
            now = utcnow()
            session.add(ServiceKey(
                name=f"{self.service} instance key", kid=self.kid, service=self.service,
                jwk=self.public_jwk, metadata_json={"created_by": "instance"},
                created_date=now, expiration_date=now + self.expiration,
                approval_type="Automatic", approved_date=now,
            ))

    async def refresh(self) -> None:
        async with self.db.write() as session:
            await session.execute(
                update(ServiceKey).where(ServiceKey.kid == self.kid)
                .values(expiration_date=utcnow() + self.expiration)
            )

    async def delete_expired(self, grace: timedelta = EXPIRED_KEY_GRACE) -> int:
        """Drop this service's instance keys that expired over `grace` ago: every restart and every
        one-off worker run registers a key, and nothing else would ever remove them."""
        async with self.db.write() as session:
            result = await session.execute(delete(ServiceKey).where(
                ServiceKey.service == self.service, ServiceKey.name == f"{self.service} instance key",
                ServiceKey.approval_type == "Automatic", ServiceKey.expiration_date < utcnow() - grace))
        return result.rowcount or 0

    async def refresh_forever(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.refresh()
            except Exception:  # keep refreshing; a transient DB error must not kill the loop
                log.exception("could not refresh the instance service key")

    def issue(self, subject: str, access: list[dict], context: dict | None = None,
              lifetime_s: int = TOKEN_LIFETIME_S) -> str:
        now = int(time.time())
        claims = {
            "iss": self.service, "aud": self.audience, "sub": subject,
            "iat": now, "nbf": now, "exp": now + lifetime_s,
            "access": access, "context": context or {},
        }
        return jwt.encode(claims, self._private, algorithm="RS256", headers={"kid": self.kid})

    async def _key(self, kid: str):
        cached = self._cache.get(kid)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        async with self.db.read() as session:
            row = await session.scalar(
                select(ServiceKey).where(ServiceKey.kid == kid, ServiceKey.service == self.service)
            )
        if row is None or row.approved_date is None:
            return None
        if row.expiration_date is not None and row.expiration_date < utcnow():
            return None
        key = RSAAlgorithm.from_jwk(row.jwk)
        self._cache[kid] = (key, time.monotonic() + KEY_CACHE_S)
        return key

    async def verify(self, token: str) -> TokenClaims:
        hit = self._verified.get(token)
        if hit is not None:
            claims, valid_until = hit
            if time.time() < valid_until:
                return claims
            del self._verified[token]
        claims, valid_until = await self._verify(token)
        self._verified[token] = (claims, valid_until)
        if len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return claims

    async def _verify(self, token: str) -> tuple[TokenClaims, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenError("malformed token") from None
        kid = header.get("kid")
        if header.get("alg") != "RS256" or not isinstance(kid, str):
            raise TokenError("unsupported token")
        key = await self._key(kid)
        if key is None:
            raise TokenError("token signed by an unknown or expired key")
        try:
            claims = jwt.decode(
                token, key, algorithms=["RS256"], audience=self.audience, issuer=self.service,
                leeway=LEEWAY_S, options={"require": ["exp", "iat", "nbf", "sub", "aud", "iss"]},
            )
        except jwt.PyJWTError as exc:
            raise TokenError(f"invalid token: {exc}") from None
        if claims["iat"] < time.time() - self.max_fresh_s - LEEWAY_S:
            raise TokenError("token is too old")
        access = claims.get("access") or []
        if not isinstance(access, list):
            raise TokenError("invalid access claim")
        # Cached no longer than the token is valid, nor than a revoked signing key stays trusted.
        valid_until = min(claims["exp"] + LEEWAY_S, claims["iat"] + self.max_fresh_s + LEEWAY_S,
                          time.time() + KEY_CACHE_S)
        return TokenClaims(subject=claims["sub"], access=access,
                           context=claims.get("context") or {}), valid_until
