"""Credentials out of text that people see: messages, logs, pages, JSON answers.

A URL such as ``http://user:s3cret@host`` (``MLFLOW_TRACKING_URI`` accepts one) travels into error
messages, MLflow's among them; :func:`redact` replaces what would let a reader log in with ``***``
wherever it sits in a text, and leaves the rest readable (the scheme, the user, the host, the path).
"""

from __future__ import annotations

import re

__all__ = ["MASK", "redact"]

MASK = "***"

# scheme://user:password@host — the password runs to the last "@" of the authority (an unescaped "@"
# in a password is common enough); the user stays, so the reader still knows which account it was
_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/?#@\s]*):[^/?#\s]*@")

# ?token=…, &password=…, &X-Amz-Signature=…: any parameter whose name says it holds a secret
_SECRET_PARAM = re.compile(
    r"(?P<head>[?&;](?:[\w.-]*?)(?:token|password|passwd|pwd|secret|api[_-]?key|apikey|signature|credential|auth)[\w.-]*=)"
    r"[^&#\s'\"]*",
    re.IGNORECASE,
)


def redact(text: object) -> str:
    """``text`` with every URL password and secret-named query parameter replaced by ``***``.

    Safe on any text (a message that holds no URL comes back unchanged) and on its own output."""
    out = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", str(text))
    return _SECRET_PARAM.sub(lambda m: f"{m['head']}{MASK}", out)
