"""Exchange as the agent sees it: one small interface, two implementations.

``WindowsExchange`` (windows.py) drives PowerShell, DiskShadow and eseutil on a real Exchange
server (documented in docs/agent.md; it cannot run here). ``StandInExchange`` (standin.py) is a
stand-in on this machine, named as one: an ESE-like store with the same behaviour the agent
depends on. The agent never reaches past this interface.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol


class ExchangeError(Exception):
    """Exchange refused or failed an operation; the message is for the operator."""


class CheckFailed(ExchangeError):  # noqa: N818 - reads as what happened
    """The consistency check found damage: ``what`` names the page or the log generation."""

    def __init__(self, message: str, what: dict[str, Any]):
        super().__init__(message)
        self.what = what


@dataclass
class DatabaseCopy:
    server: str
    active: bool
    healthy: bool
    copy_queue: int = 0
    replay_queue: int = 0


@dataclass
class DatabaseInfo:
    name: str
    guid: str
    mounted: bool
    circular_logging: bool
    log_generations: tuple[int, int] | None  # lowest and highest on disk
    log_disk_free: int
    log_disk_total: int
    copies: list[DatabaseCopy] = field(default_factory=list)
    dag: str | None = None

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["log_generations"] = list(self.log_generations) if self.log_generations else None
        return doc


@dataclass
class SnapshotFile:
    role: str  # database | log | checkpoint
    name: str
    size: int
    generation: int | None = None


@dataclass
class Snapshot:
    """A shadow copy of one database's volumes, taken with the Exchange writer."""

    id: str
    database: str
    files: list[SnapshotFile]
    checkpoint_generation: int
    # The log generations the snapshot holds (all closed: the writer rolls the log at freeze).
    log_range: tuple[int, int]
    full: bool
    # Why a full was taken when an incremental was asked for (None when as asked).
    full_because: str | None = None


@dataclass
class Truncation:
    before: tuple[int, int] | None
    after: tuple[int, int] | None
    log_disk_free: int
    log_disk_total: int
    truncated: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "generations_before": list(self.before) if self.before else None,
            "generations_after": list(self.after) if self.after else None,
            "log_disk_free": self.log_disk_free,
            "log_disk_total": self.log_disk_total,
            "truncated": self.truncated,
        }


class Exchange(Protocol):
    """What the agent needs of Exchange (Get-MailboxDatabase, VSS, eseutil, mount)."""

    def databases(self) -> list[DatabaseInfo]: ...

    def snapshot(self, database: str, *, logs_after: int | None) -> Snapshot:
        """Shadow copy through VSS with the Exchange writer. ``logs_after``: an incremental
        (only logs above that generation); a full is taken instead, with the reason, when the
        chain cannot continue."""

    def open_file(self, snap: Snapshot, name: str) -> BinaryIO: ...

    def check(self, snap: Snapshot, block_size: int | None = None) -> dict[str, Any]:
        """Every page and every log of the snapshot, and an unbroken log sequence; raises
        CheckFailed naming the page or generation. With ``block_size`` it may also return
        ``block_fingerprints`` for the database (equal: the block is unchanged)."""

    def release(self, snap: Snapshot) -> None:
        """Delete the shadow copy without telling Exchange the backup completed (no
        truncation): what a failed or cancelled backup does."""

    def complete_backup(self, snap: Snapshot) -> Truncation:
        """Tell Exchange the backup succeeded (VSS BackupComplete): it truncates its logs."""

    def log_state(self, database: str) -> Truncation: ...

    def dismount(self, database: str) -> None: ...

    def mount(self, database: str) -> None: ...

    def restore_path(self, database: str, mode: str, path: str | None) -> Path:
        """Where restored files go: the database's own folder (original), a path, or a new
        Recovery Database's folder."""

    def recover(self, path: Path, database: str, upto_generation: int | None) -> dict[str, Any]:
        """Soft recovery (eseutil /r) of restored files, then a check that the database is in
        a clean shutdown state; returns what was replayed."""

    def finish_restore(self, database: str, mode: str, path: Path) -> None:
        """After recovery: mount the original, or register the Recovery Database."""


def read_chunks(source: BinaryIO, size: int, chunk: int) -> Iterator[bytes]:
    """``size`` bytes of ``source`` in pieces of ``chunk`` (the last one short)."""
    left = size
    while left > 0:
        data = source.read(min(chunk, left))
        if not data:
            raise ExchangeError(f"the file ended {left} bytes early")
        left -= len(data)
        yield data
