"""What goes wrong in the repository, in words an operator can act on."""

from __future__ import annotations

from datetime import datetime


class RepositoryError(Exception):
    """The repository cannot be used as asked (missing, not initialised, locked)."""


class ChunkDamaged(Exception):  # noqa: N818 - reads as what happened
    """A chunk is missing, or its bytes do not hash to its name."""

    def __init__(
        self, digest: str, reason: str, *, index: int | None = None, manifest_id: str | None = None
    ):
        self.digest = digest
        self.reason = reason
        self.index = index
        self.manifest_id = manifest_id
        where = f"block {index} ({digest})" if index is not None else f"chunk {digest}"
        if manifest_id:
            where += f" of image {manifest_id}"
        super().__init__(f"{where} is damaged: {reason}")


class RepositoryFull(RepositoryError):
    """The repository's disk has no room left: the message names the repository, where it
    lives and how full it is."""


class ManifestInUse(RepositoryError):
    """A running backup builds on this manifest; it cannot be deleted now."""


class RepositoryLocked(RepositoryError):  # noqa: N818 - reads as what happened
    """Asked to delete what an immutable repository locks; ``until`` says when it can go."""

    def __init__(self, what: str, until: datetime):
        self.until = until
        super().__init__(f"{what} is immutable until {until:%Y-%m-%d %H:%M} UTC")
