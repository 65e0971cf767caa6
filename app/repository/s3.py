"""Repository objects in an S3-compatible bucket (AWS S3, SeaweedFS, MinIO, Ceph RGW…).

The same object interface as the filesystem store (``backend.py``), one object per key under
an optional prefix. Chunks (4 MiB image blocks) and packs (8 MiB of mail) are already of the
size object stores like (the leaders advise at least 4 MiB per object), so the layout is
unchanged and a repository can be copied between the two kinds object by object.

Why the client is boto3: measured on loopback SeaweedFS with 4 MiB objects and 8 threads,
obstore (Rust) and boto3 moved data at the same rate within the noise of this shared machine
(puts bounded by the server at ~55-80 MiB/s for both; gets 180-310 MiB/s for both), and only
boto3 speaks Object Lock (retention per object version, bucket lock configuration, version
listing), which immutable repositories need.

What differs from a filesystem, and how this store answers it:

* **No modification time to move.** S3 cannot change an object's time without writing it
  anew (and in a versioned bucket that would be a second copy). ``touch`` therefore only
  says whether the object is there; garbage collection's young-object rule sees the time the
  object was written. A backup that reuses an object a concurrent collection sweeps fails the
  existence check that ``save_manifest`` (and a mail commit) makes under the ``gc`` lock, and
  is retried: never a manifest naming a missing object.
* **No cross-host lock.** ``lock`` is a flock in a local directory named after the endpoint,
  bucket and prefix: it excludes processes on this proxy, which is where Bulwark's workers
  run. Two Bulwark installations must not share one bucket and prefix.
* **Durable on success.** A PUT that returned is stored; ``durable=False`` and ``flush`` have
  nothing to defer. Objects are whole or absent (S3 writes are atomic per object).
* **Listing** is lexicographic and paged (1000 keys a page); S3 has been strongly
  consistent for reads after writes and for listings since 2020, as SeaweedFS and MinIO are.
* **Versions.** In a versioned (Object Lock) bucket, deleting a key only adds a delete
  marker; ``delete`` removes every version of the key so space is really freed, and an
  object still under retention refuses with :class:`ObjectLocked`.

Retries: botocore's standard mode (exponential back-off with jitter on 5xx, throttling and
connection errors). Parallelism is bounded by ``max_parallel``: that many requests at once
per store (the connection pool has the same size).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import ssl
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import botocore.httpsession
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from app.repository.backend import ObjectInfo, ObjectMissing, check_key

# Objects larger than this are uploaded in parts of PART_SIZE (S3 allows 5 MiB - 5 GiB parts).
MULTIPART_THRESHOLD = 16 * 1024 * 1024
PART_SIZE = 8 * 1024 * 1024
DEFAULT_PARALLEL = 8
DEFAULT_ATTEMPTS = 6
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX = re.compile(r"^([a-z0-9][a-z0-9._-]*/)*$")
_MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchVersion"}


class S3Error(OSError):
    """The object store refused or failed a request (after retries)."""


class ObjectLocked(S3Error):  # noqa: N818 - reads as what happened
    """The object is under Object Lock retention: nobody can delete it before ``until``."""

    def __init__(self, key: str, until: datetime | None):
        self.key = key
        self.until = until
        when = f"until {until:%Y-%m-%d %H:%M UTC}" if until else "by its retention"
        super().__init__(f"object {key} is locked {when}; it cannot be deleted before then")


@dataclass(frozen=True)
class S3Location:
    """Where the objects are and how to reach them (credentials apart: they are sealed)."""

    endpoint: str  # https://host[:port] (http:// only when the operator says so)
    bucket: str
    prefix: str = ""  # "" or "a/b/"
    region: str = "us-east-1"
    path_style: bool = True
    verify_tls: bool = True
    # SHA-256 of the one certificate to accept (pinned, as for vCenter): checked on every
    # connection instead of the CA chain.
    trusted_thumbprint: str | None = None
    cafile: str | None = None

    def label(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def validate_bucket(bucket: str) -> str:
    if not isinstance(bucket, str) or not _BUCKET.match(bucket) or ".." in bucket:
        raise ValueError(
            f"options.bucket must be an S3 bucket name (3-63 lower-case letters, digits, "
            f"dots, hyphens), not {bucket!r}"
        )
    return bucket


def normalise_prefix(prefix: str | None) -> str:
    prefix = (prefix or "").strip().strip("/")
    if not prefix:
        return ""
    prefix += "/"
    if not _PREFIX.match(prefix) or ".." in prefix:
        raise ValueError(
            f"options.prefix must be lower-case path parts (letters, digits, . _ -), not {prefix!r}"
        )
    return prefix


class _PinnedSession(botocore.httpsession.URLLib3Session):
    """urllib3 checks the leaf certificate's SHA-256 on every new connection."""

    def __init__(self, fingerprint: str, **kwargs: Any):
        self._fingerprint = fingerprint
        super().__init__(verify=False, **kwargs)

    def _get_pool_manager_kwargs(self, **extra_kwargs: Any) -> dict[str, Any]:
        kwargs = super()._get_pool_manager_kwargs(**extra_kwargs)
        kwargs["assert_fingerprint"] = self._fingerprint
        kwargs["cert_reqs"] = ssl.CERT_NONE
        return kwargs


