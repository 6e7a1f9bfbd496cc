"""Real faults for real servers: a flaky HTTP proxy and a port nobody listens on.

``FaultyProxy`` is a small threaded forwarder on 127.0.0.1 in front of a real HTTP server. It
forwards every request as it came, except those a rule claims: ``proxy.fail(times=N)`` answers
the next N requests with a 503 (or any ``status``), ``match=`` limits a rule to requests whose
``METHOD /path?query`` contains a text, ``after=K`` lets the first K of them through (a server that
fails from the K+1-th request of a sequence on). ``proxy.hold(match=...)`` keeps the next such
request from the server until ``release()``, then drops it unanswered: the client waits at a known
point, where a test can kill it. Everything it saw is in ``proxy.seen``::

    with FaultyProxy("http://127.0.0.1:5000") as proxy:
        proxy.fail(times=1)                                   # the next request gets a 503
        proxy.fail(times=None, match="GET /api/2.0/x?a=b")    # every such GET, until proxy.heal()
        proxy.fail(times=None, after=3)                       # three go through, then every one fails
        held = proxy.hold(match="DELETE /api/2.0/x")          # held.reached.wait(); kill the client; held.release()
        use(proxy.url)

``closed_port()`` holds a bound socket that does not listen, so connecting to it is refused at
once and no other process can take the port while the test runs.
"""

from __future__ import annotations

import http.client
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator
from urllib.parse import urlsplit

__all__ = ["FaultyProxy", "Hold", "closed_port"]

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclass
class _Rule:
    remaining: int | None  # None: until heal()
    status: int
    match: str | None
    passing: int = 0  # matching requests still let through before the rule starts failing

    def claims(self, target: str) -> bool:
        return (self.remaining is None or self.remaining > 0) and (self.match is None or self.match in target)


class Hold:
    """One request kept from the server: ``reached`` is set when it arrives; ``release()`` drops it."""

    def __init__(self, match: str) -> None:
        self.match = match
        self.target: str | None = None
        self.reached = threading.Event()
        self._released = threading.Event()

    def release(self) -> None:
        self._released.set()


class FaultyProxy:
    """A forwarder to ``upstream`` on a free loopback port; ``url`` is where clients should go."""

    def __init__(self, upstream: str, *, timeout: float = 60.0) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"FaultyProxy forwards plain http://HOST:PORT, got {upstream!r}")
        self.upstream = (parts.hostname, parts.port or 80)
        self.timeout = timeout
        self.seen: list[str] = []  # "METHOD /path?query" of every request, in order
        self.faults: list[str] = []  # the requests answered with a fault
        self._rules: list[_Rule] = []
        self._holds: list[Hold] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._server.block_on_close = False  # clients keep connections alive; closing must not wait for them
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def fail(self, *, times: int | None = 1, status: int = 503, match: str | None = None, after: int = 0) -> None:
        """Answer ``status`` to the next ``times`` requests (all of them when None) containing ``match``,
        once ``after`` of them went through."""
        with self._lock:
            self._rules.append(_Rule(times, status, match, after))

    def hold(self, *, match: str) -> Hold:
        """Keep the next request containing ``match`` from the server until the hold is released;
        then close its connection unanswered (the server never sees it)."""
        held = Hold(match)
        with self._lock:
            self._holds.append(held)
        return held

    def heal(self) -> None:
        """Drop every rule and release every hold: forward everything again."""
        with self._lock:
            self._rules.clear()
            holds, self._holds = self._holds, []
        for held in holds:
            held.release()

    def start(self) -> "FaultyProxy":
        self._thread = threading.Thread(target=self._server.serve_forever, name="faulty-proxy", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self.heal()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "FaultyProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _hold_for(self, target: str) -> Hold | None:
        with self._lock:
            for held in self._holds:
                if held.target is None and held.match in target:
                    held.target = target
                    self.seen.append(target)
                    return held
        return None

    def _fault_for(self, target: str) -> int | None:
        with self._lock:
            self.seen.append(target)
            for rule in self._rules:
                if rule.claims(target):
                    if rule.passing > 0:
                        rule.passing -= 1
                        return None
                    if rule.remaining is not None:
                        rule.remaining -= 1
                    self.faults.append(target)
                    return rule.status
        return None

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet: tests read proxy.seen instead
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response(status)
                for key, value in headers:
                    if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _forward(self) -> None:
                body = self._body()
                target = f"{self.command} {self.path}"
                held = proxy._hold_for(target)
                if held is not None:
                    held.reached.set()
                    held._released.wait()
                    self.close_connection = True  # unanswered: the request never reaches the server
                    return
                status = proxy._fault_for(target)
                if status is not None:
                    message = f'{{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "injected {status}"}}'.encode()
                    self._answer(status, [("Content-Type", "application/json")], message)
                    return
                upstream = http.client.HTTPConnection(*proxy.upstream, timeout=proxy.timeout)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                    headers["Content-Length"] = str(len(body))
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    self._answer(response.status, response.getheaders(), response.read())
                except OSError as err:
                    self._answer(502, [("Content-Type", "text/plain")], f"proxy: upstream failed: {err}".encode())
                finally:
                    upstream.close()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _forward

        return Handler


@contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections for as long as the block runs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connect() is refused, the port stays ours
        yield sock.getsockname()[1]
