"""Leases in the object store: one holder at a time for a named piece of work, across processes and hosts.

    from attnloop import lease

    with lease.hold(store, f"push-{project}", ttl=60, wait=120) as held:
        ...          # only one process at a time runs this, for this store and name
        held.check() # before committing: raises lease.Lost if another process has taken it over

:func:`hold` waits up to ``wait`` seconds (None: as long as it takes) and raises :class:`Busy`, which
names the holder, when the lease stays taken. ``ttl`` bounds how long a dead holder blocks others.

How: a lease is a small JSON object ``leases/<name>/<generation>.json``. Taking it creates the next
generation atomically, so of two takers at once exactly one wins: on a folder store a file linked
into place (``os.link`` fails when the name exists), on S3 a conditional PUT (``If-None-Match: *``,
which AWS S3 has honoured since 2024, as do recent MinIO releases and moto's server; the first
lease taken on a bucket checks that the server refuses a second such PUT, and refuses to lease
on a server that ignores the condition). The holder renews its generation every ``ttl / 3``
seconds from a background thread and marks it released on exit, so the next taker need not wait. A
holder that dies (SIGKILL, a lost host) stops renewing; once ``ttl`` seconds have passed the next
taker takes the next generation.

Limits: expiry compares the holder's clock with the taker's, so hosts need clocks that agree to
well within ``ttl`` (NTP). A holder that stalls for longer than ``ttl`` (a paused VM) can be taken
over; it finds out at its next renewal, and :meth:`Held.check` (or :attr:`Held.lost`) tells work
that commits results to stop.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Iterator

from attnloop.layout import LEASE_PROBES, lease_key, lease_prefix
from attnloop.storage import Store

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@=+-]{0,199}$")


class Busy(RuntimeError):
    """The lease stayed taken for the whole wait."""

    def __init__(self, name: str, uri: str, holder: dict, waited: float) -> None:
        until = datetime.fromtimestamp(holder.get("expires", 0), timezone.utc).isoformat(timespec="seconds")
        super().__init__(
            f"lease {name!r} on {uri} is held by {holder.get('owner', 'an unknown holder')} (renewed until {until} unless it ends first); "
            f"waited {waited:.1f} s"
        )
        self.name, self.uri, self.holder, self.waited = name, uri, holder, waited


class Lost(RuntimeError):
    """Another process took the lease over (this holder stalled past its ttl, or the lease was removed)."""


@dataclass
class Held:
    """A lease while it is held: :meth:`check` before committing work."""

    store: Store
    name: str
    generation: int
    body: dict
    ttl: float
    _lost: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def owner(self) -> str:
        return self.body["owner"]

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def check(self) -> None:
        if self._lost.is_set():
            raise Lost(
                f"lease {self.name!r} on {self.store.uri} was taken over by another process (this one stalled past its {self.ttl:g} s ttl); "
                "what was committed before stays; run again to finish the rest"
            )

    def _renew(self) -> None:
        interval = self.ttl / 3
        renewed = time.time()
        while not self._stop.wait(interval):
            try:
                self.body["expires"] = time.time() + self.ttl
                _put(self.store, lease_key(self.name, self.generation), self.body)
                renewed = time.time()
                if max(_generations(self.store, self.name), default=0) != self.generation:
                    self._lost.set()
                    log.error("lease %r on %s was taken over by another process", self.name, self.store.uri)
                    return
            except Exception as err:  # the store is unreachable for a moment: keep trying until the lease would expire
                if time.time() > renewed + self.ttl:
                    self._lost.set()
                    log.error("lease %r on %s expired: could not renew it for %.0f s (%s)", self.name, self.store.uri, self.ttl, err)
                    return
                log.warning("lease %r on %s: renewal failed (%s); retrying", self.name, self.store.uri, err)


@contextmanager
def hold(store: Store, name: str, *, owner: str | None = None, ttl: float = 30.0, wait: float | None = 0.0) -> Iterator[Held]:
    """Hold the lease ``name`` on ``store`` for the ``with`` block; waits up to ``wait`` seconds
    (None: without bound) while another process holds it, then raises :class:`Busy`."""
    if not _NAME.match(name):
        raise ValueError(f"lease name {name!r} must be 1-200 letters, digits or '_.@=+-', starting with a letter or digit")
    if ttl <= 0 or (wait is not None and wait < 0):
        raise ValueError(f"ttl must be positive and wait non-negative, got ttl={ttl}, wait={wait}")
    owner = owner or f"{socket.gethostname()} pid {os.getpid()}"
    start = time.monotonic()
    announced, races = False, 0
    while True:
        taken = _try_take(store, name, owner=owner, ttl=ttl)
        if isinstance(taken, Held):
            break
        if taken is None and races < 3:  # another taker changed the generations under this one: look again now
            races += 1
            continue
        waited = time.monotonic() - start
        if wait is not None and waited >= wait:
            raise Busy(name, store.uri, taken or {}, waited)
        if not announced and taken:
            log.warning("lease %r on %s is held by %s; waiting%s", name, store.uri, taken.get("owner"),
                        "" if wait is None else f" up to {wait:g} s")
            announced = True
        pause = min(1.0, ttl / 4) * random.uniform(0.5, 1.0)
        time.sleep(pause if wait is None else max(0.0, min(pause, wait - waited)))
    thread = threading.Thread(target=taken._renew, name=f"lease-{name}", daemon=True)
    thread.start()
    try:
        yield taken
    finally:
        taken._stop.set()
        thread.join()
        if not taken.lost:
            try:
                _put(store, lease_key(name, taken.generation), {**taken.body, "released": True, "expires": time.time()})
            except Exception as err:
                log.warning("lease %r on %s: could not release it (%s); it expires in %.0f s", name, store.uri, err, ttl)


# --- generations ----------------------------------------------------------------------------------


def _generations(store: Store, name: str) -> list[int]:
    out = []
    for info in store.list(lease_prefix(name)):
        stem = info.key.rsplit("/", 1)[-1].removesuffix(".json")
        if stem.isdigit():
            out.append(int(stem))
    return sorted(out)


def _read(store: Store, name: str, generation: int) -> dict | None:
    try:
        body = json.loads(store.get(lease_key(name, generation)))
    except KeyError:
        return None  # cleaned up by a newer holder a moment ago
    except ValueError:
        return {}  # unreadable: counts as expired (writes are whole objects, so this is not a write in progress)
    return body if isinstance(body, dict) else {}


def _put(store: Store, key: str, body: dict) -> None:
    store.put(key, json.dumps(body).encode(), content_type="application/json")


def _try_take(store: Store, name: str, *, owner: str, ttl: float) -> Held | dict | None:
    """The lease if it was free and this call took it; else the holder's record (None: try again)."""
    latest = max(_generations(store, name), default=0)
    if latest:
        current = _read(store, name, latest)
        if current is None:
            return None
        if not current.get("released") and current.get("expires", 0) > time.time():
            return current
    generation = latest + 1
    now = time.time()
    body = {"owner": owner, "token": uuid.uuid4().hex, "acquired": now, "expires": now + ttl, "ttl": ttl}
    if not create(store, lease_key(name, generation), json.dumps(body).encode()):
        winner = _read(store, name, generation)
        if winner is None or winner.get("token") != body["token"]:  # (our own, when a retried PUT had landed)
            return winner
    if max(_generations(store, name)) != generation:
        # a generation removed by the cleanup below was created again by a taker that had listed long
        # ago: a newer generation exists, so this one never counted
        store.delete(lease_key(name, generation))
        return None
    _cleanup(store, name, below=generation)
    return Held(store, name, generation, body, ttl)


