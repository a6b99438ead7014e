"""Token checks for HS-4: HS256 JWTs and `mul_` personal access tokens."""

from __future__ import annotations

import math
import time

import jwt

from .inbound import is_text
from .world import World

INVALID_TOKEN = "invalid token"
INVALID_CLAIMS = "invalid claims"
ACCOUNT_DISABLED = "account disabled"
NOT_A_MEMBER = "not a member of this workspace"

# We check `sub` ourselves: PyJWT would reject a non-string sub as an invalid *token*,
# while the contract calls a well-signed token with a bad sub `invalid claims`.
# `iat` is not checked (golang-jwt v5, which Multica uses, does not either): PyJWT would
# refuse a token minted by a host whose clock runs slightly ahead. `exp` and `nbf` are checked
# here rather than by PyJWT, which reads a numeric string ("exp": "9999999999") as a date and
# fails with a traceback on a signed `Infinity`: RFC 7519 dates are JSON numbers.
_DECODE_OPTIONS = {"verify_sub": False, "verify_jti": False, "verify_aud": False, "verify_iss": False,
                   "verify_iat": False, "verify_exp": False, "verify_nbf": False}


def _date(claims: dict, name: str) -> float | None:
    """A NumericDate claim: None when absent; AuthError when present but not a finite number."""
    if name not in claims:
        return None
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AuthError(INVALID_TOKEN)
    return value


class AuthError(Exception):
    def __init__(self, text: str):
        super().__init__(text)
        self.text = text


def authenticate(token: str, world: World, secret: str) -> str:
    """Return the user id the token names, or raise AuthError with the contract's text."""
    if not is_text(token):  # a lone surrogate cannot be encoded, so it cannot be a token
        raise AuthError(INVALID_TOKEN)
    if token.startswith("mul_"):
        uid = world.pats.get(token)
        if uid is None:
            raise AuthError(INVALID_TOKEN)
    else:
        try:
            claims = jwt.decode(token, secret, algorithms=["HS256"], options=_DECODE_OPTIONS, leeway=0)
        except jwt.PyJWTError:
            raise AuthError(INVALID_TOKEN) from None
        now = time.time()
        exp, nbf = _date(claims, "exp"), _date(claims, "nbf")
        if (exp is not None and now >= exp) or (nbf is not None and now < nbf):  # HS-4: no leeway
            raise AuthError(INVALID_TOKEN)
        uid = claims.get("sub")
        if not isinstance(uid, str) or not uid.strip():  # blank counts as empty, as in Multica
            raise AuthError(INVALID_CLAIMS)
    if uid in world.disabled_users:
        raise AuthError(ACCOUNT_DISABLED)
    return uid


def mint(secret: str, user: str | None, email: str | None = None, ttl_s: float = 3600.0) -> str:
    """Sign a token for the control API (CTL-3). user None omits `sub`; ttl_s <= 0 is already expired."""
    now = int(time.time())
    claims: dict = {"iat": now - 1 if ttl_s <= 0 else now}
    claims["exp"] = now - 1 if ttl_s <= 0 else now + max(1, int(ttl_s))
    if user is not None:
        claims["sub"] = user
    if email is not None:
        claims["email"] = email
    return jwt.encode(claims, secret, algorithm="HS256")