def _thumbprint_hex(value: str) -> str:
    return value.replace(":", "").strip().lower()


class S3Store:
    """Objects in ``bucket`` under ``prefix``; see the module docstring for the semantics."""

    def __init__(
        self,
        location: S3Location,
        *,
        access_key: str,
        secret_key: str,
        max_parallel: int = DEFAULT_PARALLEL,
        attempts: int = DEFAULT_ATTEMPTS,
        lock_dir: Path | None = None,
        timeout_s: float = 60.0,
    ):
        self.location = location
        self.bucket = location.bucket
        self.prefix = location.prefix
        self.max_parallel = max(1, max_parallel)
        self._slots = threading.BoundedSemaphore(self.max_parallel)
        config = Config(
            region_name=location.region,
            signature_version="s3v4",
            s3={"addressing_style": "path" if location.path_style else "virtual"},
            retries={"mode": "standard", "total_max_attempts": max(1, attempts)},
            max_pool_connections=self.max_parallel + 2,
            connect_timeout=min(timeout_s, 10.0),
            read_timeout=timeout_s,
            # Every object is sealed and named by its digest (checked on every read): a
            # second checksum of each body costs CPU and proves nothing more. Object Lock
            # writes, which S3 requires a checksum for, ask for one explicitly.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        verify: bool | str = location.verify_tls
        if location.verify_tls and location.cafile:
            verify = location.cafile
        self._client = boto3.session.Session().client(
            "s3",
            endpoint_url=location.endpoint,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=config,
            verify=verify if not location.trusted_thumbprint else False,
        )
        if location.trusted_thumbprint:
            # botocore has no public hook for a certificate pin; its endpoint's HTTP session
            # is replaced by one that pins (same pool size and timeouts).
            endpoint = self._client._endpoint
            endpoint.http_session = _PinnedSession(
                _thumbprint_hex(location.trusted_thumbprint),
                timeout=config.connect_timeout,
                max_pool_connections=config.max_pool_connections,
            )
        digest = hashlib.sha256(
            f"{location.endpoint}\n{location.bucket}\n{location.prefix}".encode()
        ).hexdigest()[:24]
        # One directory for every process of this host, whatever its settings: the lock is
        # only worth something if they all take the same file.
        base = Path(lock_dir) if lock_dir else Path(tempfile.gettempdir()) / "bulwark-s3-locks"
        self._lock_dir = base / digest
        self._versioned: bool | None = None
        self.page_size = 1000  # keys a listing request asks for (S3's most)

    def __repr__(self) -> str:
        return f"S3Store({self.location.endpoint!r}, {self.location.label()!r})"

    # -- plumbing -------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _call(self, op: str, key: str | None = None, **kwargs: Any) -> Any:
        with self._slots:
            try:
                return getattr(self._client, op)(Bucket=self.bucket, **kwargs)
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
                if key is not None and (code in _MISSING or status == "404"):
                    raise ObjectMissing(key) from None
                raise S3Error(f"{self.location.label()}: {op} {key or ''}: {exc}") from None
            except BotoCoreError as exc:
                raise S3Error(f"{self.location.label()}: {op} {key or ''}: {exc}") from None

    def versioned(self) -> bool:
        """Whether the bucket keeps versions (Object Lock buckets always do)."""
        if self._versioned is None:
            status = self._call("get_bucket_versioning").get("Status")
            self._versioned = status in ("Enabled", "Suspended")
        return self._versioned

    def check_bucket(self) -> None:
        """Raise S3Error naming the problem if the bucket cannot be reached."""
        self._call("head_bucket")

    # -- the object interface -------------------------------------------------------------

    def put(self, key: str, data, *, durable: bool = True, retain_until: datetime | None = None):
        """Store ``data`` (bytes, or parts written one after the other) under ``key``.

        ``retain_until``: an Object Lock COMPLIANCE retention on the new version.
        """
        full = self._key(key)
        parts = [data] if isinstance(data, bytes | bytearray | memoryview) else list(data)
        size = sum(memoryview(p).nbytes for p in parts)
        lock: dict[str, Any] = {}
        if retain_until is not None:
            lock = {
                "ObjectLockMode": "COMPLIANCE",
                "ObjectLockRetainUntilDate": retain_until,
            }
        if size > MULTIPART_THRESHOLD:
            self._put_multipart(full, parts, lock)
            return
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        if lock:
            lock["ChecksumAlgorithm"] = "CRC32"
        self._call("put_object", Key=full, Body=bytes(body), **lock)

    def _put_multipart(self, full: str, parts: list, lock: dict[str, Any]) -> None:
        upload = self._call("create_multipart_upload", Key=full, **lock)["UploadId"]
        try:
            done = []
            for number, piece in enumerate(_slices(parts, PART_SIZE), start=1):
                extra = {"ChecksumAlgorithm": "CRC32"} if lock else {}
                r = self._call(
                    "upload_part",
                    Key=full,
                    UploadId=upload,
                    PartNumber=number,
                    Body=piece,
                    **extra,
                )
                part = {"PartNumber": number, "ETag": r["ETag"]}
                if "ChecksumCRC32" in r:
                    part["ChecksumCRC32"] = r["ChecksumCRC32"]
                done.append(part)
            self._call(
                "complete_multipart_upload",
                Key=full,
                UploadId=upload,
                MultipartUpload={"Parts": done},
            )
        except BaseException:
            # An abandoned upload's parts cost storage until aborted.
            with contextlib.suppress(S3Error):
                self._call("abort_multipart_upload", Key=full, UploadId=upload)
            raise

    def get(self, key: str) -> bytes:
        r = self._call("get_object", key, Key=self._key(key))
        with self._slots:
            return r["Body"].read()

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset`` (fewer only if the object is shorter)."""
        if length <= 0:
            return b""
        try:
            r = self._call(
                "get_object", key, Key=self._key(key), Range=f"bytes={offset}-{offset + length - 1}"
            )
        except S3Error as exc:
            if "InvalidRange" in str(exc):  # past the end: as pread, nothing
                return b""
            raise
        with self._slots:
            return r["Body"].read()

    def size(self, key: str) -> int | None:
        try:
            return int(self._call("head_object", key, Key=self._key(key))["ContentLength"])
        except ObjectMissing:
            return None

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def touch(self, key: str) -> bool:
        """Whether the object is there (its time cannot move on S3: see the module note)."""
        return self.exists(key)

    def flush(self) -> None:
        """Nothing to do: a PUT that returned is durable."""

    def delete(self, key: str) -> None:
        full = self._key(key)
        if not self.versioned():
            if not self.exists(key):
                raise ObjectMissing(key)
            self._call("delete_object", key, Key=full)
            return
        versions = self._versions(full)
        if not versions:
            raise ObjectMissing(key)
        for version_id, _is_marker in versions:
            try:
                self._call("delete_object", key, Key=full, VersionId=version_id)
            except S3Error as exc:
                if "AccessDenied" in str(exc) or "locked" in str(exc).lower():
                    raise ObjectLocked(key, self.retention(key, version_id)) from None
                raise

    def _versions(self, full: str) -> list[tuple[str, bool]]:
        found = []
        for page in self._pages("list_object_versions", Prefix=full):
            for v in page.get("Versions", []):
                if v["Key"] == full:
                    found.append((v["VersionId"], False))
            for m in page.get("DeleteMarkers", []):
                if m["Key"] == full:
                    found.append((m["VersionId"], True))
        return found

    def _pages(self, op: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        paginator = self._client.get_paginator(op)
        pages = iter(
            paginator.paginate(
                Bucket=self.bucket, PaginationConfig={"PageSize": self.page_size}, **kwargs
            )
        )
        while True:
            with self._slots:
                try:
                    page = next(pages)
                except StopIteration:
                    return
                except (ClientError, BotoCoreError) as exc:
                    raise S3Error(f"{self.location.label()}: {op}: {exc}") from None
            yield page

    def list(self, prefix: str = "") -> Iterator[str]:
        for info in self.stat_all(prefix):
            yield info.key

    def stat_all(self, prefix: str = "") -> Iterator[ObjectInfo]:
        cut = len(self.prefix)
        for page in self._pages("list_objects_v2", Prefix=self.prefix + prefix):
            for item in page.get("Contents", []):
                key = item["Key"][cut:]
                if not key or key.endswith("/") or key.rsplit("/", 1)[-1].startswith("."):
                    continue
                yield ObjectInfo(key, int(item["Size"]), item["LastModified"].timestamp())

    def remove_stale_temporaries(self, older_than: float) -> int:
        """Abort multipart uploads a crashed writer left (their parts cost storage)."""
        aborted = 0
        for page in self._pages("list_multipart_uploads", Prefix=self.prefix):
            for upload in page.get("Uploads", []):
                if upload["Initiated"].timestamp() >= older_than:
                    continue
                with contextlib.suppress(S3Error, ObjectMissing):
                    self._call(
                        "abort_multipart_upload",
                        Key=upload["Key"],
                        UploadId=upload["UploadId"],
                    )
                    aborted += 1
        return aborted

    @contextlib.contextmanager
    def lock(self, name: str, *, exclusive: bool) -> Iterator[None]:
        """A lock among the processes of this host (see the module note)."""
        self._lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self._lock_dir / check_key(name), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    # -- Object Lock ------------------------------------------------------------------------

    def lock_enabled(self) -> bool:
        """Whether the bucket was created with Object Lock (it cannot be added later on most
        servers, and never removed)."""
        try:
            doc = self._call("get_object_lock_configuration")
        except S3Error as exc:
            if "ObjectLockConfigurationNotFound" in str(exc) or "NoSuchObjectLock" in str(exc):
                return False
            raise
        return doc.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"

    def retention(self, key: str, version_id: str | None = None) -> datetime | None:
        """The current version's (or ``version_id``'s) retain-until date, None if unlocked."""
        extra = {"VersionId": version_id} if version_id else {}
        try:
            doc = self._call("get_object_retention", key, Key=self._key(key), **extra)
        except ObjectMissing:
            return None
        except S3Error as exc:
            if "NoSuchObjectLockConfiguration" in str(exc) or "InvalidRequest" in str(exc):
                return None
            raise
        until = doc.get("Retention", {}).get("RetainUntilDate")
        return until.astimezone(UTC) if until else None

    def revert(self, key: str) -> int:
        """Undo what was put over a locked object: remove the versions and delete markers
        newer than its newest locked version (they are not locked, so the store allows it).
        Returns how many were removed; 0 if nothing was put over it."""
        full = self._key(key)
        entries = []
        for page in self._pages("list_object_versions", Prefix=full):
            entries += [v for v in page.get("Versions", []) if v["Key"] == full]
            entries += [m for m in page.get("DeleteMarkers", []) if m["Key"] == full]
        now = datetime.now(UTC)
        removed = 0
        for entry in _newest_first(entries):
            if "Size" in entry:  # a version, not a delete marker
                until = self.retention(key, entry["VersionId"])
                if until is not None and until > now:
                    break
            self._call("delete_object", key, Key=full, VersionId=entry["VersionId"])
            removed += 1
        return removed

    def extend_retention(self, key: str, until: datetime) -> bool:
        """Lock the object's current version until at least ``until`` (COMPLIANCE); never
        shortens. False if the object is gone."""
        current = self.retention(key)
        if current is not None and current >= until:
            return True
        try:
            self._call(
                "put_object_retention",
                key,
                Key=self._key(key),
                Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until},
                ChecksumAlgorithm="CRC32",
            )
        except ObjectMissing:
            return False
        return True


def _newest_first(versions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(versions, key=lambda v: v["LastModified"], reverse=True)


def _slices(parts: list, size: int) -> Iterator[bytes]:
    """The concatenated ``parts`` cut into pieces of ``size`` bytes (the last shorter)."""
    pending = bytearray()
    for part in parts:
        pending += part
        while len(pending) >= size:
            yield bytes(pending[:size])
            del pending[:size]
    if pending:
        yield bytes(pending)
