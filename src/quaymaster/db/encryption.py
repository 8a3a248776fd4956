"""Encrypted columns in Quay's format, so robot tokens and credentials move between the two.

Key: DATABASE_SECRET_KEY turned into bytes the way Quay does it (an integer string as its
big-endian bytes, a UUID as its 16 bytes, anything else as its characters), repeated to 32
bytes. Cipher: AES-CCM with a 13-byte nonce. Stored form: "v0$$" + base64(nonce + ciphertext).
"""

import base64
import os
import uuid

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

PREFIX = "v0$$"
NONCE_BYTES = 13


class DecryptionError(Exception):
    """The value was not written with this DATABASE_SECRET_KEY (or is corrupt)."""


def derive_key(secret: str) -> bytes:
    secret = str(secret)
    if secret.isdigit():
        raw = int(secret).to_bytes((int(secret).bit_length() + 7) // 8 or 1, "big")
    else:
        try:
            raw = uuid.UUID(secret).bytes
        except ValueError:
            raw = secret.encode()
    return (raw * (32 // len(raw) + 1))[:32]


class FieldCipher:
    def __init__(self, secret: str):
        self._aead = AESCCM(derive_key(secret))

    def encrypt(self, plaintext: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), None)
        return PREFIX + base64.b64encode(nonce + sealed).decode()

    def decrypt(self, stored: str) -> str:
        if not stored.startswith(PREFIX):
            raise DecryptionError("unknown encryption version")
        try:
            blob = base64.b64decode(stored[len(PREFIX):])
            return self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], None).decode()
        except (InvalidTag, ValueError) as exc:
            raise DecryptionError("cannot decrypt with this DATABASE_SECRET_KEY") from exc
