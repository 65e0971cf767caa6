"""Messages in the repository: stored whole, once, by content hash (``put_chunk``).

Messages go into packs (many to a file: a file per message cost more than the rest of the
backup together) and are flushed once per batch before the database names them; hashing,
compressing and sealing run on a small thread pool (blake3, zstd and AES release the GIL)
while the IMAP connection fetches the next batch.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import ArchiveMessage
from app.repository import Repository, register_reference_source


def put_message(repo: Repository, raw: bytes) -> str:
    return repo.put_chunk(raw, durable=False, packed=True)


def flush(repo: Repository) -> None:
    """Make every message stored so far durable (before the database refers to them)."""
    repo.flush()


def get_message(repo: Repository, digest: str) -> bytes:
    """The message's bytes, verified against their hash (raises ChunkDamaged)."""
    return repo.get_chunk(digest)


def live_digests(session: Session, repository_id: int) -> Iterable[str]:
    """Reference source for the repository's garbage collection: every message the archive
    still holds (restore points, compliance retention and holds decide what stays there)."""
    yield from session.scalars(
        select(ArchiveMessage.digest).where(ArchiveMessage.repository_id == repository_id)
    )


register_reference_source("mail", live_digests)
