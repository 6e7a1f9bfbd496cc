"""One object-store interface over S3-compatible servers (MinIO in production) and a local folder.

URIs: ``s3://bucket/prefix`` (through the ``minio`` client) and ``file:///path`` (the embedded
default). Keys are relative to the URI's prefix. Writes are whole objects only: S3 PUTs are
atomic, and the folder store writes a temporary file and renames it, so a reader never sees half
an object. Transient S3 errors (timeouts, 5xx, throttling) are retried with exponential backoff;
an endpoint that refuses the connection (or does not answer it within ``CONNECT_TIMEOUT``) is not
retried: :class:`StoreUnavailable` says at once which endpoint could not be reached.

Errors are of three kinds, so callers can tell them apart: ``KeyError`` when no object has the
key (also a folder, or a path below an object), :class:`KeyRefused` (a ``ValueError``) for a key
the store will not serve (malformed, too long, a symbolic link, not a regular file), and
:class:`ObjectTooLarge` (a ``ValueError``) when a read with ``max_bytes`` would exceed it.

The folder store never leaves its root: every path is walked one part at a time from the root
with ``O_NOFOLLOW``, so reads, writes, deletes and presigns refuse any symbolic link in the store
(one pointing inside the store too: a link is not an object), listings skip links with a
warning, and only regular files are read (a FIFO or device is refused without waiting on it).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import secrets
import stat
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, TypeVar
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

log = logging.getLogger(__name__)

T = TypeVar("T")
TRANSIENT_CODES = {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "RequestTimeTooSkewed"}
MAX_KEY_BYTES = 1024  # S3's limit on an object name
MAX_PART_BYTES = 255  # a file name's limit on common file systems (NAME_MAX)
CONNECT_TIMEOUT = 5.0  # seconds to open a connection to an S3 endpoint
READ_TIMEOUT = 120.0  # seconds an S3 endpoint may stay silent on an open connection
PARTIAL_MAX_AGE = 3600.0  # seconds: a folder store's temporary file this old is a killed writer's, removed by the next write there


class KeyRefused(ValueError):
    """The store will not serve this key: malformed, too long, a symbolic link or not a regular file."""


class ObjectTooLarge(ValueError):
    """The object is larger than the ``max_bytes`` the read allowed."""


class StoreUnavailable(ConnectionError):
    """The store's server cannot be reached; the operation was not carried out."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str  # relative to the store's prefix
    size: int
    etag: str
    modified: datetime | None


class Store(Protocol):
    uri: str

    def get(self, key: str, *, max_bytes: int | None = None) -> bytes: ...
    def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None: ...
    def exists(self, key: str) -> bool: ...
    def check(self) -> None: ...
    def list(self, prefix: str = "", *, start_after: str | None = None) -> Iterator[ObjectInfo]: ...
    def presign(self, key: str, *, expires: timedelta = timedelta(hours=24)) -> str: ...
    def delete(self, key: str) -> None: ...
    def key_of(self, url: str) -> str | None: ...
    def arrow_files(self, keys: list[str]) -> tuple[Any, list[str]]: ...


def _short(text: str, limit: int = 60) -> str:
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}… ({len(text)} characters)"


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not key or key.startswith("/") or any(part in ("", ".", "..") for part in key.split("/")):
        raise KeyRefused(f"object key {_short(str(key))} must be a relative path without empty, '.' or '..' parts")
    if "\0" in key:
        raise KeyRefused(f"object key {_short(key)} contains a NUL byte")
    size = len(key.encode("utf-8", "surrogatepass"))
    if size > MAX_KEY_BYTES:
        raise KeyRefused(f"object key {_short(key)} is too long: {size} bytes; the limit is {MAX_KEY_BYTES}")
    return key


def _check_path_key(key: str) -> str:
    """A key that is also a path: each part must fit a file name (S3 has no such limit)."""
    for part in _check_key(key).split("/"):
        if len(os.fsencode(part)) > MAX_PART_BYTES:
            raise KeyRefused(f"object key {_short(key)} is too long for a folder store: its part {_short(part, 30)} is over {MAX_PART_BYTES} bytes")
    return key


_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}


