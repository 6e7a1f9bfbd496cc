"""The Label Studio client: the SDK's, with a server that does not answer or refuses the token
turned into a one-line error that names the URL and what to check.

Every request of the client goes through one httpx transport (:class:`_Guard`), so no call site
needs its own handling: a connection refused, an unknown host or a timeout (after two quick
connection retries) is :class:`LabelStudioUnavailable`; a 401 is :class:`LabelStudioRefused`.
The command line prints either as one line and exits 2, as it does for the registry's errors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from attnloop.config import LabelStudioSettings

TIMEOUT = 60.0  # seconds: the SDK's own default per request
CONNECT_RETRIES = 2  # a server restarting for a moment is not "down"


class LabelStudioUnavailable(LookupError):
    """Label Studio did not answer at its URL (nothing listens, unknown host, timeout)."""


class LabelStudioRefused(ValueError):
    """Label Studio answered 401: the API token is not one it accepts."""


def unavailable(url: str, err: BaseException) -> LabelStudioUnavailable:
    reason = str(err) or type(err).__name__
    return LabelStudioUnavailable(
        f"Label Studio at {url} does not answer ({reason}): check that it is running and that ATTNLOOP_LABEL_STUDIO_URL is its "
        "address (start one with `python -m attnloop.apps.labelstudio_server FOLDER`); re-run once it answers"
    )


def refused(url: str, request: httpx.Request) -> LabelStudioRefused:
    return LabelStudioRefused(
        f"Label Studio at {url} answered 401 (not authenticated) to {request.method} {request.url.path}: check "
        "ATTNLOOP_LABEL_STUDIO_TOKEN; copy it from Account & Settings → Legacy Token (legacy tokens must be enabled: "
        "start Label Studio with LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true)"
    )


class _Guard(httpx.BaseTransport):
    """A transport that raises the errors above instead of httpx's connection errors and 401 answers."""

    def __init__(self, url: str, inner: httpx.BaseTransport) -> None:
        self.url, self.inner = url, inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = self.inner.handle_request(request)
        except (httpx.ConnectError, httpx.TimeoutException) as err:
            raise unavailable(self.url, err) from err
        if response.status_code == 401:
            response.close()
            raise refused(self.url, request)
        return response

    def close(self) -> None:
        self.inner.close()


def connect(settings: "LabelStudioSettings", *, timeout: float = TIMEOUT):
    """A ``label_studio_sdk.LabelStudio`` client for ``settings`` whose failures to reach the server
    or to authenticate are :class:`LabelStudioUnavailable` and :class:`LabelStudioRefused`."""
    from label_studio_sdk import LabelStudio

    if not settings.url or not settings.token:
        raise ValueError(
            "Label Studio is not configured: set ATTNLOOP_LABEL_STUDIO_URL (e.g. http://127.0.0.1:8080) and "
            "ATTNLOOP_LABEL_STUDIO_TOKEN (Account & Settings → Legacy Token in Label Studio)"
        )
    transport = _Guard(settings.url, httpx.HTTPTransport(retries=CONNECT_RETRIES))
    http = httpx.Client(transport=transport, timeout=timeout, follow_redirects=True)
    return LabelStudio(base_url=settings.url, api_key=settings.token, httpx_client=http, timeout=timeout)