def _cleanup(store: Store, name: str, *, below: int) -> None:
    """Remove older generations (best effort: they no longer count once a newer one exists)."""
    try:
        for generation in _generations(store, name):
            if generation < below:
                store.delete(lease_key(name, generation))
    except Exception as err:
        log.debug("lease %r: cleanup of old generations failed (%s)", name, err)


# --- the one atomic primitive: create an object only if it does not exist ------------------------


def create(store: Store, key: str, data: bytes, *, content_type: str = "application/json") -> bool:
    """Write ``key`` only if no object has that name; True if this call created it.

    The store's atomic create: leases are built on it, and annotation-set versions use it so a
    published version is never rewritten. A folder store links a whole temporary file into place;
    an S3 store sends a conditional PUT (``If-None-Match: *``), after checking once per bucket
    that the server honours it."""
    if hasattr(store, "create"):
        return store.create(key, data)  # a folder store: inside its root, never through a link
    client = getattr(store, "client", None)
    if client is not None and hasattr(store, "bucket"):
        return _create_s3(store, key, data, content_type=content_type)
    raise TypeError(f"{store.uri}: leases and annotation sets need a folder store or an S3 store (one with an atomic create)")


_pool = None
_checked: set[str] = set()  # buckets whose server was seen to refuse a second conditional PUT


def _create_s3(store, key: str, data: bytes, *, content_type: str) -> bool:
    if store.uri not in _checked:
        probe = f"{LEASE_PROBES}{uuid.uuid4().hex}.json"
        first, second = _put_if_absent(store, probe, b"{}"), _put_if_absent(store, probe, b"{}")
        store.delete(probe)
        if not first or second:
            raise RuntimeError(
                f"{store.uri}: the S3 server does not honour 'If-None-Match: *' on PUT, so two processes could take one lease "
                "or write one version twice; nothing was changed; use a server with conditional writes (AWS S3, MinIO since 2024)"
            )
        _checked.add(store.uri)
    return _put_if_absent(store, key, data, content_type=content_type)


def _put_if_absent(store, key: str, data: bytes, *, content_type: str = "application/json") -> bool:
    """A conditional PUT through a presigned URL: the minio client's own PUT cannot send If-None-Match."""
    global _pool
    import urllib3

    if _pool is None:
        _pool = urllib3.PoolManager(retries=urllib3.Retry(total=3, backoff_factor=0.2, allowed_methods=None, status_forcelist=(500, 502, 503, 504)))
    url = store.client.presigned_put_object(bucket_name=store.bucket, object_name=store.prefix + key, expires=timedelta(minutes=5))
    response = _pool.request("PUT", url, body=data, headers={"If-None-Match": "*", "Content-Type": content_type}, timeout=30)
    if response.status == 200:
        return True
    if response.status in (409, 412):  # exists (412), or another conditional write to it is in flight (409)
        return False
    raise RuntimeError(f"{store.uri}: creating {key} answered HTTP {response.status}: {response.data[:300]!r}")