class LocalStore:
    """A folder as an object store (the embedded default); it never reads or writes outside its root."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.uri = self.root.as_uri()

    def _where(self, key: str) -> str:
        return f"{self.uri}/{key}"

    def _link(self, key: str, part: str) -> KeyRefused:
        return KeyRefused(
            f"{self._where(key)}: {part} is a symbolic link; the folder store does not follow links "
            f"(it reads and writes only regular files inside {self.root})"
        )

    def _folder(self, key: str, *, create: bool = False) -> tuple[int, str]:
        """An open descriptor of the folder that holds ``key`` (reached without following any link) and
        the key's last part. A missing folder is ``KeyError`` (created instead when ``create``)."""
        parts = _check_path_key(key).split("/")
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            if not create:
                raise KeyError(f"{self._where(key)} does not exist (the store folder {self.root} does not exist)") from None
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            for depth, part in enumerate(parts[:-1], start=1):
                try:
                    try:
                        child = os.open(part, flags, dir_fd=fd)
                    except FileNotFoundError:
                        if not create:
                            raise KeyError(f"{self._where(key)} does not exist") from None
                        with contextlib.suppress(FileExistsError):
                            os.mkdir(part, dir_fd=fd)
                        child = os.open(part, flags, dir_fd=fd)
                except OSError as err:
                    raise self._refusal(key, "/".join(parts[:depth]), fd, part, err, folder=True) from None
                os.close(fd)
                fd = child
            return fd, parts[-1]
        except BaseException:
            os.close(fd)
            raise

    def _refusal(self, key: str, path: str, fd: int, name: str, err: OSError, *, folder: bool) -> Exception:
        """The error to raise for an ``OSError`` met at ``path`` (the name ``name`` in folder ``fd``)."""
        try:
            mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
        except OSError:
            mode = None
        if mode is not None and stat.S_ISLNK(mode):
            return self._link(key, path)
        if folder and mode is not None and not stat.S_ISDIR(mode):
            return KeyError(f"{self._where(key)} does not exist: {path} is an object, not a folder")
        if isinstance(err, PermissionError):
            return KeyRefused(f"{self._where(key)} cannot be read or written: permission denied on {path}")
        return KeyRefused(f"{self._where(key)} cannot be used: {os.strerror(err.errno) if err.errno else err} ({path})")

    def _regular(self, key: str, mode: int) -> None:
        if stat.S_ISDIR(mode):
            raise KeyError(f"{self._where(key)} is a folder, not an object")
        if stat.S_ISLNK(mode):
            raise self._link(key, key)
        if not stat.S_ISREG(mode):
            kind = _KINDS.get(stat.S_IFMT(mode), "a special file")
            raise KeyRefused(f"{self._where(key)} is {kind}, not a regular file; the folder store reads only regular files")

    def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        """The object's bytes; at most ``max_bytes`` are read (more is :class:`ObjectTooLarge`)."""
        folder, name = self._folder(key)
        try:
            try:
                self._regular(key, os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode)  # before opening: a FIFO never opens
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder)
            except FileNotFoundError:
                raise KeyError(f"{self._where(key)} does not exist") from None
            except OSError as err:
                raise self._refusal(key, key, folder, name, err, folder=False) from None
        finally:
            os.close(folder)
        try:
            info = os.fstat(fd)
            self._regular(key, info.st_mode)  # it may have been swapped since the check above
            if max_bytes is not None and info.st_size > max_bytes:
                raise ObjectTooLarge(f"{self._where(key)} is {info.st_size} bytes; the limit is {max_bytes} bytes")
        except BaseException:
            os.close(fd)
            raise
        with open(fd, "rb", closefd=True) as file:
            data = file.read() if max_bytes is None else file.read(max_bytes + 1)
        if max_bytes is not None and len(data) > max_bytes:
            raise ObjectTooLarge(f"{self._where(key)} is over {max_bytes} bytes (it grew while read); the limit is {max_bytes} bytes")
        return data

    def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        try:
            folder, name = self._folder(key, create=True)
        except KeyError as err:  # a path below an object
            raise KeyRefused(f"cannot write {self._where(key)}: {err.args[0].split(': ', 1)[-1]}") from None
        try:
            try:
                mode = os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode
            except FileNotFoundError:
                mode = None
            if mode is not None and stat.S_ISDIR(mode):
                raise KeyRefused(f"cannot write {self._where(key)}: it is a folder")
            if mode is not None and stat.S_ISLNK(mode):
                raise self._link(key, key)
            self._sweep(folder, key)
            tmp = f".partial-{secrets.token_hex(8)}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=folder)
            try:
                with open(fd, "wb", closefd=True) as out:
                    out.write(data)
                os.replace(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
            except OSError as err:  # a full disk, say: name the object, leave no temporary file
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp, dir_fd=folder)
                raise OSError(err.errno, err.strerror, err.filename or self._where(key)) from None
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp, dir_fd=folder)
                raise
        finally:
            os.close(folder)

    def create(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if nothing has that name (atomic: a hard link of a whole temporary file,
        which fails when the name exists); True if this call created it. Leases are built on it."""
        try:
            folder, name = self._folder(key, create=True)
        except KeyError as err:  # a path below an object
            raise KeyRefused(f"cannot write {self._where(key)}: {err.args[0].split(': ', 1)[-1]}") from None
        self._sweep(folder, key)
        tmp = f".partial-{secrets.token_hex(8)}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=folder)
            with open(fd, "wb", closefd=True) as out:
                out.write(data)
            os.link(tmp, name, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=False)
            return True
        except FileExistsError:
            return False
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=folder)
            os.close(folder)

    def _sweep(self, folder: int, key: str) -> None:
        """Remove the temporary files (``.partial-*``) older than ``PARTIAL_MAX_AGE`` from the folder
        ``key`` is written into: a writer killed mid-write leaves one. A writer in flight writes its
        file within moments, so it is never touched. Once per folder per hour for a store object, so
        a busy folder is not listed at every write."""
        where, now = key.rpartition("/")[0], time.time()
        swept = self.__dict__.setdefault("_swept", {})
        if swept.get(where, 0.0) > now - PARTIAL_MAX_AGE:
            return
        swept[where] = now
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if not entry.name.startswith(".partial-") or not entry.is_file(follow_symlinks=False):
                        continue
                    if entry.stat(follow_symlinks=False).st_mtime < now - PARTIAL_MAX_AGE:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.name, dir_fd=folder)
                        log.info("%s: removed %s/%s, a temporary file a killed writer left", self.uri, where or ".", entry.name)
        except OSError as err:  # best effort: the write itself must not fail for it
            log.debug("%s: could not sweep temporary files in %s (%s)", self.uri, where or ".", err)

    def check(self) -> None:
        """Nothing to do: a folder store that does not exist is refused when it is opened."""

    def exists(self, key: str) -> bool:
        """True for a regular file under the key (a link, folder or special file is no object)."""
        try:
            folder, name = self._folder(key)
        except KeyError:
            return False
        except KeyRefused:
            _check_key(key)  # a malformed key is still an error; a link on the way only means "no object"
            return False
        try:
            return stat.S_ISREG(os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode)
        except OSError:
            return False
        finally:
            os.close(folder)

    def list(self, prefix: str = "", *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        """Regular files whose key starts with ``prefix``, in key order; links are skipped with a warning."""
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        if base:
            _check_key(base)
            where = self.root
            for part in base.split("/"):
                where = where / part
                if where.is_symlink():
                    log.warning("%s: %s is a symbolic link; the folder store does not follow links, so nothing under it is listed", self.uri, where.relative_to(self.root).as_posix())
                    return
                if not where.is_dir():
                    return
        found: list[tuple[str, os.stat_result]] = []
        links: list[str] = []
        pending = [base]
        while pending:
            folder = pending.pop()
            try:
                entries = list(os.scandir(self.root / folder if folder else self.root))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                key = f"{folder}/{entry.name}" if folder else entry.name
                if entry.is_symlink():
                    if key.startswith(prefix) or prefix.startswith(key + "/"):
                        links.append(key)
                elif entry.is_dir(follow_symlinks=False):
                    if (key + "/").startswith(prefix) or prefix.startswith(key + "/"):
                        pending.append(key)
                elif entry.is_file(follow_symlinks=False) and not entry.name.startswith(".partial-") and key.startswith(prefix):
                    if start_after is None or key > start_after:
                        found.append((key, entry.stat(follow_symlinks=False)))
        if links:
            links.sort()
            log.warning(
                "%s: skipped %d symbolic link(s) (the folder store does not follow links): %s%s",
                self.uri, len(links), ", ".join(links[:5]), " …" if len(links) > 5 else "",
            )
        for key, info in sorted(found):
            yield ObjectInfo(key, info.st_size, f"{info.st_mtime_ns:x}-{info.st_size:x}", datetime.fromtimestamp(info.st_mtime, timezone.utc))

    def presign(self, key: str, *, expires: timedelta = timedelta(hours=24)) -> str:
        """The object's ``file://`` URI (a local file needs no signature); a link or special file is refused."""
        try:
            folder, name = self._folder(key)
        except KeyError:
            return (self.root / key).as_uri()  # like S3, a URL for an object not written yet
        try:
            mode = os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode
        except FileNotFoundError:
            mode = None
        finally:
            os.close(folder)
        if mode is not None:
            self._regular(key, mode)
        return (self.root / key).as_uri()

    def arrow_files(self, keys: list[str]):
        """``(pyarrow filesystem, paths)`` of ``keys``: what a query engine scans in place."""
        from pyarrow import fs

        return fs.LocalFileSystem(), [str(self.root / _check_path_key(key)) for key in keys]

    def delete(self, key: str) -> None:
        try:
            folder, name = self._folder(key)
        except KeyError:
            return
        try:
            os.unlink(name, dir_fd=folder)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            raise KeyRefused(f"cannot delete {self._where(key)}: it is a folder, not an object") from None
        finally:
            os.close(folder)

    def key_of(self, url: str) -> str | None:
        """The key a ``file://`` URL inside the root names (what :meth:`presign` gives), else None."""
        parsed = urlparse(url)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
            return None
        path = os.path.normpath(url2pathname(parsed.path))
        try:
            key = Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return None
        return None if key == "." else key


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
        self.endpoint = f"{parsed.scheme}://{parsed.netloc}"
        self.client = Minio(
            endpoint=parsed.netloc,
            access_key=access_key,
            secret_key=secret_key,
            secure=parsed.scheme == "https",
            region=region,
            http_client=_http_client(),
        )
        self.bucket, self.prefix = bucket, prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._credentials = (access_key, secret_key, region)
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.retries, self.backoff = retries, backoff
        if create and not self._retry(lambda: self.client.bucket_exists(bucket_name=bucket), doing=f"checking the bucket {bucket}"):
            self._retry(lambda: self.client.make_bucket(bucket_name=bucket), doing=f"creating the bucket {bucket}")

    def _retry(self, call: Callable[[], T], *, doing: str) -> T:
        """``call()``, retrying transient errors with backoff; an endpoint that cannot be reached is
        :class:`StoreUnavailable` at once (``doing`` says what was not done)."""
        from minio.error import S3Error
        from urllib3.exceptions import HTTPError as TransportError

        for attempt in range(self.retries + 1):
            try:
                return call()
            except S3Error as err:
                if err.code == "NoSuchBucket":
                    raise ValueError(
                        f"no store at {self.uri}: the S3 server at {self.endpoint} has no bucket {self.bucket!r} ({doing} was not done); "
                        "check the store URI (--store, ATTNLOOP_STORE) for a typo"
                    ) from None
                if err.code not in TRANSIENT_CODES or attempt == self.retries:
                    raise
                reason = err.code
            except (TransportError, ConnectionError, TimeoutError) as err:
                unreachable = _unreachable(err)
                if unreachable is not None:
                    raise StoreUnavailable(
                        f"the S3 endpoint {self.endpoint} cannot be reached ({unreachable}): {doing} was not done, "
                        "nothing was read or written; check ATTNLOOP_S3_ENDPOINT and that the server is running"
                    ) from None
                if attempt == self.retries:
                    raise
                reason = type(err).__name__
            delay = self.backoff * 2**attempt
            log.warning("%s: transient error (%s); retrying in %.1f s", self.uri, reason, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _name(self, key: str) -> str:
        return self.prefix + _check_key(key)

    def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        """The object's bytes; at most ``max_bytes`` are read (more is :class:`ObjectTooLarge`)."""
        from minio.error import S3Error

        name = self._name(key)

        def fetch() -> bytes:
            response = self.client.get_object(bucket_name=self.bucket, object_name=name)
            try:
                if max_bytes is None:
                    return response.read()
                declared = response.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                    raise ObjectTooLarge(f"{self.uri}/{key} is {declared} bytes; the limit is {max_bytes} bytes")
                data = response.read(max_bytes + 1)
                if len(data) > max_bytes:
                    raise ObjectTooLarge(f"{self.uri}/{key} is over {max_bytes} bytes; the limit is {max_bytes} bytes")
                return data
            finally:
                response.close()
                response.release_conn()

        try:
            return self._retry(fetch, doing=f"reading {self.uri}/{key}")
        except S3Error as err:
            if err.code in ("NoSuchKey", "NoSuchObject"):
                raise KeyError(f"{self.uri}/{key} does not exist") from None
            raise

    def put(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> None:
        name = self._name(key)
        self._retry(
            lambda: self.client.put_object(
                bucket_name=self.bucket, object_name=name, data=io.BytesIO(data), length=len(data), content_type=content_type
            ),
            doing=f"writing {self.uri}/{key}",
        )

    def check(self) -> None:
        """Raise unless the bucket is there: ValueError naming the store when it is not (a typo),
        :class:`StoreUnavailable` when the endpoint cannot be reached. One request."""
        if not self._retry(lambda: self.client.bucket_exists(bucket_name=self.bucket), doing=f"checking the bucket {self.bucket}"):
            raise ValueError(
                f"no store at {self.uri}: the S3 server at {self.endpoint} has no bucket {self.bucket!r}; check the store URI "
                "(--store, ATTNLOOP_STORE) for a typo (frames start a new store with `attnloop stream add FILES --source NAME --to URI`)"
            )

    def exists(self, key: str) -> bool:
        from minio.error import S3Error

        name = self._name(key)
        try:
            self._retry(lambda: self.client.stat_object(bucket_name=self.bucket, object_name=name), doing=f"looking up {self.uri}/{key}")
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
            ),
            doing=f"listing {self.uri}/{prefix}",
        )
        for obj in sorted(objects, key=lambda o: o.object_name):
            yield ObjectInfo(obj.object_name[len(self.prefix) :], obj.size or 0, (obj.etag or "").strip('"'), obj.last_modified)

    def presign(self, key: str, *, expires: timedelta = timedelta(hours=24)) -> str:
        name = self._name(key)
        return self._retry(
            lambda: self.client.presigned_get_object(bucket_name=self.bucket, object_name=name, expires=expires),
            doing=f"presigning {self.uri}/{key}",
        )

    def delete(self, key: str) -> None:
        name = self._name(key)
        self._retry(lambda: self.client.remove_object(bucket_name=self.bucket, object_name=name), doing=f"deleting {self.uri}/{key}")

    def arrow_files(self, keys: list[str]):
        """``(pyarrow filesystem, paths)`` of ``keys``: what a query engine scans in place (Parquet
        read by range requests, never downloaded whole first)."""
        from pyarrow import fs

        filesystem = fs.S3FileSystem(
            access_key=self._credentials[0], secret_key=self._credentials[1], endpoint_override=self.endpoint,
            scheme=urlparse(self.endpoint).scheme, region=self._credentials[2] or "us-east-1",
        )
        return filesystem, [f"{self.bucket}/{self._name(key)}" for key in keys]

    def key_of(self, url: str) -> str | None:
        """The key an ``s3://bucket/prefix/...`` URL or a (presigned) URL on this endpoint names, else None."""
        parsed = urlparse(url)
        if parsed.scheme == "s3":
            bucket, name = parsed.netloc, unquote(parsed.path).lstrip("/")
        elif parsed.scheme in ("http", "https") and f"{parsed.scheme}://{parsed.netloc.lower()}" == self.endpoint.lower():
            bucket, _, name = unquote(parsed.path).lstrip("/").partition("/")
        else:
            return None
        if bucket != self.bucket or not name.startswith(self.prefix):
            return None
        key = name[len(self.prefix) :]
        try:
            return _check_key(key)
        except KeyRefused:
            return None


def _http_client():
    """minio's HTTP pool with a bounded connect timeout and no retry of a refused connection (its
    default waits 5 minutes to connect and retries 5 times)."""
    import certifi
    import urllib3
    from urllib3.util import Retry, Timeout

    return urllib3.PoolManager(
        timeout=Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT),
        maxsize=10,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=Retry(total=5, connect=0, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )


def _unreachable(err: BaseException) -> str | None:
    """Why a connection could not be opened ("connection refused", ...), or None for other errors."""
    from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NameResolutionError, NewConnectionError

    reason = err.reason if isinstance(err, MaxRetryError) else err
    if isinstance(reason, NameResolutionError):
        return "its host name does not resolve"
    if isinstance(reason, NewConnectionError):
        cause = reason.__cause__ or reason.__context__
        if isinstance(cause, ConnectionRefusedError) or "refused" in str(reason).lower():
            return "connection refused"
        return f"the connection failed: {cause or reason}"
    if isinstance(reason, ConnectTimeoutError):
        return f"no answer to the connection within {CONNECT_TIMEOUT:g} s"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    return None


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
            raise ValueError(
                f"no store at {uri}: the folder {path} does not exist; check the store URI (--store, ATTNLOOP_STORE) for a typo "
                "(frames start a new store with `attnloop stream add FILES --source NAME`)"
            )
        return LocalStore(path)
    raise ValueError(f"unsupported store URI {uri!r}; expected s3://bucket/prefix or file:///path")
