"""The serving token that guards the Label Studio backend (``/ls``) and the admin routes.

Clients send it as ``Authorization: Bearer <token>``; Label Studio 1.23 sends HTTP basic auth
(its ML backend connection's "basic auth" user and password, or a URL with ``user:password@``),
so basic auth with any user name and the token as password is accepted too. Without a configured
token (``ATTNLOOP_SERVING_TOKEN``) the guarded routes are off and answer 503 saying so: the safe
default for a service that reads the store and moves the served model.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from fastapi import HTTPException, Request

TOKEN_ENV = "ATTNLOOP_SERVING_TOKEN"
CHALLENGE = {"WWW-Authenticate": 'Basic realm="attnloop", charset="UTF-8"'}


def presented(authorization: str | None) -> str | None:
    """The token an ``Authorization`` header carries (bearer, or the password of basic auth), else None."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "bearer":
        return value or None
    if scheme == "basic":
        try:
            user_password = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user_password.partition(":")[2] or None
    return None


def require_token(request: Request) -> None:
    """A route dependency: 503 when no token is configured, 401 when the request lacks the right one."""
    expected = request.app.state.service.settings.serving_token
    if not expected:
        raise HTTPException(
            503,
            f"{request.url.path} is off: this service has no token; set {TOKEN_ENV} to a secret and give it to "
            "Label Studio (Model settings: basic auth, any user, the token as password) or send it as 'Authorization: Bearer <token>'",
        )
    token = presented(request.headers.get("authorization"))
    if token is None or not hmac.compare_digest(token.encode(), expected.encode()):
        raise HTTPException(
            401,
            f"{request.url.path} needs the serving token ({TOKEN_ENV}): send 'Authorization: Bearer <token>' "
            "or basic auth with the token as password",
            headers=CHALLENGE,
        )
