"""One object-store interface over S3-compatible servers (MinIO in production) and a local folder.

URIs: ``s3://bucket/prefix`` (through the ``minio`` client) and ``file:///path`` (the embedded
default). Keys are relative to the URI's prefix. Writes are whole objects only: S3 PUTs are
atomic, and the folder store writes a temporary file and renames it, so a reader never sees half
an object. Transient S3 errors (timeouts, 5xx, throttling) are retried with exponential backoff.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator, Protocol, TypeVar
from urllib.parse import urlparse

log = logging.getLogger(__name__)

T = TypeVar("T")
TRANSIENT_CODES = {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "RequestTimeTooSkewed"}


@dataclass(frozen=True)
class ObjectInfo:
    key: str  # relative to the store's prefix
    size: int
    etag: str
    modified: datetime | None


class Store(Protocol):
    uri: str

    def get(self, key: str) -> bytes: ...
    def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str = "", *, start_after: str | None = None) -> Iterator[ObjectInfo]: ...
    def presign(self, key: str, *, expires: timedelta = timedelta(hours=24)) -> str: ...
    def delete(self, key: str) -> None: ...


def _check_key(key: str) -> str:
    if not key or key.startswith("/") or any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"object key {key!r} must be a relative path without empty, '.' or '..' parts")
    return key


class LocalStore:
    """A folder as an object store (the embedded default)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.uri = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(f"{self.uri}/{key} does not exist") from None

    def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".partial-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "", *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        base = self.root / prefix.rstrip("/") if prefix.rstrip("/") else self.root
        if not base.exists():
            return
        keys = sorted(
            p.relative_to(self.root).as_posix()
            for p in (base.rglob("*") if base.is_dir() else [base])
            if p.is_file() and not p.name.startswith(".partial-")
        )
        for key in keys:
            if key.startswith(prefix) and (start_after is None or key > start_after):
                stat = (self.root / key).stat()
                yield ObjectInfo(key, stat.st_size, f"{stat.st_mtime_ns:x}-{stat.st_size:x}", datetime.fromtimestamp(stat.st_mtime, timezone.utc))

    def presign(self, key: str, *, expires: timedelta = timedelta(hours=24)) -> str:
        return self._path(key).as_uri()  # a local file needs no signature

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class S3Store:
    """A bucket (and optional prefix) on an S3-compatible server, through the ``minio`` client."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str,
        access_key: str | None,
        secret_key: str | None,
        region: str | None = None,
        retries: int = 4,
        backoff: float = 0.2,
        create: bool = False,
    ) -> None:
        from minio import Minio

        parsed = urlparse(endpoint if "://" in endpoint else f"http://{endpoint}")
        self.client = Minio(
            endpoint=parsed.netloc, access_key=access_key, secret_key=secret_key, secure=parsed.scheme == "https", region=region
        )
        self.bucket, self.prefix = bucket, prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.retries, self.backoff = retries, backoff
        if create and not self._retry(lambda: self.client.bucket_exists(bucket_name=bucket)):
            self._retry(lambda: self.client.make_bucket(bucket_name=bucket))

    def _retry(self, call: Callable[[], T]) -> T:
        from minio.error import S3Error
        from urllib3.exceptions import HTTPError as TransportError

        for attempt in range(self.retries + 1):
            try:
                return call()
            except S3Error as err:
                if err.code not in TRANSIENT_CODES or attempt == self.retries:
                    raise
                reason = err.code
            except (TransportError, ConnectionError, TimeoutError) as err:
                if attempt == self.retries:
                    raise
                reason = type(err).__name__
            delay = self.backoff * 2**attempt
            log.warning("%s: transient error (%s); retrying in %.1f s", self.uri, reason, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _name(self, key: str) -> str:
        return self.prefix + _check_key(key)

    def get(self, key: str) -> bytes:
        from minio.error import S3Error

        def fetch() -> bytes:
            response = self.client.get_object(bucket_name=self.bucket, object_name=self._name(key))
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        try:
            return self._retry(fetch)
        except S3Error as err:
            if err.code in ("NoSuchKey", "NoSuchObject"):
                raise KeyError(f"{self.uri}/{key} does not exist") from None
            raise

    def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        self._retry(
            lambda: self.client.put_object(
                bucket_name=self.bucket, object_name=self._name(key), data=io.BytesIO(data), length=len(data), content_type=content_type
            )
        )

    def exists(self, key: str) -> bool:
        from minio.error import S3Error

        try:
            self._retry(lambda: self.client.stat_object(bucket_name=self.bucket, object_name=self._name(key)))
            return True
        except S3Error as err:
            if err.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                return False
            raise

    def list(self, prefix: str = "", *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        objects = self._retry(
            lambda: list(
                self.client.list_objects(
                    bucket_name=self.bucket,
                    prefix=self.prefix + prefix,
                    recursive=True,
                    start_after=self.prefix + start_after if start_after else None,
                )
            )
        )
        for obj in sorted(objects, key=lambda o: o.object_name):
            yield ObjectInfo(obj.object_name[len(self.prefix) :], obj.size or 0, (obj.etag or "").strip('"'), obj.last_modified)

    def presign(self, key: str, *, expires: timedelta = timedelta(hours=24)) -> str:
        return self._retry(lambda: self.client.presigned_get_object(bucket_name=self.bucket, object_name=self._name(key), expires=expires))

    def delete(self, key: str) -> None:
        self._retry(lambda: self.client.remove_object(bucket_name=self.bucket, object_name=self._name(key)))


def open_store(
    uri: str,
    *,
    endpoint: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
    create: bool = False,
) -> Store:
    """``s3://bucket/prefix`` (needs ``endpoint``) or ``file:///path`` / a plain path."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"{uri!r} names no bucket; expected s3://bucket/prefix")
        if not endpoint:
            raise ValueError(f"{uri} needs an S3 endpoint: set ATTNLOOP_S3_ENDPOINT (e.g. http://127.0.0.1:9000)")
        return S3Store(parsed.netloc, parsed.path, endpoint=endpoint, access_key=access_key, secret_key=secret_key, create=create)
    if parsed.scheme in ("file", ""):
        path = Path(parsed.path if parsed.scheme == "file" else uri)
        if create:
            path.mkdir(parents=True, exist_ok=True)
        elif not path.is_dir():
            raise ValueError(f"{uri}: no such folder (create it, or pass create=True)")
        return LocalStore(path)
    raise ValueError(f"unsupported store URI {uri!r}; expected s3://bucket/prefix or file:///path")
