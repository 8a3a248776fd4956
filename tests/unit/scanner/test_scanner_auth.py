"""PSK tokens the way Quay and Clair mint them."""

import time

import jwt

from quaymaster.scanner.auth import NOTIFIER_ISSUER, PSKVerifier, sign

KEY = b"a-pre-shared-key-of-32-bytes!!!!"


def _token(claims, key=KEY):
    return jwt.encode(claims, key, algorithm="HS256")


def test_quay_token_with_only_iss_and_exp():
    v = PSKVerifier(KEY, ["quay"])
    assert v.verify_header("Bearer " + _token({"iss": "quay", "exp": int(time.time()) + 300}))
    assert v.verify(_token({"iss": "quay"}))  # exp is checked only when present


def test_rejections():
    v = PSKVerifier(KEY, ["quay"])
    now = int(time.time())
    assert not v.verify_header(None)
    assert not v.verify_header("Basic abc")
    assert not v.verify(_token({"iss": "quay"}, key=b"another-key-of-32-bytes!!!!!!!!!"))
    assert not v.verify(_token({"iss": "someone-else"}))
    assert not v.verify(_token({"iss": "quay", "exp": now - 60}))
    assert v.verify(_token({"iss": "quay", "exp": now - 5}))  # within the 15 s leeway
    assert not v.verify(_token({"iss": "quay", "nbf": now + 60}))
    assert not v.verify(_token({"iss": "quay", "iat": now + 60}))


def test_intraservice_issuer_always_admitted_and_signing():
    v = PSKVerifier(KEY, [])
    token = sign(KEY, "clair-intraservice")
    assert v.verify(token)
    claims = jwt.decode(sign(KEY, NOTIFIER_ISSUER), KEY, algorithms=["HS256"])
    assert {"iss", "iat", "nbf", "exp"} <= set(claims) and claims["nbf"] < claims["iat"] < claims["exp"]
