"""Immutable repositories: every object a restore point needs is locked for a period.

A repository created with ``immutable_days = N`` (an S3 bucket with Object Lock) writes
every chunk, pack, pack index and manifest with an Object Lock **COMPLIANCE** retention of
N days from the moment it is written. COMPLIANCE means the object store itself refuses to
delete or overwrite that version, or to shorten its retention, for anyone (the bucket's
owner and root account included) until the date has passed: a stolen Bulwark admin
account, a compromised proxy or the S3 credentials Bulwark holds cannot remove it.

Deduplication must not shorten protection: a new restore point that reuses an object
written earlier extends that object's retention to the new point's end (``touch`` is where
a backup says it reuses an object; here it extends the lock). Writer records, probes and
quarantined copies are not locked: they must go when their work is done.

The setting lives in the repository's own config, written once at initialisation: it
cannot be switched off later (the connection's option is refused if it says otherwise, and
the config wins when opening).

New versions put over a locked key, or a delete marker hiding it, do not touch the locked
version: reading a key hidden by a delete marker removes the marker and reads the original,
and a verify that finds a block overwritten quarantines it, which removes what was put over
the locked original (those newer versions are not locked) and so heals it.

What it does not protect against: someone who controls the object store's servers
themselves (SeaweedFS's disks, a cloud account's closure), or data written before the
repository was immutable (there is none: it is decided when the repository is created).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from app.repository.backend import ObjectMissing

LOCKED_PREFIXES = ("chunks/", "packs/", "index/", "manifests/")


class LockingStore:
    """An S3 store whose repository objects are written locked and re-locked on reuse."""

    def __init__(self, inner: Any, days: int, *, clock: Callable[[], datetime] | None = None):
        self.inner = inner
        self.days = days
        self.clock = clock or (lambda: datetime.now(UTC))

    def __repr__(self) -> str:
        return f"LockingStore({self.inner!r}, days={self.days})"

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def until(self) -> datetime:
        # Whole seconds: S3 keeps retention dates to the second.
        return (self.clock() + timedelta(days=self.days)).replace(microsecond=0)

    @staticmethod
    def _locks(key: str) -> bool:
        return key.startswith(LOCKED_PREFIXES)

    def put(self, key: str, data, *, durable: bool = True) -> None:
        until = self.until() if self._locks(key) else None
        self.inner.put(key, data, durable=durable, retain_until=until)

    def touch(self, key: str) -> bool:
        """The object is used again: its lock now ends no earlier than a new one's."""
        if not self._locks(key):
            return self.inner.touch(key)
        return self.inner.extend_retention(key, self.until())

    def delete(self, key: str) -> None:
        """Delete an unlocked object. A locked one is refused (``ObjectLocked``), unless
        something was put over it: then that is removed and the locked original is current
        again (how a verify's quarantine heals an overwritten block)."""
        if self._locks(key) and self.inner.revert(key):
            return
        self.inner.delete(key)

    def get(self, key: str) -> bytes:
        return self._healing(key, lambda: self.inner.get(key))

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        return self._healing(key, lambda: self.inner.get_range(key, offset, length))

    def _healing(self, key: str, read):
        """A locked object hidden by a delete marker is brought back and read."""
        try:
            return read()
        except ObjectMissing:
            if not self._locks(key) or not self.inner.revert(key):
                raise
        return read()

    def locked_until(self, key: str) -> datetime | None:
        """When the object's lock ends, if it is locked now."""
        try:
            until = self.inner.retention(key)
        except ObjectMissing:
            return None
        if until is None or until <= self.clock():
            return None
        return until


def locked_until(store: Any, key: str) -> datetime | None:
    """When ``key``'s lock ends, or None if the store does not lock or it is not locked."""
    probe = getattr(store, "locked_until", None)
    return probe(key) if probe is not None else None
